"""Bit packing of ±1 codes: known bytes, exact sizes, round trips, errors."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from coding.bitpacking import pack_signs, packed_size, unpack_signs


def test_known_bytes_msb_first_plus_one_is_one():
    codes = torch.tensor([1, -1, -1, -1, -1, -1, -1, 1, 1], dtype=torch.float32)
    assert pack_signs(codes) == bytes([0b10000001, 0b10000000])


def test_order_is_row_major_last_index_fastest():
    codes = -torch.ones(2, 1, 1, 2, 4)
    codes[0, 0, 0, 0, 3] = 1  # 4th code → bit 4 from the top of byte 0
    codes[1, 0, 0, 0, 0] = 1  # 9th code → top bit of byte 1
    assert pack_signs(codes) == bytes([0b00010000, 0b10000000])


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 255, 256])
def test_packed_size_is_ceil_n_over_8(n):
    assert len(pack_signs(torch.ones(n))) == packed_size(n) == -(-n // 8)


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=5),
    seed=st.integers(0, 2**31 - 1),
)
def test_round_trip(shape, seed):
    rng = np.random.default_rng(seed)
    codes = torch.from_numpy(np.where(rng.random(shape) < 0.5, 1.0, -1.0).astype(np.float32))
    data = pack_signs(codes)
    back = unpack_signs(data, shape)
    assert back.dtype == torch.float32 and tuple(back.shape) == tuple(shape)
    assert torch.equal(back, codes)


def test_numpy_input_matches_tensor():
    codes = torch.where(torch.rand(3, 5) < 0.3, 1.0, -1.0)
    assert pack_signs(codes.numpy()) == pack_signs(codes)


def test_rejects_non_sign_values():
    with pytest.raises(ValueError, match=r"exactly \+1 or -1"):
        pack_signs(torch.tensor([1.0, 0.0, -1.0]))


def test_unpack_rejects_wrong_length_and_padding():
    data = pack_signs(torch.ones(10))
    with pytest.raises(ValueError, match="truncated"):
        unpack_signs(data[:1], (10,))
    with pytest.raises(ValueError, match="trailing"):
        unpack_signs(data + b"\0", (10,))
    with pytest.raises(ValueError, match="padding bits"):
        unpack_signs(b"\xff\xff", (10,))
