"""Convolutional recurrent cells used by the recurrent image codec (Toderici et al., CVPR 2017).

Each cell has an *input* convolution (kernel ``kernel_size``, stride ``stride``) and *hidden*
convolutions (kernel ``hidden_kernel_size``, stride 1). All convolutions are bias-free, as in the
reference implementations, so a cell's parameter count is

    gates * (in_channels * hidden_channels * k_in**2 + hidden_channels**2 * k_hid**2)

with ``gates = 4`` for the LSTM and ``3`` for the GRU. ``*`` below is a convolution, ``⊙`` the
element-wise product, ``σ`` the logistic sigmoid.

LSTM (:class:`ConvLSTMCell`; gate order i, f, g, o in the output channels of both convolutions)::

    i = σ(W_i * x + U_i * h)     f = σ(W_f * x + U_f * h)
    g = tanh(W_g * x + U_g * h)  o = σ(W_o * x + U_o * h)
    c' = f ⊙ c + i ⊙ g           h' = o ⊙ tanh(c')

GRU (:class:`ConvGRUCell`), the form Toderici et al. 2017 write (§2.3), with the reset gate applied
*before* the hidden convolution of the candidate (not PyTorch's/cuDNN's ``r ⊙ (U h)``)::

    z = σ(W_z * x + U_z * h)     r = σ(W_r * x + U_r * h)
    n = tanh(W * x + U * (r ⊙ h))
    h' = (1 − z) ⊙ h + z ⊙ n

Because ``U`` acts on ``r ⊙ h``, the GRU has two hidden convolutions: ``conv_hh`` (``U_z``, ``U_r``) and
``conv_hn`` (``U``). (Checkpoints of the GRU written before this form had a single 3-gate ``conv_hh``;
loading one fails naming ``conv_hn`` and the ``conv_hh`` shape.)

The recurrent state is created on the first step from the *output* of the input convolution, so its
shape always follows the input image: nothing here depends on a patch size.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

LSTMState = tuple[Tensor, Tensor]


class ConvRecurrentCell(nn.Module):
    """Shared layout of the cells: ``conv_ih`` (input kernel, stride) produces ``gates × hidden_channels``
    channels, ``conv_hh`` (hidden kernel) ``hidden_gates × hidden_channels``, and with ``candidate_conv``
    a separate ``conv_hn`` (hidden kernel) ``hidden_channels``; no biases (as in Toderici et al.)."""

    gates: int
    hidden_gates: int
    candidate_conv: bool = False

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

        def hidden_conv(gates: int) -> nn.Conv2d:
            return nn.Conv2d(
                hidden_channels, gates * hidden_channels, hidden_kernel_size, 1, hidden_kernel_size // 2, bias=False
            )

        self.conv_hh = hidden_conv(self.hidden_gates)
        if self.candidate_conv:
            self.conv_hn = hidden_conv(1)


class ConvLSTMCell(ConvRecurrentCell):
    """Convolutional LSTM cell. ``forward(x, state) -> (h, (h, c))``; ``state=None`` starts at zeros."""

    gates = 4
    hidden_gates = 4

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
    """Convolutional GRU cell of Toderici et al. 2017 (reset before ``U``; see the module docstring).
    ``forward(x, state) -> (h, h)``; ``state=None`` starts at zeros. ``conv_ih`` holds ``W_z, W_r, W``,
    ``conv_hh`` holds ``U_z, U_r``, ``conv_hn`` holds ``U``."""

    gates = 3
    hidden_gates = 2
    candidate_conv = True

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        gates_x = self.conv_ih(x)
        if state is None:
            state = gates_x.new_zeros((x.shape[0], self.hidden_channels, *gates_x.shape[-2:]))
        zx, rx, nx = gates_x.chunk(3, dim=1)
        zh, rh = self.conv_hh(state).chunk(2, dim=1)
        z = torch.sigmoid(zx + zh)
        r = torch.sigmoid(rx + rh)
        n = torch.tanh(nx + self.conv_hn(r * state))
        h = (1 - z) * state + z * n
        return h, h


CELLS: dict[str, type[nn.Module]] = {"lstm": ConvLSTMCell, "gru": ConvGRUCell}


def make_cell(cell: str, *args, **kwargs) -> nn.Module:
    """Build a recurrent cell by name (``"lstm"`` or ``"gru"``)."""
    if cell not in CELLS:
        raise ValueError(f"unknown recurrent cell {cell!r}; choose one of {sorted(CELLS)}")
    return CELLS[cell](*args, **kwargs)
