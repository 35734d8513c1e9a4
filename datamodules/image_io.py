"""Reading images from disk with errors that name the file; skipping unreadable ones when asked to."""

from __future__ import annotations

import logging
import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import default_collate

log = logging.getLogger(__name__)


class UnreadableImageError(OSError):
    """An image file could not be decoded; the message names the file."""


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")


def load_rgb(path: str | Path) -> np.ndarray:
    """The image at ``path`` as an RGB ``uint8`` array of shape (H, W, 3).

    Raises:
        UnreadableImageError: the file is missing, truncated or not an image (never a silent zero image).
    """
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise UnreadableImageError(f"cannot read image {path}: {err}") from err


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted, matched by extension (case-insensitive)."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


class SkippedImages:
    """A count of images skipped as unreadable, shared by the DataLoader's worker processes.

    :meth:`record` logs a warning naming the file and adds one; :attr:`count` reads the total from any process.
    """

    def __init__(self, split: str) -> None:
        self.split = split
        self._count = multiprocessing.get_context().Value("i", 0)

    def record(self, path: str | Path, error: Exception) -> None:
        with self._count.get_lock():
            self._count.value += 1
            total = self._count.value
        log.warning("%s: skipped unreadable image %s (%d skipped so far): %s", self.split, path, total, error)

    @property
    def count(self) -> int:
        return int(self._count.value)


def collate_readable(batch: list[Any]) -> Any:
    """``default_collate`` of the items that are not ``None`` (the unreadable ones, when skipped).

    Raises:
        UnreadableImageError: every item of the batch was unreadable.
    """
    readable = [item for item in batch if item is not None]
    if not readable:
        raise UnreadableImageError(f"all {len(batch)} images of a batch were unreadable (see the warnings above)")
    return default_collate(readable)
