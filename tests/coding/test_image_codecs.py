"""Classical image codecs behind one interface: round trips, rate ordering, clear errors."""

import numpy as np
import pytest
import torch

from coding.image_codecs import (
    CODECS,
    available_codecs,
    check_quality,
    decode_image,
    encode_image,
    to_float_chw,
    to_uint8_hwc,
    unavailable_codecs,
)

LOSSY = [name for name, spec in CODECS.items() if not spec.lossless]


def natural_like_image(h=48, w=64, seed=0):
    """Smooth gradients plus mild noise: compressible like a photo, not trivially flat."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 200 / w, y * 200 / h, (x + y) * 100 / (h + w) + 60], axis=-1)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def require(codec):
    if codec not in available_codecs():
        pytest.skip(f"{codec} not in this Pillow/pillow-heif build: {unavailable_codecs()[codec]}")


def test_availability_report_is_consistent():
    print("available image codecs:", available_codecs(), "missing:", unavailable_codecs())
    assert set(available_codecs()) | set(unavailable_codecs()) == set(CODECS)
    assert "png" in available_codecs()


def test_png_is_exact_and_ignores_quality():
    image = natural_like_image()
    data = encode_image(image, "png", None)
    assert np.array_equal(decode_image(data, "png"), image)
    assert encode_image(image, "png", 3) == data


@pytest.mark.parametrize("codec", LOSSY)
def test_lossy_round_trip_close_at_high_quality(codec):
    require(codec)
    image = natural_like_image()
    decoded = decode_image(encode_image(image, codec, 90), codec)
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    assert psnr(decoded, image) > 30


@pytest.mark.parametrize("codec", LOSSY)
def test_more_quality_costs_more_bytes_and_gives_less_error(codec):
    require(codec)
    image = natural_like_image()
    low, high = encode_image(image, codec, 10), encode_image(image, codec, 90)
    assert len(high) > len(low)
    assert psnr(decode_image(high, codec), image) > psnr(decode_image(low, codec), image)


@pytest.mark.parametrize("codec", list(CODECS))
def test_odd_sizes_round_trip_shape(codec):
    require(codec)
    image = natural_like_image(33, 47, seed=1)
    decoded = decode_image(encode_image(image, codec, 75), codec)
    assert decoded.shape == (33, 47, 3)


@pytest.mark.parametrize("codec", ["png", "jpeg"])
def test_tensor_input_matches_array(codec):
    require(codec)
    image = natural_like_image()
    as_float = to_float_chw(image)
    assert as_float.shape == (3, 48, 64) and as_float.dtype == torch.float32
    assert np.array_equal(to_uint8_hwc(as_float), image)
    assert encode_image(as_float, codec, 50) == encode_image(image, codec, 50)
    uint8_tensor = torch.from_numpy(image).permute(2, 0, 1)
    assert encode_image(uint8_tensor, codec, 50) == encode_image(image, codec, 50)


def test_impossible_settings_name_the_problem():
    image = natural_like_image(16, 16)
    with pytest.raises(ValueError, match="unknown image codec 'bpg'.*available here"):
        encode_image(image, "bpg", 50)
    with pytest.raises(ValueError, match="quality 101 is out of range for 'jpeg'"):
        encode_image(image, "jpeg", 101)
    with pytest.raises(ValueError, match="quality -1 is out of range for 'webp'"):
        encode_image(image, "webp", -1)
    with pytest.raises(ValueError, match="must be an int"):
        check_quality("jpeg", 50.5)
    with pytest.raises(ValueError, match="must be an int"):
        check_quality("jpeg", None)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        encode_image(image[..., :2], "png")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        encode_image(torch.full((3, 8, 8), 2.0), "png")


def test_decoding_foreign_data_names_the_codec():
    png = encode_image(natural_like_image(16, 16), "png")
    with pytest.raises(ValueError, match="not JPEG"):
        decode_image(png, "jpeg")
    with pytest.raises(ValueError, match="cannot decode the data as 'png'"):
        decode_image(b"not an image at all", "png")
    if "hevc" in available_codecs():
        with pytest.raises(ValueError, match="cannot decode the data as 'hevc'"):
            decode_image(png, "hevc")
