"""The CPU Trainer the recognition modules' tests fit, validate, test and resume with."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint


def trainer(root: Path, max_epochs: int, callbacks: tuple[Callback, ...] | list[Callback] = (), val_batches: int = 1):
    """One training batch per epoch, ``val_batches`` validation batches, no logger; ``root/checkpoints/last.ckpt``."""
    return L.Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        num_sanity_val_steps=0,
        limit_train_batches=1,
        limit_val_batches=val_batches,
        limit_test_batches=1,
        limit_predict_batches=1,
        callbacks=[ModelCheckpoint(dirpath=root / "checkpoints", save_top_k=0, save_last=True), *callbacks],
    )
