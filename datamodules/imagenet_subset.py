"""ImageNet subsets (ImageNet-10, ImageNet-100, any class list) as a LightningDataModule.

Two on-disk layouts:

- ``layout="ilsvrc"`` (ILSVRC-2012)::

      root/train/<wnid>/<wnid>_<n>.JPEG
      root/val/<wnid>/ILSVRC2012_val_<n>.JPEG

  The validation images ship flat (``val/ILSVRC2012_val_00000001.JPEG``); they must first be moved
  into one folder per wnid (see ``FLAT_VAL_HELP``).
- ``layout="folders"`` (ImageNet-21k / fall 2011, or any "one folder per synset" tree)::

      root/<wnid>/*.JPEG

  There is no official split: the validation images of each class are drawn first (seeded), the
  training images from the rest, so the two never overlap.

A class list (``datamodules/class_list.py``) selects the classes; one class may pool several wnids.
Per-class caps (``train_per_class=750, val_per_class=50`` for the ImageNet-10 paper) take a seeded
random sample of each class's pooled images: the same seed gives the same files on every machine, and
a class's sample does not depend on which other classes are in the list.

Batches are ``(images, labels)``: ``float32 (B, 3, H, W)`` in [0, 1] (no mean/std normalisation; the
models normalise themselves) and ``int64 (B,)``. ``mode="patches"`` trains on random ``patch_size``
crops (the recurrent compressor) and still returns the labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from datamodules.class_list import ClassEntry, load_class_list
from datamodules.classification_transforms import (
    eval_transform,
    patch_transform,
    plain_resize_transform,
    train_transform,
)
from datamodules.image_io import (
    IMAGE_EXTENSIONS,
    SkippedImages,
    UnreadableImageError,
    collate_readable,
    list_images,
    load_rgb,
)
from datamodules.loaders import recognition_loader

Layout = Literal["ilsvrc", "folders"]
Mode = Literal["classify", "patches"]

Pipeline = Callable[..., dict]  # an albumentations pipeline (imported where one is built: seconds of start-up)

LAYOUT_HELP = {
    "ilsvrc": (
        "expected the ILSVRC-2012 layout: ROOT/train/<wnid>/*.JPEG and ROOT/val/<wnid>/*.JPEG "
        "(download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org)"
    ),
    "folders": "expected one folder per synset: ROOT/<wnid>/*.JPEG (the ImageNet-21k layout)",
}

FLAT_VAL_HELP = (
    "ILSVRC-2012 validation images ship in one flat folder; arrange them into val/<wnid>/ first. "
    "Either move the flat folder aside, put ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz in "
    "ROOT and run `python -c \"import torchvision; torchvision.datasets.ImageNet('ROOT', split='val')\"` "
    "(torchvision extracts the archive into ROOT/val/<wnid>/ using the devkit's ground truth), or move "
    "each file into the folder of the wnid its id maps to in the devkit ground truth "
    "(ILSVRC2012_validation_ground_truth.txt with meta.mat, or Kaggle's LOC_val_solution.csv)."
)


class ImageNetLayoutError(FileNotFoundError):
    """The dataset root does not have the expected layout; the message names the path and layout."""


class EmptyClassError(ValueError):
    """A class of the class list has no images; the message names the class, its wnids and folder."""


@dataclass(frozen=True)
class Sample:
    """One image file and its class index."""

    path: Path
    label: int


def _require_dir(path: Path, layout: Layout, what: str) -> None:
    if not path.is_dir():
        raise ImageNetLayoutError(f"{what} {path} does not exist; {LAYOUT_HELP[layout]}")


def _check_not_flat(val_dir: Path) -> None:
    flat = [p for p in val_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if flat:
        raise ImageNetLayoutError(
            f"{val_dir} holds {len(flat)} images directly (e.g. {flat[0].name}) instead of val/<wnid>/ "
            f"folders. {FLAT_VAL_HELP}"
        )


def pooled_images(folder: Path, classes: Sequence[ClassEntry]) -> list[list[Path]]:
    """For each class, the sorted image files of all its wnid folders under ``folder``.

    Raises:
        ImageNetLayoutError: some wnids of the list have no folder; all missing ones are named.
    """
    missing = [(c.label, w) for c in classes for w in c.wnids if not (folder / w).is_dir()]
    if missing:
        shown = ", ".join(f"{w} ({label})" for label, w in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise ImageNetLayoutError(
            f"{len(missing)} wnid(s) of the class list have no folder in {folder}: {shown}{more}. "
            "Check the class list against the dataset root (a list written for another dataset?)."
        )
    return [sorted(p for w in c.wnids for p in list_images(folder / w)) for c in classes]


def _draw(paths: list[Path], count: int | None, rng: np.random.Generator) -> list[Path]:
    if count is None or count >= len(paths):
        return list(paths)
    chosen = rng.permutation(len(paths))[:count]
    return sorted(paths[i] for i in chosen)


def _require_images(paths: list[Path], entry: ClassEntry, folder: Path, split: str) -> None:
    if not paths:
        raise EmptyClassError(
            f"class {entry.label!r} ({', '.join(entry.wnids)}) has no {split} images under {folder} "
            f"(looked for {', '.join(IMAGE_EXTENSIONS)})"
        )


def build_splits(
    root: str | Path,
    classes: Sequence[ClassEntry],
    layout: Layout = "ilsvrc",
    train_per_class: int | None = None,
    val_per_class: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> tuple[list[Sample], list[Sample]]:
    """The (train, val) samples of a subset; deterministic in ``seed``. See the module docstring."""
    root = Path(root).expanduser()
    _require_dir(root, layout, "ImageNet root")
    train: list[Sample] = []
    val: list[Sample] = []
    if layout == "ilsvrc":
        train_dir, val_dir = root / "train", root / "val"
        _require_dir(train_dir, layout, "training folder")
        _require_dir(val_dir, layout, "validation folder")
        _check_not_flat(val_dir)
        train_pools = pooled_images(train_dir, classes)
        val_pools = pooled_images(val_dir, classes)
        for index, entry in enumerate(classes):
            _require_images(train_pools[index], entry, train_dir, "training")
            _require_images(val_pools[index], entry, val_dir, "validation")
            picked_train = _draw(train_pools[index], train_per_class, np.random.default_rng([seed, index, 0]))
            picked_val = _draw(val_pools[index], val_per_class, np.random.default_rng([seed, index, 1]))
            train += [Sample(p, index) for p in picked_train]
            val += [Sample(p, index) for p in picked_val]
    elif layout == "folders":
        pools = pooled_images(root, classes)
        for index, entry in enumerate(classes):
            pool = pools[index]
            _require_images(pool, entry, root, "")
            order = [pool[i] for i in np.random.default_rng([seed, index, 2]).permutation(len(pool))]
            n_val = val_per_class if val_per_class is not None else max(1, round(val_fraction * len(pool)))
            n_val = min(n_val, len(pool) - 1)
            if n_val < 1:
                raise EmptyClassError(
                    f"class {entry.label!r} ({', '.join(entry.wnids)}) has {len(pool)} image(s) under {root}: "
                    "too few to split into training and validation images"
                )
            rest = order[n_val:]
            picked_train = rest if train_per_class is None else rest[:train_per_class]
            train += [Sample(p, index) for p in sorted(picked_train)]
            val += [Sample(p, index) for p in sorted(order[:n_val])]
    else:
        raise ValueError(f"layout must be 'ilsvrc' or 'folders', got {layout!r}")
    return train, val


class ImageNetSubsetDataset(Dataset):
    """Image files with class indices, read with ``load_rgb`` and passed through an albumentations pipeline.

    Items are ``(image float32 (3, H, W) in [0, 1], label int)``. An unreadable file raises
    ``UnreadableImageError`` naming it (never a silent zero image); with ``skipped`` given, the item is
    ``None`` instead, the file is logged and counted there, and :func:`collate_readable` leaves it out.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Pipeline,
        class_names: Sequence[str],
        skipped: SkippedImages | None = None,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.class_names = list(class_names)
        self.skipped = skipped
        self.image_loader: Callable[[Path], np.ndarray] = load_rgb  # swapped for decoded images by some methods

    def source_paths(self) -> list[Path]:
        """The source image file of each item, in order (their sizes are the data actually stored)."""
        return [sample.path for sample in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        sample = self.samples[index]
        try:
            pixels = self.image_loader(sample.path)
        except UnreadableImageError as err:
            if self.skipped is None:
                raise
            self.skipped.record(sample.path, err)
            return None
        return self.transform(image=pixels)["image"], sample.label


class ImageNetSubset(LightningDataModule):
    """ImageNet classes chosen by a class list, from the ILSVRC-2012 or the ImageNet-21k layout.

    The validation split also serves ``test`` and ``predict`` (ILSVRC test labels are not public).
    ``num_classes`` and ``class_names`` are known right after construction (the list is parsed then;
    the dataset root is read in ``setup``).

    Args:
        root: Dataset root. ``layout="ilsvrc"``: holds ``train/<wnid>/`` and ``val/<wnid>/``.
            ``layout="folders"``: holds one ``<wnid>/`` folder per synset.
        class_list: A shipped list name (``"imagenet10"``, ``"imagenet100"``) or the path of a class list
            file (``label wnid[,wnid...]`` per line).
        layout: ``"ilsvrc"`` (ILSVRC-2012 train/val folders) or ``"folders"`` (one folder per synset,
            split into train/val here).
        train_per_class: At most this many training images per class, a seeded random sample (the
            ImageNet-10 paper: 750). ``None`` keeps all.
        val_per_class: At most this many validation images per class (the ImageNet-10 paper: 50).
            ``None`` keeps all (``ilsvrc``) or uses ``val_fraction`` (``folders``).
        val_fraction: ``folders`` layout only, when ``val_per_class`` is ``None``: the fraction of each
            class held out for validation.
        mode: ``"classify"``: random-resized crops for training, resize + centre crop for evaluation.
            ``"patches"``: random ``patch_size`` crops for training (the recurrent compressor);
            evaluation as in ``classify``.
        image_size: Side of the square training crops (``classify``) and of the evaluation crops.
        eval_resize: ``"crop"``: shorter side to ``image_size / 0.875``, centre crop (torchvision's);
            ``"plain"``: resize to ``image_size`` squared, aspect not kept (Hiraga et al.'s eq. 5–6).
        patch_size: Side of the training patches in ``patches`` mode (32 in Toderici et al. 2017).
        batch_size: Images per batch (per device).
        num_workers: DataLoader worker processes.
        seed: Seed of the per-class sampling and of the ``folders`` split.
        pin_memory: Pin batches in page-locked memory (faster host-to-GPU copies).
        persistent_workers: Keep workers alive between epochs (only used when ``num_workers > 0``).
        skip_unreadable: Leave out images that cannot be decoded (each is logged with its path, and the
            counts are logged as ``train/skipped_images`` / ``val/skipped_images``) instead of stopping
            with an error naming the file (the default). Find such files before a long run with
            ``python -m datamodules.check ROOT --dataset imagenet``.
    """

    def __init__(
        self,
        root: str,
        class_list: str = "imagenet10",
        layout: Layout = "ilsvrc",
        train_per_class: int | None = None,
        val_per_class: int | None = None,
        val_fraction: float = 0.1,
        mode: Mode = "classify",
        image_size: int = 224,
        eval_resize: Literal["crop", "plain"] = "crop",
        patch_size: int = 32,
        batch_size: int = 64,
        num_workers: int = 4,
        seed: int = 0,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        skip_unreadable: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if layout not in ("ilsvrc", "folders"):
            raise ValueError(f"layout must be 'ilsvrc' or 'folders', got {layout!r}")
        if mode not in ("classify", "patches"):
            raise ValueError(f"mode must be 'classify' or 'patches', got {mode!r}")
        if eval_resize not in ("crop", "plain"):
            raise ValueError(f"eval_resize must be 'crop' or 'plain', got {eval_resize!r}")
        self.eval_resize = eval_resize
        self.root = root
        self.classes = load_class_list(class_list)
        self.num_classes = len(self.classes)
        self.class_names = [c.label for c in self.classes]
        self.layout: Layout = layout
        self.train_per_class = train_per_class
        self.val_per_class = val_per_class
        self.val_fraction = val_fraction
        self.mode: Mode = mode
        self.image_size = image_size
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.skip_unreadable = skip_unreadable
        self.skipped = {split: SkippedImages(split) for split in ("train", "val")} if skip_unreadable else {}
        self._skipped_logged = (0, 0)
        self.train_set: ImageNetSubsetDataset | None = None
        self.val_set: ImageNetSubsetDataset | None = None

    def train_pipeline(self) -> Pipeline:
        """The training augmentation of the current ``mode``."""
        if self.mode == "patches":
            return patch_transform(self.patch_size)
        return train_transform(self.image_size)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, val = build_splits(
            self.root,
            self.classes,
            layout=self.layout,
            train_per_class=self.train_per_class,
            val_per_class=self.val_per_class,
            val_fraction=self.val_fraction,
            seed=self.seed,
        )
        skipped = self.skipped.get
        self.train_set = ImageNetSubsetDataset(train, self.train_pipeline(), self.class_names, skipped("train"))
        evaluate = eval_transform if self.eval_resize == "crop" else plain_resize_transform
        self.val_set = ImageNetSubsetDataset(val, evaluate(self.image_size), self.class_names, skipped("val"))

    @property
    def skipped_images(self) -> dict[str, int]:
        """Unreadable images left out so far per split (``skip_unreadable``), counted over all worker processes."""
        return {split: counter.count for split, counter in self.skipped.items()}

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """With ``skip_unreadable``: send the skip counts to the Trainer's loggers whenever they change."""
        counts = tuple(self.skipped_images.values())
        if counts and counts != self._skipped_logged and self.trainer is not None:
            self._skipped_logged = counts
            metrics = {f"{split}/skipped_images": float(n) for split, n in self.skipped_images.items()}
            for logger in self.trainer.loggers:
                logger.log_metrics(metrics, step=self.trainer.global_step)
        return batch

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        return recognition_loader(
            dataset,
            train=train,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            collate_fn=collate_readable if self.skip_unreadable else None,
        )

    def _ready(self) -> tuple[ImageNetSubsetDataset, ImageNetSubsetDataset]:
        if self.train_set is None or self.val_set is None:
            self.setup()
        assert self.train_set is not None and self.val_set is not None
        return self.train_set, self.val_set

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._ready()[0], train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._ready()[1], train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._ready()[1], train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self._ready()[1], train=False)
