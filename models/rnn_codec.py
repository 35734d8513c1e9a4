"""Recurrent image codec of Toderici et al., "Full resolution image compression with recurrent neural
networks" (CVPR 2017).

Layer table (``w`` = width multiplier, every convolution bias-free; channel counts are rounded to a
multiple of 4 so depth-to-space always divides):

=========  ==========================================================  ===============
part       layer                                                       output (H×W in)
=========  ==========================================================  ===============
encoder    conv 3×3/2, 3 → 64w                                         64w   × H/2
           RNN 256w, input 3×3/2, hidden 1×1                           256w  × H/4
           RNN 512w, input 3×3/2, hidden 1×1                           512w  × H/8
           RNN 512w, input 3×3/2, hidden 1×1                           512w  × H/16
binarizer  conv 1×1, 512w → 32, tanh, ±1 (stochastic train, sign eval) 32    × H/16
decoder    conv 1×1, 32 → 512w                                         512w  × H/16
           RNN 512w (3×3 in, 1×1 hidden), depth-to-space ×2            128w  × H/8
           RNN 512w (3×3 in, 1×1 hidden), depth-to-space ×2            128w  × H/4
           RNN 256w (3×3 in, 3×3 hidden), depth-to-space ×2            64w   × H/2
           RNN 128w (3×3 in, 3×3 hidden), depth-to-space ×2            32w   × H
           conv 1×1, 32w → 3, tanh / 2                                 3     × H
=========  ==========================================================  ===============

Each iteration sends ``bits`` binary values per 16×16 block: ``bits / 256`` bits per pixel, 0.125 bpp
for the default 32.

Iterative residual coding: the encoder sees the residual ``r_{t-1}`` (``r_0`` is the image, centred to
[-0.5, 0.5]); the decoder output ``d_t`` updates the reconstruction
``x̂_t = d_t + γ·x̂_{t-1}`` — *additive* (γ = 1) or *one-shot* (γ = 0) — and ``r_t = x - x̂_t``.
Encoding therefore runs the decoder too (the encoder must know what the decoder has reconstructed).

Images are tensors in [0, 1] of shape (B, 3, H, W). Sides that are not multiples of 16 are padded by
edge replication and the reconstruction is cropped back.

Speed switches (:class:`RNNCodec` arguments; ``benchmarks/rnn_codec_throughput.py`` measures each one;
all default off, so the plain codec is the classic implementation):

- ``skip_zero_state`` (exact) and ``compile_gates`` (float rounding) of :mod:`models.rnn_cells`;
- ``small_map_gemm`` (float rounding; :mod:`models.small_map_conv`): in training, the 3×3 convolutions
  whose output is a 2×2 map run as unfold + one GEMM, whose backward is 2.5–3× faster than oneDNN's here;
- ``channels_last``: weights and activations NHWC, which oneDNN's CPU convolutions are said to prefer
  (same arithmetic, other summation order: float rounding; measured slower here);
- ``autocast_bf16``: the training forward under ``torch.autocast(bfloat16)`` — bf16 convolutions and
  matmuls with float32 accumulation, and so their backward, as in PyTorch's and Lightning's
  ``bf16-mixed``; weights, optimiser state, the loss and every evaluation stay float32. Numbers change at
  bfloat16 precision (8 mantissa bits), not float32 rounding; ``benchmarks/rnn_codec_throughput.py
  --quality`` trains both from one initialisation on the same patches to show what that does to training.
  Only in training: :meth:`RNNCodec.encode`, :meth:`RNNCodec.decode` and every evaluation (so every
  bitstream) run float32 whatever the switch says — also inside an outer autocast such as Lightning's
  ``bf16-mixed``, which the codec's own ``torch.autocast(enabled=False)`` turns off there (and in training
  too when the switch is off). Where the device has no native bf16 arithmetic
  (a CPU without AVX512-BF16 or AMX, a GPU before Ampere) emulated bf16 would be slower than float32, so
  the switch is then ignored with one warning.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.rnn_cells import make_cell

STRIDE = 16
"""Spatial down-sampling of the codes: one code vector per 16×16 block."""

CellType = Literal["lstm", "gru"]
Reconstruction = Literal["additive", "one_shot"]


def scaled(channels: int, width: float) -> int:
    """``channels × width`` rounded to a multiple of 4 (at least 4)."""
    return max(4, int(round(channels * width / 4)) * 4)


class RNNEncoder(nn.Module):
    """Image (or residual) → 512w features at H/16; recurrent, so call it once per iteration.
    ``cell_options``: the cells' speed switches (:mod:`models.rnn_cells`)."""

    def __init__(self, cell: CellType = "lstm", width: float = 1.0, **cell_options) -> None:
        super().__init__()
        c64, c256, c512 = scaled(64, width), scaled(256, width), scaled(512, width)
        self.conv = nn.Conv2d(3, c64, 3, stride=2, padding=1, bias=False)
        self.rnn1 = make_cell(cell, c64, c256, 3, 2, 1, **cell_options)
        self.rnn2 = make_cell(cell, c256, c512, 3, 2, 1, **cell_options)
        self.rnn3 = make_cell(cell, c512, c512, 3, 2, 1, **cell_options)
        self.out_channels = c512

    def forward(self, x: Tensor, states: list | None = None) -> tuple[Tensor, list]:
        states = states or [None, None, None]
        x = self.conv(x)
        x, s1 = self.rnn1(x, states[0])
        x, s2 = self.rnn2(x, states[1])
        x, s3 = self.rnn3(x, states[2])
        return x, [s1, s2, s3]


class Binarizer(nn.Module):
    """1×1 conv to ``bits`` channels, tanh, then ±1.

    Training: stochastic binarisation, ``P(+1) = (1 + t) / 2`` for ``t = tanh(·)``, so the sample is
    unbiased, with a straight-through gradient (the gradient of ``t``). Eval: the sign (0 → +1).
    """

    def __init__(self, in_channels: int, bits: int = 32) -> None:
        super().__init__()
        self.bits = bits
        self.conv = nn.Conv2d(in_channels, bits, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        t = torch.tanh(self.conv(x))
        if self.training:
            # drawn in logical (contiguous) order whatever t's memory format, so channels_last draws the same,
            # and in at least float32, so a bf16 forward draws the same numbers as a float32 one
            u = torch.rand(t.shape, dtype=torch.promote_types(t.dtype, torch.float32), device=t.device)
            b = torch.where(u < (1 + t) / 2, 1.0, -1.0).to(t.dtype)
            return t + (b - t).detach()
        return torch.where(t >= 0, 1.0, -1.0).to(t.dtype)


class RNNDecoder(nn.Module):
    """±1 codes (``bits`` channels at H/16) → one iteration's output image (3 × H, in [-0.5, 0.5]).
    ``cell_options``: the cells' speed switches (:mod:`models.rnn_cells`)."""

    def __init__(self, cell: CellType = "lstm", width: float = 1.0, bits: int = 32, **cell_options) -> None:
        super().__init__()
        c128, c256, c512 = scaled(128, width), scaled(256, width), scaled(512, width)
        self.conv1 = nn.Conv2d(bits, c512, 1, bias=False)
        self.rnn1 = make_cell(cell, c512, c512, 3, 1, 1, **cell_options)
        self.rnn2 = make_cell(cell, c512 // 4, c512, 3, 1, 1, **cell_options)
        self.rnn3 = make_cell(cell, c512 // 4, c256, 3, 1, 3, **cell_options)
        self.rnn4 = make_cell(cell, c256 // 4, c128, 3, 1, 3, **cell_options)
        self.conv2 = nn.Conv2d(c128 // 4, 3, 1, bias=False)

    def forward(self, codes: Tensor, states: list | None = None) -> tuple[Tensor, list]:
        states = states or [None, None, None, None]
        x = self.conv1(codes)
        new_states = []
        for rnn, state in zip((self.rnn1, self.rnn2, self.rnn3, self.rnn4), states, strict=True):
            x, s = rnn(x, state)
            x = F.pixel_shuffle(x, 2)
            new_states.append(s)
        return torch.tanh(self.conv2(x)) / 2, new_states


def pad_to_multiple(x: Tensor, multiple: int = STRIDE) -> Tensor:
    """Replicate-pad the bottom and right edges so that H and W are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


class RNNCodec(nn.Module):
    """Encoder + binarizer + decoder, run for ``iterations`` steps of residual coding.

    Args:
        cell: recurrent unit, ``"lstm"`` or ``"gru"``.
        width: channel multiplier on the layer table (1.0 = the paper's network).
        bits: binary channels per 16×16 block and iteration (32 → 0.125 bpp per iteration).
        reconstruction: ``"additive"`` (γ = 1) or ``"one_shot"`` (γ = 0).
        skip_zero_state: skip the hidden convolutions on the first iteration, where the state is zero
            (exact; see :mod:`models.rnn_cells`).
        compile_gates: run the cells' gate pointwise functions through ``torch.compile`` in training
            (float rounding; compiles once per cell and patch shape).
        small_map_gemm: in training, convolutions with 2×2 outputs as unfold + GEMM (float rounding).
        channels_last: keep weights and activations in NHWC memory format (float rounding).
        autocast_bf16: run the training forward under bfloat16 autocast (bf16 precision, float32
            accumulation; evaluation stays float32; ignored with a warning without native bf16; see above).
    """

    def __init__(
        self,
        cell: CellType = "lstm",
        width: float = 1.0,
        bits: int = 32,
        reconstruction: Reconstruction = "additive",
        skip_zero_state: bool = False,
        compile_gates: bool = False,
        small_map_gemm: bool = False,
        channels_last: bool = False,
        autocast_bf16: bool = False,
    ) -> None:
        super().__init__()
        if reconstruction not in ("additive", "one_shot"):
            raise ValueError(f"reconstruction must be 'additive' or 'one_shot', got {reconstruction!r}")
        if bits < 1:
            raise ValueError(f"bits must be positive, got {bits}")
        self.cell, self.width, self.bits, self.reconstruction = cell, width, bits, reconstruction
        cell_options = {
            "skip_zero_state": skip_zero_state,
            "compile_gates": compile_gates,
            "small_map_gemm": small_map_gemm,
        }
        self.channels_last, self.autocast_bf16 = channels_last, autocast_bf16
        self.encoder = RNNEncoder(cell, width, **cell_options)
        self.binarizer = Binarizer(self.encoder.out_channels, bits)
        self.decoder = RNNDecoder(cell, width, bits, **cell_options)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @property
    def bpp_per_iteration(self) -> float:
        return self.bits / STRIDE**2

    def _check(self, x: Tensor, iterations: int) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")

    def _update(self, previous: Tensor | None, output: Tensor) -> Tensor:
        if previous is None or self.reconstruction == "one_shot":
            return output
        return previous + output

    def forward(self, x: Tensor, iterations: int) -> dict[str, Tensor]:
        """Code ``x`` for ``iterations`` steps.

        Returns a dict with ``x_hats`` (T, B, 3, H, W) the reconstruction after each iteration (in
        image range, not clamped), ``x_hat`` the last of them, and ``codes`` (T, B, bits, H/16, W/16)
        the ±1 codes (padded size).
        """
        self._check(x, iterations)
        with self._speed_context():
            return self._forward(x, iterations)

    def _speed_context(self):
        """bfloat16 autocast in training when ``autocast_bf16`` is on and the device has native bf16."""
        device = self._device_type()
        enabled = self.autocast_bf16 and self.training and native_bf16(device)
        return torch.autocast(device, dtype=torch.bfloat16, enabled=enabled)

    def _device_type(self) -> str:
        return next(self.parameters()).device.type

    def _layout(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _forward(self, x: Tensor, iterations: int) -> dict[str, Tensor]:
        size = x.shape[-2:]
        target = self._layout(pad_to_multiple(x) - 0.5)
        residual, recon = target, None
        enc_states = dec_states = None
        codes, x_hats = [], []
        for _ in range(iterations):
            features, enc_states = self.encoder(residual, enc_states)
            b = self.binarizer(features)
            out, dec_states = self.decoder(b, dec_states)
            recon = self._update(recon, out)
            residual = target - recon
            codes.append(b)
            x_hats.append(recon[..., : size[0], : size[1]] + 0.5)
        x_hats_t = torch.stack(x_hats).to(x.dtype)  # autocast's bf16 back to the input's dtype
        return {"x_hat": x_hats_t[-1], "x_hats": x_hats_t, "codes": torch.stack(codes).to(x.dtype)}

    @torch.no_grad()
    def encode(self, x: Tensor, iterations: int) -> Tensor:
        """±1 codes (T, B, bits, ⌈H/16⌉, ⌈W/16⌉) of ``x``, with the binarizer in its eval (sign) mode."""
        was_training = self.training
        self.eval()
        try:
            return self.forward(x, iterations)["codes"]
        finally:
            self.train(was_training)

    @torch.no_grad()
    def decode(self, codes: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """Reconstructions (T, B, 3, H, W) after each of the T iterations in ``codes``, cropped to ``size``."""
        return self.reconstruct(codes, size)

    def reconstruct(self, codes: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """:meth:`decode` with gradients (training through the decoder from received codes)."""
        if codes.ndim != 5 or codes.shape[2] != self.bits:
            raise ValueError(f"expected codes of shape (T, B, {self.bits}, h, w), got {tuple(codes.shape)}")
        h, w = size if size is not None else (codes.shape[-2] * STRIDE, codes.shape[-1] * STRIDE)
        recon, dec_states, x_hats = None, None, []
        with self._speed_context():
            for b in codes:
                out, dec_states = self.decoder(self._layout(b), dec_states)
                recon = self._update(recon, out)
                x_hats.append(recon[..., :h, :w] + 0.5)
        return torch.stack(x_hats).to(codes.dtype)


_warned_bf16: set[str] = set()


def native_bf16(device_type: str) -> bool:
    """Whether ``device_type`` computes bf16 natively (CUDA: Ampere or later; CPU: AVX512-BF16 or AMX),
    warning once per device type where not (``autocast_bf16`` is then ignored: emulated bf16 is slower)."""
    if device_type == "cuda":
        native = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8  # Ampere or later
    elif device_type == "cpu":
        native = cpu_has_native_bf16()
    else:
        native = True  # other accelerators: trust torch.autocast
    if not native and device_type not in _warned_bf16:
        _warned_bf16.add(device_type)
        warnings.warn(
            f"autocast_bf16 is on but this {device_type} has no native bfloat16 arithmetic (AVX512-BF16/AMX on a "
            "CPU, Ampere or later on a GPU): emulated bf16 would be slower than float32, so the codec trains in "
            "float32",
            stacklevel=3,
        )
    return native


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX on this CPU (PyTorch's own CPU feature probes)."""
    probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(probe is not None and probe() for probe in probes)


def rnn_codec_parameter_count(cell: CellType = "lstm", width: float = 1.0, bits: int = 32) -> int:
    """Parameter count derived from the layer table alone (no module is built).

    A cell with ``g`` gates (4 LSTM, 3 GRU), input ``i``, hidden ``h``, kernels ``k_in``/``k_hid``
    has ``g·h·(i·k_in² + h·k_hid²)`` weights; convolutions have ``in·out·k²``.
    """
    g = {"lstm": 4, "gru": 3}[cell]
    c64, c128, c256, c512 = (scaled(c, width) for c in (64, 128, 256, 512))

    def rnn(i: int, h: int, k_in: int, k_hid: int) -> int:
        return g * h * (i * k_in**2 + h * k_hid**2)

    encoder = 3 * c64 * 9 + rnn(c64, c256, 3, 1) + rnn(c256, c512, 3, 1) + rnn(c512, c512, 3, 1)
    binarizer = c512 * bits
    decoder = (
        bits * c512
        + rnn(c512, c512, 3, 1)
        + rnn(c512 // 4, c512, 3, 1)
        + rnn(c512 // 4, c256, 3, 3)
        + rnn(c256 // 4, c128, 3, 3)
        + (c128 // 4) * 3
    )
    return encoder + binarizer + decoder
