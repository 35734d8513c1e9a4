"""The fixture writers produce the real on-disk formats, with the content they claim."""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from datamodules.cifar10 import CIFAR10WithoutChecksums
from datamodules.class_list import load_class_list
from datamodules.fixtures import (
    CIFAR10_LABELS,
    VOC_FIXTURE_CLASSES,
    class_style,
    write_cifar10,
    write_imagenet,
    write_voc,
)
from datamodules.voc import VOC_CLASSES

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("dataset", ["imagenet", "cifar10", "voc"])
def test_cli_writes_each_dataset(tmp_path: Path, dataset: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "datamodules.fixtures", dataset, str(tmp_path / dataset)],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "wrote the" in out.stdout
    assert any((tmp_path / dataset).rglob("*"))


def test_imagenet_ilsvrc_layout_and_names(tmp_path: Path) -> None:
    root = write_imagenet(tmp_path, train_per_wnid=2, val_per_wnid=1)
    written = load_class_list(str(root / "class_list.txt"))
    shipped = load_class_list("imagenet10")
    assert [e.label for e in written] == [e.label for e in shipped]
    assert all(w.wnids == s.wnids[:1] for w, s in zip(written, shipped, strict=True))
    for entry in written:
        (wnid,) = entry.wnids
        train = sorted((root / "train" / wnid).iterdir())
        val = sorted((root / "val" / wnid).iterdir())
        assert len(train) == 2 and len(val) == 1
        assert all(re.fullmatch(rf"{wnid}_\d+\.JPEG", p.name) for p in train)
        assert re.fullmatch(r"ILSVRC2012_val_\d{8}\.JPEG", val[0].name)
        with Image.open(train[0]) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
    val_names = [p.name for p in (root / "val").rglob("*.JPEG")]
    assert len(val_names) == len(set(val_names)) == 10  # numbered across classes, like the real set


def test_imagenet_folders_layout(tmp_path: Path) -> None:
    root = write_imagenet(tmp_path, layout="folders", train_per_wnid=2, val_per_wnid=1)
    assert not (root / "train").exists()
    assert len(list((root / "n01514668").glob("n01514668_*.JPEG"))) == 3


def test_cifar10_pickles_have_real_keys_and_content(tmp_path: Path) -> None:
    root = write_cifar10(tmp_path, train_per_batch=10, test_images=10)
    folder = root / "cifar-10-batches-py"
    with open(folder / "data_batch_3", "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    assert set(batch) == {"batch_label", "labels", "data", "filenames"}
    assert batch["data"].shape == (10, 3072) and batch["data"].dtype == np.uint8
    with open(folder / "batches.meta", "rb") as f:
        assert pickle.load(f, encoding="latin1")["label_names"] == CIFAR10_LABELS
    dataset = CIFAR10WithoutChecksums(str(root), train=True)
    assert dataset.data.shape == (50, 32, 32, 3) and len(dataset.targets) == 50
    assert dataset.classes == CIFAR10_LABELS
    # the class colour is present in every image of the class (the shapes cover >= 35% of each side)
    for image, label in zip(dataset.data, dataset.targets, strict=True):
        colour = np.array(class_style(label)[0])
        assert (np.abs(image.astype(int) - colour).sum(axis=-1) < 60).sum() >= 9


def test_voc_layout_boxes_difficult_and_empty(tmp_path: Path) -> None:
    root = write_voc(tmp_path)
    assert set(VOC_FIXTURE_CLASSES) <= set(VOC_CLASSES)
    devkit = root / "VOCdevkit"
    for year, sets in (("2007", ("train", "val", "trainval", "test")), ("2012", ("train", "val", "trainval"))):
        for name in sets:
            ids = (devkit / f"VOC{year}" / "ImageSets" / "Main" / f"{name}.txt").read_text().split()
            assert ids
            for image_id in ids:
                assert (devkit / f"VOC{year}" / "JPEGImages" / f"{image_id}.jpg").is_file()
                assert (devkit / f"VOC{year}" / "Annotations" / f"{image_id}.xml").is_file()
    difficult = empty = 0
    for xml in devkit.rglob("*.xml"):
        tree = ET.parse(xml).getroot()
        objects = tree.findall("object")
        empty += not objects
        image = np.asarray(Image.open(xml.parent.parent / "JPEGImages" / tree.findtext("filename")))
        assert image.shape[:2] == (int(tree.findtext("size/height")), int(tree.findtext("size/width")))
        for obj in objects:
            difficult += obj.findtext("difficult") == "1"
            b = [int(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
            # 1-based inclusive indices: the box centre pixel carries the class colour
            colour = np.array(class_style(VOC_FIXTURE_CLASSES.index(obj.findtext("name")))[0])
            cy, cx = (b[1] - 1 + b[3]) // 2, (b[0] - 1 + b[2]) // 2
            assert np.abs(image[cy, cx].astype(int) - colour).sum() < 80, (xml, b)
    assert empty == 1
    assert difficult >= 2
