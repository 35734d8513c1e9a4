"""The recurrent codec's bitstream: exact rate, exact reconstruction, clear errors."""

import math
import struct

import pytest
import torch

from coding import rnn_bitstream as rb
from models.rnn_codec import RNNCodec


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return RNNCodec(width=0.0625).eval()


def images(b, h, w, seed=0):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("b,h,w", [(1, 16, 16), (1, 32, 48), (2, 48, 32)])
def test_each_iteration_costs_exactly_0125_bpp(codec, b, h, w):
    x = images(b, h, w)
    for t in range(1, 5):
        data = rb.compress(codec, x, t)
        sizes = rb.stream_sizes(data)
        assert sizes["header_bytes"] == rb.HEADER_SIZE == 24
        assert sizes["payload_bytes"] == t * b * 32 * (h // 16) * (w // 16) // 8
        assert sizes["total_bytes"] == len(data)
        payload_bits_per_iteration = sizes["payload_bytes"] * 8 / (b * h * w) / t
        assert payload_bits_per_iteration == 0.125
        assert rb.payload_bits_per_pixel_per_iteration(data) == 0.125


@pytest.mark.parametrize("h,w", [(32, 48), (37, 21)])
@pytest.mark.parametrize("entropy_coding", [False, True])
def test_decompress_equals_eval_forward(codec, h, w, entropy_coding):
    x = images(2, h, w, seed=1)
    for t in (1, 3):
        data = rb.compress(codec, x, t, entropy_coding=entropy_coding)
        expected = codec.forward(x, t)
        decoded = rb.decompress(codec, data)
        assert decoded.shape == x.shape
        assert torch.equal(decoded, expected["x_hat"].clamp(0, 1))
        assert torch.equal(rb.decompress_all_iterations(codec, data), expected["x_hats"].clamp(0, 1))


def test_codes_in_stream_are_the_eval_codes(codec):
    x = images(1, 40, 24, seed=2)
    codes, info = rb.read_codes(codec, rb.compress(codec, x, 2))
    assert torch.equal(codes, codec.forward(x, 2)["codes"])
    assert info.code_shape == (2, 1, 32, 3, 2)


def test_sides_not_multiple_of_16_are_padded_in_the_payload(codec):
    x = images(1, 37, 21)
    data = rb.compress(codec, x, 3)
    info = rb.parse_header(data)
    assert (info.batch, info.height, info.width, info.iterations, info.bits) == (1, 37, 21, 3, 32)
    assert info.payload_bytes == math.ceil(3 * 32 * 3 * 2 / 8)
    assert rb.payload_bits_per_pixel(data) == info.payload_bytes * 8 / (37 * 21)


def test_training_mode_codec_writes_the_same_stream_and_stays_in_training(codec):
    x = images(1, 32, 32, seed=3)
    expected = rb.compress(codec, x, 2)
    codec.train()
    try:
        assert rb.compress(codec, x, 2) == expected
        assert codec.training
    finally:
        codec.eval()


def test_header_fields(codec):
    data = rb.compress(codec, images(2, 32, 48), 3, entropy_coding=True)
    info = rb.parse_header(data)
    assert info.entropy_coded and info.version == 1
    assert info.fingerprint == rb.codec_fingerprint(codec)
    assert data[:4] == b"SCVR"
    assert struct.unpack_from("<HHHHH", data, 6) == (2, 32, 48, 3, 32)


def test_entropy_coded_stream_size_is_reported(codec):
    x = images(1, 64, 64)
    raw, coded = rb.compress(codec, x, 2), rb.compress(codec, x, 2, entropy_coding=True)
    assert rb.stream_sizes(raw)["payload_bytes"] == 2 * 32 * 16 // 8
    assert rb.stream_sizes(coded)["header_bytes"] == 24
    assert rb.stream_sizes(coded)["payload_bytes"] == len(coded) - 24


def test_stream_errors_name_the_problem(codec):
    data = rb.compress(codec, images(1, 32, 32), 2)
    with pytest.raises(ValueError, match="truncated"):
        rb.decompress(codec, data[:-1])
    with pytest.raises(ValueError, match="truncated"):
        rb.decompress(codec, data[:10])
    with pytest.raises(ValueError, match="truncated"):
        rb.decompress(codec, data[:2])
    with pytest.raises(ValueError, match="trailing"):
        rb.decompress(codec, data + b"\0")
    with pytest.raises(ValueError, match="magic"):
        rb.decompress(codec, b"\x89PNG\r\n\x1a\n" + data[8:])
    with pytest.raises(ValueError, match="version 7"):
        rb.decompress(codec, data[:4] + bytes([7]) + data[5:])
    with pytest.raises(ValueError, match="unknown flags"):
        rb.decompress(codec, data[:5] + bytes([0x80]) + data[6:])
    corrupted = bytearray(data)
    corrupted[-1] ^= 0x01
    with pytest.raises(ValueError, match="CRC"):
        rb.decompress(codec, bytes(corrupted))


def test_entropy_coded_stream_errors(codec):
    data = rb.compress(codec, images(1, 32, 32), 2, entropy_coding=True)
    with pytest.raises(ValueError, match="truncated"):
        rb.decompress(codec, data[:-4])
    corrupted = bytearray(data)
    corrupted[-3] ^= 0x10
    with pytest.raises(ValueError, match="CRC"):
        rb.decompress(codec, bytes(corrupted))


def test_codec_configuration_mismatch(codec):
    data = rb.compress(codec, images(1, 32, 32), 1)
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="another configuration.*width=0.125"):
        rb.decompress(RNNCodec(width=0.125), data)
    with pytest.raises(ValueError, match="another configuration.*cell=gru"):
        rb.decompress(RNNCodec(cell="gru", width=0.0625), data)
    with pytest.raises(ValueError, match="bits=32.*bits=16"):
        rb.decompress(RNNCodec(width=0.0625, bits=16), data)


def test_image_errors(codec):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rb.compress(codec, images(1, 16, 16) * 2, 1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rb.compress(codec, images(1, 16, 16) - 0.5, 1)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        rb.compress(codec, torch.rand(3, 16, 16), 1)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        rb.compress(codec, torch.rand(1, 1, 16, 16), 1)
    with pytest.raises(ValueError, match="float"):
        rb.compress(codec, torch.zeros(1, 3, 16, 16, dtype=torch.uint8), 1)
    with pytest.raises(ValueError, match="NaN"):
        rb.compress(codec, torch.full((1, 3, 16, 16), float("nan")), 1)
    with pytest.raises(ValueError, match="iterations"):
        rb.compress(codec, images(1, 16, 16), 0)
