"""CIFAR-10 as a LightningDataModule, read through ``torchvision.datasets.CIFAR10``.

Splits (all seeded, disjoint):

- the 50,000 training images are split into ``train`` and ``val`` (``val_fraction``, 10% = 5,000);
- ``split="search"`` (FBNet-style architecture search) further splits ``train`` 80/20 into the images
  that train the supernet's weights and those that train its architecture parameters; the training
  loader is then a dict ``{"weights": loader, "arch": loader}`` (Lightning combines it; the batch is a
  dict of two ``(images, labels)`` batches);
- ``test`` is the official 10,000-image test batch.

torchvision checks the md5 of every batch file against the real dataset's. The fixture batches written
by ``datamodules.fixtures.write_cifar10`` cannot match them, so ``verify_checksums=False`` reads the
same files through a subclass whose only difference is that it checks that they exist instead.
Keep the default ``True`` for real data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

from datamodules.classification_transforms import (
    cifar_eval_transform,
    cifar_train_transform,
)
from datamodules.loaders import recognition_loader

CIFAR10_FILES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]


Pipeline = Callable[..., dict]  # an albumentations pipeline (imported where one is built: seconds of start-up)


class CIFAR10WithoutChecksums(TorchvisionCIFAR10):
    """torchvision's CIFAR-10 reader with the md5 checks replaced by existence checks.

    ``torchvision.datasets.utils.check_integrity(path, None)`` only tests that the file exists; every
    other step (unpickling, reshaping to HWC, reading ``batches.meta``) is torchvision's own.
    """

    train_list = [[name, None] for name, _ in TorchvisionCIFAR10.train_list]
    test_list = [[name, None] for name, _ in TorchvisionCIFAR10.test_list]
    meta = {**TorchvisionCIFAR10.meta, "md5": None}


class CIFAR10Split(Dataset):
    """Selected images of a loaded CIFAR-10 set (HWC ``uint8`` arrays) through an albumentations pipeline.

    Items are ``(image float32 (3, H, W) in [0, 1], label int)``.
    """

    def __init__(self, data: np.ndarray, targets: list[int], indices: np.ndarray, transform: Pipeline) -> None:
        self.data = data
        self.targets = targets
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        i = int(self.indices[index])
        return self.transform(image=self.data[i])["image"], int(self.targets[i])


def split_indices(
    count: int, val_fraction: float, arch_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded disjoint (weights/train, arch, val) index sets over ``count`` training images.

    ``arch`` is empty when ``arch_fraction`` is 0. Sorted within each set.
    """
    order = np.random.default_rng(seed).permutation(count)
    n_val = int(round(val_fraction * count))
    val, rest = order[:n_val], order[n_val:]
    n_arch = int(round(arch_fraction * len(rest)))
    arch, weights = rest[:n_arch], rest[n_arch:]
    return np.sort(weights), np.sort(arch), np.sort(val)


class CIFAR10(LightningDataModule):
    """CIFAR-10 with a seeded train/val split and an optional weights/architecture split for search.

    Batches are ``(images float32 (B, 3, H, W) in [0, 1], labels int64 (B,))``; no normalisation.
    Augmentation for training: 4-pixel zero padding, random 32×32 crop, horizontal flip.

    Args:
        root: Folder that holds ``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``,
            ``batches.meta``).
        split: ``"standard"``: one training loader. ``"search"``: the training images are split again
            (``arch_fraction``) and the training loader is ``{"weights": ..., "arch": ...}``.
        val_fraction: Fraction of the 50,000 training images held out for validation (0.1 = 5,000).
        arch_fraction: ``split="search"``: fraction of the remaining training images that train the
            architecture parameters (0.2: the 80/20 weights/architecture split of FBNet).
        image_size: Side of the images given to the model (32 = native; other sizes resize).
        batch_size: Images per batch (per device); the FBNet paper trains with 32.
        num_workers: DataLoader worker processes.
        seed: Seed of the splits.
        pin_memory: Pin batches in page-locked memory.
        persistent_workers: Keep workers alive between epochs (only used when ``num_workers > 0``).
        download: Download the dataset (170 MB) into ``root`` when it is missing. Off by default: runs
            never reach the network unless asked to.
        verify_checksums: Check the batch files against the real dataset's md5s (torchvision's check).
            Set ``False`` only for the fixture written by ``datamodules.fixtures``.
    """

    def __init__(
        self,
        root: str,
        split: Literal["standard", "search"] = "standard",
        val_fraction: float = 0.1,
        arch_fraction: float = 0.2,
        image_size: int = 32,
        batch_size: int = 128,
        num_workers: int = 4,
        seed: int = 0,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        download: bool = False,
        verify_checksums: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if split not in ("standard", "search"):
            raise ValueError(f"split must be 'standard' or 'search', got {split!r}")
        if not 0 < val_fraction < 1 or not 0 <= arch_fraction < 1:
            raise ValueError(
                f"need 0 < val_fraction < 1 and 0 <= arch_fraction < 1, got {val_fraction}, {arch_fraction}"
            )
        if download and not verify_checksums:
            raise ValueError("download=True needs verify_checksums=True (a download is checked against its md5s)")
        self.root = root
        self.split = split
        self.val_fraction = val_fraction
        self.arch_fraction = arch_fraction
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.download = download
        self.verify_checksums = verify_checksums
        self.num_classes = 10
        self.class_names: list[str] = []
        self.train_set: CIFAR10Split | None = None
        self.arch_set: CIFAR10Split | None = None
        self.val_set: CIFAR10Split | None = None
        self.test_set: CIFAR10Split | None = None

    def _load(self, train: bool) -> TorchvisionCIFAR10:
        folder = Path(self.root).expanduser() / "cifar-10-batches-py"
        if not self.download:
            missing = [name for name in [*CIFAR10_FILES, "batches.meta"] if not (folder / name).is_file()]
            if missing:
                raise FileNotFoundError(
                    f"CIFAR-10 not found: {folder} lacks {', '.join(missing)}. Expected ROOT/cifar-10-batches-py/"
                    "{data_batch_1..5, test_batch, batches.meta} (the python version, cifar-10-python.tar.gz, "
                    "extracted); set download: true to fetch it into ROOT."
                )
        dataset_class = TorchvisionCIFAR10 if self.verify_checksums else CIFAR10WithoutChecksums
        try:
            return dataset_class(str(Path(self.root).expanduser()), train=train, download=self.download)
        except RuntimeError as err:
            raise RuntimeError(
                f"{err} ({folder}: the batch files do not match the real CIFAR-10's md5 checksums; a fixture "
                "written by datamodules.fixtures needs verify_checksums: false)"
            ) from err

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train_source = self._load(train=True)
        test_source = self._load(train=False)
        self.class_names = list(train_source.classes)
        arch_fraction = self.arch_fraction if self.split == "search" else 0.0
        weights, arch, val = split_indices(len(train_source), self.val_fraction, arch_fraction, self.seed)
        if len(weights) == 0 or len(val) == 0 or (self.split == "search" and len(arch) == 0):
            raise ValueError(
                f"{len(train_source)} training images are too few for val_fraction={self.val_fraction}, "
                f"arch_fraction={arch_fraction}"
            )
        train_tf, eval_tf = cifar_train_transform(self.image_size), cifar_eval_transform(self.image_size)
        data, targets = train_source.data, list(train_source.targets)
        self.train_set = CIFAR10Split(data, targets, weights, train_tf)
        self.arch_set = CIFAR10Split(data, targets, arch, cifar_train_transform(self.image_size)) if len(arch) else None
        self.val_set = CIFAR10Split(data, targets, val, eval_tf)
        self.test_set = CIFAR10Split(
            test_source.data,
            list(test_source.targets),
            np.arange(len(test_source)),
            cifar_eval_transform(self.image_size),
        )

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        return recognition_loader(
            dataset,
            train=train,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def _require_setup(self) -> None:
        if self.train_set is None:
            self.setup()

    def weights_dataloader(self) -> DataLoader:
        """Training images for the weights (``split="standard"``: all training images)."""
        self._require_setup()
        assert self.train_set is not None
        return self._loader(self.train_set, train=True)

    def arch_dataloader(self) -> DataLoader:
        """``split="search"`` only: the images that train the architecture parameters."""
        self._require_setup()
        if self.arch_set is None:
            raise RuntimeError('arch_dataloader needs split="search"')
        return self._loader(self.arch_set, train=True)

    def train_dataloader(self) -> DataLoader | dict[str, DataLoader]:
        if self.split == "search":
            return {"weights": self.weights_dataloader(), "arch": self.arch_dataloader()}
        return self.weights_dataloader()

    def val_dataloader(self) -> DataLoader:
        self._require_setup()
        assert self.val_set is not None
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        self._require_setup()
        assert self.test_set is not None
        return self._loader(self.test_set, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
