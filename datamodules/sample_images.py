"""The natural photos that scikit-image ships, as a compressor DataModule (no download needed).

Training draws random patches from the training photos; validation codes the held-out photos whole.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from datamodules.compressor_data import CompressorDataModule
from datamodules.patch_datasets import RandomPatchDataset, WholeImageDataset

SAMPLE_PHOTOS = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "coffee",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "motorcycle",
    "retina",
    "rocket",
)
"""Photos bundled inside the scikit-image wheel (grey ones are replicated to RGB)."""

DEFAULT_VAL_PHOTOS = ("chelsea", "coffee", "rocket")


def load_sample_photo(name: str) -> np.ndarray:
    """One bundled photo as uint8 (H, W, 3)."""
    if name not in SAMPLE_PHOTOS:
        raise ValueError(f"unknown sample photo {name!r}; available: {', '.join(SAMPLE_PHOTOS)}")
    import skimage.data  # seconds of start-up: only when a photo is read

    image = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3].astype(np.uint8))


class SampleImagesDataModule(CompressorDataModule):
    """Compressor data from scikit-image's bundled photos.

    Args:
        val_photos: names of the held-out photos (validation and test); the others train.
        patch_size: side of the square training patches.
        patches_per_image: patches drawn from each training photo per epoch.
        batch_size: training batch size (validation codes one whole image at a time).
        val_max_side: held-out photos are downscaled to at most this side (then cropped to multiples
            of 16); ``None`` keeps them whole.
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        val_photos: Sequence[str] = DEFAULT_VAL_PHOTOS,
        patch_size: int = 32,
        patches_per_image: int = 64,
        batch_size: int = 32,
        val_max_side: int | None = 256,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        unknown = sorted(set(val_photos) - set(SAMPLE_PHOTOS))
        if unknown:
            raise ValueError(f"unknown sample photos {unknown}; available: {', '.join(SAMPLE_PHOTOS)}")
        self.val_photos = list(val_photos)
        self.train_photos = [n for n in SAMPLE_PHOTOS if n not in self.val_photos]
        if not self.train_photos or not self.val_photos:
            raise ValueError("both the training and the held-out photo lists must be non-empty")
        self.patch_size, self.patches_per_image = patch_size, patches_per_image
        self.batch_size, self.val_max_side, self.num_workers = batch_size, val_max_side, num_workers

    def setup(self, stage: str | None = None) -> None:
        self.train_set = RandomPatchDataset(
            [load_sample_photo(n) for n in self.train_photos], self.patch_size, self.patches_per_image
        )
        self.val_set = WholeImageDataset(
            [load_sample_photo(n) for n in self.val_photos], self.val_max_side, names=self.val_photos
        )
