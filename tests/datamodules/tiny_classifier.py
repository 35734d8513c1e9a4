"""A few-parameter classifier that records what the DataModule fed it, and a 3-step fit (DataModule tests)."""

from __future__ import annotations

import lightning
import torch
from torch import nn


class TinyClassifier(lightning.LightningModule):
    """Conv → pool → linear. ``batch_kinds`` records ``"plain"`` or the keys of a dict batch (CIFAR-10's
    search split); ``seen`` records (image shape, image dtype, label dtype) of each training batch."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes)
        )
        self.batch_kinds: list[str] = []
        self.seen: list[tuple[torch.Size, torch.dtype, torch.dtype]] = []

    def training_step(self, batch, batch_idx):
        if isinstance(batch, dict):  # one batch for the weights, one for the architecture
            self.batch_kinds.append(",".join(sorted(batch)))
            pairs = [batch[key] for key in sorted(batch)]
        else:
            self.batch_kinds.append("plain")
            pairs = [batch]
        images, labels = pairs[0]
        self.seen.append((images.shape, images.dtype, labels.dtype))
        loss = sum(nn.functional.cross_entropy(self.net(x), y) for x, y in pairs)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        self.log("val/acc_top1", (self.net(images).argmax(1) == labels).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(dm: lightning.LightningDataModule, model: lightning.LightningModule) -> lightning.Trainer:
    """Three optimizer steps and a two-batch validation on the CPU, nothing written."""
    trainer = lightning.Trainer(
        max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=2, val_check_interval=3,
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    return trainer
