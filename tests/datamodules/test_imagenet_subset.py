"""ImageNetSubset on its fixture, through the same code path as the real dataset."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from datamodules.class_list import load_class_list
from datamodules.fixtures import write_imagenet
from datamodules.image_io import UnreadableImageError
from datamodules.imagenet_subset import EmptyClassError, ImageNetLayoutError, ImageNetSubset, build_splits
from tests.datamodules.tiny_classifier import TinyClassifier, fit


@pytest.fixture(scope="module")
def ilsvrc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_imagenet(tmp_path_factory.mktemp("ilsvrc"), train_per_wnid=8, val_per_wnid=3)


@pytest.fixture(scope="module")
def folders_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_imagenet(tmp_path_factory.mktemp("in21k"), layout="folders", train_per_wnid=8, val_per_wnid=3)


def make(root: Path, **kwargs) -> ImageNetSubset:
    args = dict(class_list=str(root / "class_list.txt"), image_size=32, batch_size=8, num_workers=0, pin_memory=False)
    return ImageNetSubset(str(root), **{**args, **kwargs})


@pytest.mark.parametrize("mode", ["classify", "patches"])
def test_fit_a_tiny_model(ilsvrc_root: Path, mode: str) -> None:
    dm = make(ilsvrc_root, mode=mode, image_size=40, patch_size=24)
    assert dm.num_classes == 10
    model = TinyClassifier(dm.num_classes)
    trainer = fit(dm, model)
    assert trainer.global_step == 3
    side = 24 if mode == "patches" else 40
    assert model.seen[0] == (torch.Size([8, 3, side, side]), torch.float32, torch.int64)
    assert "val/acc_top1" in trainer.callback_metrics


def test_batches_are_unit_range_float_chw(ilsvrc_root: Path) -> None:
    dm = make(ilsvrc_root)
    dm.setup("fit")
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.max() > 0.5
    assert labels.dtype == torch.int64 and set(labels.tolist()) <= set(range(10))


def test_caps_are_deterministic_in_the_seed(ilsvrc_root: Path) -> None:
    a = make(ilsvrc_root, train_per_class=5, val_per_class=2, seed=1)
    b = make(ilsvrc_root, train_per_class=5, val_per_class=2, seed=1)
    c = make(ilsvrc_root, train_per_class=5, val_per_class=2, seed=2)
    for dm in (a, b, c):
        dm.setup("fit")
    files = lambda dm: [s.path.name for s in dm.train_set.samples]  # noqa: E731
    assert len(a.train_set) == 50 and len(a.val_set) == 20
    assert [s.label for s in a.train_set.samples].count(3) == 5
    assert files(a) == files(b)
    assert files(a) != files(c)


def test_a_class_sample_does_not_depend_on_the_other_classes(ilsvrc_root: Path) -> None:
    classes = load_class_list(str(ilsvrc_root / "class_list.txt"))
    all_train, _ = build_splits(ilsvrc_root, classes, train_per_class=4, seed=3)
    two_train, _ = build_splits(ilsvrc_root, [classes[0], classes[7]], train_per_class=4, seed=3)
    assert [s.path for s in all_train if s.label == 0] == [s.path for s in two_train if s.label == 0]


def test_grouped_wnids_pool_into_one_class(ilsvrc_root: Path, tmp_path: Path) -> None:
    listed = tmp_path / "two.txt"
    listed.write_text("animal n01514668,n02123045,n02085620\nthing n02701002\n")
    dm = ImageNetSubset(str(ilsvrc_root), class_list=str(listed), image_size=32, num_workers=0, pin_memory=False)
    dm.setup("fit")
    labels = [s.label for s in dm.train_set.samples]
    assert dm.num_classes == 2 and labels.count(0) == 24 and labels.count(1) == 8
    assert {s.path.parent.name for s in dm.train_set.samples if s.label == 0} == {"n01514668", "n02123045", "n02085620"}


def test_folders_layout_split_is_disjoint_and_seeded(folders_root: Path) -> None:
    dm = make(folders_root, layout="folders", val_per_class=3, train_per_class=6)
    dm.setup("fit")
    train = {s.path for s in dm.train_set.samples}
    val = {s.path for s in dm.val_set.samples}
    assert len(train) == 60 and len(val) == 30 and not train & val
    again = make(folders_root, layout="folders", val_per_class=3, train_per_class=6)
    again.setup("fit")
    assert {s.path for s in again.val_set.samples} == val
    by_fraction = make(folders_root, layout="folders", val_fraction=0.2)  # round(0.2 * 11) = 2 per class
    by_fraction.setup("fit")
    assert len(by_fraction.val_set) == 20 and len(by_fraction.train_set) == 90


def test_folders_layout_fits(folders_root: Path) -> None:
    dm = make(folders_root, layout="folders", val_per_class=2)
    assert fit(dm, TinyClassifier(dm.num_classes)).global_step == 3


def test_shipped_imagenet10_reads_a_fixture_with_all_its_wnids(tmp_path: Path) -> None:
    root = write_imagenet(tmp_path, wnids_per_class=None, train_per_wnid=1, val_per_wnid=1, image_size=(24, 24))
    dm = ImageNetSubset(str(root), class_list="imagenet10", train_per_class=3, val_per_class=2, image_size=16,
                        num_workers=0, pin_memory=False)  # fmt: skip
    dm.setup("fit")
    counts = [s.label for s in dm.train_set.samples]
    assert [counts.count(k) for k in range(10)] == [3, 3, 3, 3, 2, 2, 3, 3, 3, 3]  # flower/guitar: 2 wnids


def test_missing_root_names_path_and_layout(tmp_path: Path) -> None:
    with pytest.raises(ImageNetLayoutError, match=r"nowhere.*train/<wnid>/\*\.JPEG"):
        make(tmp_path / "nowhere", class_list="imagenet10").setup("fit")
    with pytest.raises(ImageNetLayoutError, match=r"nowhere.*one folder per synset"):
        make(tmp_path / "nowhere", class_list="imagenet10", layout="folders").setup("fit")
    (tmp_path / "no_val" / "train").mkdir(parents=True)
    with pytest.raises(ImageNetLayoutError, match=r"no_val/val does not exist"):
        make(tmp_path / "no_val", class_list="imagenet10").setup("fit")


def test_flat_validation_folder_says_how_to_arrange_it(ilsvrc_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "flat"
    shutil.copytree(ilsvrc_root / "train", root / "train")
    (root / "val").mkdir()
    for image in (ilsvrc_root / "val").rglob("*.JPEG"):
        shutil.copy(image, root / "val" / image.name)
    with pytest.raises(ImageNetLayoutError, match=r"val/<wnid>.*torchvision.datasets.ImageNet"):
        make(root, class_list=str(ilsvrc_root / "class_list.txt")).setup("fit")


def test_empty_class_is_named(ilsvrc_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "empty"
    shutil.copytree(ilsvrc_root, root)
    for image in (root / "train" / "n02123045").iterdir():
        image.unlink()
    with pytest.raises(EmptyClassError, match=r"'cat' \(n02123045\) has no training images"):
        make(root).setup("fit")


def test_unreadable_image_names_the_file(ilsvrc_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "broken"
    shutil.copytree(ilsvrc_root, root)
    bad = sorted((root / "val" / "n01514668").iterdir())[0]
    bad.write_bytes(b"not a jpeg")
    dm = make(root)
    dm.setup("fit")
    index = next(i for i, s in enumerate(dm.val_set.samples) if s.path == bad)
    with pytest.raises(UnreadableImageError, match=bad.name):
        dm.val_set[index]


def test_each_worker_draws_its_own_augmentations(ilsvrc_root: Path) -> None:
    # the same image four times; without per-sample seeds, forked workers would copy one random state and
    # the first crop of worker 0 (item 0) would equal the first crop of worker 1 (item 1)
    from datamodules.classification_transforms import train_transform
    from datamodules.imagenet_subset import ImageNetSubsetDataset, Sample
    from datamodules.loaders import seeded_loader

    path = sorted((ilsvrc_root / "train" / "n01514668").iterdir())[0]
    dataset = ImageNetSubsetDataset([Sample(path, 0)] * 4, train_transform(32), ["bird"])
    loader = seeded_loader(dataset, train=False, batch_size=1, num_workers=2, pin_memory=False)
    first, second = [batch[0] for batch, _ in zip(loader, range(2), strict=False)]
    assert not torch.equal(first, second)


def test_throughput_benchmark_runs_on_a_fixture(tmp_path: Path) -> None:
    import json

    from benchmarks.data_throughput import main

    out = tmp_path / "throughput.json"
    result = main(["--dataset", "cifar10", "--workers", "0", "--batches", "2", "--batch-size", "4", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert rows == result["rows"] and rows[0]["workers"] == 0 and rows[0]["images_timed"] == 8
    assert rows[0]["images_per_s"] > 0
