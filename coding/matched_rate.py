"""A classical codec at a byte budget: per image, the highest quality whose file fits the budget.

Used to put JPEG / WebP / AVIF / HEVC beside a learned compressor *at the same bytes per image*: the
budget of each image is what the learned compressor spent on that very image (or ``target_bpp`` × its
pixels / 8), and :func:`encode_within_budget` searches the codec's quality for it.

Why per image and not one quality per run: the question this answers is "at a given number of bytes
per image, which channel feeds the recogniser better?". One quality per run matches only the *mean*
bytes; single images then get more or fewer bytes than the learned codec gave them, and the
comparison mixes the codecs with a different allocation of bytes across images. Matching each image
gives both channels the same bytes for every image (up to the codec's granularity), so the only
difference left is how the bytes are used.

Search: bisection over the integer quality range, assuming the file size does not decrease with the
quality (true for libjpeg and x265 in practice; libwebp and libavif have rare one-step inversions, in
which case the result is a quality that fits, not necessarily the highest such). About
⌈log2(101)⌉ = 7 encodes per image. When even the lowest quality exceeds the budget (small images:
a JPEG's tables and a HEIF container are several hundred bytes), the lowest quality is used and the
result says ``fits=False``; the real bytes are always what is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coding.image_codecs import encode_image, get_codec, to_uint8_hwc


@dataclass(frozen=True)
class BudgetEncoding:
    """One image encoded at a budget.

    Attributes:
        data: the file's bytes (container included).
        quality: the codec quality used.
        budget: the byte budget asked for.
        fits: ``len(data) <= budget``; false only when the codec's lowest quality is still too large.
        encodes: encoder calls the search made.
    """

    data: bytes
    quality: int
    budget: int
    fits: bool
    encodes: int


def encode_within_budget(image: np.ndarray, codec: str, budget: int) -> BudgetEncoding:
    """Encode ``image`` with ``codec`` at the highest quality whose file is at most ``budget`` bytes.

    Args:
        image: uint8 (H, W, 3) array (or a (3, H, W) tensor, see :func:`coding.image_codecs.to_uint8_hwc`).
        codec: a lossy codec of :mod:`coding.image_codecs` with a quality range (jpeg, webp, avif, hevc).
        budget: bytes allowed for this image (≥ 1).

    Raises:
        ValueError: an unknown, unavailable or quality-less codec (png), or a budget below 1.
    """
    spec = get_codec(codec)
    if spec.qualities is None:
        raise ValueError(f"codec {codec!r} has no quality setting, so it cannot be matched to a byte budget")
    if isinstance(budget, bool) or not isinstance(budget, int | np.integer) or budget < 1:
        raise ValueError(f"budget must be a positive number of bytes, got {budget!r}")
    array = to_uint8_hwc(image)
    low, high = spec.quality_min, spec.quality_max
    encodes = 0
    best: tuple[int, bytes] | None = None
    lowest: bytes | None = None
    while low <= high:
        quality = (low + high) // 2
        data = encode_image(array, codec, quality)
        encodes += 1
        if quality == spec.quality_min:
            lowest = data
        if len(data) <= budget:
            best = (quality, data)
            low = quality + 1
        else:
            high = quality - 1
    if best is not None:
        return BudgetEncoding(best[1], best[0], int(budget), True, encodes)
    assert lowest is not None  # every probe failed, so the bisection ended at the lowest quality
    return BudgetEncoding(lowest, spec.quality_min, int(budget), False, encodes)


def budget_from_bpp(target_bpp: float, height: int, width: int) -> int:
    """Bytes allowed to an image of ``height`` × ``width`` pixels at ``target_bpp`` bits per pixel (floor,
    at least 1)."""
    if not target_bpp > 0:
        raise ValueError(f"target_bpp must be positive, got {target_bpp!r}")
    return max(1, int(target_bpp * height * width // 8))
