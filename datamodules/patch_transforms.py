"""Albumentations pipelines for compressor training, made reproducible.

Albumentations 2.x draws from its own generator, seeded from the OS when no seed is given, so two runs
with the same ``seed_everything`` would see different crops. :class:`SeededTransform` reseeds the
pipeline for every sample from torch's RNG: in a DataLoader worker that RNG is seeded by Lightning
(``seed_everything(workers=True)``), and in the main process it is part of the checkpointed RNG state
(``callbacks.rng_state.RNGStateCheckpoint``) — so a resumed run draws the same patches as an
uninterrupted one.
"""

from __future__ import annotations

import albumentations as A
import numpy as np
import torch
from torch import Tensor


def random_patch_pipeline(patch_size: int = 32, flip: bool = True) -> A.Compose:
    """Random ``patch_size``² crop (padded by reflection when the image is smaller), optional h-flip."""
    transforms: list = [
        A.PadIfNeeded(patch_size, patch_size, border_mode=4),  # cv2.BORDER_REFLECT_101
        A.RandomCrop(patch_size, patch_size),
    ]
    if flip:
        transforms.append(A.HorizontalFlip(p=0.5))
    return A.Compose(transforms)


def to_unit_tensor(image: np.ndarray) -> Tensor:
    """uint8 (H, W, 3) → float32 (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255.0)


class SeededTransform:
    """Apply an albumentations pipeline with a per-sample seed drawn from torch's RNG; return a tensor."""

    def __init__(self, pipeline: A.Compose) -> None:
        self.pipeline = pipeline

    def __call__(self, image: np.ndarray) -> Tensor:
        self.pipeline.set_random_seed(int(torch.randint(0, 2**31 - 1, ()).item()))
        return to_unit_tensor(self.pipeline(image=image)["image"])
