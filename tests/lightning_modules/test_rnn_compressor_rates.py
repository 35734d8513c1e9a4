"""RNNCompressor's logged rates are those of the real per-image streams, and validation encodes once."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from coding.rnn_bitstream import compress
from lightning_modules.rnn_compressor import RNNCompressor

pytestmark = pytest.mark.usefixtures("one_thread")

T = 3


def test_val_rates_are_measured_from_each_images_stream_and_the_codec_runs_once(tmp_path):
    torch.manual_seed(0)
    images = [
        torch.rand(3, 37, 21, generator=torch.Generator().manual_seed(1)),  # sides not multiples of 16
        torch.full((3, 160, 160), 0.3),  # flat: its codes are entropy coded smaller than packed
    ]
    loader = DataLoader([(x, f"image{i}") for i, x in enumerate(images)], batch_size=1)
    model = RNNCompressor(width=0.0625, iterations=T)
    calls = []
    model.codec.encoder.register_forward_hook(lambda *_: calls.append(1))
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    metrics = trainer.validate(model, loader, verbose=False)[0]
    assert len(calls) == T * len(images)  # one pass of T iterations per batch, no second encode for the rate

    codec = model.codec.eval()
    streams = {k: [compress(codec, x[None], k) for x in images] for k in range(1, T + 1)}
    pixels = [x.shape[1] * x.shape[2] for x in images]
    for k in range(1, T + 1):
        expected = sum(len(s) * 8 / p for s, p in zip(streams[k], pixels, strict=True)) / len(images)
        assert metrics[f"val/bpp_it{k}"] == pytest.approx(expected, rel=1e-6)
    assert metrics["val/bpp"] == metrics[f"val/bpp_it{T}"]
    sizes = [len(s) for s in streams[T]]
    assert metrics["val/bytes_per_image"] == pytest.approx(sum(sizes) / len(images))
    assert metrics["val/compression_ratio"] == pytest.approx(3 * sum(pixels) / sum(sizes), rel=1e-6)
    # not the formula k·bits/256: the header and the padding to 16 px (and entropy coding) are in it
    assert metrics["val/bpp_it1"] != pytest.approx(32 / 256, rel=1e-3)
