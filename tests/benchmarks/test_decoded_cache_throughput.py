"""The cache-vs-on-the-fly throughput benchmark runs and measures both pipelines over the same images."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.decoded_cache_throughput import main
from datamodules.fixtures import write_imagenet
from models.rnn_codec import RNNCodec

pytestmark = pytest.mark.usefixtures("one_thread")


def test_both_pipelines_are_measured(tmp_path):
    root = write_imagenet(tmp_path / "imagenet", train_per_wnid=1, val_per_wnid=1, image_size=(40, 48))
    checkpoint = tmp_path / "compressor.ckpt"
    codec = RNNCodec(width=0.0625)
    torch.save({"state_dict": {f"codec.{k}": v for k, v in codec.state_dict().items()}}, checkpoint)
    rows = main(
        ["--checkpoint", str(checkpoint), "--width", "0.0625", "--iterations", "1", "--root", str(root),
         "--image-size", "32", "--out", str(tmp_path / "rows.json")]
    )  # fmt: skip
    assert [(r["source"], r["workers"]) for r in rows] == [("cache", 0), ("on the fly", 0)]
    assert all(r["images_per_s"] > 0 for r in rows)
    assert json.loads((tmp_path / "rows.json").read_text()) == rows
