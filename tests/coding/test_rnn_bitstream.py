"""The recurrent codec's bitstream: exact rate, exact reconstruction, clear errors."""

import math
import struct
import zlib

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


_FIELDS = ("magic", "version", "flags", "batch", "height", "width", "iterations", "bits", "fingerprint", "crc")


def forge(data: bytes, payload: bytes | None = None, **fields) -> bytes:
    """``data`` with header fields replaced (and/or another payload) and *both* CRCs made valid again:
    what a forger, not a transmission error, produces."""
    values = dict(zip(_FIELDS, struct.unpack_from("<4sBBHHHHH4sI", data), strict=True))
    payload = data[28:] if payload is None else payload
    values.update(fields, crc=zlib.crc32(payload))
    head = struct.pack("<4sBBHHHHH4sI", *values.values())
    return head + struct.pack("<I", zlib.crc32(head)) + payload


@pytest.mark.parametrize("b,h,w", [(1, 16, 16), (1, 32, 48), (2, 48, 32)])
def test_each_iteration_costs_exactly_0125_bpp(codec, b, h, w):
    x = images(b, h, w)
    for t in range(1, 5):
        data = rb.compress(codec, x, t, coding="packed")
        sizes = rb.stream_sizes(data)
        assert sizes["header_bytes"] == rb.HEADER_SIZE == 28
        assert sizes["payload_bytes"] == t * b * 32 * (h // 16) * (w // 16) // 8
        assert sizes["total_bytes"] == len(data)
        payload_bits_per_iteration = sizes["payload_bytes"] * 8 / (b * h * w) / t
        assert payload_bits_per_iteration == 0.125
        assert rb.payload_bits_per_pixel_per_iteration(data) == 0.125


@pytest.mark.parametrize("h,w", [(32, 48), (37, 21)])
@pytest.mark.parametrize("coding", ["packed", "entropy", "smallest"])
def test_decompress_equals_eval_forward(codec, h, w, coding):
    x = images(2, h, w, seed=1)
    for t in (1, 3):
        data = rb.compress(codec, x, t, coding=coding)
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
    data = rb.compress(codec, x, 3, coding="packed")
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
    data = rb.compress(codec, images(2, 32, 48), 3, coding="entropy")
    info = rb.parse_header(data)
    assert info.entropy_coded and info.version == 2
    assert info.fingerprint == rb.codec_fingerprint(codec)
    assert data[:4] == b"SCVR"
    assert struct.unpack_from("<HHHHH", data, 6) == (2, 32, 48, 3, 32)
    assert struct.unpack_from("<I", data, 24) == (zlib.crc32(data[:24]),)
    assert not rb.parse_header(rb.compress(codec, images(2, 32, 48), 3, coding="packed")).entropy_coded


def test_entropy_coded_stream_size_is_reported(codec):
    x = images(1, 64, 64)
    raw, coded = rb.compress(codec, x, 2, coding="packed"), rb.compress(codec, x, 2, coding="entropy")
    assert rb.stream_sizes(raw)["payload_bytes"] == 2 * 32 * 16 // 8
    assert rb.stream_sizes(coded)["header_bytes"] == 28
    assert rb.stream_sizes(coded)["payload_bytes"] == len(coded) - 28


def test_stream_errors_name_the_problem(codec):
    data = rb.compress(codec, images(1, 32, 32), 2, coding="packed")
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
    with pytest.raises(ValueError, match="header CRC"):
        rb.decompress(codec, data[:5] + bytes([0x80]) + data[6:])
    with pytest.raises(ValueError, match="unknown flags"):
        rb.decompress(codec, forge(data, flags=0x80))
    corrupted = bytearray(data)
    corrupted[-1] ^= 0x01
    with pytest.raises(ValueError, match="CRC"):
        rb.decompress(codec, bytes(corrupted))


def test_entropy_coded_stream_errors(codec):
    data = rb.compress(codec, images(1, 32, 32), 2, coding="entropy")
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


# ----------------------------------------------------------------------------------------------------
# The one stream-size function, progressive prefixes, the smaller payload, hardening against forged streams


@pytest.mark.parametrize("coding", ["smallest", "packed", "entropy"])
def test_stream_bytes_per_image_is_each_images_own_stream_at_every_k(codec, coding):
    x = torch.cat([images(1, 37, 21, seed=4), torch.full((1, 3, 37, 21), 0.5)])  # a random and a flat image
    codes = codec.encode(x, 3)
    sizes = rb.stream_bytes_per_image(codes, coding)
    assert sizes.shape == (3, 2) and sizes.dtype == torch.int64
    for k in range(1, 4):
        for b in range(2):
            assert sizes[k - 1, b] == len(rb.compress(codec, x[b : b + 1], k, coding=coding)), (k, b)


def test_smallest_coding_writes_the_smaller_payload_and_flags_it(codec):
    noisy, flat = images(1, 64, 64, seed=5), torch.full((1, 3, 160, 160), 0.25)
    for x in (noisy, flat):
        packed, entropy = (rb.compress(codec, x, 2, coding=c) for c in ("packed", "entropy"))
        smallest = rb.compress(codec, x, 2)
        assert len(smallest) == min(len(packed), len(entropy))
        assert rb.parse_header(smallest).entropy_coded == (len(entropy) < len(packed))
    # a flat image gives (nearly) constant codes: entropy coding wins; 16 blocks of noise: packing wins
    assert rb.parse_header(rb.compress(codec, flat, 2)).entropy_coded
    assert not rb.parse_header(rb.compress(codec, noisy, 2)).entropy_coded


@pytest.mark.parametrize("coding", ["packed", "entropy"])
def test_any_prefix_of_k_iterations_decodes(codec, coding):
    x = images(2, 37, 21, seed=6)
    full = rb.compress(codec, x, 4, coding=coding)
    for k in range(1, 5):
        prefix = rb.first_iterations(full, k)
        assert prefix == rb.compress(codec, x, k, coding=coding)
        assert torch.equal(rb.decompress(codec, prefix), codec.forward(x, k)["x_hat"].clamp(0, 1))
    with pytest.raises(ValueError, match="k must be"):
        rb.first_iterations(full, 5)


def test_every_single_header_bit_flip_is_refused(codec):
    data = rb.compress(codec, images(1, 37, 21), 2, coding="entropy")
    for bit in range(rb.HEADER_SIZE * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ValueError, match="header CRC|magic|version"):
            rb.decompress(codec, bytes(flipped))


@pytest.mark.parametrize("coding", ["packed", "entropy"])
def test_forged_sizes_with_valid_checksums_are_refused_before_decoding(codec, coding):
    data = rb.compress(codec, images(1, 427 // 8, 40), 2, coding=coding)  # 53×40: 4×3 blocks
    for fields in (dict(height=16 * 65), dict(width=4000), dict(batch=3000), dict(iterations=3), dict(iterations=1)):
        with pytest.raises(ValueError, match="truncated|trailing|cannot hold|need"):
            rb.decompress(codec, forge(data, **fields))
    # a height within the same 16-pixel block row is a valid stream of a smaller image, but only a forger
    # can write it: a transmission error in the header fails its CRC
    assert rb.decompress(codec, forge(data, height=52)).shape == (1, 3, 52, 40)


def test_version_1_streams_fail_clearly(codec):
    data = rb.compress(codec, images(1, 32, 32), 1, coding="packed")
    old = data[:4] + bytes([1]) + data[5:24] + data[28:]  # the 24-byte header of format version 1
    with pytest.raises(ValueError, match="version 1 is no longer read.*re-encode"):
        rb.decompress(codec, old)


def test_max_pixels_refuses_large_claims_before_any_work(codec):
    data = rb.compress(codec, images(2, 32, 48), 1)
    with pytest.raises(ValueError, match="3072 pixels, more than max_pixels=3071"):
        rb.decompress(codec, data, max_pixels=2 * 32 * 48 - 1)
    assert rb.decompress(codec, data, max_pixels=None).shape == (2, 3, 32, 48)


def test_bfloat16_codes_give_the_same_stream(codec):
    # under bf16-mixed autocast the binarizer's ±1 come out as bfloat16; they are the same codes
    codes = codec.encode(images(1, 37, 21, seed=7), 2)
    assert torch.equal(rb.stream_bytes_per_image(codes.bfloat16()), rb.stream_bytes_per_image(codes))
    assert rb.compress_codes(codec, codes.bfloat16(), (37, 21)) == rb.compress_codes(codec, codes, (37, 21))
