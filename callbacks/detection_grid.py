"""Predicted boxes drawn on the first validation images: PNG in ``<run>/plots/`` and W&B."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, make_grid, save_image

from datamodules.voc_eval import class_name


def draw_detections(
    image: Tensor,
    pred: dict[str, Tensor],
    target: dict[str, Tensor] | None = None,
    class_names: Sequence[str] | None = None,
    score_threshold: float = 0.3,
) -> Tensor:
    """``image`` (3, H, W) in [0, 1] → uint8 (3, H, W) with ground truth (green) and predictions scoring at
    least ``score_threshold`` (red, labelled ``name score``), drawn by ``torchvision.utils.draw_bounding_boxes``."""
    canvas = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    if target is not None and len(target["boxes"]):
        canvas = draw_bounding_boxes(canvas, target["boxes"].detach().cpu().float(), colors="lime", width=1)
    keep = pred["scores"].detach().cpu() >= score_threshold
    boxes = pred["boxes"].detach().cpu().float()[keep]
    if len(boxes):
        labels = [
            f"{class_name(int(c), class_names)} {float(s):.2f}"
            for c, s in zip(pred["labels"].cpu()[keep], pred["scores"].cpu()[keep], strict=True)
        ]
        canvas = draw_bounding_boxes(canvas, boxes, labels=labels, colors="red", width=2)
    return canvas


class DetectionGridLogger(Callback):
    """Draws the detections that ``validation_step`` returns (``{"images", "preds", "targets"}``, as
    :func:`lightning_modules.detection_steps.detection_eval_step` gives them) for the first ``max_images``
    validation images.

    Writes ``plots/detections_epoch{N:03d}.png`` into the run directory and logs it to W&B as
    ``val/detections``. Class names come from the LightningModule's or the DataModule's ``class_names``.

    Args:
        max_images: images drawn (from the first validation batches).
        score_threshold: smallest score of a drawn prediction.
        nrow: images per row of the grid.
    """

    def __init__(self, max_images: int = 8, score_threshold: float = 0.3, nrow: int = 4) -> None:
        self.max_images = max_images
        self.score_threshold = score_threshold
        self.nrow = nrow
        self._drawn: list[Tensor] = []

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._drawn = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or len(self._drawn) >= self.max_images:
            return
        if not isinstance(outputs, dict) or "preds" not in outputs:
            return
        names = getattr(pl_module, "class_names", None) or getattr(trainer.datamodule, "class_names", None)
        count = min(self.max_images - len(self._drawn), len(outputs["preds"]))
        targets = outputs.get("targets") or [None] * count
        self._drawn += [
            draw_detections(outputs["images"][i], outputs["preds"][i], targets[i], names, self.score_threshold)
            for i in range(count)
        ]

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not self._drawn:
            return
        same_size = all(d.shape == self._drawn[0].shape for d in self._drawn)
        drawn = self._drawn if same_size else self._drawn[:1]
        grid = make_grid(torch.stack(drawn).float() / 255, nrow=min(self.nrow, len(drawn)), padding=2, pad_value=1.0)
        path = Path(trainer.default_root_dir) / "plots" / f"detections_epoch{trainer.current_epoch:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(grid, path)
        self._drawn = []
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("val/detections", [str(path)], step=trainer.global_step)
