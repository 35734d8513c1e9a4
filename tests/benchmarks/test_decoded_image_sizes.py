"""Table 1's stream sizes, derived by hand from the stream format (coding/rnn_bitstream.py): a 28-byte header,
then k · 32 bits per 16×16 block of the image padded to multiples of 16, bit-packed.

- 469×387 at k = 1: ⌈469/16⌉ · ⌈387/16⌉ = 30 · 25 = 750 blocks · 32 bits = 3,000 bytes → 3,028;
- 500×375 at k = 1: ⌈500/16⌉ · ⌈375/16⌉ = 32 · 24 = 768 blocks · 32 bits = 3,072 bytes → 3,100;
- at k = 3 the payloads triple: 9,028 and 9,244 bytes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.decoded_image_sizes import main
from datamodules.fixtures import write_voc
from models.rnn_codec import RNNCodec

pytestmark = pytest.mark.usefixtures("one_thread")

BY_HAND = {(387, 469): {1: 3028, 3: 9028}, (375, 500): {1: 3100, 3: 9244}}


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, (h, w) in enumerate(BY_HAND):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.jpg", quality=80)
    return folder


@pytest.fixture
def checkpoint(tmp_path):
    """An RNNCompressor-style checkpoint of a tiny codec (untrained: packed sizes do not depend on weights)."""
    torch.manual_seed(0)
    path = tmp_path / "compressor.ckpt"
    codec = RNNCodec(width=0.0625)
    torch.save({"state_dict": {f"codec.{k}": v for k, v in codec.state_dict().items()},
                "hyper_parameters": {"width": 0.0625}}, path)  # fmt: skip
    return path


def test_real_streams_have_the_sizes_derived_by_hand(photos, checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    rows = main(["--images", str(photos), "--checkpoint", str(checkpoint), "--iterations", "1", "3", "--out", str(out)])
    images = json.loads((out / "decoded_image_sizes.json").read_text())["images"]
    assert len(images) == 2
    for image in images:
        want = BY_HAND[(image["height"], image["width"])]
        assert {int(k): v for k, v in image["stream_bytes"].items()} == want
    sources = [p.stat().st_size for p in sorted(photos.iterdir())]
    k1 = next(r for r in rows if r["k"] == 1)
    assert k1["stream_bytes_per_image"] == (3028 + 3100) / 2
    assert k1["source_bytes_per_image"] == sum(sources) / 2
    # the table, readable in a log: Markdown lines with every column, and the same numbers in the files
    printed = capsys.readouterr().out
    assert "| split" in printed and "3.06" in printed  # (3,028 + 3,100) / 2 = 3,064 bytes = 3.06 kB
    assert "3.06" in (out / "decoded_image_sizes.md").read_text()
    assert (out / "decoded_image_sizes.csv").read_text().splitlines()[0].startswith("split,images,k")
    # without a codec, the bit-packed sizes from the image headers are the same
    rows = main(["--images", str(photos), "--from-sizes", "--iterations", "1", "3", "--out", str(tmp_path / "sizes")])
    assert [r["stream_bytes_per_image"] for r in rows] == [(3028 + 3100) / 2, (9028 + 9244) / 2]


def test_a_voc_split_is_read_from_its_index_file(tmp_path):
    root = write_voc(tmp_path / "voc", trainval_2007=3, test_2007=2, trainval_2012=1, image_size=(40, 56))
    rows = main(["--voc", str(root), "--split", "2007-trainval", "--from-sizes", "--out", str(tmp_path / "out")])
    assert rows[0]["images"] == 3
    images = json.loads((tmp_path / "out" / "decoded_image_sizes.json").read_text())["images"]
    ids = (root / "VOCdevkit/VOC2007/ImageSets/Main/trainval.txt").read_text().split()
    assert [image["path"] for image in images] == [str(root / f"VOCdevkit/VOC2007/JPEGImages/{i}.jpg") for i in ids]


def test_bad_input_is_refused_before_any_work(tmp_path, checkpoint, capsys):
    with pytest.raises(SystemExit):
        main(["--images", str(tmp_path), "--checkpoint", str(checkpoint), "--from-sizes"])
    assert "not both" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--voc", str(tmp_path), "--from-sizes"])
    assert "VOCdevkit/VOC2007" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--images", str(tmp_path), "--checkpoint", str(tmp_path / "missing.ckpt")])
    assert "missing.ckpt" in capsys.readouterr().err
