"""Rate–distortion rows measured from real bytes, for the recurrent codec and classical codecs."""

import math

import numpy as np
import pytest
import torch

from coding import rnn_bitstream as rb
from coding.image_codecs import available_codecs, encode_image, to_float_chw
from coding.image_quality import ms_ssim, ms_ssim_scales, psnr
from coding.rate_distortion import image_codec_points, nearest_quality_at_bpp, rnn_codec_points
from models.rnn_codec import RNNCodec


def photo(h, w, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 200 / w, y * 200 / h, (x + y) * 100 / (h + w) + 60], axis=-1)
    return to_float_chw(np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8))


IMAGES = [photo(32, 48), photo(48, 32, seed=1)]


@pytest.mark.parametrize(
    "side,scales", [(10, 0), (11, 1), (22, 2), (32, 2), (44, 3), (88, 3), (160, 4), (176, 5), (256, 5)]
)
def test_ms_ssim_scales(side, scales):
    assert ms_ssim_scales(side, side) == scales
    assert ms_ssim_scales(side, 300) == scales


def test_ms_ssim_with_five_scales_is_torchmetrics_default():
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    a = torch.rand(3, 180, 190, generator=torch.Generator().manual_seed(0))
    b = (a + 0.05).clamp(0, 1)
    value, scales = float(ms_ssim(b[None], a[None])[0]), ms_ssim_scales(180, 190)
    assert scales == 5
    assert value == pytest.approx(
        float(multiscale_structural_similarity_index_measure(b[None], a[None], data_range=1.0))
    )
    assert float(ms_ssim(a[None], a[None])[0]) == pytest.approx(1.0)
    assert math.isnan(ms_ssim(a[None, :, :8, :8], a[None, :, :8, :8])[0])


def test_rnn_codec_points_from_real_bytes():
    torch.manual_seed(0)
    codec = RNNCodec(width=0.0625).eval()
    rows = rnn_codec_points(codec, IMAGES, 3)
    assert [row["setting"] for row in rows] == ["it1", "it2", "it3"]
    pixels = 32 * 48
    for k, row in enumerate(rows, start=1):
        assert row["codec"] == "rnn" and row["iterations"] == k
        packed = [len(rb.compress(codec, x[None], k, coding="packed")) for x in IMAGES]
        entropy = [len(rb.compress(codec, x[None], k, coding="entropy")) for x in IMAGES]
        default = [len(rb.compress(codec, x[None], k)) for x in IMAGES]
        assert packed == [28 + k * 32 * 6 // 8] * 2  # 2×3 blocks of 32 bits per iteration + the 28-byte header
        assert row["bytes_packed"] == pytest.approx(np.mean(packed))
        assert row["bytes_entropy"] == pytest.approx(np.mean(entropy))
        assert row["bytes"] == pytest.approx(np.mean(default))
        assert row["bpp"] == pytest.approx(row["bytes"] * 8 / pixels)
        assert row["bpp_payload"] == pytest.approx((row["bytes"] - 28) * 8 / pixels)
        assert row["bpp_entropy"] == pytest.approx(np.mean(entropy) * 8 / pixels)
        expected_psnr = np.mean(
            [float(psnr(codec.forward(x[None], k)["x_hat"].clamp(0, 1), x[None])[0]) for x in IMAGES]
        )
        assert row["psnr"] == pytest.approx(expected_psnr)
        assert 0 < row["ms_ssim"] <= 1 and row["ms_ssim_scales"] == 2


def test_image_codec_points():
    rows = image_codec_points(IMAGES, "jpeg", [10, 90])
    assert [row["setting"] for row in rows] == ["q10", "q90"]
    sizes = [np.mean([len(encode_image(x, "jpeg", q)) for x in IMAGES]) for q in (10, 90)]
    assert [row["bytes"] for row in rows] == pytest.approx(sizes)
    assert rows[1]["bpp"] > rows[0]["bpp"] and rows[1]["psnr"] > rows[0]["psnr"]
    (png,) = image_codec_points(IMAGES, "png", [10, 90])
    assert png["setting"] == "lossless" and png["psnr"] == math.inf
    assert png["ms_ssim"] == pytest.approx(1.0)


def test_image_codec_points_check_settings_first():
    with pytest.raises(ValueError, match="out of range for 'jpeg'"):
        image_codec_points(IMAGES, "jpeg", [50, 150])
    with pytest.raises(ValueError, match="unknown image codec"):
        image_codec_points(IMAGES, "bmp", [50])


@pytest.fixture(scope="module")
def jpeg_bpp_by_quality():
    return {q: np.mean([len(encode_image(x, "jpeg", q)) * 8 / (32 * 48) for x in IMAGES]) for q in range(1, 101)}


@pytest.mark.parametrize("target", [0.3, 3.0, 100.0])
def test_nearest_quality_at_bpp(target, jpeg_bpp_by_quality):
    row = nearest_quality_at_bpp(IMAGES, "jpeg", target)
    assert row["target_bpp"] == target
    # JPEG's size grows monotonically with quality on these images, so the search finds the true nearest
    best = min(abs(b - target) for b in jpeg_bpp_by_quality.values())
    assert abs(row["bpp"] - target) == pytest.approx(best)
    assert row["bpp"] == pytest.approx(jpeg_bpp_by_quality[row["quality"]])


def test_nearest_quality_other_codecs_return_measured_rows():
    for codec in ("webp", "hevc"):
        if codec not in available_codecs():
            continue
        row = nearest_quality_at_bpp(IMAGES[:1], codec, 1.0)
        (again,) = image_codec_points(IMAGES[:1], codec, [row["quality"]])
        assert row["bpp"] == pytest.approx(again["bpp"])
