"""Channel tiling: a (C, H, W) feature tensor as one image, and back, exactly.

Channel ``c`` goes to tile row ``c // cols``, tile column ``c % cols`` (row-major). Layouts:

==============  ======================================================================================
``r_channel``   the paper's (Hiraga et al., Table 2): ``rows`` = the largest divisor of C not above √C,
                ``cols`` = C / rows, the mosaic in the **R** channel of an RGB image, G = B = 0.
                (512, 14, 14) → (224, 448, 3); (32, 28, 28) → (112, 224, 3).
``mono``        the same mosaic as one grey plane (a 4:0:0 image): (512, 14, 14) → (224, 448).
``square``      a near-square mosaic, one grey plane: ``cols`` = ⌈√C⌉, ``rows`` = ⌈C / cols⌉; the
                ``rows·cols − C`` tiles after the last channel are zeros. (512, 14, 14) → 23 × 23 tiles,
                (322, 322); (32, 28, 28) → 6 × 6, (168, 168).
==============  ======================================================================================

Works on any integer array (the min–max levels); the inverse reads only the tiles of real channels.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import numpy as np

Layout = Literal["r_channel", "mono", "square"]
LAYOUTS: tuple[str, ...] = get_args(Layout)


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown feature layout {layout!r}; expected one of {LAYOUTS}")
    return layout


def grid(layout: str, channels: int) -> tuple[int, int]:
    """(tile rows, tile columns) of ``layout`` for ``channels`` channels."""
    check_layout(layout)
    if channels < 1:
        raise ValueError(f"need at least one channel, got {channels}")
    if layout == "square":
        cols = math.isqrt(channels - 1) + 1  # ⌈√C⌉
        return -(-channels // cols), cols
    rows = max(d for d in range(1, math.isqrt(channels) + 1) if channels % d == 0)
    return rows, channels // rows


def image_shape(layout: str, shape: tuple[int, int, int]) -> tuple[int, ...]:
    """Shape of the tiled image of a (C, H, W) tensor: (rows·H, cols·W) or (rows·H, cols·W, 3)."""
    c, h, w = shape
    rows, cols = grid(layout, c)
    return (rows * h, cols * w, 3) if layout == "r_channel" else (rows * h, cols * w)


def tile(levels: np.ndarray, layout: str) -> np.ndarray:
    """(C, H, W) array → the tiled image of ``layout`` (same dtype; see the module docstring)."""
    if levels.ndim != 3:
        raise ValueError(f"expected a (C, H, W) array, got shape {levels.shape}")
    c, h, w = levels.shape
    rows, cols = grid(layout, c)
    padded = np.zeros((rows * cols, h, w), dtype=levels.dtype)
    padded[:c] = levels
    mosaic = padded.reshape(rows, cols, h, w).transpose(0, 2, 1, 3).reshape(rows * h, cols * w)
    if layout == "r_channel":
        image = np.zeros((*mosaic.shape, 3), dtype=levels.dtype)
        image[..., 0] = mosaic
        return image
    return np.ascontiguousarray(mosaic)


def untile(image: np.ndarray, layout: str, shape: tuple[int, int, int]) -> np.ndarray:
    """The inverse of :func:`tile`: the (C, H, W) array of ``shape`` (for ``r_channel`` the R plane is read).

    Raises:
        ValueError: the image does not have the shape ``layout`` gives for ``shape``.
    """
    expected = image_shape(layout, shape)
    if tuple(image.shape) != expected:
        raise ValueError(f"a {layout!r} image of a {shape} tensor has shape {expected}, got {image.shape}")
    c, h, w = shape
    rows, cols = grid(layout, c)
    mosaic = image[..., 0] if layout == "r_channel" else image
    tiles = mosaic.reshape(rows, h, cols, w).transpose(0, 2, 1, 3).reshape(rows * cols, h, w)
    return np.ascontiguousarray(tiles[:c])
