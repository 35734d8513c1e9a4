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
    iteration_chunks,
    quantise_probabilities,
    side_info_bytes,
    split_chunks,
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


def test_side_info_holds_quantised_probabilities_per_iteration():
    codes = -torch.ones(2, 1, 3, 4, 4)
    codes[0, :, 1] = 1  # channel 1 of iteration 0 all +1
    codes[1, :, 2, :2] = 1  # half of channel 2 of iteration 1
    bits = (codes.numpy() > 0).astype(np.uint8)
    assert [quantise_probabilities(bits[t]).tolist() for t in range(2)] == [[1, 255, 1], [1, 1, 128]]
    first, second = iteration_chunks(codes)
    data = encode_codes(codes)
    assert data == first + second
    # chunk = 3 probabilities, the rANS length, the rANS bytes
    assert first[:3] == bytes([1, 255, 1]) and second[:3] == bytes([1, 1, 128])
    assert int.from_bytes(first[3:7], "little") == len(first) - side_info_bytes(3)


def test_biased_codes_compress_near_entropy():
    shape = (2, 1, 32, 16, 16)  # 16384 codes
    codes = biased_codes(shape, 0.95)
    data = encode_codes(codes)
    raw = len(pack_signs(codes))
    bound_bytes = empirical_entropy_bits(codes) / 8
    side = 2 * side_info_bytes(32)
    print(f"P(+1)=0.95: raw {raw} B, entropy coded {len(data)} B (side info {side} B), bound {bound_bytes:.0f} B")
    assert len(data) < 0.45 * raw
    assert len(data) <= 1.03 * bound_bytes + side + 2 * RANS_FLUSH_BYTES


def test_uniform_codes_cost_little_more_than_raw():
    shape = (2, 1, 32, 16, 16)
    codes = biased_codes(shape, 0.5)
    data = encode_codes(codes)
    raw = len(pack_signs(codes))
    print(f"P(+1)=0.5: raw {raw} B, entropy coded {len(data)} B")
    assert len(data) <= 1.01 * raw + 2 * (side_info_bytes(32) + RANS_FLUSH_BYTES)


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
    with pytest.raises(ValueError, match="probability of iteration 1 is 0"):
        decode_codes(b"\0" + data[1:], codes.shape)
    with pytest.raises(ValueError, match=r"\(T, B, C, h, w\)"):
        encode_codes(codes[0])
    with pytest.raises(ValueError, match=r"\+1 or -1"):
        encode_codes(codes * 0.5)


def test_the_first_k_chunks_decode_on_their_own():
    codes = biased_codes((4, 2, 8, 3, 5), 0.2, seed=3)
    chunks = iteration_chunks(codes)
    for k in range(1, 5):
        assert torch.equal(decode_codes(b"".join(chunks[:k]), (k, 2, 8, 3, 5)), codes[:k])


def test_a_shape_the_payload_cannot_hold_is_refused_before_decoding():
    codes = biased_codes((1, 1, 8, 4, 4), 0.5, seed=4)
    data = encode_codes(codes)
    for shape in [(1, 1, 8, 4, 40), (1, 65535, 8, 4096, 4096)]:  # the second would need ~8 TB of symbols
        with pytest.raises(ValueError, match="cannot hold"):
            split_chunks(data, shape)
    with pytest.raises(ValueError, match="truncated"):
        split_chunks(data, (2, 1, 8, 4, 4))


def test_constant_codes_are_not_refused_by_the_capacity_bound():
    # constant codes are the tightest case of the bound: every symbol at the minimum cost of its channel
    for p_plus in (0.0, 1.0):
        codes = biased_codes((2, 1, 32, 64, 64), p_plus)
        data = encode_codes(codes)
        assert len(data) < 300
        assert torch.equal(decode_codes(data, codes.shape), codes)


def test_corrupt_rans_bytes_decode_to_codes_or_are_refused():
    """Every single-bit flip of the rANS bytes raises ValueError or decodes to ±1 codes of the shape whose
    coding is exactly the flipped bytes (another valid chunk: only the container's CRC can tell)."""
    codes = biased_codes((1, 1, 8, 6, 6), 0.3, seed=5)
    data = bytearray(encode_codes(codes))
    side = side_info_bytes(8)
    outcomes = {"refused": 0, "other valid chunk": 0}
    for position in range(side, len(data)):
        for bit in range(8):
            data[position] ^= 1 << bit
            try:
                back = decode_codes(bytes(data), codes.shape)
            except ValueError:
                outcomes["refused"] += 1
            else:
                assert back.shape == codes.shape and set(back.unique().tolist()) <= {-1.0, 1.0}
                assert not torch.equal(back, codes)
                outcomes["other valid chunk"] += 1
            data[position] ^= 1 << bit
    print(outcomes)
    assert sum(outcomes.values()) == 8 * (len(data) - side)
    assert outcomes["refused"] > 0.8 * sum(outcomes.values())
