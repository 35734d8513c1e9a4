"""`splitcv export|edge|serve` through train.py's main: routed before LightningCLI, errors named in one line."""

from __future__ import annotations

import json

import pytest

import train
from deploy.manifest import read_manifest


def test_splitcv_export_through_train_main(demo_checkpoint, tmp_path, capsys):
    out = tmp_path / "export"
    train.main(["export", str(demo_checkpoint("rnn_compressor")), "--out", str(out), "--iterations", "1"])
    manifest = read_manifest(out)
    assert manifest["method"] == "rnn_compressor" and manifest["iterations"] == 1
    assert "exported rnn_compressor" in capsys.readouterr().out
    train.main(["export", str(demo_checkpoint("rnn_compressor")), "--out", str(out)])  # replaces an export
    assert read_manifest(out)["iterations"] == 2


def test_bad_inputs_fail_before_any_work_naming_the_file(tmp_path, demo_checkpoint):
    with pytest.raises(SystemExit, match="nope.ckpt: no such checkpoint"):
        train.main(["export", str(tmp_path / "nope.ckpt"), "--out", str(tmp_path / "o")])
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not an export directory"):
        train.main(["export", str(demo_checkpoint("rnn_compressor")), "--out", str(tmp_path / "notes")])
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="bad.ckpt: not a readable checkpoint"):
        train.main(["export", str(bad), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="no manifest"):
        train.main(["serve", str(tmp_path), "--max-requests", "1", "--idle-timeout", "0.1"])
    image = tmp_path / "broken.png"
    image.write_bytes(b"\x89PNG garbage")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "manifest.json").write_text(json.dumps({"manifest_version": 1, "method": "rnn_compressor"}))
    with pytest.raises(SystemExit, match="broken.png: cannot read this image"):
        train.main(["edge", str(tmp_path / "e"), str(image), "--port", "1"])


def test_an_incomplete_manifest_is_refused_naming_what_is_missing(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"manifest_version": 1, "method": "rnn_compressor"}))
    with pytest.raises(SystemExit, match="incomplete manifest, missing task"):
        train.main(["serve", str(tmp_path), "--max-requests", "1", "--idle-timeout", "0.1"])


def test_edge_without_a_server_stops_after_its_timeout(exported, fixture_images):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SystemExit, match=f"no server listening on 127.0.0.1:{port} after 0.5 s"):
        train.main(
            ["edge", str(exported("rnn_compressor")), str(fixture_images[0]), "--port", str(port), "--timeout", "0.5"]
        )
