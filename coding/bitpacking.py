"""Packing of ±1 binary codes into bytes, one bit per code, and back.

Bit convention: ``+1 → 1`` and ``-1 → 0``.

Order: the codes are read in the tensor's row-major (C) order. For the recurrent codec's codes of shape
``(T, B, C, h, w)`` that is iteration, batch, channel, row, column — the last index varies fastest.
Within a byte the first code goes to the most significant bit (``numpy.packbits``'s default
``bitorder="big"``). The last byte is padded with zero bits; ``unpack_signs`` checks that the padding is
zero, which catches some foreign or shifted data.

A tensor of ``n`` codes packs into exactly ``ceil(n / 8)`` bytes; nothing else (no shape, no header)
is stored — the container (:mod:`coding.rnn_bitstream`) carries the shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def packed_size(num_codes: int) -> int:
    """Bytes needed for ``num_codes`` one-bit codes: ``ceil(num_codes / 8)``."""
    if num_codes < 0:
        raise ValueError(f"num_codes must be >= 0, got {num_codes}")
    return (num_codes + 7) // 8


def signs_to_bits(codes: Tensor | np.ndarray) -> np.ndarray:
    """Flattened (C-order) ``uint8`` array of 0/1 from ±1 codes; raises ``ValueError`` on other values."""
    array = codes.detach().cpu().numpy() if isinstance(codes, Tensor) else np.asarray(codes)
    flat = array.reshape(-1)
    positive = flat == 1
    if not np.all(positive | (flat == -1)):
        bad = flat[~(positive | (flat == -1))]
        raise ValueError(f"codes must be exactly +1 or -1; found {bad.size} other value(s), e.g. {bad[0]!r}")
    return positive.astype(np.uint8)


def pack_signs(codes: Tensor | np.ndarray) -> bytes:
    """Pack ±1 codes into ``ceil(numel / 8)`` bytes (``+1 → 1``, row-major order, MSB first).

    Args:
        codes: tensor or array of ±1 values, any shape (for the recurrent codec ``(T, B, C, h, w)``).

    Raises:
        ValueError: if a value is not exactly +1 or -1.
    """
    return np.packbits(signs_to_bits(codes)).tobytes()


def unpack_signs(data: bytes, shape: Sequence[int]) -> Tensor:
    """Inverse of :func:`pack_signs`: a float32 tensor of ±1 of the given ``shape``.

    Raises:
        ValueError: if ``data`` does not have exactly ``ceil(prod(shape) / 8)`` bytes, or its padding
            bits are not zero.
    """
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"shape must not have negative sides, got {shape}")
    n = math.prod(shape)
    expected = packed_size(n)
    if len(data) != expected:
        raise ValueError(
            f"packed codes of shape {shape} need {expected} bytes, got {len(data)}"
            + (" (truncated)" if len(data) < expected else " (trailing bytes)")
        )
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    if bits[n:].any():
        raise ValueError("padding bits after the last code are not zero: not a stream written by pack_signs")
    signs = bits[:n].astype(np.float32) * 2 - 1
    return torch.from_numpy(signs.reshape(shape))
