"""Binary-decomposed CNN layers (B-DCNN, Kamiya et al., ICCVW 2017): ±1 weight bases, quantised inputs.

A decomposed layer computes, for every output channel n (weights decomposed by
:mod:`models.binary_decomposition` into w_n ≈ Σ_j c_nj m_nj, m ∈ {±1}^D)::

    y_n = Σ_j c_nj · m_nj · x̂ + b_n,    x̂ = o + β · Σ_{q<Q} 2^q b_q   (b_q ∈ {0,1}^D: bit planes)
        = β Σ_j c_nj Z_nj + o Σ_j c_nj (m_nj · 1) + b_n,   Z_nj = Σ_q 2^q (2·popc(m⁺_nj ∧ b_q) − popc(b_q))

so the inner products Z are integers computed with AND + popcount on packed bits (m⁺ = the bits where
m = +1; :mod:`models.bitserial` runs this for real). The *quantisation sub-layer* produces x̂: it shifts
the feature map so that its minimum is 0, scales it to [0, 2^Q − 1] and rounds (figure 1 of the
bit-search paper). Our reading of the unstated details:

- min and max are taken per image over the whole input map of the layer (all channels and positions),
  at run time (no calibration set needed): o = min, β = (max − min) / (2^Q − 1) (β = 1 when max = min);
- a convolution's zero padding is applied *before* quantising (the padded zeros are quantised like any
  other value), so that the integer kernel sees exactly what the float reference sees;
- ``bits=None`` switches the sub-layer off (float inputs, decomposed weights): the "before quantisation"
  network whose accuracy is R in Algorithm 1.
- The forward pass used for training and the search is the float simulation
  ``conv(o + β·x_int, Σ_j c_j m_j)``; gradients pass straight through the rounding (STE).

The cost model (:func:`layer_cost`) counts per image, for a layer with N outputs channels at P
positions, D inputs per output and k bases at Q bits: ``word_ops = N·P·k·Q·⌈D/64⌉`` (64-bit AND +
popcount pairs, what the kernel executes), ``bops = N·P·k·Q·D`` (binary operations, the usual BOPs),
``real_macs = N·P·k`` (the coefficient sums; the 2^q shifts are integer adds), against the float layer's
``float_macs = N·P·D``; and the stored weight bits (N·k·D + 32·N·k, + 32·N for a bias).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.binary_decomposition import BinaryDecomposition, Method, decompose

LayerSelection = Literal["conv", "linear", "all"]


def quantization_levels(x: Tensor, bits: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(x_int, offset, scale)`` with x ≈ offset + scale · x_int per image (first dim), x_int ∈ [0, 2^bits − 1]
    (int64, same shape as ``x``), ``offset``/``scale`` of shape (B,); no gradient."""
    if not 1 <= bits <= 16:
        raise ValueError(f"quantisation bits must be in 1..16, got {bits}")
    x = x.detach().float()  # in float32 even under bf16/fp16 autocast (8-bit levels need the mantissa)
    flat = x.reshape(x.shape[0], -1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    scale = (high - low) / (2**bits - 1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    shape = (-1,) + (1,) * (x.dim() - 1)
    levels = torch.round((x - low.view(shape)) / scale.view(shape)).clamp_(0, 2**bits - 1)
    return levels.to(torch.int64), low, scale


class QuantizationSubLayer(nn.Module):
    """Shift the minimum to 0, scale to ``bits`` bits, round; straight-through gradient.

    Args:
        bits: Q, bits per input value; ``None`` passes the input through unchanged.
    """

    def __init__(self, bits: int | None = None) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, x: Tensor) -> Tensor:
        if self.bits is None:
            return x
        levels, offset, scale = quantization_levels(x, self.bits)
        shape = (-1,) + (1,) * (x.dim() - 1)
        x_hat = (offset.view(shape) + scale.view(shape) * levels.float()).to(x.dtype)
        return x + (x_hat - x).detach()

    def bit_planes(self, x: Tensor) -> Tensor:
        """The Q bit planes (Q, *x.shape) of {0, 1} (int64), least significant first."""
        if self.bits is None:
            raise ValueError("bit planes need a number of bits (the sub-layer is switched off)")
        levels, _, _ = quantization_levels(x, self.bits)
        return torch.stack([(levels >> q) & 1 for q in range(self.bits)])

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class BinaryDecomposedLayer(nn.Module):
    """Common part of the decomposed convolution and linear layer.

    Buffers ``bases`` int8 (N, k, D) of ±1; parameters ``coefficients`` (N, k) (trainable or frozen) and
    ``bias`` (N,) if the source layer had one; ``quantizer`` the input's quantisation sub-layer.
    """

    def __init__(self, decomposition: BinaryDecomposition, bias: Tensor | None, bits: int | None) -> None:
        super().__init__()
        self.register_buffer("bases", decomposition.bases.clone())
        self.coefficients = nn.Parameter(decomposition.coefficients.detach().clone().float())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone().float())
        self.quantizer = QuantizationSubLayer(bits)
        self.decomposition_report = {"iterations": decomposition.iterations, "capped_rows": decomposition.capped_rows}

    @property
    def k(self) -> int:
        return self.bases.shape[1]

    @property
    def fan_in(self) -> int:
        """D, inputs per output."""
        return self.bases.shape[2]

    @property
    def bits(self) -> int | None:
        return self.quantizer.bits

    @bits.setter
    def bits(self, value: int | None) -> None:
        self.quantizer.bits = value

    def weight_rows(self) -> Tensor:
        """Σ_j c_j m_j as rows (N, D), differentiable in the coefficients."""
        return torch.einsum("nk,nkd->nd", self.coefficients, self.bases.to(self.coefficients.dtype))


class BinaryDecomposedConv2d(BinaryDecomposedLayer):
    """A ``Conv2d`` (zero padding) with decomposed weights and a quantised input.

    Args:
        conv: the float layer whose weights are decomposed (not modified).
        k: bases per output channel.
        bits: Q of the input's quantisation sub-layer (``None``: off).
        method: ``greedy`` or ``exhaustive`` decomposition.
        decomposition_kwargs: ``iterations``, ``restarts``, ``seed`` of the exhaustive method.
    """

    def __init__(
        self, conv: nn.Conv2d, k: int, bits: int | None = None, method: Method = "exhaustive", **decomposition_kwargs
    ) -> None:
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"only explicit zero padding is supported, got {conv.padding_mode!r}, {conv.padding!r}")
        kwargs = decomposition_kwargs if method == "exhaustive" else {}
        super().__init__(decompose(conv.weight, k, method, **kwargs), conv.bias, bits)
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups

    def weight(self) -> Tensor:
        return self.weight_rows().reshape(self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def pad(self, x: Tensor) -> Tensor:
        ph, pw = self.padding
        return F.pad(x, (pw, pw, ph, ph)) if ph or pw else x

    def forward(self, x: Tensor) -> Tensor:
        x = self.quantizer(self.pad(x))
        return F.conv2d(x, self.weight(), self.bias, self.stride, 0, self.dilation, self.groups)

    def output_positions(self, input_hw: Sequence[int]) -> int:
        """P, output positions per image for an (unpadded) input of ``input_hw``."""
        out = [
            (size + 2 * p - d * (kk - 1) - 1) // s + 1
            for size, p, d, kk, s in zip(
                input_hw, self.padding, self.dilation, self.kernel_size, self.stride, strict=True
            )
        ]
        return out[0] * out[1]

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, groups={self.groups}, k={self.k}"
        )


class BinaryDecomposedLinear(BinaryDecomposedLayer):
    """A ``Linear`` layer with decomposed weights and a quantised input (arguments as the convolution's)."""

    def __init__(
        self, linear: nn.Linear, k: int, bits: int | None = None, method: Method = "exhaustive", **decomposition_kwargs
    ) -> None:
        kwargs = decomposition_kwargs if method == "exhaustive" else {}
        super().__init__(decompose(linear.weight, k, method, **kwargs), linear.bias, bits)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.quantizer(x), self.weight_rows(), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, k={self.k}"


def selected_layers(model: nn.Module, layers: LayerSelection | Sequence[str] = "conv") -> list[str]:
    """Names of the ``Conv2d``/``Linear`` modules chosen by ``layers`` (a kind, or explicit names), in
    definition order; unknown names are an error naming them."""
    kinds = {"conv": (nn.Conv2d,), "linear": (nn.Linear,), "all": (nn.Conv2d, nn.Linear)}
    candidates = {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    if isinstance(layers, str):
        if layers not in kinds:
            raise ValueError(f"layers must be 'conv', 'linear', 'all' or a list of module names, got {layers!r}")
        return [name for name, m in candidates.items() if isinstance(m, kinds[layers])]
    missing = [name for name in layers if name not in candidates]
    if missing:
        raise ValueError(f"no Conv2d/Linear module named {missing}; candidates: {list(candidates)}")
    return [name for name in candidates if name in set(layers)]


def _per_layer(value: int | None | Mapping[str, int | None], name: str, what: str) -> int | None:
    if isinstance(value, Mapping):
        if name not in value:
            raise ValueError(f"{what} has no entry for layer {name!r} (entries: {list(value)})")
        return value[name]
    return value


def convert_to_bdcnn(
    model: nn.Module,
    bases: int | Mapping[str, int] = 6,
    bits: int | None | Mapping[str, int | None] = None,
    layers: LayerSelection | Sequence[str] = "conv",
    method: Method = "exhaustive",
    **decomposition_kwargs,
) -> nn.Module:
    """A copy of ``model`` whose chosen layers are binary-decomposed (the original is not modified).

    Args:
        model: any CNN built of ``nn.Conv2d``/``nn.Linear`` modules (torchvision AlexNet, VGG, ResNet,
            MobileNetV2, the demo networks of :mod:`models.bdcnn_networks`).
        bases: k for every layer, or per layer name.
        bits: Q for every layer (``None``: quantisation off), or per layer name.
        layers: which layers: ``"conv"``, ``"linear"``, ``"all"`` or a list of module names.
        method: decomposition algorithm, ``greedy`` or ``exhaustive``.
        decomposition_kwargs: ``iterations``, ``restarts``, ``seed`` of the exhaustive method.

    In-place activations are switched off in the copy (``inplace=False``): the search re-runs parts of the
    network from cached intermediate values, which an in-place ReLU would overwrite.
    """
    converted = copy.deepcopy(model)
    for name in selected_layers(converted, layers):
        parent_name, _, child = name.rpartition(".")
        parent = converted.get_submodule(parent_name) if parent_name else converted
        source = getattr(parent, child)
        k, q = _per_layer(bases, name, "bases"), _per_layer(bits, name, "bits")
        if k is None:
            raise ValueError(f"layer {name!r} needs a number of bases")
        cls = BinaryDecomposedConv2d if isinstance(source, nn.Conv2d) else BinaryDecomposedLinear
        setattr(parent, child, cls(source, k, q, method, **decomposition_kwargs))
    for module in converted.modules():
        if hasattr(module, "inplace") and isinstance(module.inplace, bool):
            module.inplace = False
    return converted


def decomposed_layers(model: nn.Module) -> dict[str, BinaryDecomposedLayer]:
    """The decomposed layers of ``model`` by name, in definition order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, BinaryDecomposedLayer)}


def set_bits(model: nn.Module, bits: int | None | Mapping[str, int | None]) -> None:
    """Set Q of every decomposed layer (one value, or per name; names absent from a mapping are left alone)."""
    for name, layer in decomposed_layers(model).items():
        if isinstance(bits, Mapping):
            if name in bits:
                layer.bits = bits[name]
        else:
            layer.bits = bits


def layer_inputs(model: nn.Module, example: Tensor, names: Sequence[str] | None = None) -> dict[str, Tensor]:
    """The (unpadded) input of each decomposed layer (or of those ``names``) for ``example``, as the model's
    current bits make it (detached; the first call of a layer called twice)."""
    captured: dict[str, Tensor] = {}

    def record(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            captured.setdefault(name, args[0].detach())

        return hook

    layers = decomposed_layers(model)
    hooks = [layers[name].register_forward_pre_hook(record(name)) for name in (names or list(layers))]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return captured


def input_shapes(model: nn.Module, example: Tensor) -> dict[str, tuple[int, ...]]:
    """The (unpadded) input shape of every decomposed layer for ``example`` (batch dim dropped)."""
    return {name: tuple(x.shape[1:]) for name, x in layer_inputs(model, example).items()}


def layer_cost(layer: BinaryDecomposedLayer, input_shape: Sequence[int], bits: int | None) -> dict[str, int]:
    """Per-image cost of ``layer`` at ``bits`` (see the module docstring); ``bits=None`` gives the float
    layer with decomposed weights (no binary work)."""
    n, k, d = layer.bases.shape
    if isinstance(layer, BinaryDecomposedConv2d):
        outputs = n * layer.output_positions(input_shape[-2:])
    else:
        outputs = n * math.prod(input_shape[:-1])
    q = bits or 0
    return {
        "outputs": outputs,
        "fan_in": d,
        "k": k,
        "bits": q,
        "word_ops": outputs * k * q * math.ceil(d / 64),
        "bops": outputs * k * q * d,
        "real_macs": outputs * k if bits else outputs * d,
        "float_macs": outputs * d,
        "weight_bits": n * k * d + 32 * n * k + (32 * n if layer.bias is not None else 0),
        "float_weight_bits": 32 * n * d + (32 * n if layer.bias is not None else 0),
    }
