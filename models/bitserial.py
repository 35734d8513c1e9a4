"""The bit-serial kernel of a binary-decomposed layer, run for real: AND + popcount on 64-bit words.

For a decomposed layer (:mod:`models.bdcnn`) and an input quantised to Q bits, every output needs the
integers Z_nj = m_nj · x_int = Σ_{q<Q} 2^q (2·popc(m⁺_nj ∧ b_q) − popc(b_q)), where m⁺ are the bits of
the basis equal to +1 and b_q the q-th bit plane of the (im2col-unfolded) integer input. Both are packed
into 64-bit words along D (zero bits pad the last word; they add nothing to either popcount), so one
output costs k·Q·⌈D/64⌉ AND + popcount word pairs: the cost model's ``word_ops``.

Backends:

- ``numba`` (default when numba is installed): a compiled loop with LLVM's ``ctpop`` (the POPCNT
  instruction), parallel over output channels with ``numba.prange`` (threads: ``numba.set_num_threads``).
- ``torch``: the same AND + popcount on the packed words with a 256-entry byte popcount table, in pure
  torch; exact but slow (the fallback when numba is missing, and a second implementation for the tests).

Z is exact integer arithmetic (int64), so it equals ``conv2d``/``linear`` of the integer input with the ±1
bases computed in float64 (exact below 2^53) bit for bit: :func:`integer_reference`. The layer output is
then y = β Σ_j c_j Z_j + o Σ_j c_j s_j + bias (s_j = Σ_d m_jd), one float expression shared by nothing
else, so it matches the float simulation ``layer(x)`` to float rounding.
"""

from __future__ import annotations

import contextlib
import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.bdcnn import BinaryDecomposedConv2d, BinaryDecomposedLayer, BinaryDecomposedLinear, quantization_levels

try:
    import numba
    from numba import types
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - numba is a dependency; the torch backend still works without it
    numba = None

Backend = Literal["numba", "torch"]
WORD = 64


def default_backend() -> Backend:
    return "numba" if numba is not None else "torch"


@contextlib.contextmanager
def kernel_threads(threads: int):
    """Run the compiled kernel with ``threads`` threads (numba's thread count, restored afterwards)."""
    if numba is None:
        yield
        return
    saved = numba.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(saved)


# ------------------------------------------------------------------------------------------- packing
def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack a {0, 1} array (..., D) along its last axis into uint64 words (..., ⌈D/64⌉), bit d of the row in
    bit d mod 64 of word d // 64; the tail of the last word is zero."""
    bits = np.ascontiguousarray(bits, dtype=np.uint8)
    d = bits.shape[-1]
    words = math.ceil(d / WORD)
    padded = np.zeros(bits.shape[:-1] + (words * WORD,), dtype=np.uint8)
    padded[..., :d] = bits
    packed = np.packbits(padded, axis=-1, bitorder="little")
    return packed.view("<u8").astype(np.uint64, copy=False)


def pack_planes(levels: np.ndarray, bits: int) -> np.ndarray:
    """The bit planes of integer levels (P, D) packed into (P, Q, ⌈D/64⌉) uint64, least significant first."""
    planes = ((levels[:, None, :] >> np.arange(bits)[None, :, None]) & 1).astype(np.uint8)
    return pack_bits(planes)


def pack_weights(layer: BinaryDecomposedLayer) -> np.ndarray:
    """m⁺ of the layer's bases packed into (N, k, ⌈D/64⌉) uint64."""
    return pack_bits((layer.bases > 0).cpu().numpy())


# ------------------------------------------------------------------------------------------- kernels
if numba is not None:

    @intrinsic
    def _popcount64(typingctx, x):
        # ctpop's i64 read as int64: sums stay integer (numba types uint64 + int64 as float64)
        sig = types.int64(types.uint64)

        def codegen(context, builder, signature, args):
            return builder.ctpop(args[0])

        return sig, codegen

    @numba.njit(parallel=True, cache=True)
    def _numba_kernel(weights, planes, plane_counts, out):  # pragma: no cover - compiled
        n_out, k, words = weights.shape
        positions, q_bits, _ = planes.shape
        for n in numba.prange(n_out):
            for p in range(positions):
                for j in range(k):
                    acc = 0
                    for q in range(q_bits):
                        s = 0
                        for w in range(words):
                            s += _popcount64(weights[n, j, w] & planes[p, q, w])
                        acc += (2 * s - plane_counts[p, q]) << q
                    out[n, j, p] = acc

    @numba.njit(cache=True)
    def _numba_pack_conv(levels, kh, kw, sh, sw, dh, dw, out_h, out_w, bits, planes):  # pragma: no cover
        channels = levels.shape[0]
        acc = np.zeros(bits, dtype=np.uint64)  # the current word of every plane, kept in registers
        for oy in range(out_h):
            for ox in range(out_w):
                p = oy * out_w + ox
                d = 0
                for c in range(channels):
                    for ky in range(kh):
                        for kx in range(kw):
                            v = np.uint64(levels[c, oy * sh + ky * dh, ox * sw + kx * dw])
                            bit = np.uint64(d & 63)
                            for q in range(bits):
                                acc[q] |= ((v >> np.uint64(q)) & np.uint64(1)) << bit
                            d += 1
                            if d & 63 == 0:
                                for q in range(bits):
                                    planes[p, q, (d >> 6) - 1] = acc[q]
                                    acc[q] = 0
                if d & 63:
                    for q in range(bits):
                        planes[p, q, d >> 6] = acc[q]
                        acc[q] = 0


_BYTE_POPCOUNT = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int64)


def _as_bytes(words: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(words).view(np.uint8))


def _torch_kernel(weights: np.ndarray, planes: np.ndarray, plane_counts: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Z (N, k, P) with the AND + popcount in torch on the packed bytes (exact, slow)."""
    w = _as_bytes(weights)  # (N, k, 8·words)
    x = _as_bytes(planes)  # (P, Q, 8·words)
    counts = torch.from_numpy(plane_counts)
    n, k, _ = w.shape
    p_total, q_bits, _ = x.shape
    out = torch.empty(n, k, p_total, dtype=torch.int64)
    weights_of_q = (2 ** torch.arange(q_bits, dtype=torch.int64))[None, None, None, :]
    for start in range(0, p_total, chunk):
        xs = x[start : start + chunk]  # (p, Q, B)
        both = torch.bitwise_and(w[:, :, None, None, :], xs[None, None])  # (N, k, p, Q, B)
        s = _BYTE_POPCOUNT[both.long()].sum(-1)  # (N, k, p, Q)
        out[:, :, start : start + chunk] = ((2 * s - counts[start : start + chunk][None, None]) * weights_of_q).sum(-1)
    return out.numpy()


def integer_products(weights: np.ndarray, planes: np.ndarray, backend: Backend | None = None) -> np.ndarray:
    """Z (N, k, P) int64 from packed bases (N, k, W) and packed input planes (P, Q, W)."""
    backend = backend or default_backend()
    plane_counts = _popcount_rows(planes)
    if backend == "numba":
        if numba is None:
            raise RuntimeError("the numba backend needs numba (pip install numba); use backend='torch'")
        out = np.empty((weights.shape[0], weights.shape[1], planes.shape[0]), dtype=np.int64)
        _numba_kernel(weights, planes, plane_counts, out)
        return out
    if backend == "torch":
        return _torch_kernel(weights, planes, plane_counts)
    raise ValueError(f"backend must be 'numba' or 'torch', got {backend!r}")


def _popcount_rows(planes: np.ndarray) -> np.ndarray:
    """popc(b_q) per position and plane: (P, Q) int64."""
    return np.unpackbits(np.ascontiguousarray(planes).view(np.uint8), axis=-1).sum(-1, dtype=np.int64)


# ------------------------------------------------------------------------------------------- layer
def unfold_levels(layer: BinaryDecomposedLayer, levels: Tensor) -> Tensor:
    """Integer inputs per output position: (B, P, D) int64 (im2col of the padded map for a convolution)."""
    if isinstance(layer, BinaryDecomposedConv2d):
        cols = F.unfold(levels.double(), layer.kernel_size, dilation=layer.dilation, stride=layer.stride)
        return cols.transpose(1, 2).round().to(torch.int64)
    return levels.reshape(levels.shape[0], 1, -1)


def integer_reference(layer: BinaryDecomposedLayer, levels: Tensor) -> Tensor:
    """Z (B, N, k, P) = bases · x_int in float64 by ``conv2d``/``linear`` (exact for |Z| < 2^53), as int64."""
    bases = layer.bases.double()
    n, k, d = bases.shape
    if isinstance(layer, BinaryDecomposedConv2d):
        weight = bases.reshape(n * k, layer.in_channels, *layer.kernel_size)
        z = F.conv2d(levels.double(), weight, None, layer.stride, 0, layer.dilation)
        return z.reshape(z.shape[0], n, k, -1).round().to(torch.int64)
    z = F.linear(levels.double().reshape(levels.shape[0], -1), bases.reshape(n * k, d))
    return z.reshape(-1, n, k, 1).round().to(torch.int64)


class BitSerialLayer:
    """One decomposed layer prepared for bit-serial inference (packed bases, per-basis sums).

    Args:
        layer: a :class:`~models.bdcnn.BinaryDecomposedConv2d` (``groups=1``) or
            :class:`~models.bdcnn.BinaryDecomposedLinear`; its ``bits`` must be set.
        backend: ``numba`` or ``torch`` (default: numba when installed).
    """

    def __init__(self, layer: BinaryDecomposedLayer, backend: Backend | None = None) -> None:
        if not isinstance(layer, (BinaryDecomposedConv2d, BinaryDecomposedLinear)):
            raise TypeError(f"expected a binary-decomposed layer, got {type(layer).__name__}")
        if isinstance(layer, BinaryDecomposedConv2d) and layer.groups != 1:
            raise ValueError(f"the bit-serial kernel supports groups=1 only, got groups={layer.groups}")
        if layer.bits is None:
            raise ValueError("the layer's quantisation sub-layer is off (bits=None): set layer.bits first")
        self.layer, self.backend = layer, backend or default_backend()
        self.bits = layer.bits
        self.packed = pack_weights(layer)
        self.coefficients = layer.coefficients.detach().double().cpu().numpy()  # (N, k)
        self.offset_weights = (self.coefficients * layer.bases.double().sum(-1).cpu().numpy()).sum(-1)  # Σ_j c_j s_j
        self.bias = None if layer.bias is None else layer.bias.detach().double().cpu().numpy()

    def levels(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``quantization_levels`` of the (padded) input."""
        if isinstance(self.layer, BinaryDecomposedConv2d):
            x = self.layer.pad(x)
        return quantization_levels(x, self.bits)

    def packed_planes(self, levels: Tensor) -> list[np.ndarray]:
        """Each image's packed input bit planes (P, Q, ⌈D/64⌉) uint64 (im2col and packing in one pass)."""
        layer = self.layer
        if self.backend == "numba" and isinstance(layer, BinaryDecomposedConv2d):
            oh, ow = self._output_hw(levels.shape[-2:])
            words = math.ceil(layer.fan_in / WORD)
            out = []
            for image in levels.numpy():
                planes = np.zeros((oh * ow, self.bits, words), dtype=np.uint64)
                _numba_pack_conv(image, *layer.kernel_size, *layer.stride, *layer.dilation, oh, ow, self.bits, planes)
                out.append(planes)
            return out
        return [pack_planes(cols, self.bits) for cols in unfold_levels(layer, levels).numpy()]

    def integer_outputs(self, levels: Tensor) -> Tensor:
        """Z (B, N, k, P) int64 by AND + popcount."""
        return torch.stack(
            [
                torch.from_numpy(integer_products(self.packed, planes, self.backend))
                for planes in self.packed_planes(levels)
            ]
        )

    def combine(self, z: Tensor, offset: Tensor, scale: Tensor) -> Tensor:
        """y (B, N, P) = β Σ_j c_j Z_j + o Σ_j c_j s_j + bias, in float64, returned as float32."""
        y = np.einsum("nk,bnkp->bnp", self.coefficients, z.numpy().astype(np.float64))
        y = (
            y * scale.double().numpy()[:, None, None]
            + offset.double().numpy()[:, None, None] * self.offset_weights[None, :, None]
        )
        if self.bias is not None:
            y = y + self.bias[None, :, None]
        return torch.from_numpy(y.astype(np.float32))

    def __call__(self, x: Tensor) -> Tensor:
        levels, offset, scale = self.levels(x)
        y = self.combine(self.integer_outputs(levels), offset, scale)
        if isinstance(self.layer, BinaryDecomposedConv2d):
            h, w = self._output_hw(levels.shape[-2:])
            return y.reshape(y.shape[0], -1, h, w)
        return y.reshape(y.shape[0], -1)

    def _output_hw(self, padded_hw) -> tuple[int, int]:
        layer = self.layer
        return tuple(
            (size - d * (kk - 1) - 1) // s + 1
            for size, d, kk, s in zip(padded_hw, layer.dilation, layer.kernel_size, layer.stride, strict=True)
        )
