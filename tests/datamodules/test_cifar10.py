"""CIFAR10 DataModule on its fixture: torchvision's reader, seeded splits, search split, errors."""

from __future__ import annotations

import inspect
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.cifar10 import CIFAR10, split_indices
from datamodules.fixtures import write_cifar10
from tests.datamodules.tiny_classifier import TinyClassifier, fit


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar10(tmp_path_factory.mktemp("cifar"), train_per_batch=20, test_images=20)


def make(root: Path, **kwargs) -> CIFAR10:
    args = dict(batch_size=8, num_workers=0, pin_memory=False, verify_checksums=False)
    return CIFAR10(str(root), **{**args, **kwargs})


@pytest.mark.parametrize("split", ["standard", "search"])
def test_fit_a_tiny_model(cifar_root: Path, split: str) -> None:
    model = TinyClassifier(10)
    trainer = fit(make(cifar_root, split=split), model)
    assert trainer.global_step == 3
    assert model.batch_kinds == (["plain"] * 3 if split == "standard" else ["arch,weights"] * 3)
    assert "val/acc_top1" in trainer.callback_metrics


def test_splits_are_disjoint_seeded_and_cover_the_training_set() -> None:
    weights, arch, val = split_indices(50_000, 0.1, 0.2, seed=0)
    assert (len(weights), len(arch), len(val)) == (36_000, 9_000, 5_000)  # 80/20 of the 45,000 after val
    assert len(np.union1d(np.union1d(weights, arch), val)) == 50_000
    again = split_indices(50_000, 0.1, 0.2, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((weights, arch, val), again, strict=True))
    assert not np.array_equal(val, split_indices(50_000, 0.1, 0.2, seed=1)[2])
    # the validation images do not depend on the search split
    assert np.array_equal(val, split_indices(50_000, 0.1, 0.0, seed=0)[2])


def test_eval_images_are_the_pickled_pixels_in_unit_range(cifar_root: Path) -> None:
    dm = make(cifar_root)
    dm.setup("fit")
    with open(cifar_root / "cifar-10-batches-py" / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    image, label = dm.test_set[4]
    expected = torch.from_numpy(raw["data"][4].reshape(3, 32, 32).astype(np.float32) / 255.0)
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
    torch.testing.assert_close(image, expected)
    assert label == raw["labels"][4]
    assert dm.class_names[0] == "airplane" and dm.num_classes == 10
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 3, 32, 32) and labels.dtype == torch.int64


def test_search_split_sizes_on_the_fixture(cifar_root: Path) -> None:
    dm = make(cifar_root, split="search", val_fraction=0.1, arch_fraction=0.2)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.arch_set), len(dm.val_set), len(dm.test_set)) == (72, 18, 10, 20)
    assert not set(dm.train_set.indices) & set(dm.arch_set.indices)
    assert not set(dm.val_set.indices) & (set(dm.train_set.indices) | set(dm.arch_set.indices))


def test_resize_to_other_image_sizes(cifar_root: Path) -> None:
    dm = make(cifar_root, image_size=48)
    dm.setup("fit")
    assert dm.train_set[0][0].shape == (3, 48, 48) and dm.val_set[0][0].shape == (3, 48, 48)


def test_missing_root_names_the_expected_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere/cifar-10-batches-py lacks data_batch_1.*download: true"):
        make(tmp_path / "nowhere").setup("fit")


def test_checksums_are_verified_by_default(cifar_root: Path) -> None:
    with pytest.raises(RuntimeError, match="verify_checksums: false"):
        CIFAR10(str(cifar_root), num_workers=0).setup("fit")


def test_download_is_off_by_default() -> None:
    assert inspect.signature(CIFAR10).parameters["download"].default is False
    assert inspect.signature(CIFAR10).parameters["verify_checksums"].default is True
