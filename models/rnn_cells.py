"""Convolutional recurrent cells used by the recurrent image codec (Toderici et al., CVPR 2017).

Each cell has an *input* convolution (kernel ``kernel_size``, stride ``stride``) and a *hidden*
convolution (kernel ``hidden_kernel_size``, stride 1). All convolutions are bias-free, as in the
reference implementations, so a cell's parameter count is

    gates * (in_channels * hidden_channels * k_in**2 + hidden_channels**2 * k_hid**2)

with ``gates = 4`` for the LSTM and ``3`` for the GRU.

The recurrent state is created on the first step from the *output* of the input convolution, so its
shape always follows the input image: nothing here depends on a patch size.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

LSTMState = tuple[Tensor, Tensor]


class ConvRecurrentCell(nn.Module):
    """Shared layout of the cells: ``conv_ih`` (input kernel, stride) and ``conv_hh`` (hidden kernel) each
    produce ``gates × hidden_channels`` channels; no biases (as in Toderici et al.)."""

    gates: int

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        hidden_kernel_size: int = 1,
    ) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        out = self.gates * hidden_channels
        self.conv_ih = nn.Conv2d(in_channels, out, kernel_size, stride, kernel_size // 2, bias=False)
        self.conv_hh = nn.Conv2d(hidden_channels, out, hidden_kernel_size, 1, hidden_kernel_size // 2, bias=False)


class ConvLSTMCell(ConvRecurrentCell):
    """Convolutional LSTM cell. ``forward(x, state) -> (h, (h, c))``; ``state=None`` starts at zeros."""

    gates = 4

    def forward(self, x: Tensor, state: LSTMState | None = None) -> tuple[Tensor, LSTMState]:
        gates_x = self.conv_ih(x)
        if state is None:
            shape = (x.shape[0], self.hidden_channels, *gates_x.shape[-2:])
            h = gates_x.new_zeros(shape)
            c = gates_x.new_zeros(shape)
        else:
            h, c = state
        gates = gates_x + self.conv_hh(h)
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class ConvGRUCell(ConvRecurrentCell):
    """Convolutional GRU cell. ``forward(x, state) -> (h, h)``; ``state=None`` starts at zeros."""

    gates = 3

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        gates_x = self.conv_ih(x)
        if state is None:
            state = gates_x.new_zeros((x.shape[0], self.hidden_channels, *gates_x.shape[-2:]))
        gates_h = self.conv_hh(state)
        rx, zx, nx = gates_x.chunk(3, dim=1)
        rh, zh, nh = gates_h.chunk(3, dim=1)
        r = torch.sigmoid(rx + rh)
        z = torch.sigmoid(zx + zh)
        n = torch.tanh(nx + r * nh)
        h = (1 - z) * n + z * state
        return h, h


CELLS: dict[str, type[nn.Module]] = {"lstm": ConvLSTMCell, "gru": ConvGRUCell}


def make_cell(cell: str, *args, **kwargs) -> nn.Module:
    """Build a recurrent cell by name (``"lstm"`` or ``"gru"``)."""
    if cell not in CELLS:
        raise ValueError(f"unknown recurrent cell {cell!r}; choose one of {sorted(CELLS)}")
    return CELLS[cell](*args, **kwargs)
