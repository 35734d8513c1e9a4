"""Shared DataLoader plumbing of the compressor DataModules (patches to train, whole images to evaluate)."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Dataset

from datamodules.loaders import seeded_loader


class CompressorDataModule(L.LightningDataModule):
    """Base class: subclasses set ``self.train_set`` and ``self.val_set`` in ``setup``.

    Validation, test and predict code one whole image at a time (sizes differ between images). Loaders
    follow the one recipe of every DataModule (:func:`datamodules.loaders.seeded_loader`): patches are
    drawn per (seed, epoch, index), and a fit resumes exactly, also mid-epoch and with workers.
    """

    batch_size: int
    num_workers: int
    train_set: Dataset
    val_set: Dataset

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return seeded_loader(
            dataset, train=shuffle, batch_size=batch_size, num_workers=self.num_workers, pin_memory=False
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, 1, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()
