"""The bit-serial kernel (AND + popcount on 64-bit words) equals the quantised float reference exactly.

Every backend and every native kernel path this CPU can run is checked against ``integer_reference`` (the
integer inputs times the ±1 bases by float64 ``conv2d``/``linear``, exact below 2^53) on random shapes:
strides, dilation, padding, fan-in D spanning several 64-bit words with a partial last word, k and Q 1..8.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from models.bdcnn import BinaryDecomposedConv2d, BinaryDecomposedLinear, quantization_levels
from models.bitserial import (
    ISAS,
    BitSerialLayer,
    available_isas,
    integer_products,
    integer_reference,
    native,
    pack_bits,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_pack_bits_layout():
    bits = np.zeros((1, 70), dtype=np.uint8)
    bits[0, [0, 2, 63, 64, 69]] = 1
    words = pack_bits(bits)
    assert words.dtype == np.uint64 and words.shape == (1, 2)
    assert int(words[0, 0]) == 1 + 4 + 2**63 and int(words[0, 1]) == 1 + 2**5


def _random_conv(rng: random.Random) -> tuple[BinaryDecomposedConv2d, torch.Tensor]:
    cin, cout = rng.choice([1, 3, 17, 64, 70, 130]), rng.randint(1, 11)
    kernel, stride, dilation, padding = rng.randint(1, 4), rng.randint(1, 3), rng.randint(1, 2), rng.randint(0, 2)
    side = (kernel - 1) * dilation + 1 + rng.randint(0, 6)
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, bias=rng.random() < 0.5)
    layer = BinaryDecomposedConv2d(conv, rng.randint(1, 8), bits=rng.randint(1, 8), method="greedy")
    x = torch.randn(rng.randint(1, 2), cin, side, side + rng.randint(0, 3)) + rng.choice([0.0, 2.0])
    return layer, x


def _random_linear(rng: random.Random) -> tuple[BinaryDecomposedLinear, torch.Tensor]:
    d = rng.choice([1, 5, 64, 65, 130, 700, 1100])
    layer = BinaryDecomposedLinear(nn.Linear(d, rng.randint(1, 20)), rng.randint(1, 8), bits=rng.randint(1, 8),
                                   method="greedy")  # fmt: skip
    return layer, torch.randn(rng.randint(1, 2), d)


def _check_exact(layer, x, **kwargs) -> None:
    kernel = BitSerialLayer(layer, **kwargs)
    levels, _, _ = kernel.levels(x)
    z = kernel.integer_outputs(levels)
    assert z.dtype == torch.int64
    assert torch.equal(z, integer_reference(layer, levels)), (layer, layer.bits, tuple(x.shape))
    with torch.no_grad():
        torch.testing.assert_close(kernel(x), layer(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("isa", list(ISAS))
def test_native_paths_equal_the_reference_on_random_shapes(isa):
    if isa not in available_isas():
        pytest.skip(f"this CPU/install cannot run the {isa} path (runs {available_isas()})")
    rng = random.Random(ISAS[isa])
    torch.manual_seed(ISAS[isa])
    for _ in range(12):
        _check_exact(*_random_conv(rng), backend="native", isa=isa)
        _check_exact(*_random_linear(rng), backend="native", isa=isa)


@pytest.mark.parametrize("isa", list(ISAS))
def test_native_quantise_and_pack_from_floats_equal_the_reference(isa):
    """The compiled quantisation (float32 min/max/scale/round, padding included) gives torch's levels: the
    integer products computed from the float input equal the reference's from ``quantization_levels``."""
    if isa not in available_isas():
        pytest.skip(f"this CPU/install cannot run the {isa} path")
    rng = random.Random(10 + ISAS[isa])
    torch.manual_seed(10 + ISAS[isa])
    for case in range(12):
        layer, x = _random_conv(rng) if case % 2 == 0 else _random_linear(rng)
        if case == 4:
            x = torch.full_like(x, 0.25)  # constant map: scale 1 (the max = min case)
        kernel = BitSerialLayer(layer, backend="native", isa=isa)
        image = x[0]
        packed = kernel.native_pack(image)
        acc = kernel.native_kernel(packed)
        n, k = layer.coefficients.shape
        positions = packed["positions"]
        z = 2 * acc[: n * k, :positions] - packed["xsum"][None, :positions]
        padded = layer.pad(x[:1]) if isinstance(layer, BinaryDecomposedConv2d) else x[:1]
        levels, low, scale = quantization_levels(padded, layer.bits)
        assert np.array_equal(z.reshape(n, k, positions), integer_reference(layer, levels)[0].numpy())
        assert (packed["low"], packed["scale"]) == (float(low[0]), float(scale[0]))
        y = kernel.native_combine(acc, packed)
        assert np.array_equal(y.reshape(-1), kernel(x[:1]).reshape(-1).numpy())  # the fused call: same numbers


def test_integer_products_native_equals_numba_layout():
    """``integer_products`` on the (N, k, W) / (P, Q, W) layout: the native kernel equals the torch one."""
    if native is None:
        pytest.skip("the native extension is not built")
    rng = np.random.default_rng(0)
    weights = rng.integers(0, 2**63, size=(5, 3, 4), dtype=np.uint64)
    planes = rng.integers(0, 2**63, size=(21, 3, 4), dtype=np.uint64)
    assert np.array_equal(integer_products(weights, planes, "native"), integer_products(weights, planes, "torch"))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_fallback_backends_equal_the_reference(backend):
    """The fallbacks, forced by argument (what runs without the compiled extension)."""
    rng = random.Random(20)
    torch.manual_seed(20)
    for _ in range(3):
        _check_exact(*_random_conv(rng), backend=backend)
        _check_exact(*_random_linear(rng), backend=backend)


def test_kernel_refuses_what_it_cannot_run():
    depthwise = BinaryDecomposedConv2d(nn.Conv2d(4, 4, 3, groups=4), 1, bits=2, method="greedy")
    with pytest.raises(ValueError, match="groups=1"):
        BitSerialLayer(depthwise)
    linear = BinaryDecomposedLinear(nn.Linear(4, 2), 1, bits=None, method="greedy")
    with pytest.raises(ValueError, match="bits=None"):
        BitSerialLayer(linear)
    linear.bits = 2
    with pytest.raises(ValueError, match="backend"):
        BitSerialLayer(linear, backend="cuda")
    with pytest.raises(ValueError, match="native backend"):
        BitSerialLayer(linear, backend="numba", isa="avx2")
    if native is not None:
        with pytest.raises(ValueError, match="isa must be one of"):
            BitSerialLayer(linear, backend="native", isa="neon")
