"""The one DataLoader recipe of the recognition DataModules (ImageNet subsets, CIFAR-10, VOC)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import DataLoader, Dataset

from datamodules.classification_transforms import reseed_transforms_in_worker


def recognition_loader(
    dataset: Dataset | None,
    *,
    train: bool,
    batch_size: int,
    num_workers: int,
    pin_memory: bool = True,
    persistent_workers: bool = True,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> DataLoader:
    """Shuffled with the last partial batch dropped when ``train`` (unless the set is smaller than a
    batch), in order otherwise; each worker gets its own augmentation random state
    (:func:`reseed_transforms_in_worker`)."""
    if dataset is None:
        raise RuntimeError("the DataModule has no dataset for this stage yet: call setup() first")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        drop_last=train and len(dataset) > batch_size,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and num_workers > 0,
        collate_fn=collate_fn,
        worker_init_fn=reseed_transforms_in_worker,
    )
