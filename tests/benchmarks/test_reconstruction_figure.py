"""Figure 3: every image's reconstruction at k = 1..3 beside the size of its real stream, derived by hand from the
stream format: 28 header bytes + k · 32 bits per 16×16 block (padded).

- 40×48: ⌈40/16⌉ · ⌈48/16⌉ = 9 blocks → 36 bytes per iteration → 64, 100, 136 bytes;
- 33×50: ⌈33/16⌉ · ⌈50/16⌉ = 12 blocks → 48 bytes per iteration → 76, 124, 172 bytes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.compressor_checkpoint import load_codec
from benchmarks.reconstruction_figure import main, reconstruct
from coding.image_codecs import to_float_chw
from coding.rnn_bitstream import compress, decompress
from datamodules.image_io import load_rgb
from models.rnn_codec import RNNCodec

pytestmark = pytest.mark.usefixtures("one_thread")

BY_HAND = {(40, 48): [64, 100, 136], (33, 50): [76, 124, 172]}


@pytest.fixture
def setup(tmp_path):
    rng = np.random.default_rng(0)
    images = []
    for i, (h, w) in enumerate(BY_HAND):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        images.append(path)
    torch.manual_seed(0)
    checkpoint = tmp_path / "compressor.ckpt"
    codec = RNNCodec(width=0.0625)
    torch.save({"state_dict": {f"compressor.{k}": v for k, v in codec.state_dict().items()},
                "hyper_parameters": {"codec_width": 0.0625}}, checkpoint)  # fmt: skip
    return images, checkpoint


def test_each_reconstruction_has_its_stream_bytes(setup, tmp_path):
    images, checkpoint = setup
    rows = main([*map(str, images), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")])
    for row, size in zip(rows, BY_HAND, strict=True):
        assert [row[f"k={k} bytes"] for k in (1, 2, 3)] == BY_HAND[size]
    with Image.open(tmp_path / "out" / "reconstructions.png") as png:
        assert png.size[0] > png.size[1] > 100  # two rows of four panels
    assert "| k=1 bytes" in (tmp_path / "out" / "reconstruction_bytes.md").read_text()


def test_the_drawn_reconstructions_are_the_decoded_k_iteration_streams(setup):
    """Progressive prefixes of one 3-iteration stream decode exactly as streams coded at k directly."""
    images, checkpoint = setup
    codec = load_codec(checkpoint)
    _, out = reconstruct(codec, images[1], [1, 2, 3], "packed")
    x = to_float_chw(load_rgb(images[1])).unsqueeze(0)
    for k in (1, 2, 3):
        direct = compress(codec, x, k, coding="packed")
        torch.testing.assert_close(out[k][0], decompress(codec, direct)[0], rtol=0, atol=0)
        assert out[k][1] == len(direct)


def test_a_checkpoint_without_a_codec_is_named(tmp_path, setup):
    images, _ = setup
    bad = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"net.weight": torch.zeros(1)}}, bad)
    with pytest.raises(SystemExit):
        main([str(images[0]), "--checkpoint", str(bad)])
