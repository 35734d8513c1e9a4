"""The feature-codec sweep runs end to end on a photo, and its equal-fidelity interpolation is right."""

import json
import math

import pytest

from benchmarks.feature_codec_sweep import bytes_at_psnr, main, network_inputs, settings
from coding.image_codecs import available_codecs, encode_image


def test_bytes_at_psnr_interpolates_log_bytes():
    rows = [{"feature_psnr": 20.0, "bytes_per_image": 100.0}, {"feature_psnr": 30.0, "bytes_per_image": 1000.0}]
    # halfway in PSNR is halfway in log-bytes: √(100 · 1000)
    assert bytes_at_psnr(rows, 25.0) == pytest.approx(math.sqrt(100 * 1000))
    assert bytes_at_psnr(rows, 20.0) == pytest.approx(100.0)
    assert bytes_at_psnr(rows, 31.0) is None  # the curve never gets there


def test_settings_skip_impossible_combinations():
    grid = settings(["png", "webp", "hevc"], ["r_channel", "mono"], [30], [50], bits=10)
    # 10-bit levels exist only for png and hevc on grey layouts
    assert sorted(c.name for c in grid) == ["hevc-qp30-mono-10b", "png-mono-10b"]


@pytest.mark.slow
def test_sweep_runs_on_a_photo(tmp_path):
    if "hevc" not in available_codecs():
        pytest.skip("no HEVC in this build")
    out = tmp_path / "sweep"
    results = main([
        "--trunks", "mobilenet_v2", "--width", "0.25", "--photos", "coffee", "--image-size", "64",
        "--codecs", "png", "hevc", "--qps", "20", "35", "50", "--layouts", "r_channel", "mono", "--out", str(out),
    ])  # fmt: skip
    assert {p.name for p in out.iterdir()} == {f"feature_codec_sweep.{e}" for e in ("json", "csv", "png")}
    assert json.loads((out / "feature_codec_sweep.json").read_text())["rows"] == results["rows"]
    rows = results["rows"]
    assert len(rows) == 2 * (1 + 3)  # two layouts × (png + three QPs)
    assert "random initialisation" in results["weights"]["mobilenet_v2"]
    # PNG is lossless: both layouts decode to the same min–max levels, hence the same feature PSNR
    png = [r for r in rows if r["codec"] == "png"]
    assert png[0]["feature_psnr"] == pytest.approx(png[1]["feature_psnr"])
    for layout in ("r_channel", "mono"):
        hevc = sorted((r for r in rows if r["codec"] == "hevc" and r["layout"] == layout), key=lambda r: r["quality"])
        assert [r["bytes_per_image"] for r in hevc] == sorted((r["bytes_per_image"] for r in hevc), reverse=True)
        assert hevc[0]["feature_psnr"] > hevc[-1]["feature_psnr"]
    # the basis: the 64×64 network input as JPEG q95, the same for every row
    jpeg = len(encode_image(network_inputs(["coffee"], 64)[0], "jpeg", 95))
    assert all(r["input_jpeg_bytes"] == jpeg for r in rows)
    assert rows[0]["input_percent"] == pytest.approx(100 * rows[0]["bytes_per_image"] / jpeg)
    reference = [r for r in results["equal_fidelity"] if r["layout"] == "r_channel" and r["codec"] == "hevc"]
    assert reference[0]["vs_reference"] == pytest.approx(1.0)
