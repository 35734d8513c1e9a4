"""A user's own folder of images (COCO, ImageNet train, a photo collection) as compressor data."""

from __future__ import annotations

import random
from pathlib import Path

from datamodules.compressor_data import CompressorDataModule
from datamodules.image_io import IMAGE_EXTENSIONS, list_images
from datamodules.patch_datasets import RandomPatchDataset, WholeImageDataset

EXPECTED_LAYOUT = (
    "a folder of image files ({exts}), searched recursively, e.g. train2017/*.jpg or ILSVRC2012/train/<wnid>/*.JPEG"
)


def find_images(root: str | Path, what: str) -> list[Path]:
    """The images under ``root``; a missing or empty folder is an error that names the path and layout."""
    layout = EXPECTED_LAYOUT.format(exts=", ".join(IMAGE_EXTENSIONS))
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {root} (expected {layout})")
    images = list_images(root)
    if not images:
        raise FileNotFoundError(f"no images in {what} folder {root} (expected {layout})")
    return images


class ImageFolderPatches(CompressorDataModule):
    """Random patches from a folder of images for training; whole images from another folder (or a
    held-out share of the same one) for validation.

    Args:
        root: folder of training images (searched recursively).
        val_root: folder of validation images; ``None`` holds out ``val_count`` images of ``root``.
        val_count: images held out of ``root`` (chosen with ``seed``) when ``val_root`` is ``None``.
        patch_size: side of the square training patches.
        patches_per_image: patches drawn from each training image per epoch.
        batch_size: training batch size (validation codes one whole image at a time).
        val_max_side: validation images are downscaled to at most this side, then cropped to
            multiples of 16; ``None`` keeps them whole.
        max_train_images: use at most this many training images (chosen with ``seed``).
        num_workers: DataLoader worker processes.
        seed: seed of the held-out and subset choices.
    """

    def __init__(
        self,
        root: str,
        val_root: str | None = None,
        val_count: int = 8,
        patch_size: int = 32,
        patches_per_image: int = 1,
        batch_size: int = 32,
        val_max_side: int | None = 512,
        max_train_images: int | None = None,
        num_workers: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.batch_size, self.num_workers = batch_size, num_workers

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        rng = random.Random(hp.seed)
        train = find_images(hp.root, "training image")
        if hp.val_root is not None:
            val = find_images(hp.val_root, "validation image")
        else:
            if len(train) <= hp.val_count:
                raise ValueError(f"{hp.root} holds {len(train)} images: too few to hold out val_count={hp.val_count}")
            shuffled = train[:]
            rng.shuffle(shuffled)
            val, train = sorted(shuffled[: hp.val_count]), sorted(shuffled[hp.val_count :])
        if hp.max_train_images is not None and len(train) > hp.max_train_images:
            train = sorted(rng.sample(train, hp.max_train_images))
        self.train_set = RandomPatchDataset(train, hp.patch_size, hp.patches_per_image)
        self.val_set = WholeImageDataset(val, hp.val_max_side)
