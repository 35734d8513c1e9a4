"""One plain line of metrics per epoch when no progress bar is drawn (logs of batch jobs, pipes, ``nohup``).

Rich draws its progress bar only on a terminal; in a SLURM log or a file nothing at all showed how training went.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

import lightning.pytorch as L
from torch import Tensor


def format_metrics(metrics: dict[str, object]) -> str:
    """``name value`` pairs, sorted by name, four significant digits; non-scalars are left out."""
    parts = []
    for name in sorted(metrics):
        value = metrics[name]
        if isinstance(value, Tensor):
            if value.numel() != 1:
                continue
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        parts.append(f"{name} {value:.4g}" if math.isfinite(value) else f"{name} {value}")
    return "  ".join(parts)


class EpochMetricsLine(L.Callback):
    """Prints ``epoch E/N step S (T s)  name value …`` at the end of every training epoch, when ``stream`` is not a
    terminal (or always with ``always=True``)."""

    def __init__(self, stream: TextIO | None = None, always: bool = False) -> None:
        self.stream = stream
        self.always = always
        self._start = time.monotonic()

    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stdout

    def _active(self, trainer: L.Trainer) -> bool:
        out = self._out()
        return trainer.is_global_zero and (self.always or not (hasattr(out, "isatty") and out.isatty()))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._active(trainer):
            return
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        head = f"epoch {trainer.current_epoch + 1}{epochs} step {trainer.global_step} ({time.monotonic() - self._start:.0f} s)"
        print(f"{head}  {format_metrics(dict(trainer.callback_metrics))}", file=self._out(), flush=True)
