"""Convolutions on tiny feature maps as one matrix product (im2col + GEMM), for training speed on CPUs.

The recurrent codec trained on the paper's 32×32 patches has 3×3 convolutions whose outputs are 2×2 maps
with 512 input and 2048 output channels (encoder RNN 3, decoder RNN 1). oneDNN runs their *forward* near
the CPU's peak, but its backward (weights and data gradients) for such maps measured 5–7× the forward on
the 2-core Zen 4 of this project (AVX-512; PyTorch 2.14's oneDNN): 141 ms against 23 ms for the encoder's
512 → 2048, 4×4 → 2×2 stride-2 layer at batch 32, where the same convolution written as
``unfold`` + one ``matmul`` (and autograd's ``fold`` + two ``matmul`` for the backward) took 15 ms forward and
41 ms backward. On larger maps oneDNN wins (a 3×3 convolution at 16×16: 40 + 87 ms against 66 + 126 ms), so
the matrix form is taken only where the output map has at most :data:`SMALL_MAP_POSITIONS` positions.

What is computed is the convolution itself — the same products, summed in another order — so the
numbers agree with ``F.conv2d`` to float rounding (tested against it, gradients included, on random
shapes with strides, padding and dilation).

The matrix form (N images, C·kh·kw unfolded inputs, L output positions)::

    cols = unfold(x)                       (N, C·kh·kw, L)  →  (N·L, C·kh·kw)
    y    = cols · Wᵀ                       (N·L, C_out)     →  (N, C_out, h_out, w_out)

One GEMM over the whole batch (not N small ones), so the weight gradient ``gradᵀ · cols`` is one GEMM too.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

SMALL_MAP_POSITIONS = 4
"""Output positions per image (h_out · w_out) up to which :class:`SmallMapConv2d` trains as a GEMM: the
2×2 maps of the codec at 32×32 patches. At 4×4 the two forms measured within 10 % of each other here
(one layer faster each way) and the whole step was slower with the threshold at 16 than at 4."""


def _out_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv2d_as_matmul(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
) -> Tensor:
    """``F.conv2d(x, weight, bias, stride, padding, dilation)`` (groups 1, zero padding) as unfold + one GEMM.

    The output has the logical shape (N, C_out, h_out, w_out) in channels-last memory order (the GEMM's
    row order); every PyTorch op accepts it."""
    n, _, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    h_out = _out_size(h, kh, stride[0], padding[0], dilation[0])
    w_out = _out_size(w, kw, stride[1], padding[1], dilation[1])
    cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)  # (N, C·kh·kw, L)
    rows = cols.transpose(1, 2).reshape(n * h_out * w_out, -1)
    y = rows @ weight.reshape(c_out, -1).t()
    if bias is not None:
        y = y + bias
    return y.view(n, h_out, w_out, c_out).permute(0, 3, 1, 2)


class SmallMapConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (same parameters, same state dict) that, **in training**, computes a convolution
    whose output map has at most ``max_positions`` positions per image as :func:`conv2d_as_matmul`.

    In evaluation, on a GPU (cuDNN's backward was not measured slow; this is about oneDNN's), on larger
    maps, with groups, a 1×1 kernel (already a GEMM in oneDNN) or a padding mode
    other than zeros it is ``nn.Conv2d`` exactly. ``matmul_calls`` counts the forwards that took the
    matrix form (tests read it)."""

    def __init__(self, *args, max_positions: int = SMALL_MAP_POSITIONS, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_positions = max_positions
        self.matmul_calls = 0

    def takes_matmul(self, x: Tensor) -> bool:
        kh, kw = self.kernel_size
        if (
            not self.training
            or x.device.type != "cpu"
            or self.groups != 1
            or self.padding_mode != "zeros"
            or (kh, kw) == (1, 1)
        ):
            return False
        if isinstance(self.padding, str):  # "same" / "valid": leave those to F.conv2d
            return False
        h_out = _out_size(x.shape[-2], kh, self.stride[0], self.padding[0], self.dilation[0])
        w_out = _out_size(x.shape[-1], kw, self.stride[1], self.padding[1], self.dilation[1])
        return h_out * w_out <= self.max_positions

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.takes_matmul(input):
            self.matmul_calls += 1
            return conv2d_as_matmul(input, weight, bias, self.stride, self.padding, self.dilation)
        return super()._conv_forward(input, weight, bias)
