"""benchmarks/bitserial_kernel.py runs both modes and reports the parts of one repetition (issue 16 item 8)."""

from __future__ import annotations

import json

import pytest

from benchmarks.bitserial_kernel import main
from models.bitserial import native

pytestmark = pytest.mark.usefixtures("one_thread")


def test_layer_mode_reports_the_parts_of_one_repetition(tmp_path, capsys):
    if native is None:
        pytest.skip("the parts are timed on the native backend")
    rows = main(["--shape", "demo_conv3", "--bits", "1", "2", "--repeats", "3", "--warmup", "0",
                 "--out", str(tmp_path / "layer.json")])  # fmt: skip
    assert "kernel path" in capsys.readouterr().out  # the path taken is printed
    for row in rows:
        parts = row["best_pack_ms"] + row["best_kernel_ms"] + row["best_combine_ms"]
        assert row["best_parts_ms"] == pytest.approx(parts)  # one repetition's parts, not per-column minima
        assert row["word_ops"] == 64 * 64 * 4 * row["bits"] * 5  # N·P·k·Q·⌈D/64⌉, D = 32·9 = 288 → 5 words
    assert json.loads((tmp_path / "layer.json").read_text())["rows"][0]["bits"] == 1


def test_network_mode_runs_every_layer_bit_serially(tmp_path):
    rows = main(["--network", "demo_cnn", "--width", "4", "--bits", "2", "--layer-bits", "net.0=3",
                 "--repeats", "1", "--warmup", "0", "--out", str(tmp_path / "net.json")])  # fmt: skip
    assert [r["layers"] for r in rows] == [5, 5]  # four convolutions and the classifier
    assert rows[1]["config"].startswith("per layer")
    with pytest.raises(SystemExit, match="no decomposed layer"):
        main(["--network", "demo_cnn", "--layer-bits", "features.0=3", "--out", str(tmp_path / "x.json")])
