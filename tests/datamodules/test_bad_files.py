"""Bad files in a dataset (issue 7): found before a run by `python -m datamodules.check`, named when
training meets them, and left out (counted, never a zero image) when the user opts in."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from datamodules.check import main as check_main
from datamodules.check import scan
from datamodules.fixtures import write_cifar10, write_imagenet, write_voc
from datamodules.image_io import UnreadableImageError
from datamodules.imagenet_subset import ImageNetSubset
from datamodules.voc import VOC


@pytest.fixture(scope="module")
def imagenet_with_a_truncated_jpeg(tmp_path_factory) -> tuple[Path, Path]:
    root = write_imagenet(tmp_path_factory.mktemp("imagenet"), train_per_wnid=2, val_per_wnid=1, image_size=(24, 32))
    broken = sorted((root / "train").glob("*/*.JPEG"))[0]
    broken.write_bytes(broken.read_bytes()[:200])  # a download cut short
    return root, broken


def datamodule(root: Path, **kwargs) -> ImageNetSubset:
    defaults = dict(
        class_list=str(root / "class_list.txt"), image_size=16, batch_size=4, num_workers=0, pin_memory=False
    )
    return ImageNetSubset(str(root), **{**defaults, **kwargs})


def train_items(dm: ImageNetSubset) -> list[tuple[torch.Tensor, int]]:
    dm.setup("fit")
    return [
        (image, int(label))
        for images, labels in dm.train_dataloader()
        for image, label in zip(images, labels, strict=True)
    ]


def test_a_truncated_jpeg_stops_training_naming_the_file_by_default(imagenet_with_a_truncated_jpeg):
    root, broken = imagenet_with_a_truncated_jpeg
    with pytest.raises(UnreadableImageError, match=broken.name):
        train_items(datamodule(root))


def test_skip_unreadable_leaves_it_out_and_counts_it(imagenet_with_a_truncated_jpeg):
    root, broken = imagenet_with_a_truncated_jpeg
    dm = datamodule(root, skip_unreadable=True, num_workers=1, persistent_workers=False)
    items = train_items(dm)
    assert dm.skipped_images == {"train": 1, "val": 0}  # counted in the worker process
    # 20 training images in 5 batches of 4: one batch comes out with 3; none is a zero image
    assert len(items) == 19 and all(image.amax() > 0 for image, _ in items)
    readable = [dm.train_set[i] for i in range(len(dm.train_set))]
    assert sum(item is None for item in readable) == 1
    assert dm.train_set.samples[[item is None for item in readable].index(True)].path == broken


def test_check_lists_unreadable_images_malformed_xml_and_bad_batches(
    imagenet_with_a_truncated_jpeg, tmp_path, capsys
) -> None:
    root, broken = imagenet_with_a_truncated_jpeg
    not_an_image = root / "val" / broken.parent.name / "notes.jpg"
    not_an_image.write_text("not an image")
    try:
        checked, problems = scan(root, "imagenet", workers=2, progress=False)
    finally:
        not_an_image.unlink()
    assert checked == 31 and sorted(p.path for p in problems) == sorted([str(broken), str(not_an_image)])

    voc = write_voc(tmp_path / "voc", trainval_2007=3, test_2007=2, trainval_2012=2, image_size=(40, 48))
    bad_xml = sorted((voc / "VOCdevkit" / "VOC2007" / "Annotations").glob("*.xml"))[0]
    bad_xml.write_text(bad_xml.read_text().replace("</name>", "</nam>", 1))
    (voc / "VOCdevkit" / "VOC2012" / "JPEGImages" / "2008_000001.jpg").unlink()
    cifar = write_cifar10(tmp_path / "cifar", train_per_batch=2, test_images=2)
    (cifar / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x04 truncated")

    out = tmp_path / "problems.txt"
    assert check_main([str(voc), "--dataset", "voc", "--workers", "0", "--output", str(out)]) == 1
    printed = capsys.readouterr().out
    assert f"{bad_xml}: malformed XML: mismatched tag" in printed
    assert "2008_000001.jpg: missing (listed in" in printed
    assert str(bad_xml) in out.read_text().splitlines()
    assert check_main([str(cifar), "--dataset", "cifar10", "--workers", "0"]) == 1
    assert "data_batch_3: not a CIFAR-10 batch" in capsys.readouterr().out
    shutil.rmtree(cifar)
    with pytest.raises(SystemExit):
        check_main([str(cifar), "--dataset", "cifar10"])
    assert "does not exist" in capsys.readouterr().err


def test_malformed_voc_xml_is_named_when_the_datamodule_reads_it(tmp_path):
    voc = write_voc(tmp_path / "voc", trainval_2007=2, test_2007=2, trainval_2012=2, image_size=(40, 48))
    bad_xml = sorted((voc / "VOCdevkit" / "VOC2007" / "Annotations").glob("*.xml"))[0]
    bad_xml.write_text(bad_xml.read_text().replace("</name>", "</nam>", 1))
    dm = VOC(str(voc), train_splits=["2007-trainval"], val_splits=["2007-test"], num_workers=0)
    with pytest.raises(ValueError, match=rf"{bad_xml}: malformed XML: mismatched tag: line \d+"):
        dm.setup("fit")
