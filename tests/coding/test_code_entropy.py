"""Entropy coding of ±1 codes with CompressAI's rANS: exact round trips and sizes near the entropy."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from coding.bitpacking import pack_signs
from coding.code_entropy import (
    decode_codes,
    empirical_entropy_bits,
    encode_codes,
    quantise_probabilities,
    side_info_bytes,
)

RANS_FLUSH_BYTES = 8  # rANS64 writes its final 64-bit state


def biased_codes(shape, p_plus, seed=0):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.where(rng.random(shape) < p_plus, 1.0, -1.0).astype(np.float32))


@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 2), st.integers(1, 6), st.integers(1, 4), st.integers(1, 4)),
    p_plus=st.sampled_from([0.0, 0.01, 0.3, 0.5, 0.9, 1.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_round_trip_exact(shape, p_plus, seed):
    codes = biased_codes(shape, p_plus, seed)
    back = decode_codes(encode_codes(codes), shape)
    assert back.dtype == torch.float32
    assert torch.equal(back, codes)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (1, 1, 1, 1, 2), (1, 1, 1, 1, 3), (0, 1, 4, 2, 2)])
def test_round_trip_few_symbols(shape):
    # CompressAI's encoder overflowed its buffer on a single symbol before padding was added
    codes = biased_codes(shape, 0.5)
    assert torch.equal(decode_codes(encode_codes(codes), shape), codes)


def test_round_trip_per_channel_biases():
    rng = np.random.default_rng(1)
    probabilities = rng.random((3, 1, 8, 1, 1))  # one bias per (iteration, channel)
    codes = torch.from_numpy(np.where(rng.random((3, 2, 8, 5, 6)) < probabilities, 1.0, -1.0).astype(np.float32))
    assert torch.equal(decode_codes(encode_codes(codes), codes.shape), codes)


def test_side_info_holds_quantised_probabilities():
    codes = -torch.ones(2, 1, 3, 4, 4)
    codes[0, :, 1] = 1  # channel 1 of iteration 0 all +1
    codes[1, :, 2, :2] = 1  # half of channel 2 of iteration 1
    q = quantise_probabilities((codes.numpy() > 0).astype(np.uint8))
    assert q.tolist() == [[1, 255, 1], [1, 1, 128]]
    assert encode_codes(codes)[:6] == bytes([1, 255, 1, 1, 1, 128])


def test_biased_codes_compress_near_entropy():
    shape = (2, 1, 32, 16, 16)  # 16384 codes
    codes = biased_codes(shape, 0.95)
    data = encode_codes(codes)
    raw = len(pack_signs(codes))
    bound_bytes = empirical_entropy_bits(codes) / 8
    side = side_info_bytes(2, 32)
    print(f"P(+1)=0.95: raw {raw} B, entropy coded {len(data)} B (side info {side} B), bound {bound_bytes:.0f} B")
    assert len(data) < 0.45 * raw
    assert len(data) <= 1.03 * bound_bytes + side + RANS_FLUSH_BYTES


def test_uniform_codes_cost_little_more_than_raw():
    shape = (2, 1, 32, 16, 16)
    codes = biased_codes(shape, 0.5)
    data = encode_codes(codes)
    raw = len(pack_signs(codes))
    print(f"P(+1)=0.5: raw {raw} B, entropy coded {len(data)} B")
    assert len(data) <= 1.01 * raw + side_info_bytes(2, 32) + RANS_FLUSH_BYTES


def test_entropy_bound_known_value():
    codes = -torch.ones(1, 1, 2, 2, 2)
    codes[0, 0, 0, 0] = 1  # channel 0: 2 of 4 are +1 → 4 bits; channel 1: constant → 0 bits
    assert empirical_entropy_bits(codes) == pytest.approx(4.0)


def test_errors_name_the_problem():
    codes = biased_codes((1, 1, 4, 2, 2), 0.5)
    data = encode_codes(codes)
    with pytest.raises(ValueError, match="truncated"):
        decode_codes(data[:-1], codes.shape)
    with pytest.raises(ValueError, match="side information"):
        decode_codes(data[:3], codes.shape)
    with pytest.raises(ValueError, match="trailing"):
        decode_codes(data + b"\0\0\0\0", codes.shape)
    with pytest.raises(ValueError, match="probability is 0"):
        decode_codes(b"\0" + data[1:], codes.shape)
    with pytest.raises(ValueError, match=r"\(T, B, C, h, w\)"):
        encode_codes(codes[0])
    with pytest.raises(ValueError, match=r"\+1 or -1"):
        encode_codes(codes * 0.5)
