"""VOC DataModule on its fixture: torchvision's VOC reader, targets, SSD augmentation, errors."""

from __future__ import annotations

import shutil
from pathlib import Path
from xml.etree import ElementTree as ET

import lightning
import numpy as np
import pytest
import torch
from torch import nn

from datamodules.detection_collate import detection_collate
from datamodules.detection_transforms import SSDIoUCrop, SSDZoomOut, ssd_train_transform
from datamodules.fixtures import write_voc
from datamodules.image_io import UnreadableImageError
from datamodules.voc import VOC, VOC_CLASSES, VOCLayoutError
from datamodules.voc_eval import VOCMeanAveragePrecision


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_voc(tmp_path_factory.mktemp("voc"))


def make(root: Path, **kwargs) -> VOC:
    args = dict(image_size=64, batch_size=4, num_workers=0, pin_memory=False)
    return VOC(str(root), **{**args, **kwargs})


class TinyDetector(lightning.LightningModule):
    """Predicts which classes are present; 'detects' each ground-truth box with its class score."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 21)
        )
        self.map = VOCMeanAveragePrecision()
        self.batches: list[tuple[torch.Size, int]] = []

    @staticmethod
    def presence(targets: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        out = torch.zeros(len(targets), 21)
        for i, t in enumerate(targets):
            out[i, t["labels"]] = 1.0
        return out

    def training_step(self, batch, batch_idx):
        images, targets = batch
        self.batches.append((images.shape, len(targets)))
        loss = nn.functional.binary_cross_entropy_with_logits(self.net(images), self.presence(targets))
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        images, targets = batch
        scores = self.net(images).sigmoid()
        preds = [
            {"boxes": t["boxes"], "labels": t["labels"], "scores": scores[i, t["labels"]]}
            for i, t in enumerate(targets)
        ]
        self.map.update(preds, targets)

    def on_validation_epoch_end(self):
        self.log("val/map50", self.map.compute()["map50"])
        self.map.reset()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_fit_a_tiny_model(voc_root: Path) -> None:
    model = TinyDetector()
    trainer = lightning.Trainer(
        max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=2, val_check_interval=3,
    )  # fmt: skip
    trainer.fit(model, datamodule=make(voc_root))
    assert trainer.global_step == 3
    assert model.batches[0] == (torch.Size([4, 3, 64, 64]), 4)
    # every predicted box is a ground-truth box: each class's detections are all true positives
    assert trainer.callback_metrics["val/map50"].item() == pytest.approx(1.0)


def test_default_splits_are_07_12_trainval_and_07_test(voc_root: Path) -> None:
    dm = make(voc_root)
    dm.setup("fit")
    parts = dm.train_set.datasets
    assert [p.split for p in parts] == ["2007-trainval", "2012-trainval"]
    assert [p.split for p in dm.val_set.datasets] == ["2007-test"]
    # fixture: 12 + 10 trainval images, one VOC2012 annotation has no object -> skipped and counted
    assert len(dm.train_set) == 21 and VOC.empty_count(dm.train_set) == 1
    assert parts[1].empty_ids == ["2008_000001"]
    assert len(dm.val_set) == 10


def test_empty_annotation_is_kept_for_evaluation(voc_root: Path) -> None:
    dm = make(voc_root, val_splits=["2012-trainval"])
    dm.setup("validate")
    assert len(dm.val_set) == 10 and VOC.empty_count(dm.val_set) == 1
    empty = next(i for i, r in enumerate(dm.val_set.datasets[0].records) if len(r[2]) == 0)
    image, target = dm.val_set[empty]
    assert image.shape == (3, 64, 64) and target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


def test_eval_targets_match_the_xml(voc_root: Path) -> None:
    dm = make(voc_root, image_size=100)
    dm.setup("validate")
    dataset = dm.val_set.datasets[0]
    for index in range(len(dataset)):
        _, target = dataset[index]
        xml = ET.parse(dataset.annotations[index]).getroot()
        width, height = int(xml.findtext("size/width")), int(xml.findtext("size/height"))
        objects = xml.findall("object")
        assert target["labels"].dtype == torch.int64 and target["boxes"].dtype == torch.float32
        assert target["labels"].tolist() == [VOC_CLASSES.index(o.findtext("name")) + 1 for o in objects]
        assert target["difficult"].tolist() == [o.findtext("difficult") == "1" for o in objects]
        expected = [
            [(int(o.findtext("bndbox/xmin")) - 1) * 100 / width, (int(o.findtext("bndbox/ymin")) - 1) * 100 / height,
             int(o.findtext("bndbox/xmax")) * 100 / width, int(o.findtext("bndbox/ymax")) * 100 / height]
            for o in objects
        ]  # fmt: skip
        torch.testing.assert_close(target["boxes"], torch.tensor(expected).reshape(-1, 4), atol=1e-3, rtol=0)


def test_difficult_flags_survive_into_training_targets(voc_root: Path) -> None:
    dm = make(voc_root, augment=False)
    dm.setup("fit")
    flags = [bool(f) for d in dm.train_set.datasets for r in d.records for f in r[3]]
    assert any(flags) and not all(flags)


def test_augmented_fixture_boxes_stay_inside_the_image(voc_root: Path) -> None:
    dm = make(voc_root, image_size=96)
    dm.setup("fit")
    boxes = [dm.train_set[i][1]["boxes"] for _ in range(3) for i in range(len(dm.train_set))]
    every = torch.cat(boxes)
    assert len(every) > 30
    assert (every[:, 0] < every[:, 2]).all() and (every[:, 1] < every[:, 3]).all()
    assert every.min() >= 0 and every.max() <= 96


def test_full_ssd_pipeline_keeps_boxes_on_their_object() -> None:
    # a white rectangle on black: photometric changes are monotone and leave grey unchanged in hue, so the
    # object stays the brightest thing; the inside of every output box must be at that brightness.
    image = np.zeros((60, 90, 3), np.uint8)
    image[15:45, 20:70] = 255
    pipeline = ssd_train_transform(64)
    pipeline.set_random_seed(0)
    checked = 0
    for _ in range(40):
        out = pipeline(image=image, bboxes=np.array([[20.0, 15.0, 70.0, 45.0]]), labels=[1], difficult=[False])
        pixels = out["image"].numpy()
        for x0, y0, x1, y1 in np.asarray(out["bboxes"]):
            if x1 - x0 < 6 or y1 - y0 < 6:
                continue
            inside = pixels[:, int(y0) + 2 : int(y1) - 2, int(x0) + 2 : int(x1) - 2]
            assert inside.min() >= pixels.max() - 2 / 255
            checked += 1
    assert checked >= 20


def test_zoom_out_and_iou_crop_move_boxes_with_pixels() -> None:
    import albumentations as A

    image = np.zeros((50, 80, 3), np.uint8)
    image[10:30, 20:60] = 255
    params = A.BboxParams(format="pascal_voc", label_fields=["labels", "difficult"])
    for transform in (SSDZoomOut(p=1.0), SSDIoUCrop()):
        pipeline = A.Compose([transform], bbox_params=params, seed=3)
        for _ in range(10):
            out = pipeline(image=image, bboxes=np.array([[20.0, 10.0, 60.0, 30.0]]), labels=[1], difficult=[False])
            for x0, y0, x1, y1 in np.asarray(out["bboxes"]).round().astype(int):
                inside = out["image"][y0:y1, x0:x1]
                assert inside.size and inside.min() == 255  # the box holds only the white object
                if isinstance(transform, SSDZoomOut):
                    assert (out["image"] == 255).all(axis=-1).sum() == (x1 - x0) * (y1 - y0)


def test_training_pipeline_outputs_unit_float_images() -> None:
    image = np.full((40, 60, 3), 200, np.uint8)
    out = ssd_train_transform(32)(image=image, bboxes=np.array([[5.0, 5.0, 30.0, 30.0]]), labels=[1], difficult=[False])
    assert out["image"].shape == (3, 32, 32) and out["image"].dtype == torch.float32
    assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0


def test_collate_stacks_equal_images_and_keeps_targets() -> None:
    target = {"boxes": torch.zeros(2, 4), "labels": torch.ones(2, dtype=torch.int64)}
    images, targets = detection_collate([(torch.zeros(3, 8, 8), target), (torch.ones(3, 8, 8), target)])
    assert images.shape == (2, 3, 8, 8) and targets == [target, target]
    images, _ = detection_collate([(torch.zeros(3, 8, 8), target), (torch.ones(3, 8, 6), target)])
    assert isinstance(images, list) and len(images) == 2


def test_missing_root_and_missing_set_are_named(voc_root: Path, tmp_path: Path) -> None:
    with pytest.raises(VOCLayoutError, match=r"nowhere does not exist.*VOCdevkit/VOC<year>"):
        make(tmp_path / "nowhere").setup("fit")
    with pytest.raises(VOCLayoutError, match=r"VOC2012/ImageSets/Main/test.txt does not exist"):
        make(voc_root, val_splits=["2012-test"]).setup("validate")
    with pytest.raises(ValueError, match="YEAR-SET"):
        make(voc_root, train_splits=["trainval"])


def test_unreadable_image_names_the_file(voc_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "broken"
    shutil.copytree(voc_root, root)
    bad = root / "VOCdevkit" / "VOC2007" / "JPEGImages" / "000013.jpg"  # first test image
    bad.write_bytes(b"\xff\xd8 truncated")
    dm = make(root)
    dm.setup("validate")
    with pytest.raises(UnreadableImageError, match="000013.jpg"):
        dm.val_set[0]


def set_box(xml: Path, number: int, **values: int) -> str:
    """Rewrite box fields of object ``number`` (1-based) of a VOC XML file; return its class name."""
    tree = ET.parse(xml)
    obj = tree.getroot().findall("object")[number - 1]
    for key, value in values.items():
        obj.find(f"bndbox/{key}").text = str(value)
    tree.write(xml)
    return obj.findtext("name")


@pytest.fixture
def bad_boxes_root(voc_root: Path, tmp_path: Path) -> tuple[Path, list[tuple[Path, int, str]]]:
    """The fixture with two invalid boxes in VOC2007 trainval: x_max < x_min, and a box right of the image."""
    root = tmp_path / "bad_boxes"
    shutil.copytree(voc_root, root)
    annotations = root / "VOCdevkit" / "VOC2007" / "Annotations"
    first, second = annotations / "000002.xml", annotations / "000005.xml"
    xmin = int(ET.parse(first).getroot().findtext("object/bndbox/xmin"))
    bad = [(first, 1, set_box(first, 1, xmax=xmin - 3))]  # continuous width -2
    width = int(ET.parse(second).getroot().findtext("size/width"))
    bad.append((second, 1, set_box(second, 1, xmin=width + 5, xmax=width + 20)))
    return root, bad


def test_check_reports_invalid_boxes_by_file_and_object(bad_boxes_root, capsys) -> None:
    from datamodules.check import main

    root, bad = bad_boxes_root
    assert main([str(root), "--dataset", "voc", "--workers", "0"]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if line]
    assert len(lines) == 2  # exactly the two corrupted objects
    (first, _, name1), (second, _, name2) = bad
    assert lines[0].startswith(f"{first}: invalid box: object 1 ({name1}): xmax") and "has no width" in lines[0]
    assert lines[1].startswith(f"{second}: invalid box: object 1 ({name2}): box") and "outside the" in lines[1]


def test_training_names_the_file_and_object_of_an_invalid_box(bad_boxes_root) -> None:
    from datamodules.voc import VOCAnnotationError

    root, [(first, _, name), _] = bad_boxes_root
    with pytest.raises(VOCAnnotationError, match=rf"{first}: invalid box: object 1 \({name}\): xmax"):
        make(root, train_splits=["2007-trainval"]).setup("fit")


def test_skip_invalid_boxes_leaves_those_objects_out_and_counts_them(bad_boxes_root, voc_root: Path) -> None:
    root, bad = bad_boxes_root
    dm = make(root, train_splits=["2007-trainval"], skip_invalid_boxes=True)
    dm.setup("fit")
    clean = make(voc_root, train_splits=["2007-trainval"])
    clean.setup("fit")
    assert VOC.invalid_box_count(dm.train_set) == 2 and VOC.invalid_box_count(clean.train_set) == 0
    dataset, reference = dm.train_set.datasets[0], clean.train_set.datasets[0]
    assert [(str(o.source), o.number, o.name) for o in dataset.invalid_objects] == [(str(p), n, c) for p, n, c in bad]
    n_objects = lambda d: sum(len(r[2]) for r in d.records)  # noqa: E731
    assert n_objects(dataset) == n_objects(reference) - 2
    for index in range(len(dataset)):  # albumentations sees no invalid box
        dataset[index]


def test_a_box_outside_the_decoded_image_is_named_when_loaded(voc_root: Path, tmp_path: Path) -> None:
    # the XML's <size> says 1000 wide, so parsing accepts the box; the real image is narrower
    from datamodules.voc import VOCAnnotationError

    root = tmp_path / "lying_size"
    shutil.copytree(voc_root, root)
    xml = root / "VOCdevkit" / "VOC2007" / "Annotations" / "000013.xml"  # first test image
    tree = ET.parse(xml)
    tree.getroot().find("size/width").text = "1000"
    tree.write(xml)
    name = set_box(xml, 1, xmin=900, xmax=950)
    dm = make(root)
    dm.setup("validate")
    with pytest.raises(VOCAnnotationError, match=rf"{xml}: invalid box: object 1: box \(899, .* lies outside the"):
        dm.val_set[0]
    skipping = make(root, skip_invalid_boxes=True)
    skipping.setup("validate")
    _, target = skipping.val_set[0]
    objects = ET.parse(xml).getroot().findall("object")
    assert objects[0].findtext("name") == name and len(target["labels"]) == len(objects) - 1


def test_a_one_pixel_wide_box_is_valid(voc_root: Path, tmp_path: Path) -> None:
    # VOC boxes are inclusive: xmax == xmin is one pixel wide (continuous [xmin - 1, xmax]), not an error
    root = tmp_path / "thin"
    shutil.copytree(voc_root, root)
    xml = root / "VOCdevkit" / "VOC2007" / "Annotations" / "000001.xml"
    xmin = int(ET.parse(xml).getroot().findtext("object/bndbox/xmin"))
    set_box(xml, 1, xmax=xmin)
    dm = make(root, train_splits=["2007-trainval"], augment=False)
    dm.setup("fit")
    _, target = dm.train_set[0]
    assert VOC.invalid_box_count(dm.train_set) == 0 and len(target["boxes"]) >= 1
