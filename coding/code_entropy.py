"""Lossless entropy coding of the recurrent codec's ±1 codes with CompressAI's rANS coder.

Probability model — *semi-static* (two passes): the first pass counts, for every iteration ``t`` and
code channel ``c``, how often the bit is +1 in the very codes being sent; that probability, quantised to
8 bits, is written into the stream as side information; the second pass codes every bit with the
probability of its (iteration, channel). The decoder reads the side information first, so it needs no
trained model. This is not the paper's context model (Toderici et al. 2017 §3 use a learned
binary-context PixelRNN-style model); it is the simplest model that gains when the code bits are biased,
and it costs nothing when they are not beyond the side information.

Stream layout (every byte counted as payload by the container):

============  =========  ======================================================================
bytes         type       content
============  =========  ======================================================================
T·C           uint8      ``q[t, c]`` ∈ [1, 255]: ``P(bit = +1) = q / 256``, iteration-major
4             uint32 LE  ``n``: number of rANS bytes that follow
n             bytes      CompressAI ``RansEncoder.encode_with_indexes`` output (a multiple of 4)
============  =========  ======================================================================

CDFs: CompressAI's rANS works at 16-bit precision (``cdf[-1] == 65536``) and reserves the last symbol
of every CDF for its escape ("bypass") mechanism, so each binary CDF has three symbols —
``0`` (the bit −1), ``1`` (the bit +1), escape — with frequencies ``65535 − 256·q``, ``256·q`` and ``1``:
``cdf = [0, 65535 − 256·q, 65535, 65536]``, ``cdf_size = 4``, ``offset = 0``. Symbols 0 and 1 never
escape; the escape slot costs ``log2(65536 / 65535)`` ≈ 2·10⁻⁵ bit per symbol.

Padding: :data:`PAD_SYMBOLS` extra symbols with a uniform CDF are coded after the codes (≈ 4 bits).
CompressAI's encoder allocates one 32-bit word per symbol for its output and its flush writes two, so a
single symbol overflows the heap ("double free or corruption", seen here); with ≥ 4 symbols, each
costing at most log2(65536 / 255) ≈ 8 bits, the output always fits.

Overheads compared with the ideal ``Σ n_tc · H(p̂_tc)`` bits: the side information (``T·C + 4``
bytes), the rANS flush (its 64-bit state, rounded to 32-bit words) and the 8-bit quantisation of ``p̂``.
On small images the side information can outweigh the gain; report both sizes.
"""

from __future__ import annotations

import math
import struct
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from coding.bitpacking import signs_to_bits

PROBABILITY_BITS = 8
"""Precision of the stored per-(iteration, channel) probability ``P(+1) = q / 2**PROBABILITY_BITS``."""

CDF_PRECISION = 16
"""CompressAI's rANS precision: CDFs end at ``2**16``."""

PAD_SYMBOLS = 4
"""Uniform padding symbols coded after the codes, so that CompressAI's output buffer never overflows."""

_LENGTH = struct.Struct("<I")


def _rans():
    """``compressai.ans``, imported on first use: importing compressai takes seconds, and its import
    emits a FutureWarning about ``torch.jit.script`` that says nothing about this code."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        from compressai import ans
    return ans


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 5 or any(s < 0 for s in shape):
        raise ValueError(f"codes must have shape (T, B, C, h, w) with non-negative sides, got {shape}")
    return shape  # type: ignore[return-value]


def side_info_bytes(iterations: int, channels: int) -> int:
    """Bytes of side information: one probability per (iteration, channel) plus the 4-byte length."""
    return iterations * channels + _LENGTH.size


def quantise_probabilities(bits: np.ndarray) -> np.ndarray:
    """``q[t, c]`` ∈ [1, 255] with ``P(+1) ≈ q / 256`` from 0/1 bits of shape (T, B, C, h, w).

    The empirical frequency is rounded to the nearest 1/256 and clamped away from 0 and 1, so that
    both bits always stay codable. A group with no symbols gets ``q = 128``.
    """
    t, b, c, h, w = bits.shape
    n = b * h * w
    counts = bits.transpose(0, 2, 1, 3, 4).reshape(t, c, n)
    ones = counts.sum(axis=-1, dtype=np.int64)
    scale = 1 << PROBABILITY_BITS
    q = np.full((t, c), scale // 2, dtype=np.int64) if n == 0 else np.rint(ones * scale / n).astype(np.int64)
    return np.clip(q, 1, scale - 1).astype(np.uint8)


def _cdfs(q: np.ndarray) -> list[list[int]]:
    """One CDF per (iteration, channel), then the uniform CDF of the padding symbols (last index)."""
    total = 1 << CDF_PRECISION
    one = 1 << (CDF_PRECISION - PROBABILITY_BITS)
    cdfs = [[0, total - 1 - int(v) * one, total - 1, total] for v in q.reshape(-1)]
    return [*cdfs, [0, total // 2, total - 1, total]]


def _indexes(shape: tuple[int, int, int, int, int]) -> list[int]:
    t, b, c, h, w = shape
    index = np.arange(t)[:, None, None, None, None] * c + np.arange(c)[None, None, :, None, None]
    return np.broadcast_to(index, shape).reshape(-1).tolist() + [t * c] * PAD_SYMBOLS


def encode_codes(codes: Tensor | np.ndarray) -> bytes:
    """Entropy-code ±1 codes of shape (T, B, C, h, w); see the module docstring for the layout.

    Raises:
        ValueError: if the shape is not 5-D or a value is not exactly ±1.
    """
    shape = _check_shape(codes.shape)
    bits = signs_to_bits(codes).reshape(shape)
    q = quantise_probabilities(bits)
    cdfs = _cdfs(q)
    symbols = bits.reshape(-1).astype(np.int32).tolist() + [0] * PAD_SYMBOLS
    encoded = (
        _rans().RansEncoder().encode_with_indexes(symbols, _indexes(shape), cdfs, [4] * len(cdfs), [0] * len(cdfs))
    )
    return q.tobytes() + _LENGTH.pack(len(encoded)) + encoded


def split_stream(data: bytes, shape: Sequence[int]) -> tuple[np.ndarray, bytes]:
    """Check the layout of an entropy-coded stream for codes of ``shape`` and split it into the
    quantised probabilities ``q`` (T, C) and the rANS bytes — without decoding anything.

    Raises:
        ValueError: if ``data`` is too short for its side information, its length field disagrees with
            the bytes present (truncated or trailing data), or a stored probability is out of range.
    """
    t, _, c, _, _ = _check_shape(shape)
    header = side_info_bytes(t, c)
    if len(data) < header:
        raise ValueError(
            f"entropy-coded codes truncated: {len(data)} bytes, but the side information alone for "
            f"T={t} iterations × C={c} channels is {header} bytes"
        )
    q = np.frombuffer(data, dtype=np.uint8, count=t * c).reshape(t, c)
    if np.any(q == 0):
        raise ValueError("entropy-coded codes: a stored probability is 0 (corrupt or foreign data)")
    (length,) = _LENGTH.unpack_from(data, t * c)
    present = len(data) - header
    if present != length:
        kind = "truncated" if present < length else "trailing bytes"
        raise ValueError(f"entropy-coded codes {kind}: the length field says {length} rANS bytes, got {present}")
    if length % 4:
        raise ValueError(f"entropy-coded codes: rANS data must be a multiple of 4 bytes, got {length}")
    return q, data[header:]


def decode_codes(data: bytes, shape: Sequence[int]) -> Tensor:
    """Inverse of :func:`encode_codes`: float32 ±1 codes of ``shape`` (T, B, C, h, w).

    The rANS decoder does not bound-check its input, so the layout is checked first
    (:func:`split_stream`); bit flips inside the rANS bytes cannot be detected here — the container
    (:mod:`coding.rnn_bitstream`) checks a CRC-32 before calling this.

    Raises:
        ValueError: see :func:`split_stream`; also if the decoder yields symbols other than 0/1.
    """
    shape = _check_shape(shape)
    q, encoded = split_stream(data, shape)
    cdfs = _cdfs(q)
    symbols = (
        _rans().RansDecoder().decode_with_indexes(encoded, _indexes(shape), cdfs, [4] * len(cdfs), [0] * len(cdfs))
    )
    bits = np.asarray(symbols[: len(symbols) - PAD_SYMBOLS], dtype=np.int64)
    if (bits.size and (bits.min() < 0 or bits.max() > 1)) or any(symbols[len(symbols) - PAD_SYMBOLS :]):
        raise ValueError("entropy-coded codes decoded to unexpected symbols (corrupt data)")
    return torch.from_numpy((bits.astype(np.float32) * 2 - 1).reshape(shape))


def empirical_entropy_bits(codes: Tensor | np.ndarray) -> float:
    """Ideal cost in bits of the codes under the same per-(iteration, channel) model with exact
    probabilities: ``Σ_tc n_tc · H(p̂_tc)``. The lower bound the rANS stream approaches (side info aside)."""
    shape = _check_shape(codes.shape)
    bits = signs_to_bits(codes).reshape(shape)
    t, b, c, h, w = shape
    n = b * h * w
    groups = bits.transpose(0, 2, 1, 3, 4).reshape(t * c, n)
    if n == 0:
        return 0.0
    total = 0.0
    for ones in groups.sum(axis=1):
        p = ones / n
        if 0 < p < 1:
            total += n * -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
    return total
