import io

import torch

from callbacks.epoch_metrics_line import EpochMetricsLine, format_metrics


def test_format_keeps_scalars_sorted_and_leaves_out_the_rest():
    line = format_metrics({"val/psnr": torch.tensor(21.23456), "train/loss": 0.5, "grid": torch.zeros(3), "flag": True})
    assert line == "train/loss 0.5  val/psnr 21.23"


class _Trainer:
    def __init__(self) -> None:
        self.is_global_zero, self.max_epochs, self.current_epoch, self.global_step = True, 3, 1, 40
        self.callback_metrics = {"train/loss": torch.tensor(0.25)}


def test_one_line_per_epoch_when_not_a_terminal_and_none_on_a_terminal():
    out = io.StringIO()
    EpochMetricsLine(stream=out).on_train_epoch_end(_Trainer(), None)
    assert out.getvalue().startswith("epoch 2/3 step 40 (") and out.getvalue().endswith("train/loss 0.25\n")

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    EpochMetricsLine(stream=terminal).on_train_epoch_end(_Trainer(), None)
    assert terminal.getvalue() == ""
