"""The input-JPEG basis of the shared-trunk paper's "圧縮率": the default quality reproduces its Table 3 on real
photos."""

import pytest

from benchmarks.input_jpeg_basis import closest_quality, main, mean_jpeg_bytes
from lightning_modules.shared_trunk import INPUT_JPEG_QUALITY, PAPER_INPUT_JPEG_BYTES, SharedTrunkTask


def test_table3_mean_input_size():
    # 485.44 MB for 50,000 ILSVRC validation inputs
    assert PAPER_INPUT_JPEG_BYTES == pytest.approx(9708.8)
    assert (
        SharedTrunkTask(trunk="mobilenet_v2", width=0.25, num_classes=3).hparams.input_jpeg_quality
        == INPUT_JPEG_QUALITY
    )


@pytest.mark.slow
def test_default_quality_reproduces_table3_within_ten_percent(capsys):
    means = mean_jpeg_bytes([60, INPUT_JPEG_QUALITY, 80, 95], ["astronaut", "chelsea", "coffee", "grass", "rocket",
                                                               "motorcycle", "camera", "brick"])  # fmt: skip
    for resize in ("plain", "crop"):
        assert abs(means[resize][INPUT_JPEG_QUALITY] / PAPER_INPUT_JPEG_BYTES - 1) < 0.10, means
        assert closest_quality(means[resize]) == INPUT_JPEG_QUALITY
        assert means[resize][95] > 2 * means[resize][INPUT_JPEG_QUALITY]  # the old q95 basis: over twice as large
    results = main(["--qualities", "70", "95", "--photos", "coffee"])
    assert "(default)" in capsys.readouterr().out and results["default"] == INPUT_JPEG_QUALITY
