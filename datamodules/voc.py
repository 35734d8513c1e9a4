"""PASCAL VOC detection (VOC2007+2012 trainval / VOC2007 test) as a LightningDataModule.

Layout (the official tars extracted into one root)::

    root/VOCdevkit/VOC2007/{Annotations/*.xml, JPEGImages/*.jpg, ImageSets/Main/{trainval,test}.txt}
    root/VOCdevkit/VOC2012/{Annotations/*.xml, JPEGImages/*.jpg, ImageSets/Main/trainval.txt}

Index files and XML are read through ``torchvision.datasets.VOCDetection`` (its ``ImageSets`` reading
and its ``parse_voc_xml``); images through ``datamodules.image_io.load_rgb`` so an unreadable file is
named. All annotations of a split are parsed once, when the dataset is built.

Targets follow torchvision's detection format: ``{"boxes": float32 (N, 4) x_min, y_min, x_max, y_max
in pixels of the resized image, "labels": int64 (N,) in 1..20 (0 is the background), "difficult": bool
(N,)}``. VOC boxes are 1-based inclusive pixel indices; they are converted to continuous coordinates
(``x_min - 1, y_min - 1, x_max, y_max``). ``difficult`` objects are kept and flagged: the VOC
evaluation ignores them; a training loss may skip them.

A box with no width or height (``xmax < xmin`` in the XML's inclusive pixels), not finite, or wholly outside
the image is an error naming the annotation file and the object (``python -m datamodules.check ROOT
--dataset voc`` lists every one); ``skip_invalid_boxes`` leaves such objects out instead, logged and counted.

Images whose annotation has no object are skipped in training sets (they teach a detector nothing
and break some matchers) and kept in evaluation sets (false positives on them count); either way
they are counted in ``dataset.empty_count`` and reported.

Splits default to the SSD / shared-CNN paper protocol (train 07+12 trainval, test 07 test); the
compressed-recognition paper uses VOC2007 only: ``train_splits: ["2007-train"]``,
``val_splits: ["2007-val"]``, ``test_splits: ["2007-test"]``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import ParseError

import numpy as np
import torch
from lightning import LightningDataModule
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from torchvision.datasets import VOCDetection

try:
    from defusedxml.ElementTree import parse as parse_xml
except ImportError:  # torchvision does the same
    from xml.etree.ElementTree import parse as parse_xml

from datamodules.detection_collate import detection_collate
from datamodules.image_io import load_rgb
from datamodules.loaders import recognition_loader

Pipeline = Callable[..., dict]  # an albumentations pipeline (imported where one is built: seconds of start-up)

log = logging.getLogger(__name__)

VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip

VOC_LABELS = {name: index + 1 for index, name in enumerate(VOC_CLASSES)}  # 0 = background

LAYOUT_HELP = (
    "expected ROOT/VOCdevkit/VOC<year>/{Annotations/*.xml, JPEGImages/*.jpg, ImageSets/Main/<set>.txt}: "
    "extract VOCtrainval_06-Nov-2007.tar, VOCtest_06-Nov-2007.tar and VOCtrainval_11-May-2012.tar into ROOT"
)


class VOCLayoutError(FileNotFoundError):
    """The VOC root lacks a folder or index file; the message names it and the expected layout."""


class VOCAnnotationError(ValueError):
    """An annotation file is malformed XML or lacks a field; the message names the file."""


@dataclass(frozen=True)
class InvalidObject:
    """An annotated object whose box cannot be used: where it is (file, 1-based object number) and why."""

    source: str
    number: int
    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: object {self.number} ({self.name}): {self.reason}"


def read_annotation(
    path: str | Path, skipped: list[InvalidObject] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes, labels and difficult flags of one VOC XML file (see :func:`annotation_to_arrays`).

    Raises:
        VOCAnnotationError: the file is not well-formed XML, an object lacks a name or a numeric box, or
            (unless ``skipped`` collects them) a box is invalid; the message names the file and the objects.
    """
    try:
        parsed = VOCDetection.parse_voc_xml(parse_xml(path).getroot())
        return annotation_to_arrays(parsed, str(path), skipped)
    except ParseError as err:
        raise VOCAnnotationError(f"{path}: malformed XML: {err}") from err
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, VOCAnnotationError):
            raise
        detail = f"missing field {err}" if isinstance(err, KeyError) else str(err)
        raise VOCAnnotationError(f"{path}: bad annotation: {detail}") from err


def parse_split(split: str) -> tuple[str, str]:
    """``"2007-trainval"`` → ``("2007", "trainval")``."""
    year, _, image_set = split.partition("-")
    if not year or not image_set:
        raise ValueError(f"a VOC split is 'YEAR-SET' like '2007-trainval' or '2007-test', got {split!r}")
    return year, image_set


def box_problem(xmin: float, ymin: float, xmax: float, ymax: float, size: tuple[float, float] | None) -> str | None:
    """Why a VOC box (1-based inclusive pixel indices, as in the XML) cannot be trained on, or ``None``.

    Its continuous extent is ``[xmin - 1, xmax] × [ymin - 1, ymax]``: a box needs ``xmax > xmin - 1`` and
    ``ymax > ymin - 1`` (``xmax == xmin`` is a one-pixel-wide box, valid), finite values, and, when the
    image ``size`` (width, height) is known, some part inside the image (boxes are clipped to it; one
    wholly outside would be clipped to nothing). Such boxes otherwise stop training inside albumentations
    with "x_max is less than or equal to x_min" and no file named.
    """
    values = np.array([xmin, ymin, xmax, ymax], dtype=np.float64)
    if not np.isfinite(values).all():
        return f"box ({xmin}, {ymin}, {xmax}, {ymax}) is not finite"
    for axis, low, high in (("x", xmin, xmax), ("y", ymin, ymax)):
        if high <= low - 1:
            return f"{axis}max {high:g} < {axis}min {low:g}: the box has no {'width' if axis == 'x' else 'height'}"
    if size is not None:
        width, height = size
        if xmin - 1 >= width or ymin - 1 >= height or xmax <= 0 or ymax <= 0:
            return f"box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) lies outside the {width:g}×{height:g} image"
    return None


def _annotated_size(annotation: dict[str, Any]) -> tuple[float, float] | None:
    try:
        size = annotation["annotation"]["size"]
        width, height = float(size["width"]), float(size["height"])
    except (KeyError, TypeError, ValueError):
        return None
    return (width, height) if width > 0 and height > 0 else None


def annotation_to_arrays(
    annotation: dict[str, Any], source: str, skipped: list[InvalidObject] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (continuous pixels), labels (1..20) and difficult flags from a parsed VOC annotation.

    ``annotation`` is ``VOCDetection.parse_voc_xml``'s output. Raises ``ValueError`` naming ``source`` for
    an unknown class name. Objects whose box is invalid (:func:`box_problem`, with the ``<size>`` of the
    annotation) raise a :class:`VOCAnnotationError` naming ``source`` and every such object; with a
    ``skipped`` list they are left out and appended to it instead.
    """
    objects = annotation["annotation"].get("object", [])
    if isinstance(objects, dict):
        objects = [objects]
    size = _annotated_size(annotation)
    boxes, labels, difficult, invalid = [], [], [], []
    for number, obj in enumerate(objects, start=1):
        name = obj["name"].strip()
        if name not in VOC_LABELS:
            raise VOCAnnotationError(f"{source}: unknown VOC class {name!r}")
        box = obj["bndbox"]
        x0, y0, x1, y1 = (float(box[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
        problem = box_problem(x0, y0, x1, y1, size)
        if problem is not None:
            invalid.append(InvalidObject(source, number, name, problem))
            continue
        boxes.append([x0 - 1.0, y0 - 1.0, x1, y1])
        labels.append(VOC_LABELS[name])
        difficult.append(str(obj.get("difficult", "0")).strip() == "1")
    if invalid and skipped is None:
        details = "; ".join(f"object {o.number} ({o.name}): {o.reason}" for o in invalid)
        raise VOCAnnotationError(
            f"{source}: invalid box: {details} (VOC(skip_invalid_boxes=True) leaves such objects out)"
        )
    if skipped is not None:
        skipped.extend(invalid)
    return (
        np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray(labels, dtype=np.int64),
        np.asarray(difficult, dtype=bool),
    )


class VOCDetectionDataset(VOCDetection):
    """One VOC year and image set, with targets in torchvision's detection format.

    Args:
        root: Folder holding ``VOCdevkit/``.
        year: ``"2007"`` … ``"2012"``.
        image_set: ``"train"``, ``"val"``, ``"trainval"`` (or ``"test"`` for 2007).
        transform: Bbox-aware albumentations pipeline (``detection_transforms``).
        skip_empty: Drop images whose annotation has no object (counted in ``empty_count``).
        skip_invalid_boxes: Leave out objects whose box is invalid (:func:`box_problem`: no width or height,
            not finite, or wholly outside the image), listed in ``invalid_objects`` and logged; an image left
            with no object then counts as empty. Otherwise such a box is an error naming the file and object:
            when the dataset is built, or, for a box outside the decoded image's real size, when it is loaded.
    """

    def __init__(
        self,
        root: str,
        year: str,
        image_set: str,
        transform: Pipeline,
        skip_empty: bool,
        skip_invalid_boxes: bool = False,
    ) -> None:
        base = Path(root).expanduser() / "VOCdevkit" / f"VOC{year}"
        for required in (base / "Annotations", base / "JPEGImages", base / "ImageSets" / "Main" / f"{image_set}.txt"):
            if not required.exists():
                raise VOCLayoutError(f"VOC {year} {image_set}: {required} does not exist; {LAYOUT_HELP}")
        super().__init__(str(Path(root).expanduser()), year=year, image_set=image_set, download=False)
        self.transform = transform
        self.split = f"{year}-{image_set}"
        self.skip_invalid_boxes = skip_invalid_boxes
        records = []
        self.record_sources: list[tuple[str, np.ndarray]] = []  # per record: annotation file, object numbers
        self.empty_ids: list[str] = []
        self.invalid_objects: list[InvalidObject] = []
        for image_path, annotation_path in zip(self.images, self.annotations, strict=True):
            if not Path(annotation_path).is_file():
                raise VOCLayoutError(f"VOC {year} {image_set}: annotation {annotation_path} is missing")
            skipped: list[InvalidObject] | None = [] if skip_invalid_boxes else None
            boxes, labels, difficult = read_annotation(annotation_path, skipped)
            if skipped:
                self.invalid_objects += skipped
            if len(labels) == 0:
                self.empty_ids.append(Path(annotation_path).stem)
                if skip_empty:
                    continue
            dropped = {o.number for o in skipped or []}
            numbers = [n for n in range(1, len(labels) + len(dropped) + 1) if n not in dropped]
            records.append((image_path, boxes, labels, difficult))
            self.record_sources.append((annotation_path, np.asarray(numbers, dtype=np.int64)))
        self.records = records
        self.image_loader: Callable[[str], np.ndarray] = load_rgb  # swapped for decoded images by some methods
        self.empty_count = len(self.empty_ids)
        if self.empty_count:
            action = "skipped" if skip_empty else "kept"
            log.warning("VOC %s: %d annotation(s) with no object %s", self.split, self.empty_count, action)
        if self.invalid_objects:
            log.warning(
                "VOC %s: %d object(s) with an invalid box left out (skip_invalid_boxes), e.g. %s",
                self.split, len(self.invalid_objects), self.invalid_objects[0],
            )  # fmt: skip

    def __len__(self) -> int:
        return len(self.records)

    def source_paths(self) -> list[Path]:
        """The source image file of each item, in order (their sizes are the data actually stored)."""
        return [Path(record[0]) for record in self.records]

    def _inside_image(self, index: int, boxes: np.ndarray, width: int, height: int) -> np.ndarray:
        """Which boxes keep an area once clipped to the decoded ``width`` × ``height`` image; the others are an
        error naming the annotation file and object, or (``skip_invalid_boxes``) logged and left out."""
        clipped = np.clip(boxes, 0, [width, height, width, height])
        keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        if keep.all():
            return keep
        source, numbers = self.record_sources[index]
        outside = [
            f"object {numbers[i]}: box ({', '.join(f'{v:g}' for v in boxes[i])}) lies outside the {width}×{height} "
            "image"
            for i in np.flatnonzero(~keep)
        ]  # fmt: skip
        if not self.skip_invalid_boxes:
            raise VOCAnnotationError(
                f"{source}: invalid box: {'; '.join(outside)} (VOC(skip_invalid_boxes=True) leaves such objects out)"
            )
        log.warning("VOC %s: %s: left out %s", self.split, source, "; ".join(outside))
        return keep

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image_path, boxes, labels, difficult = self.records[index]
        image = self.image_loader(image_path)
        height, width = image.shape[:2]
        keep = self._inside_image(index, boxes, width, height)
        boxes = np.clip(boxes[keep], 0, [width, height, width, height])
        out = self.transform(image=image, bboxes=boxes, labels=labels[keep], difficult=difficult[keep])
        target = {
            "boxes": torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(out["labels"], dtype=np.int64).reshape(-1)),
            "difficult": torch.as_tensor(np.asarray(out["difficult"], dtype=bool).reshape(-1)),
        }
        return out["image"], target


class VOC(LightningDataModule):
    """PASCAL VOC detection with SSD augmentation; batches ``(images (B, 3, S, S), list of targets)``.

    Args:
        root: Folder holding ``VOCdevkit/VOC2007`` and ``VOCdevkit/VOC2012``.
        train_splits: ``YEAR-SET`` image sets concatenated for training (SSD protocol: 07+12 trainval).
        val_splits: Image sets for validation (default: VOC2007 test, the number papers report).
        test_splits: Image sets for testing.
        image_size: Side of the square network input (300 for SSD300; 224 for the shared-CNN SSD224).
        augment: SSD augmentation for training (otherwise only the resize).
        batch_size: Images per batch (per device).
        num_workers: DataLoader worker processes.
        seed: Kept for a uniform interface and saved in the config; the splits are the official ones.
        pin_memory: Pin batches in page-locked memory.
        persistent_workers: Keep workers alive between epochs (only used when ``num_workers > 0``).
        skip_invalid_boxes: Leave out objects whose box has no width or height, is not finite or lies wholly
            outside the image (logged with file and object, counted by :meth:`invalid_box_count`); by default
            such a box is an error naming the annotation file and object, raised when the dataset is built.
            ``python -m datamodules.check ROOT --dataset voc`` lists them all.
    """

    def __init__(
        self,
        root: str,
        train_splits: Sequence[str] = ("2007-trainval", "2012-trainval"),
        val_splits: Sequence[str] = ("2007-test",),
        test_splits: Sequence[str] = ("2007-test",),
        image_size: int = 300,
        augment: bool = True,
        batch_size: int = 32,
        num_workers: int = 4,
        seed: int = 0,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        skip_invalid_boxes: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        for split in (*train_splits, *val_splits, *test_splits):
            parse_split(split)
        self.root = root
        self.train_splits = list(train_splits)
        self.val_splits = list(val_splits)
        self.test_splits = list(test_splits)
        self.image_size = image_size
        self.augment = augment
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.skip_invalid_boxes = skip_invalid_boxes
        self.num_classes = len(VOC_CLASSES) + 1  # with the background
        self.class_names = ["background", *VOC_CLASSES]
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def _concat(self, splits: list[str], train: bool) -> ConcatDataset:
        from datamodules.detection_transforms import detection_eval_transform, ssd_train_transform  # albumentations

        if not Path(self.root).expanduser().is_dir():
            raise VOCLayoutError(f"VOC root {self.root} does not exist; {LAYOUT_HELP}")
        parts = []
        for split in splits:
            year, image_set = parse_split(split)
            transform = (
                ssd_train_transform(self.image_size)
                if train and self.augment
                else detection_eval_transform(self.image_size)
            )
            parts.append(
                VOCDetectionDataset(
                    self.root, year, image_set, transform, skip_empty=train, skip_invalid_boxes=self.skip_invalid_boxes
                )
            )
        return ConcatDataset(parts)

    @staticmethod
    def empty_count(dataset: Dataset | None) -> int:
        """Images with no object found in the annotations of ``dataset`` (skipped or kept)."""
        if not isinstance(dataset, ConcatDataset):
            return 0
        return sum(getattr(d, "empty_count", 0) for d in dataset.datasets)

    @staticmethod
    def invalid_box_count(dataset: Dataset | None) -> int:
        """Objects left out of ``dataset`` for an invalid box when it was built (``skip_invalid_boxes``)."""
        if not isinstance(dataset, ConcatDataset):
            return 0
        return sum(len(getattr(d, "invalid_objects", [])) for d in dataset.datasets)

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None) and self.train_set is None:
            self.train_set = self._concat(self.train_splits, train=True)
        if stage in ("fit", "validate", None) and self.val_set is None:
            self.val_set = self._concat(self.val_splits, train=False)
        if stage in ("test", "predict", None) and self.test_set is None:
            self.test_set = self._concat(self.test_splits, train=False)

    def _loader(self, dataset: Dataset | None, train: bool) -> DataLoader:
        return recognition_loader(
            dataset,
            train=train,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            collate_fn=detection_collate,
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            self.setup("validate")
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            self.setup("test")
        return self._loader(self.test_set, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
