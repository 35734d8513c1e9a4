"""Lossless entropy coding of the recurrent codec's ±1 codes with CompressAI's rANS coder, one chunk per
iteration, so that the first k chunks are on their own the payload of the first k iterations.

Probability model — *semi-static* (two passes), per iteration: the first pass counts, for every code
channel ``c``, how often the bit is +1 in the very codes being sent; that probability, quantised to 8
bits, is written into the chunk as side information; the second pass codes every bit of the iteration
with the probability of its channel. The decoder reads the side information first, so it needs no
trained model. This is not the paper's context model (Toderici et al. 2017 §3 use a learned
binary-context PixelRNN-style model); it is the simplest model that gains when the code bits are
biased. Its side information and flush cost ``C + 12`` bytes per iteration or more, so it can be larger
than bit-packing (unbiased codes, small images): the container (:mod:`coding.rnn_bitstream`) writes
whichever of the two is smaller.

Payload layout: ``T`` chunks back to back, chunk ``t`` (iteration ``t``, codes of shape (B, C, h, w)):

============  =========  ======================================================================
bytes         type       content
============  =========  ======================================================================
C             uint8      ``q[c]`` ∈ [1, 255]: ``P(bit = +1) = q / 256``
4             uint32 LE  ``n``: number of rANS bytes that follow (a multiple of 4, at least 8)
n             bytes      CompressAI ``RansEncoder.encode_with_indexes`` output
============  =========  ======================================================================

CDFs: CompressAI's rANS works at 16-bit precision (``cdf[-1] == 65536``) and treats the last symbol of
every CDF as its escape ("bypass"), so each binary CDF has three symbols — ``0`` (the bit −1), ``1``
(the bit +1), escape — with frequencies ``65536 − 256·q``, ``256·q`` and **0**:
``cdf = [0, 65536 − 256·q, 65536, 65536]``, ``cdf_size = 4``, ``offset = 0``. With a zero-frequency
escape the decoder can never enter its bypass path, whose reads are unbounded on corrupt data; each
decoded symbol then reads at most one 32-bit word. (CompressAI checks CDFs only with ``assert``, which
its release builds compile out — :func:`decode_codes` would abort a debug build on every call, never
silently.)

Padding: :data:`PAD_SYMBOLS` symbols (bit 0, ``P = 1/2``) are coded after each iteration's codes:
CompressAI's encoder allocates one 32-bit word per symbol for its output and its flush writes two, so a
single symbol overflowed its heap ("double free or corruption", seen here).

Decoding an untrusted chunk (:func:`split_chunks`, then :func:`decode_codes`): before the rANS decoder
runs, the chunk structure must fill the payload exactly, every ``q`` must be in [1, 255], and the
number of symbols the shape asks for must fit in the rANS bytes present — each symbol costs at least
``−log2 max(P(0), P(1))`` bits of its channel, and a rANS stream of ``n`` bytes holds less than ``8·n``
bits of information — so nothing is allocated beyond what the payload can hold. The rANS bytes are
handed to the decoder followed by one zero word per symbol (it cannot read past them), and a chunk
decodes only if re-encoding its symbols gives back exactly its bytes (a forged shape or corrupt bits
raise ``ValueError``).
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import math
import struct
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from coding.bitpacking import signs_to_bits

PROBABILITY_BITS = 8
"""Precision of the stored per-channel probability ``P(+1) = q / 2**PROBABILITY_BITS``."""

CDF_PRECISION = 16
"""CompressAI's rANS precision: CDFs end at ``2**16``."""

PAD_SYMBOLS = 4
"""Padding symbols coded after each iteration's codes, so that CompressAI's output buffer never overflows."""

MIN_RANS_BYTES = 8
"""The rANS flush alone: its 64-bit state."""

_LENGTH = struct.Struct("<I")
_WORD = 4
_ROUNDING_BITS = 2.0**-14
"""Upper bound of what rANS's integer division can lose, in bits per symbol (``f / x`` with ``x ≥ 2**31``)."""


@functools.cache
def _rans():
    """CompressAI's rANS extension ``compressai.ans``, loaded on first use straight from its file: it
    needs nothing else of compressai, whose package import takes 5–20 s (models, zoo, torchvision) and
    warns about ``torch.jit.script``. Falls back to the package import where the file is not found."""
    if "compressai.ans" in sys.modules:
        return sys.modules["compressai.ans"]
    package = importlib.util.find_spec("compressai")
    for folder in (package.submodule_search_locations or []) if package else []:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = Path(folder) / f"ans{suffix}"
            if path.is_file():
                spec = importlib.util.spec_from_file_location("compressai.ans", path)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                return module
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        from compressai import ans
    return ans


def _check_shape(shape: Sequence[int], ndim: int = 5) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    names = "(T, B, C, h, w)" if ndim == 5 else "(B, C, h, w)"
    if len(shape) != ndim or any(s < 0 for s in shape):
        raise ValueError(f"codes must have shape {names} with non-negative sides, got {shape}")
    return shape


def side_info_bytes(channels: int) -> int:
    """Bytes of side information of one iteration's chunk: one probability per channel plus the 4-byte length."""
    return channels + _LENGTH.size


def quantise_probabilities(bits: np.ndarray) -> np.ndarray:
    """``q[c]`` ∈ [1, 255] with ``P(+1) ≈ q / 256`` from one iteration's 0/1 bits of shape (B, C, h, w).

    The empirical frequency is rounded to the nearest 1/256 and clamped away from 0 and 1, so that
    both bits always stay codable. A channel with no symbols gets ``q = 128``.
    """
    b, c, h, w = bits.shape
    n = b * h * w
    ones = bits.transpose(1, 0, 2, 3).reshape(c, n).sum(axis=-1, dtype=np.int64)
    scale = 1 << PROBABILITY_BITS
    q = np.full(c, scale // 2, dtype=np.int64) if n == 0 else np.rint(ones * scale / n).astype(np.int64)
    return np.clip(q, 1, scale - 1).astype(np.uint8)


def _cdfs(q: np.ndarray) -> list[list[int]]:
    """One CDF per channel (zero-frequency escape), then the CDF of the padding symbols (last index)."""
    total = 1 << CDF_PRECISION
    one = 1 << (CDF_PRECISION - PROBABILITY_BITS)
    return [[0, total - int(v) * one, total, total] for v in q] + [[0, total // 2, total, total]]


def _indexes(shape: tuple[int, ...]) -> list[int]:
    b, c, h, w = shape
    index = np.broadcast_to(np.arange(c)[None, :, None, None], shape)
    return index.reshape(-1).tolist() + [c] * PAD_SYMBOLS


def _rans_encode(bits: np.ndarray, q: np.ndarray) -> bytes:
    cdfs = _cdfs(q)
    symbols = bits.reshape(-1).astype(np.int32).tolist() + [0] * PAD_SYMBOLS
    return (
        _rans().RansEncoder().encode_with_indexes(symbols, _indexes(bits.shape), cdfs, [4] * len(cdfs), [0] * len(cdfs))
    )


def _encode_bits(bits: np.ndarray) -> bytes:
    q = quantise_probabilities(bits)
    encoded = _rans_encode(bits, q)
    return q.tobytes() + _LENGTH.pack(len(encoded)) + encoded


def encode_iteration(codes: Tensor | np.ndarray) -> bytes:
    """The chunk of one iteration's ±1 codes of shape (B, C, h, w) (layout in the module docstring).

    Raises:
        ValueError: if the shape is not 4-D or a value is not exactly ±1.
    """
    shape = _check_shape(codes.shape, ndim=4)
    return _encode_bits(signs_to_bits(codes).reshape(shape))


def encode_codes(codes: Tensor | np.ndarray) -> bytes:
    """Entropy-code ±1 codes of shape (T, B, C, h, w): the T iterations' chunks back to back.

    Raises:
        ValueError: if the shape is not 5-D or a value is not exactly ±1.
    """
    return b"".join(iteration_chunks(codes))


def iteration_chunks(codes: Tensor | np.ndarray) -> list[bytes]:
    """The T chunks of :func:`encode_codes`, one per iteration (their lengths are the per-iteration cost)."""
    shape = _check_shape(codes.shape)
    bits = signs_to_bits(codes).reshape(shape)
    return [_encode_bits(bits[t]) for t in range(shape[0])]


def minimum_bits(q: np.ndarray, positions: int) -> float:
    """Fewest bits any rANS stream needs for ``positions`` symbols of every channel with probabilities
    ``q``, plus the padding: each symbol costs at least ``−log2 max(P(0), P(1))`` (less a rounding bound)."""
    p_max = np.maximum(q.astype(np.float64), 256.0 - q) / 256.0
    per_position = float(np.sum(-np.log2(p_max) - _ROUNDING_BITS))
    return positions * per_position + PAD_SYMBOLS * (1.0 - _ROUNDING_BITS)


def split_chunks(data: bytes, shape: Sequence[int]) -> list[tuple[np.ndarray, bytes]]:
    """Check the layout of an entropy-coded payload for codes of ``shape`` (T, B, C, h, w) and split it
    into T ``(q, rANS bytes)`` pairs — without decoding anything, and allocating nothing that the
    payload's size does not bound.

    Raises:
        ValueError: a chunk truncated (side information or rANS bytes), trailing bytes after the last
            chunk, a stored probability of 0, a rANS length that is not a multiple of 4 or below 8, or
            more codes than a chunk's rANS bytes can hold (a shape that does not belong to the payload).
    """
    t_total, b, c, h, w = _check_shape(shape)
    side = side_info_bytes(c)
    chunks, offset = [], 0
    for t in range(t_total):
        if len(data) - offset < side:
            raise ValueError(
                f"entropy-coded codes truncated: iteration {t + 1} of {t_total} needs {side} bytes of side "
                f"information (C={c} probabilities + length), {len(data) - offset} left"
            )
        q = np.frombuffer(data, dtype=np.uint8, count=c, offset=offset)
        if np.any(q == 0):
            raise ValueError(f"entropy-coded codes: a stored probability of iteration {t + 1} is 0 (corrupt data)")
        (length,) = _LENGTH.unpack_from(data, offset + c)
        offset += side
        if length % _WORD or length < MIN_RANS_BYTES:
            raise ValueError(
                f"entropy-coded codes: iteration {t + 1}'s rANS data must be a multiple of 4 bytes and at least "
                f"{MIN_RANS_BYTES}, the length field says {length}"
            )
        if length > len(data) - offset:
            raise ValueError(
                f"entropy-coded codes truncated: iteration {t + 1}'s length field says {length} rANS bytes, "
                f"{len(data) - offset} left"
            )
        if minimum_bits(q, b * h * w) > 8 * length:
            raise ValueError(
                f"entropy-coded codes: iteration {t + 1}'s {length} rANS bytes cannot hold {b * c * h * w} codes "
                f"of shape (B={b}, C={c}, h={h}, w={w}) with its probabilities: the header's shape does not "
                "belong to this payload"
            )
        chunks.append((q, data[offset : offset + length]))
        offset += length
    if offset != len(data):
        raise ValueError(f"entropy-coded codes have trailing bytes: {len(data) - offset} after {t_total} iterations")
    return chunks


def _decode_chunk(q: np.ndarray, encoded: bytes, shape: tuple[int, ...]) -> np.ndarray:
    count = math.prod(shape) + PAD_SYMBOLS
    cdfs = _cdfs(q)
    guard = bytes(_WORD * (count + 2))  # the decoder reads at most one word per symbol, two at its start
    symbols = (
        _rans()
        .RansDecoder()
        .decode_with_indexes(encoded + guard, _indexes(shape), cdfs, [4] * len(cdfs), [0] * len(cdfs))
    )
    bits = np.asarray(symbols, dtype=np.int64)
    if bits.size != count or bits.min(initial=0) < 0 or bits.max(initial=0) > 1 or bits[-PAD_SYMBOLS:].any():
        raise ValueError("entropy-coded codes decoded to unexpected symbols (corrupt data)")
    bits = bits[:-PAD_SYMBOLS].reshape(shape).astype(np.uint8)
    if _rans_encode(bits, q) != encoded:
        raise ValueError("entropy-coded codes corrupt: the rANS bytes are not the coding of what they decode to")
    return bits


def decode_codes(data: bytes, shape: Sequence[int]) -> Tensor:
    """Inverse of :func:`encode_codes`: float32 ±1 codes of ``shape`` (T, B, C, h, w). The first k
    chunks of a payload decode on their own with ``shape[0] = k``.

    Raises:
        ValueError: see :func:`split_chunks`; also if a chunk does not decode to its own coding.
    """
    shape = _check_shape(shape)
    chunks = split_chunks(data, shape)
    out = np.empty(shape, dtype=np.float32)
    for t, (q, encoded) in enumerate(chunks):
        out[t] = _decode_chunk(q, encoded, shape[1:]).astype(np.float32) * 2 - 1
    return torch.from_numpy(out)


def empirical_entropy_bits(codes: Tensor | np.ndarray) -> float:
    """Ideal cost in bits of the codes under the same per-(iteration, channel) model with exact
    probabilities: ``Σ_tc n_tc · H(p̂_tc)``. The lower bound the rANS chunks approach (side info aside)."""
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
