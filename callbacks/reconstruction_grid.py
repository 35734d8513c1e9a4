"""Per-iteration reconstructions of the first validation image: PNG in the run directory and W&B."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

from plotting.plots import reconstruction_grid, save_image_grid


class ReconstructionGridLogger(Callback):
    """Reads ``{"x", "x_hats"}`` returned by ``validation_step`` for the first batch.

    Args:
        iterations: which iterations (1-based) to show; ``None``: 1, 2, 4, 8, … up to the last.
    """

    def __init__(self, iterations: list[int] | None = None) -> None:
        self.iterations = iterations

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx != 0 or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if not isinstance(outputs, dict) or "x_hats" not in outputs:
            return
        total = outputs["x_hats"].shape[0]
        shown = self.iterations or sorted({*(2**i for i in range(total.bit_length()) if 2**i <= total), total})
        shown = [k for k in shown if 1 <= k <= total]
        grid = reconstruction_grid(outputs["x"][0], outputs["x_hats"][:, 0], shown)
        labels = ["original", *(f"it {k}" for k in shown)]
        path = Path(trainer.default_root_dir) / "plots" / f"reconstructions_epoch{trainer.current_epoch:03d}.png"
        save_image_grid(grid.cpu(), path, labels)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("val/reconstructions", [str(path)], step=trainer.global_step)
