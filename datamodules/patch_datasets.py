"""Datasets for compressor training: random patches for training, whole images for evaluation.

An image *source* is either a path (read on access, errors name the file) or an in-memory uint8
(H, W, 3) array (the bundled photos).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.classification_transforms import patch_transform
from datamodules.image_io import load_rgb
from datamodules.patch_transforms import to_unit_tensor

ImageSource = str | Path | np.ndarray


def read_source(source: ImageSource) -> np.ndarray:
    return source if isinstance(source, np.ndarray) else load_rgb(source)


def source_name(source: ImageSource, index: int) -> str:
    return Path(source).name if not isinstance(source, np.ndarray) else f"image_{index}"


class RandomPatchDataset(Dataset):
    """``patches_per_image`` random ``patch_size``² crops (with h-flip) per source image and epoch.

    Item ``i`` is a crop of image ``i % len(sources)`` by ``transform``, the one patch pipeline
    (:func:`datamodules.classification_transforms.patch_transform`, also ImageNet's ``mode="patches"``);
    its loaders seed it per (seed, epoch, index) (``datamodules.seeding``). Returns float32 (3, p, p) in
    [0, 1].
    """

    def __init__(self, sources: Sequence[ImageSource], patch_size: int = 32, patches_per_image: int = 1) -> None:
        if not sources:
            raise ValueError("RandomPatchDataset needs at least one image")
        self.sources = list(sources)
        self.patches_per_image = patches_per_image
        self.transform = patch_transform(patch_size)

    def __len__(self) -> int:
        return len(self.sources) * self.patches_per_image

    def __getitem__(self, index: int) -> Tensor:
        return self.transform(image=read_source(self.sources[index % len(self.sources)]))["image"]


def fit_for_codec(image: np.ndarray, max_side: int | None, multiple: int = 16) -> np.ndarray:
    """Downscale so the longer side is at most ``max_side`` (area filter), then centre-crop both sides to
    a multiple of ``multiple`` — so bits per pixel are exact and no padding is coded."""
    h, w = image.shape[:2]
    if max_side is not None and max(h, w) > max_side:
        scale = max_side / max(h, w)
        size = (max(multiple, round(w * scale)), max(multiple, round(h * scale)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
        h, w = image.shape[:2]
    nh, nw = h - h % multiple, w - w % multiple
    if nh == 0 or nw == 0:
        raise ValueError(f"image of size {h}×{w} is smaller than one {multiple}×{multiple} block")
    top, left = (h - nh) // 2, (w - nw) // 2
    return image[top : top + nh, left : left + nw]


class WholeImageDataset(Dataset):
    """Whole images for evaluation, fitted with :func:`fit_for_codec`; returns ``(image, name)``."""

    def __init__(
        self, sources: Sequence[ImageSource], max_side: int | None = None, names: Sequence[str] | None = None
    ) -> None:
        if not sources:
            raise ValueError("WholeImageDataset needs at least one image")
        self.sources = list(sources)
        self.max_side = max_side
        self.names = list(names) if names is not None else [source_name(s, i) for i, s in enumerate(sources)]

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> tuple[Tensor, str]:
        image = fit_for_codec(read_source(self.sources[index]), self.max_side)
        return to_unit_tensor(image), self.names[index]
