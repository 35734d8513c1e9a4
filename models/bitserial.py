"""The bit-serial kernel of a binary-decomposed layer, run for real: AND + popcount on 64-bit words.

For a decomposed layer (:mod:`models.bdcnn`) and an input quantised to Q bits, every output needs the
integers Z_nj = m_nj · x_int = Σ_{q<Q} 2^q (2·popc(m⁺_nj ∧ b_q) − popc(b_q)), where m⁺ are the bits of
the basis equal to +1 and b_q the q-th bit plane of the (im2col-unfolded) integer input. Both are packed
into 64-bit words along D (zero bits pad the last word; they add nothing to either popcount), so one
output costs k·Q·⌈D/64⌉ AND + popcount word pairs: the cost model's ``word_ops``.

Backends (``backend=``), fastest first; the default is the first one this install has:

- ``native``: a small C extension (``models/bitserial_native.c``, built at install by ``setup.py``; optional,
  so an install without a C compiler goes on without it) that runs quantise + pack + AND/popcount + combine
  in one call per image, on one thread. Its kernel path is chosen at run time from the CPU's features
  (``isa=``, default the best one available, :func:`available_isas`):
  ``avx512_vpopcntdq`` (8 weight rows × 16 output positions in 16 zmm accumulators; one AND, VPOPCNTQ and
  VPADDQ per 8 words), ``avx2`` (4 × 8, popcount by nibble lookup) and ``scalar`` (portable C). Weight bits
  are ordered (ky, kx, c) so that the channels of one tap are contiguous, input planes are laid out
  (Q, words, positions) with positions contiguous, and the ±1 correction is folded once per position:
  Z = 2·Σ_q 2^q·popc(m⁺ ∧ b_q) − Σ_d x_d.
- ``numba``: a compiled loop with LLVM's ``ctpop`` (the POPCNT instruction), parallel over output channels
  with ``numba.prange`` (threads: :func:`kernel_threads`); the fallback when the extension is not built
  (said at import).
- ``torch``: the same AND + popcount on the packed words with a 256-entry byte popcount table, in pure
  torch; exact but slow (a third, independent implementation for the tests).

Z is exact integer arithmetic (int64), so it equals ``conv2d``/``linear`` of the integer input with the ±1
bases computed in float64 (exact below 2^53) bit for bit: :func:`integer_reference`. The layer output is
then y = β Σ_j c_j Z_j + o Σ_j c_j s_j + bias (s_j = Σ_d m_jd), one float expression shared by nothing
else, so it matches the float simulation ``layer(x)`` to float rounding.
"""

from __future__ import annotations

import contextlib
import math
import warnings
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

try:
    from models import _bitserial_native as native
except ImportError:  # built at install (setup.py); an install without a C compiler goes on without it
    native = None

Backend = Literal["native", "numba", "torch"]
Isa = Literal["avx512_vpopcntdq", "avx2", "scalar"]
ISAS: dict[str, int] = {"avx512_vpopcntdq": 2, "avx2": 1, "scalar": 0}  # fastest first; codes of the C file
WORD = 64

if native is None:
    warnings.warn(
        "models.bitserial: the compiled bit-serial kernel (models/_bitserial_native, built by `pip install -e .` "
        f"when a C compiler is present) is not available; using the {'numba' if numba else 'torch'} backend "
        "(slower). Rebuild with: pip install -e . (or python setup.py build_ext --inplace)",
        RuntimeWarning,
        stacklevel=2,
    )


def default_backend() -> Backend:
    """``native`` when the C extension is built, else ``numba`` when installed, else ``torch``."""
    if native is not None:
        return "native"
    return "numba" if numba is not None else "torch"


def available_isas() -> list[str]:
    """The native kernel paths this CPU runs, fastest first (empty without the C extension)."""
    if native is None:
        return []
    return [name for name, code in ISAS.items() if native.supported(code)]


def default_isa() -> str | None:
    """The native kernel path used by default: the fastest this CPU runs (``None`` without the extension)."""
    isas = available_isas()
    return isas[0] if isas else None


@contextlib.contextmanager
def kernel_threads(threads: int, backend: Backend | None = None):
    """Run the ``numba`` backend with ``threads`` threads (restored afterwards); a no-op for the others (the
    native kernel is one-threaded). numba's thread pool is left untouched unless numba runs: starting it
    (its OpenMP layer) slows torch's own one-thread float layers several-fold on a shared CPU (measured)."""
    if (backend or default_backend()) != "numba" or numba is None:
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


def integer_products(
    weights: np.ndarray, planes: np.ndarray, backend: Backend | None = None, isa: Isa | None = None
) -> np.ndarray:
    """Z (N, k, P) int64 from packed bases (N, k, W) and packed input planes (P, Q, W)."""
    backend = backend or default_backend()
    if backend == "native":
        n, k, words = weights.shape
        positions, bits, _ = planes.shape
        rows = _native_rows(weights.reshape(n * k, words), blocked=True)
        padded = _round_up(positions, 16)
        x = np.zeros((bits, words, padded), dtype=np.uint64)
        x[:, :, :positions] = planes.transpose(1, 2, 0)
        acc = np.empty((rows.shape[0], padded), dtype=np.int64)
        native.kernel(
            _isa_code(isa), rows.ctypes.data, rows.shape[0], words, x.ctypes.data, bits, padded, acc.ctypes.data
        )
        counts = (_popcount_rows(planes) << np.arange(bits)).sum(-1)  # Σ_d x_d per position
        return (2 * acc[: n * k, :positions] - counts[None]).reshape(n, k, positions)
    plane_counts = _popcount_rows(planes)
    if backend == "numba":
        if numba is None:
            raise RuntimeError("the numba backend needs numba (pip install numba); use backend='torch'")
        out = np.empty((weights.shape[0], weights.shape[1], planes.shape[0]), dtype=np.int64)
        _numba_kernel(weights, planes, plane_counts, out)
        return out
    if backend == "torch":
        return _torch_kernel(weights, planes, plane_counts)
    raise ValueError(f"backend must be 'native', 'numba' or 'torch', got {backend!r}")


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _native_rows(rows: np.ndarray, blocked: bool) -> np.ndarray:
    """Packed rows (R, W) as the C kernel takes them: R padded with zero rows to a multiple of 8; for a
    convolution (``blocked``) laid out (R/8, W, 8), the eight rows' words of one index in one cache line."""
    out = np.zeros((_round_up(rows.shape[0], 8), rows.shape[1]), dtype=np.uint64)
    out[: rows.shape[0]] = rows
    if blocked:
        out = np.ascontiguousarray(out.reshape(-1, 8, rows.shape[1]).transpose(0, 2, 1)).reshape(-1, rows.shape[1])
    return out


def _isa_code(isa: Isa | None) -> int:
    if native is None:
        raise RuntimeError(
            "the native backend needs the compiled extension models/_bitserial_native (pip install -e . with a C "
            "compiler); use backend='numba' or 'torch'"
        )
    isa = isa or default_isa()
    if isa not in ISAS:
        raise ValueError(f"isa must be one of {list(ISAS)}, got {isa!r}")
    if isa not in available_isas():
        raise ValueError(f"this CPU cannot run the {isa} kernel path; it runs {available_isas()}")
    return ISAS[isa]


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
        backend: ``native``, ``numba`` or ``torch`` (default: :func:`default_backend`).
        isa: the native kernel path (``avx512_vpopcntdq``, ``avx2``, ``scalar``; default: the fastest this
            CPU runs); only for ``backend="native"``.
    """

    def __init__(self, layer: BinaryDecomposedLayer, backend: Backend | None = None, isa: Isa | None = None) -> None:
        if not isinstance(layer, (BinaryDecomposedConv2d, BinaryDecomposedLinear)):
            raise TypeError(f"expected a binary-decomposed layer, got {type(layer).__name__}")
        if isinstance(layer, BinaryDecomposedConv2d) and layer.groups != 1:
            raise ValueError(f"the bit-serial kernel supports groups=1 only, got groups={layer.groups}")
        if layer.bits is None:
            raise ValueError("the layer's quantisation sub-layer is off (bits=None): set layer.bits first")
        self.layer, self.backend = layer, backend or default_backend()
        if self.backend not in ("native", "numba", "torch"):
            raise ValueError(f"backend must be 'native', 'numba' or 'torch', got {self.backend!r}")
        if isa is not None and self.backend != "native":
            raise ValueError(f"isa={isa!r} chooses a path of the native backend, not of {self.backend!r}")
        self.bits = layer.bits
        self.packed = pack_weights(layer)
        self.coefficients = layer.coefficients.detach().double().cpu().numpy()  # (N, k)
        self.offset_weights = (self.coefficients * layer.bases.double().sum(-1).cpu().numpy()).sum(-1)  # Σ_j c_j s_j
        self.bias = None if layer.bias is None else layer.bias.detach().double().cpu().numpy()
        if self.backend == "native":
            self.isa = {v: k for k, v in ISAS.items()}[_isa_code(isa)]
            self._prepare_native()

    # ------------------------------------------------------------------------------ native backend
    def _prepare_native(self) -> None:
        layer = self.layer
        bases = layer.bases > 0
        conv = isinstance(layer, BinaryDecomposedConv2d)
        if conv:  # D in (ky, kx, c) order: a tap's channels contiguous
            n, k, _ = bases.shape
            bases = bases.reshape(n, k, layer.in_channels, *layer.kernel_size).permute(0, 1, 3, 4, 2)
        n, k = self.coefficients.shape
        self.native_rows = _native_rows(pack_bits(bases.reshape(n * k, -1).cpu().numpy()), blocked=conv)
        self.words = self.native_rows.shape[1]
        self.native_coefficients = np.ascontiguousarray(self.coefficients)
        self.native_offset_weights = np.ascontiguousarray(self.offset_weights)
        self.native_bias = None if self.bias is None else np.ascontiguousarray(self.bias)

    def _native_geometry(self, hw) -> tuple:
        layer = self.layer
        (ph, pw), (oh, ow) = layer.padding, self._output_hw([s + 2 * p for s, p in zip(hw, layer.padding, strict=True)])
        return (ph, pw, *layer.kernel_size, *layer.stride, *layer.dilation, oh, ow)

    def native_pack(self, x: Tensor) -> dict:
        """Quantise and pack one image ``x`` (C, H, W) or vector (D,) in compiled code: the planes, Σ_d x_d per
        position, offset and scale (the first half of :meth:`__call__`, exposed for the benchmark)."""
        x = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        if isinstance(self.layer, BinaryDecomposedConv2d):
            (ph, pw), (c, h, w) = self.layer.padding, x.shape
            levels = np.empty((h + 2 * ph, w + 2 * pw, c), dtype=np.int32)  # padded, channels last
            _, low, scale = native.quantize(x.ctypes.data, c, h, w, ph, pw, self.bits, levels.ctypes.data)
            return {"low": low, "scale": scale} | self._native_pack_levels(levels)
        levels = np.empty(x.size, dtype=np.int32)
        _, low, scale = native.quantize(x.ctypes.data, 1, 1, x.size, 0, 0, self.bits, levels.ctypes.data)
        return {"low": low, "scale": scale} | self._native_pack_levels(levels)

    def _native_pack_levels(self, levels: np.ndarray) -> dict:
        """Planes and Σ_d x_d of integer levels: (Hp, Wp, C) padded channels-last for a convolution, (D,) else."""
        layer = self.layer
        if isinstance(layer, BinaryDecomposedConv2d):
            oh, ow = self._output_hw(levels.shape[:2])
            positions, padded = oh * ow, _round_up(oh * ow, 16)
            planes = np.empty((self.bits, self.words, padded), dtype=np.uint64)
            xsum = np.empty(padded, dtype=np.int64)
            native.pack_conv(ISAS[self.isa], levels.ctypes.data, levels.shape[2], *levels.shape[:2],
                             *layer.kernel_size, *layer.stride, *layer.dilation, oh, ow, self.bits, self.words, padded,
                             planes.ctypes.data, xsum.ctypes.data)  # fmt: skip
        else:
            positions, padded = 1, 0
            planes = np.empty((self.bits, self.words), dtype=np.uint64)
            xsum = np.empty(1, dtype=np.int64)
            native.pack_linear(levels.ctypes.data, levels.size, self.bits, self.words, planes.ctypes.data,
                               xsum.ctypes.data)  # fmt: skip
        return {"planes": planes, "xsum": xsum, "positions": positions, "padded": padded}

    def native_kernel(self, packed: dict) -> np.ndarray:
        """A = Σ_q 2^q popc(m⁺ ∧ b_q) (rows, padded positions) int64 for :meth:`native_pack`'s output."""
        rows = self.native_rows.shape[0]
        acc = np.empty((rows, max(packed["padded"], 1)), dtype=np.int64)
        native.kernel(ISAS[self.isa], self.native_rows.ctypes.data, rows, self.words, packed["planes"].ctypes.data,
                      self.bits, packed["padded"], acc.ctypes.data)  # fmt: skip
        return acc

    def native_combine(self, acc: np.ndarray, packed: dict) -> np.ndarray:
        """y (N, P) float32 from :meth:`native_kernel`'s A (Z = 2A − Σ_d x_d, then the float combination)."""
        n, k = self.coefficients.shape
        y = np.empty((n, packed["positions"]), dtype=np.float32)
        bias = 0 if self.native_bias is None else self.native_bias.ctypes.data
        native.combine(acc.ctypes.data, acc.shape[1], packed["xsum"].ctypes.data, self.native_coefficients.ctypes.data,
                       k, self.native_offset_weights.ctypes.data, bias, packed["scale"], packed["low"], n,
                       packed["positions"], y.ctypes.data)  # fmt: skip
        return y

    def _native_call(self, x: Tensor) -> Tensor:
        x = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        n, k = self.coefficients.shape
        bias = 0 if self.native_bias is None else self.native_bias.ctypes.data
        rows = self.native_rows.shape[0]
        common = (self.native_rows.ctypes.data, rows, self.words, self.native_coefficients.ctypes.data, k,
                  self.native_offset_weights.ctypes.data, bias, n)  # fmt: skip
        if isinstance(self.layer, BinaryDecomposedConv2d):
            geometry = self._native_geometry(x.shape[-2:])
            y = np.empty((x.shape[0], n, geometry[-2], geometry[-1]), dtype=np.float32)
            for image, out in zip(x, y, strict=True):
                native.conv_forward(ISAS[self.isa], image.ctypes.data, *image.shape, *geometry, self.bits, *common,
                                    out.ctypes.data)  # fmt: skip
        else:
            x = x.reshape(x.shape[0], -1)
            y = np.empty((x.shape[0], n), dtype=np.float32)
            for vector, out in zip(x, y, strict=True):
                native.linear_forward(ISAS[self.isa], vector.ctypes.data, vector.size, self.bits, *common,
                                      out.ctypes.data)  # fmt: skip
        return torch.from_numpy(y)

    # ------------------------------------------------------------------------------ every backend
    def levels(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``quantization_levels`` of the (padded) input."""
        if isinstance(self.layer, BinaryDecomposedConv2d):
            x = self.layer.pad(x)
        return quantization_levels(x, self.bits)

    def packed_planes(self, levels: Tensor) -> list[np.ndarray]:
        """Each image's packed input bit planes (P, Q, ⌈D/64⌉) uint64 (im2col and packing in one pass)."""
        layer = self.layer
        if numba is not None and self.backend != "torch" and isinstance(layer, BinaryDecomposedConv2d):
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
        """Z (B, N, k, P) int64 by AND + popcount, from the integer levels of the (padded) input."""
        if self.backend == "native":
            return torch.stack([self._native_integer_outputs(image) for image in levels])
        return torch.stack(
            [
                torch.from_numpy(integer_products(self.packed, planes, self.backend))
                for planes in self.packed_planes(levels)
            ]
        )

    def _native_integer_outputs(self, levels: Tensor) -> Tensor:
        """Z (N, k, P) of one image's levels (already padded), packed and run by the C code."""
        lv = levels.numpy().astype(np.int32)
        if isinstance(self.layer, BinaryDecomposedConv2d):
            lv = lv.transpose(1, 2, 0)  # channels last
        packed = self._native_pack_levels(np.ascontiguousarray(lv))
        acc = self.native_kernel(packed)
        n, k = self.coefficients.shape
        positions = packed["positions"]
        z = 2 * acc[: n * k, :positions] - packed["xsum"][None, :positions]
        return torch.from_numpy(np.ascontiguousarray(z).reshape(n, k, positions))

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
        if self.backend == "native":
            return self._native_call(x)
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
