"""Reading the edge's input images (Pillow only): RGB uint8 (H, W, 3), errors naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


def read_image(path: str | Path) -> np.ndarray:
    """uint8 RGB (H, W, 3) of an image file.

    Raises:
        ValueError: the file cannot be read or decoded as an image (named).
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ValueError(f"{path}: cannot read this image ({error})") from error


def list_images(sources: list[str | Path], limit: int | None = None) -> list[Path]:
    """Image files of ``sources`` (files, or folders searched recursively), sorted, at most ``limit``.

    Raises:
        FileNotFoundError: a source that does not exist, or no image at all.
    """
    found: list[Path] = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            found += sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif source.is_file():
            found.append(source)
        else:
            raise FileNotFoundError(f"{source}: no such image file or folder")
    if not found:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, sources))}")
    return found[:limit] if limit else found
