"""Reading images from disk with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


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
