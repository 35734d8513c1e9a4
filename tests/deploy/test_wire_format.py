"""docs/wire-format.md is enough to read splitcv's streams: a reader written from that page alone (below:
struct, zlib, hashlib, numpy, Pillow — no splitcv reader) parses streams splitcv wrote and gets back the
codes the edge sent and the features it quantised."""

from __future__ import annotations

import hashlib
import io
import math
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ the reader, from the document only
def read_scvr(data: bytes, cell: str, width: float, bits: int, reconstruction: str) -> dict:
    """§1: header checks in the document's order, then the codes (packed) or the chunks (entropy coded)."""
    assert data[:4] == b"SCVR", "magic"
    assert data[4] == 2, "version"
    assert len(data) >= 28, "length"
    (header_crc,) = struct.unpack_from("<I", data, 24)
    assert zlib.crc32(data[:24]) == header_crc, "header CRC"
    flags = data[5]
    assert flags & ~1 == 0, "flags"
    B, H, W, T, nbits = struct.unpack_from("<5H", data, 6)
    assert min(B, H, W, T, nbits) >= 1
    assert nbits == bits, "bits"
    config = f"cell={cell};width={float(width)!r};bits={bits};reconstruction={reconstruction}"
    assert data[16:20] == hashlib.sha256(config.encode("ascii")).digest()[:4], "fingerprint"
    (payload_crc,) = struct.unpack_from("<I", data, 20)
    payload = data[28:]
    h, w = -(-H // 16), -(-W // 16)
    out = {"B": B, "H": H, "W": W, "T": T, "h": h, "w": w, "entropy": bool(flags & 1)}
    if flags & 1:
        chunks, at = [], 0
        for _ in range(T):
            q = np.frombuffer(payload, np.uint8, nbits, at)
            (n,) = struct.unpack_from("<I", payload, at + nbits)
            assert q.min() >= 1 and q.max() <= 255 and n % 4 == 0 and n >= 8
            chunks.append((q, payload[at + nbits + 4 : at + nbits + 4 + n]))
            at += nbits + 4 + n
        assert at == len(payload), "chunks fill the payload"
        out["chunks"] = chunks
    else:
        count = T * B * nbits * h * w
        assert len(payload) == -(-count // 8), "packed length"
        bits_ = np.unpackbits(np.frombuffer(payload, np.uint8))  # MSB first
        assert not bits_[count:].any(), "padding bits"
        out["codes"] = (bits_[:count].astype(np.float32) * 2 - 1).reshape(T, B, nbits, h, w)
    assert zlib.crc32(payload) == payload_crc, "payload CRC"
    return out


def read_scvf(data: bytes) -> np.ndarray:
    """§2, for the png codec: (C, H, W) float32 features."""
    assert data[:4] == b"SCVF"
    version = data[4]
    header = {1: 20, 2: 24}[version]
    if version == 2:
        assert zlib.crc32(data[:20]) == struct.unpack_from("<I", data, 20)[0], "header CRC"
    codec, layout, n, flags, _quality, C, H, W, body_crc = struct.unpack_from("<BBBBBHHHI", data, 5)
    assert zlib.crc32(data[header:]) == body_crc, "body CRC"
    assert codec == 0, "this reader decodes the png codec"
    k = C if flags & 1 else 1
    lo = np.frombuffer(data, "<f4", k, header).astype(np.float64)
    hi = np.frombuffer(data, "<f4", k, header + 4 * k).astype(np.float64)
    image = np.asarray(Image.open(io.BytesIO(data[header + 8 * k :])))
    if layout == 2:  # square
        cols = math.ceil(math.sqrt(C))
        rows = math.ceil(C / cols)
    else:
        rows = max(d for d in range(1, math.isqrt(C) + 1) if C % d == 0)
        cols = C // rows
    mosaic = image[..., 0] if layout == 0 else image
    assert mosaic.shape == (rows * H, cols * W)
    levels = mosaic.reshape(rows, H, cols, W).transpose(0, 2, 1, 3).reshape(rows * cols, H, W)[:C]
    step = (hi - lo) / (2**n - 1)
    values = lo.reshape(-1, 1, 1) + levels.astype(np.float64) * step.reshape(-1, 1, 1)
    return values.astype(np.float32)


# ------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("coding", ["packed", "entropy"])
def test_recurrent_stream_read_from_the_document(coding, exported, fixture_images):
    from deploy.images import read_image
    from deploy.manifest import read_manifest
    from deploy.runtime import EdgeRuntime
    from deploy.streams import write_rnn_stream

    directory = exported("rnn_compressor")
    config = read_manifest(directory)["wire"]["codec"]
    edge = EdgeRuntime(directory)
    for path in fixture_images[:3]:
        image = read_image(path)
        edge.encode(image)
        stream = write_rnn_stream(edge.last_sent, image.shape[:2], config, coding)
        parsed = read_scvr(stream, **config)
        assert (parsed["B"], parsed["H"], parsed["W"], parsed["T"]) == (1, *image.shape[:2], 2)
        assert parsed["entropy"] == (coding == "entropy")
        if coding == "packed":
            assert np.array_equal(parsed["codes"], edge.last_sent)
        else:  # the document's q: P(+1) quantised to 8 bits per channel, from the codes the edge sent
            for t, (q, _) in enumerate(parsed["chunks"]):
                p_plus = (edge.last_sent[t] > 0).mean(axis=(0, 2, 3))
                assert np.all(np.abs(q / 256 - np.clip(p_plus, 1 / 256, 255 / 256)) <= 1 / 256 + 1e-9)
        with pytest.raises(AssertionError, match="fingerprint"):
            read_scvr(stream, **{**config, "width": config["width"] * 2})


def test_the_document_s_byte_count_example():
    """§1.2's example: one 40×48 image, one iteration of 32 bits, bit-packed: a 64-byte stream."""
    from deploy.streams import write_rnn_stream

    codes = np.where(np.random.default_rng(0).random((1, 1, 32, 3, 3)) < 0.5, -1.0, 1.0).astype(np.float32)
    config = {"cell": "lstm", "width": 1.0, "bits": 32, "reconstruction": "additive"}
    stream = write_rnn_stream(codes, (40, 48), config, "packed")
    assert len(stream) == 64
    assert np.array_equal(read_scvr(stream, **config)["codes"], codes)


@pytest.mark.parametrize("layout,per_channel", [("r_channel", False), ("mono", True), ("square", False)])
def test_feature_stream_read_from_the_document(layout, per_channel):
    from coding.feature_codec import FeatureCodec

    features = torch.randn(20, 5, 7) * torch.linspace(0.5, 3, 20).view(-1, 1, 1)
    stream = FeatureCodec("png", None, layout, 8, per_channel).encode(features)
    values = read_scvf(stream)
    span = features.flatten(1).amax(1) - features.flatten(1).amin(1) if per_channel else features.max() - features.min()
    half_step = (span / 255 / 2).reshape(-1, 1, 1) if per_channel else span / 255 / 2
    assert values.shape == (20, 5, 7)
    assert torch.all((torch.from_numpy(values) - features).abs() <= half_step + 1e-5)
