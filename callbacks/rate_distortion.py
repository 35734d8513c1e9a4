"""Rate–distortion curve of a compressor after each validation: PNG + JSON in the run directory and a
W&B image and table when a W&B logger is attached.

The rates are the module's logged ``{stage}/bpp_it{k}``: for ``RNNCompressor`` the mean over images of
each image's real stream of its first k iterations (:func:`coding.rnn_bitstream.stream_bytes_per_image`),
not a formula."""

from __future__ import annotations

import json
import re
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

from plotting.plots import plot_rate_distortion

_PER_ITERATION = re.compile(r"^(?P<stage>val|test)/bpp_it(?P<k>\d+)$")


def rate_distortion_rows(metrics: dict, stage: str, codec: str) -> list[dict]:
    """``{stage}/bpp_it{k}``, ``psnr_it{k}``, ``ms_ssim_it{k}`` of the logged metrics as rows."""
    rows = []
    for key in metrics:
        match = _PER_ITERATION.match(key)
        if match and match["stage"] == stage:
            k = int(match["k"])
            rows.append(
                {
                    "codec": codec,
                    "setting": f"it{k}",
                    "bpp": float(metrics[key]),
                    "psnr": float(metrics[f"{stage}/psnr_it{k}"]),
                    "ms_ssim": float(metrics[f"{stage}/ms_ssim_it{k}"]),
                }
            )
    return sorted(rows, key=lambda r: r["bpp"])


class RateDistortionLogger(Callback):
    """After validation/test ends, reads the per-iteration metrics the module logged and plots bpp against PSNR and MS-SSIM.

    Args:
        codec_name: the legend entry of the learned codec.
    """

    def __init__(self, codec_name: str = "rnn") -> None:
        self.codec_name = codec_name

    def _write(self, trainer: L.Trainer, stage: str) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        rows = rate_distortion_rows(trainer.callback_metrics, stage, self.codec_name)
        if not rows:
            return
        out = Path(trainer.default_root_dir) / "plots"
        tag = f"{stage}_rd_epoch{trainer.current_epoch:03d}"
        png = plot_rate_distortion(rows, out / f"{tag}.png", title=f"{stage}, epoch {trainer.current_epoch}")
        (out / f"{tag}.json").write_text(json.dumps(rows, indent=2))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(f"{stage}/rate_distortion", [str(png)], step=trainer.global_step)
                logger.log_table(
                    f"{stage}/rate_distortion_table",
                    columns=list(rows[0]),
                    data=[list(r.values()) for r in rows],
                    step=trainer.global_step,
                )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, "val")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, "test")
