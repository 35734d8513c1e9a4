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

Speed switches (constructor arguments; none changes what the cell computes beyond float rounding):

- ``skip_zero_state`` (default off, so that executed MACs follow the layer table; the compressor configs
  turn it on): on the first step the state is zero, so the hidden convolutions (bias-free) give exactly
  zero and are skipped, and so are the products with the zero state (``f ⊙ 0``, ``(1 − z) ⊙ 0``). Exact:
  every number is what the full step computes (at most the sign of a zero differs).
- ``compile_gates`` (default off): the gate pointwise function (the sigmoids, tanhs, products and sums
  after the convolutions, and their backward) runs through ``torch.compile`` (Inductor, ``dynamic=False``:
  ``dynamic=True`` crashes Inductor on these graphs) as one fused kernel, in training only (evaluation
  runs images of every size; each new shape would recompile). One graph per cell and input shape: a fixed
  patch size compiles the codec's 7 cells once (tens of seconds). The fused pointwise part alone was
  measured 2.7–3.1× faster; a whole full-width CPU training step, 1.05× (README section 1: the
  convolutions' backward is most of the step). Numbers differ
  from eager by float rounding only (fused exp/tanh).
- ``small_map_gemm`` (default off): the cells' convolutions are :class:`models.small_map_conv.SmallMapConv2d`
  (same parameters and state dict as ``nn.Conv2d``): in training, a k×k convolution whose output map has at
  most 4 positions (the 2×2 maps of 32×32 patches) runs as unfold + one matrix product, whose backward
  oneDNN's own measured 2.5–3× slower here. Float rounding (another summation order); evaluation unchanged.
"""

from __future__ import annotations

import types

import torch
from torch import Tensor, nn

from models.small_map_conv import SmallMapConv2d

LSTMState = tuple[Tensor, Tensor]


def lstm_pointwise(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """LSTM gates (B, 4H, h, w) in order i, f, g, o and cell state c → (h', c')."""
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def lstm_pointwise_zero_state(gates: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`lstm_pointwise` with c = 0 (and no hidden convolution): the same numbers, as f ⊙ 0 + a = a."""
    i, _, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def gru_reset(gates_x: Tensor, gates_h: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """GRU update gate z and the reset state r ⊙ h from W_{z,r} * x and U_{z,r} * h."""
    zx, rx = gates_x.chunk(2, dim=1)
    zh, rh = gates_h.chunk(2, dim=1)
    return torch.sigmoid(zx + zh), torch.sigmoid(rx + rh) * state


def gru_update(nx: Tensor, nh: Tensor, z: Tensor, state: Tensor) -> Tensor:
    """h' = (1 − z) ⊙ h + z ⊙ tanh(W * x + U * (r ⊙ h))."""
    return (1 - z) * state + z * torch.tanh(nx + nh)


def gru_zero_state(gates_x: Tensor) -> Tensor:
    """h' for h = 0 (no hidden convolution): z ⊙ tanh(W * x), the same numbers as :func:`gru_update`."""
    zx, _, nx = gates_x.chunk(3, dim=1)
    return torch.sigmoid(zx) * torch.tanh(nx)


def _compiled(fn):
    """``torch.compile`` of a private copy of ``fn`` (static shapes; built on first use).

    Dynamo keeps its compiled graphs, and its limit of 8 recompilations, per code object: with one
    shared function, the 7 cells of a codec (and of every other codec in the process) would share that
    limit and the later ones would silently run eager. A copy of the code object per cell keeps each
    cell's graphs (one per input shape) to itself."""
    copy = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    return torch.compile(copy, dynamic=False, fullgraph=True)


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
        skip_zero_state: bool = False,
        compile_gates: bool = False,
        small_map_gemm: bool = False,
    ) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.skip_zero_state, self.compile_gates, self.small_map_gemm = skip_zero_state, compile_gates, small_map_gemm
        self._compiled: dict[str, object] = {}
        out = self.gates * hidden_channels
        conv = SmallMapConv2d if small_map_gemm else nn.Conv2d
        self.conv_ih = conv(in_channels, out, kernel_size, stride, kernel_size // 2, bias=False)

        def hidden_conv(gates: int) -> nn.Conv2d:
            return conv(
                hidden_channels, gates * hidden_channels, hidden_kernel_size, 1, hidden_kernel_size // 2, bias=False
            )

        self.conv_hh = hidden_conv(self.hidden_gates)
        if self.candidate_conv:
            self.conv_hn = hidden_conv(1)

    def pointwise(self, fn):
        """``fn`` itself, or its compiled form when ``compile_gates`` is on and the cell is training."""
        if not (self.compile_gates and self.training):
            return fn
        if fn.__name__ not in self._compiled:
            self._compiled[fn.__name__] = _compiled(fn)
        return self._compiled[fn.__name__]

    def zero_state(self, gates_x: Tensor) -> Tensor:
        return gates_x.new_zeros((gates_x.shape[0], self.hidden_channels, *gates_x.shape[-2:]))


class ConvLSTMCell(ConvRecurrentCell):
    """Convolutional LSTM cell. ``forward(x, state) -> (h, (h, c))``; ``state=None`` starts at zeros."""

    gates = 4
    hidden_gates = 4

    def forward(self, x: Tensor, state: LSTMState | None = None) -> tuple[Tensor, LSTMState]:
        gates = self.conv_ih(x)
        if state is None and self.skip_zero_state:
            if self.compile_gates and self.training:  # one compiled graph per shape: c = 0 passed in
                h, c = self.pointwise(lstm_pointwise)(gates, self.zero_state(gates))
            else:
                h, c = lstm_pointwise_zero_state(gates)
            return h, (h, c)
        if state is None:
            state = (self.zero_state(gates), self.zero_state(gates))
        h, c = state
        h, c = self.pointwise(lstm_pointwise)(gates + self.conv_hh(h), c)
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
        if state is None and self.skip_zero_state:
            if self.compile_gates and self.training:  # the compiled update with h = 0 and U * 0 = 0 passed in
                zeros = self.zero_state(gates_x)
                zx, _, nx = gates_x.chunk(3, dim=1)
                h = self.pointwise(gru_update)(nx, zeros, torch.sigmoid(zx), zeros)
            else:
                h = gru_zero_state(gates_x)
            return h, h
        if state is None:
            state = self.zero_state(gates_x)
        zrx, nx = gates_x.split([2 * self.hidden_channels, self.hidden_channels], dim=1)
        z, reset_state = self.pointwise(gru_reset)(zrx, self.conv_hh(state), state)
        h = self.pointwise(gru_update)(nx, self.conv_hn(reset_state), z, state)
        return h, h


CELLS: dict[str, type[nn.Module]] = {"lstm": ConvLSTMCell, "gru": ConvGRUCell}


def make_cell(cell: str, *args, **kwargs) -> nn.Module:
    """Build a recurrent cell by name (``"lstm"`` or ``"gru"``)."""
    if cell not in CELLS:
        raise ValueError(f"unknown recurrent cell {cell!r}; choose one of {sorted(CELLS)}")
    return CELLS[cell](*args, **kwargs)
