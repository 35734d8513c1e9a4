"""The training and evaluation steps of an SSD, shared by every LightningModule that detects.

``Detector`` uses these, and so does any method that puts a detector behind something else
(recognition on decoded images, the shared-trunk split): they call the same functions so that
``train/loss``, ``val/map50`` … mean the same thing everywhere, with one evaluator
(:class:`datamodules.voc_eval.VOCMeanAveragePrecision`, synced across DDP processes).

Typical use inside a LightningModule holding ``self.model`` (a torchvision ``SSD``) and
``self.map = nn.ModuleDict({s: VOCMeanAveragePrecision() for s in ("val", "test")})``::

    def training_step(self, batch, batch_idx):
        return detection_training_step(self, self.model, batch)

    def validation_step(self, batch, batch_idx):
        return detection_eval_step(self.model, batch, self.map["val"])

    def on_validation_epoch_end(self):
        log_detection_metrics(self, self.map["val"], "val")

Batches are ``(images (B, 3, H, W) in [0, 1], targets)`` as ``datamodules.voc.VOC`` yields them, targets
in torchvision's format (``boxes`` xyxy pixels, ``labels`` 1..C-1, optional ``difficult``).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn

from datamodules.voc_eval import VOCMeanAveragePrecision, class_name

LOSS_NAMES = ("bbox_regression", "classification")


def split_detection_batch(batch: Any) -> tuple[Tensor | list[Tensor], list[dict[str, Tensor]] | None]:
    """``(images, targets)`` → the same; bare images (a (B, 3, H, W) tensor or a list of (3, H, W) ones,
    as in predict) → ``(images, None)``."""
    if isinstance(batch, Tensor) or all(isinstance(item, Tensor) and item.dim() == 3 for item in batch):
        return batch, None
    images, targets = batch[0], (batch[1] if len(batch) > 1 else None)
    return images, targets


def loss_targets(targets: Sequence[dict[str, Tensor]], skip_difficult: bool = True) -> list[dict[str, Tensor]]:
    """``boxes`` and ``labels`` of each target for the SSD loss, without ``difficult`` objects when
    ``skip_difficult`` (as the SSD reference code trains: they are ignored by the evaluation too)."""
    out = []
    for target in targets:
        keep = ~target["difficult"].bool() if skip_difficult and "difficult" in target else None
        boxes, labels = target["boxes"], target["labels"]
        if keep is not None:
            boxes, labels = boxes[keep], labels[keep]
        out.append({"boxes": boxes, "labels": labels})
    return out


def detection_losses(
    model: nn.Module, images: Tensor | list[Tensor], targets: Sequence[dict[str, Tensor]], skip_difficult: bool = True
) -> dict[str, Tensor]:
    """SSD's own losses (``model`` in training mode): ``{"loss", "bbox_regression", "classification"}``,
    ``loss`` their sum (torchvision's SSD: smooth-L1 + cross-entropy with 3:1 hard negatives, both
    divided by the number of matched default boxes)."""
    losses = model(images, loss_targets(targets, skip_difficult))
    return {"loss": sum(losses[name] for name in LOSS_NAMES), **{name: losses[name] for name in LOSS_NAMES}}


def log_detection_losses(module: L.LightningModule, losses: dict[str, Tensor], stage: str, batch_size: int) -> None:
    """Log ``{stage}/loss`` (progress bar), ``{stage}/bbox_regression``, ``{stage}/classification``."""
    module.log(f"{stage}/loss", losses["loss"], prog_bar=True, batch_size=batch_size)
    for name in LOSS_NAMES:
        module.log(f"{stage}/{name}", losses[name], batch_size=batch_size)


def detection_training_step(
    module: L.LightningModule, model: nn.Module, batch: Any, skip_difficult: bool = True
) -> Tensor:
    """Losses of one batch, logged under ``train/``; returns the total to minimise."""
    images, targets = split_detection_batch(batch)
    if targets is None:
        raise ValueError("a detection training batch needs targets: (images, targets)")
    losses = detection_losses(model, images, targets, skip_difficult)
    log_detection_losses(module, losses, "train", len(images))
    return losses["loss"]


@torch.no_grad()
def detection_eval_step(model: nn.Module, batch: Any, metric: VOCMeanAveragePrecision) -> dict[str, Any]:
    """Detections of one batch (``model`` in eval mode) added to ``metric``.

    Returns ``{"images", "preds", "targets"}`` (what :class:`callbacks.detection_grid.DetectionGridLogger`
    draws), ``preds`` one ``{"boxes", "scores", "labels"}`` per image in input pixels.
    """
    images, targets = split_detection_batch(batch)
    preds = model(images)
    if targets is not None:
        metric.update(preds, targets)
    return {"images": images, "preds": preds, "targets": targets}


def log_detection_metrics(
    module: L.LightningModule,
    metric: VOCMeanAveragePrecision,
    stage: str,
    class_names: Sequence[str] | None = None,
    per_class: bool = False,
) -> dict[str, float]:
    """Compute ``metric`` (synced over processes), log ``{stage}/map50``, ``{stage}/map50_area`` (and
    ``{stage}/map50_torchmetrics`` when the metric computes it), reset it, and return the values.

    With ``per_class``: also ``{stage}/ap50_{name}`` per class, a table printed on rank 0, written to
    ``<default_root_dir>/plots/{stage}_ap_per_class.csv`` and sent to W&B as a table.
    """
    result = metric.compute()
    scalars = {k: v for k, v in result.items() if k.startswith("map50")}
    module.log_dict({f"{stage}/{k}": v for k, v in scalars.items()}, prog_bar=stage == "val")
    values = {f"{stage}/{k}": float(v) for k, v in scalars.items()}
    if per_class:
        rows = [
            (class_name(int(c), class_names), float(ap), float(area))
            for c, ap, area in zip(
                result["classes"], result["ap50_per_class"], result["ap50_area_per_class"], strict=True
            )
        ]
        module.log_dict({f"{stage}/ap50_{name}": ap for name, ap, _ in rows})
        values.update({f"{stage}/ap50_{name}": ap for name, ap, _ in rows})
        _report_ap_table(module, stage, rows, float(result["map50"]), float(result["map50_area"]))
    metric.reset()
    return values


@rank_zero_only
def _report_ap_table(
    module: L.LightningModule, stage: str, rows: list[tuple[str, float, float]], map50: float, map50_area: float
) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{stage}: VOC AP@0.5 per class")
    for column in ("class", "AP (VOC07 11-point)", "AP (area)"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, ap, area in rows:
        table.add_row(name, f"{100 * ap:.2f}", f"{100 * area:.2f}")
    table.add_row("mAP", f"{100 * map50:.2f}", f"{100 * map50_area:.2f}", style="bold")
    Console().print(table)
    trainer = module._trainer
    if trainer is None:
        return
    path = Path(trainer.default_root_dir) / "plots" / f"{stage}_ap_per_class.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "ap50_voc07", "ap50_area"])
        writer.writerows(rows)
        writer.writerow(["mAP", map50, map50_area])
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(f"{stage}/ap_per_class", columns=["class", "ap50_voc07", "ap50_area"], data=rows)
