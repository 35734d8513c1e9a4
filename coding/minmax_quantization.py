"""Min–max quantisation of a feature tensor to n-bit integers (Hiraga et al., eq. 7–8).

    Ṽ = round((V − min) / (max − min) · (2ⁿ − 1))          (eq. 7, on the edge)
    V̂ = min + Ṽ · (max − min) / (2ⁿ − 1)                    (eq. 8, on the server)

``min`` and ``max`` are taken over the whole tensor (the paper) or over each channel (the first axis).
They travel beside the integers as float32, so the arithmetic is done in float64 on those float32
values: the round-trip error of every element is at most half a step, (max − min) / (2ⁿ − 1) / 2
(plus float32 rounding of the result). A constant tensor (max = min) quantises to zeros and comes
back exactly (no division by zero).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

SUPPORTED_BITS = range(1, 17)


@dataclass(frozen=True)
class Quantized:
    """Integers and the ranges that map them back.

    Attributes:
        levels: int32 tensor of the input's shape, values in ``0 .. 2**bits - 1``.
        minimum: float32, shape ``(1,)`` (per tensor) or ``(C,)`` (per channel).
        maximum: float32, same shape as ``minimum``.
        bits: n.
    """

    levels: Tensor
    minimum: Tensor
    maximum: Tensor
    bits: int


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be an int in 1..16, got {bits!r}")
    return bits


def _broadcast(values: Tensor, ndim: int) -> Tensor:
    """(k,) → (k, 1, …, 1) against a tensor of ``ndim`` dimensions."""
    return values.reshape(-1, *([1] * (ndim - 1)))


def minmax_quantize(features: Tensor, bits: int = 8, per_channel: bool = False) -> Quantized:
    """Quantise ``features`` (any shape; channels on the first axis when ``per_channel``) to ``bits``.

    Raises:
        ValueError: non-finite values, an empty tensor, or ``bits`` outside 1..16.
    """
    bits = _check_bits(bits)
    if features.numel() == 0:
        raise ValueError("cannot quantise an empty tensor")
    x = features.detach().to("cpu", torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError("features must be finite to be min–max quantised")
    if per_channel:
        if x.ndim < 1:
            raise ValueError("per-channel quantisation needs a tensor with a channel axis")
        flat = x.reshape(x.shape[0], -1)
        lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    else:
        lo, hi = x.min().reshape(1), x.max().reshape(1)
    top = (1 << bits) - 1
    lo64, hi64 = _broadcast(lo.double(), x.ndim), _broadcast(hi.double(), x.ndim)
    span = hi64 - lo64
    scale = torch.where(span > 0, top / torch.where(span > 0, span, 1.0), 0.0)
    levels = torch.round((x.double() - lo64) * scale).clamp_(0, top).to(torch.int32)
    return Quantized(levels, lo, hi, bits)


def minmax_dequantize(quantized: Quantized) -> Tensor:
    """float32 tensor of the quantised one's shape (eq. 8)."""
    q = quantized
    top = (1 << q.bits) - 1
    lo = _broadcast(q.minimum.double(), q.levels.ndim)
    step = _broadcast((q.maximum.double() - q.minimum.double()) / top, q.levels.ndim)
    return (lo + q.levels.double() * step).float()
