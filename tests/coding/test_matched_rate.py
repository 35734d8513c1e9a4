"""Byte-budget encoding: the bisection finds what a scan of every quality finds; budgets too small are reported."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from coding.image_channel import ClassicalChannel
from coding.image_codecs import decode_image, encode_image
from coding.matched_rate import budget_from_bpp, encode_within_budget


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut()[100:164, 180:260])  # 64×80 of a natural photo


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
def test_jpeg_at_a_budget_is_the_highest_quality_that_fits(photo, fraction):
    sizes = {q: len(encode_image(photo, "jpeg", q)) for q in range(1, 101)}
    budget = int(sizes[1] + fraction * (sizes[100] - sizes[1]))
    brute_force = max(q for q, size in sizes.items() if size <= budget)  # libjpeg's sizes grow with quality
    result = encode_within_budget(photo, "jpeg", budget)
    assert result.quality == brute_force and result.fits
    assert len(result.data) == sizes[brute_force] <= budget < sizes[brute_force + 1]
    assert result.encodes <= 7  # ⌈log2(100)⌉ bisection steps


def test_a_budget_below_the_lowest_quality_uses_it_and_says_so(photo):
    lowest = encode_image(photo, "webp", 0)
    result = encode_within_budget(photo, "webp", len(lowest) - 1)
    assert not result.fits and result.quality == 0 and result.data == lowest


def test_classical_channel_bytes_are_the_files_and_the_image_is_their_decode(photo):
    at_quality = ClassicalChannel("jpeg", quality=40).transmit(photo)
    data = encode_image(photo, "jpeg", 40)
    assert at_quality.bytes == len(data) and at_quality.quality == 40
    np.testing.assert_array_equal(at_quality.image, decode_image(data, "jpeg"))
    at_bpp = ClassicalChannel("webp", target_bpp=1.0).transmit(photo)
    assert at_bpp.bytes <= budget_from_bpp(1.0, 64, 80) == 64 * 80 // 8
    matched = ClassicalChannel("webp")
    assert matched.needs_budget
    with pytest.raises(ValueError, match="needs per-image byte budget"):
        matched.transmit(photo)
    assert matched.transmit(photo, budget=400).bytes <= 400


def test_bad_budgets_and_codecs_are_refused(photo):
    with pytest.raises(ValueError, match="no quality setting"):
        encode_within_budget(photo, "png", 1000)
    with pytest.raises(ValueError, match="positive number of bytes"):
        encode_within_budget(photo, "jpeg", 0)
    with pytest.raises(ValueError, match="classical channel must be one of"):
        ClassicalChannel("png")
