"""Binary decomposition, quantisation sub-layer, converter, cost model and the prefix cache of B-DCNN."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from models.bdcnn import (
    BinaryDecomposedConv2d,
    BinaryDecomposedLinear,
    QuantizationSubLayer,
    convert_to_bdcnn,
    decomposed_layers,
    input_shapes,
    layer_cost,
    quantization_levels,
    set_bits,
)
from models.bdcnn_networks import ALEXNET_CONV_NAMES, build_classifier
from models.binary_decomposition import decompose_exhaustive, decompose_greedy, relative_error
from models.prefix_cache import SegmentRunner

pytestmark = pytest.mark.usefixtures("one_thread")


def test_greedy_steps_by_hand():
    w = torch.tensor([[3.0, -1.0, 2.0, -2.0]])
    d = decompose_greedy(w, 2)
    # m1 = sign(w), c1 = mean|w| = 2; residual (1, 1, 0, 0): m2 = sign (0 → +1) = all +1, c2 = 2/4
    assert d.bases.tolist() == [[[1, -1, 1, -1], [1, 1, 1, 1]]]
    assert torch.allclose(d.coefficients, torch.tensor([[2.0, 0.5]]))
    assert torch.allclose(d.reconstruct(), torch.tensor([[2.5, -1.5, 2.5, -1.5]]))


def test_error_decreases_with_k_and_exhaustive_beats_greedy():
    w = torch.randn(12, 8, 3, 3, generator=torch.Generator().manual_seed(0))
    greedy = [relative_error(w, decompose_greedy(w, k)) for k in range(1, 7)]
    exhaustive = [relative_error(w, decompose_exhaustive(w, k, restarts=1)) for k in range(1, 7)]
    assert all(a > b for a, b in zip(greedy, greedy[1:], strict=False))
    assert all(a > b for a, b in zip(exhaustive, exhaustive[1:], strict=False))
    assert all(e <= g + 1e-12 for e, g in zip(exhaustive, greedy, strict=True))
    assert exhaustive[0] == pytest.approx(greedy[0])  # k = 1: sign and mean|w| is already optimal
    assert exhaustive[-1] < 0.5 * greedy[-1]


def test_exhaustive_recovers_an_exactly_binary_weight():
    g = torch.Generator().manual_seed(0)
    m = torch.randint(0, 2, (8, 3, 50), generator=g).double() * 2 - 1
    c = torch.tensor([4.0, 2.0, 1.0]) * torch.rand(8, 1, generator=g).double()
    w = torch.einsum("nk,nkd->nd", c, m)
    assert relative_error(w, decompose_exhaustive(w, 3)) < 1e-9
    assert relative_error(w, decompose_greedy(w, 3)) > 1e-2  # greedy cannot


def _brute_force_optimum(w: torch.Tensor, k: int) -> torch.Tensor:
    """min over every M ∈ {±1}^{k×D} of ‖w − M^T c*(M)‖² per row, c* by numpy's least squares (rank-deficient M
    included): the global optimum, by enumeration."""
    n, d = w.shape
    best = np.full(n, np.inf)
    for flat in itertools.product((-1.0, 1.0), repeat=k * d):
        m = np.array(flat).reshape(k, d)
        for row in range(n):
            c = np.linalg.lstsq(m.T, w[row].numpy(), rcond=None)[0]
            best[row] = min(best[row], float(((w[row].numpy() - m.T @ c) ** 2).sum()))
    return torch.from_numpy(best)


def _row_error(w: torch.Tensor, dec) -> torch.Tensor:
    return (w - dec.reconstruct().double()).pow(2).sum(dim=1)


@pytest.mark.parametrize("k, d", [(2, 5), (3, 4)])
def test_exhaustive_reaches_the_brute_force_optimum_on_small_rows(k, d):
    w = torch.randn(6, d, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    optimum = _brute_force_optimum(w, k)
    dec = decompose_exhaustive(w, k, restarts=48)
    assert dec.capped_rows == 0
    assert torch.allclose(_row_error(w, dec), optimum, rtol=1e-9, atol=1e-12)
    single = decompose_exhaustive(w, k, restarts=0)  # one run: a fixed point, never below the optimum
    assert (_row_error(w, single) >= optimum - 1e-12).all()


def _improvable_elements(w: torch.Tensor, dec) -> int:
    """Elements whose sign vector is not the nearest of all 2^k for the row's coefficients (enumerated), plus rows
    whose coefficients are not numpy's least squares for their signs."""
    k = dec.bases.shape[1]
    signs = np.array(list(itertools.product((-1.0, 1.0), repeat=k)))  # (2^k, k)
    bad = 0
    for row in range(w.shape[0]):
        m, c, x = dec.bases[row].double().numpy(), dec.coefficients[row].double().numpy(), w[row].numpy()
        chosen = (x - c @ m) ** 2
        nearest = ((x[None, :] - (signs @ c)[:, None]) ** 2).min(axis=0)
        bad += int((chosen > nearest + 1e-9).sum())
        bad += int(not np.allclose(np.linalg.lstsq(m.T, x, rcond=None)[0] @ m, c @ m, atol=1e-9))
    return bad


def test_exhaustive_runs_to_a_fixed_point_and_reports_the_cap():
    """k ≥ 3 needed more than the former 10 rounds: with the cap hit, signs are left improvable and it says so;
    run to convergence, no element's sign and no coefficient can change (checked by enumeration and numpy)."""
    w = torch.randn(8, 300, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.warns(UserWarning, match=r"rows \(k=4, D=300\) still changed their signs after the cap of 2"):
        capped = decompose_exhaustive(w, 4, iterations=2, restarts=0)
    assert capped.capped_rows > 0 and capped.iterations == 2
    assert _improvable_elements(w, capped) > 0
    converged = decompose_exhaustive(w, 4, restarts=0)
    assert converged.capped_rows == 0 and 2 < converged.iterations < 500
    assert _improvable_elements(w, converged) == 0
    assert _row_error(w, converged).sum() < _row_error(w, capped).sum()


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_large_k_matches_the_float_layer(kind):
    """Stated tolerance: with k = 10 exhaustive bases and no quantisation, the layer output is within 1 % (relative
    L2) of the float layer."""
    torch.manual_seed(0)
    if kind == "conv":
        source, x = nn.Conv2d(6, 10, 3, padding=1, stride=2), torch.randn(2, 6, 9, 9)
        layer = BinaryDecomposedConv2d(source, 10, bits=None, restarts=0)
    else:
        source, x = nn.Linear(40, 7), torch.randn(3, 40)
        layer = BinaryDecomposedLinear(source, 10, bits=None, restarts=0)
    y, ref = layer(x), source(x)
    assert ((y - ref).norm() / ref.norm()).item() < 1e-2
    coarse = (BinaryDecomposedConv2d if kind == "conv" else BinaryDecomposedLinear)(source, 1, method="greedy")
    assert ((coarse(x) - ref).norm() / ref.norm()).item() > 0.1


def test_quantization_sub_layer():
    x = torch.tensor([[-1.0, 0.0, 0.5, 2.0], [1.0, 1.0, 1.0, 1.0]], requires_grad=True)
    levels, offset, scale = quantization_levels(x, 2)
    # image 0: min −1 → 0, max 2 → 3, β = 1: levels (0, 1, 2 (1.5 rounds to even), 3); image 1 is constant
    assert levels.tolist() == [[0, 1, 2, 3], [0, 0, 0, 0]]
    assert offset.tolist() == [-1.0, 1.0] and scale.tolist() == [1.0, 1.0]
    q = QuantizationSubLayer(2)
    y = q(x)
    assert y.tolist() == [[-1.0, 0.0, 1.0, 2.0], [1.0, 1.0, 1.0, 1.0]]
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # straight-through
    planes = q.bit_planes(x)
    assert torch.equal(planes[0] + 2 * planes[1], levels)
    xs = torch.randn(3, 5, 7)
    for bits in (1, 3, 8):
        err = (QuantizationSubLayer(bits)(xs) - xs).abs()
        _, _, step = quantization_levels(xs, bits)
        assert (err <= step[:, None, None] / 2 + 1e-6).all()
    assert torch.equal(QuantizationSubLayer(None)(xs), xs)


def test_cost_model_by_hand():
    conv = nn.Conv2d(8, 16, 3, padding=1)
    layer = BinaryDecomposedConv2d(conv, 3, bits=4, method="greedy")
    cost = layer_cost(layer, (8, 10, 10), 4)
    # N = 16, P = 10·10, D = 8·9 = 72 → ⌈72/64⌉ = 2 words, k = 3, Q = 4
    assert cost["word_ops"] == 16 * 100 * 3 * 4 * 2 == 38_400
    assert cost["bops"] == 16 * 100 * 3 * 4 * 72 == 1_382_400
    assert cost["float_macs"] == 16 * 100 * 72
    assert cost["real_macs"] == 16 * 100 * 3
    assert cost["weight_bits"] == 16 * 3 * 72 + 32 * 16 * 3 + 32 * 16
    assert layer_cost(layer, (8, 10, 10), 8)["word_ops"] == 2 * cost["word_ops"]  # linear in Q


def test_convert_alexnet_and_input_shapes():
    net = build_classifier("alexnet", num_classes=10)
    bd = convert_to_bdcnn(net, bases=1, bits=3, method="greedy")
    layers = decomposed_layers(bd)
    assert list(layers) == list(ALEXNET_CONV_NAMES)
    assert all(layer.bits == 3 for layer in layers.values())
    assert not any(getattr(m, "inplace", False) for m in bd.modules())
    assert isinstance(net.net.features[0], nn.Conv2d)  # the source is untouched
    shapes = input_shapes(bd, torch.rand(1, 3, 224, 224))
    assert shapes["net.features.0"] == (3, 224, 224) and shapes["net.features.3"] == (64, 27, 27)
    assert shapes["net.features.6"] == (192, 13, 13)
    conv2 = layer_cost(layers["net.features.3"], shapes["net.features.3"], 3)
    assert conv2["float_macs"] == 192 * 27 * 27 * 64 * 25  # AlexNet conv2: 224 MMACs
    with pytest.raises(ValueError, match="no Conv2d/Linear module named"):
        convert_to_bdcnn(net, layers=["net.features.1"])


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_prefix_cache_equals_the_full_forward(arch):
    torch.manual_seed(0)
    bd = convert_to_bdcnn(build_classifier(arch, 10).eval(), bases=1, method="greedy").eval()
    names = list(decomposed_layers(bd))
    runner = SegmentRunner(bd, names)
    x = torch.rand(2, 3, 32, 32)
    middle = runner.order[len(names) // 2]
    with torch.no_grad():
        set_bits(bd, None)
        cut = runner.run(runner.start(x), middle)
        set_bits(bd, {middle: 2, runner.order[-1]: 3})
        y = runner.run(cut)
        assert torch.equal(y, bd(x))
    assert runner.layer_calls == len(names)  # each layer ran once across the two segments
