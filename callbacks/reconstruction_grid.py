"""Reconstructions after each iteration, each with its real stream's size (Figure 3 of Takase et al.: 各繰り返し回数の
復元画像とデータサイズ): a PNG in the run directory and on W&B.

:func:`plotting.reconstruction_figure.save_reconstruction_figure` draws the figure (also used by ``benchmarks/reconstruction_figure.py`` for a
checkpoint and any images): one row per image — the original, then the reconstruction after each shown
iteration k, titled with the bytes of that image's own stream at k, ``len(compress(codec, x, k))`` (header
included), and its bits per pixel.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

from coding.rnn_bitstream import Coding, compress
from plotting.reconstruction_figure import save_reconstruction_figure


class ReconstructionGridLogger(Callback):
    """Reads ``{"x", "x_hats"}`` returned by ``validation_step`` for the first batch, and the module's ``codec``.

    For each of the first ``images`` images, the stream bytes at each shown k are those of its own stream,
    ``len(compress(pl_module.codec, x[i:i+1], k, coding))`` (no bytes are shown if the module has no ``codec``).
    The last figure's sizes are kept in :attr:`stream_bytes` (k → bytes per shown image).

    Args:
        iterations: which iterations (1-based) to show; ``None``: 1, 2, 4, 8, … up to the last (``[1, 2, 3]`` is
            the paper's Figure 3).
        images: how many images of the first validation batch (rows).
        coding: payload coding of the streams whose sizes are shown: ``smallest`` (what ``RNNCompressor`` logs as
            ``val/bytes_per_image``), ``packed`` (k · bits / 256 bpp, the paper's) or ``entropy``.
    """

    def __init__(self, iterations: list[int] | None = None, images: int = 2, coding: Coding = "smallest") -> None:
        if images < 1:
            raise ValueError(f"images must be >= 1, got {images}")
        self.iterations = iterations
        self.images = images
        self.coding = coding
        self.stream_bytes: dict[int, list[int]] = {}

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx != 0 or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if not isinstance(outputs, dict) or "x_hats" not in outputs:
            return
        total = outputs["x_hats"].shape[0]
        shown = self.iterations or sorted({*(2**i for i in range(total.bit_length()) if 2**i <= total), total})
        shown = [k for k in shown if 1 <= k <= total]
        x = outputs["x"][: self.images]
        codec = getattr(pl_module, "codec", None)
        if codec is not None:
            with torch.no_grad():
                self.stream_bytes = {
                    k: [len(compress(codec, x[i : i + 1], k, coding=self.coding)) for i in range(len(x))] for k in shown
                }
        else:
            self.stream_bytes = {}
        path = Path(trainer.default_root_dir) / "plots" / f"reconstructions_epoch{trainer.current_epoch:03d}.png"
        save_reconstruction_figure(
            x.cpu(), {k: outputs["x_hats"][k - 1, : len(x)].cpu() for k in shown}, self.stream_bytes or None, path,
            title=f"epoch {trainer.current_epoch}: reconstructions and their stream bytes ({self.coding})",
        )  # fmt: skip
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("val/reconstructions", [str(path)], step=trainer.global_step)
