"""``conv2d_as_matmul`` is the convolution (values and gradients), and ``SmallMapConv2d`` takes it only
where it should: in training, k×k kernels, output maps of at most ``max_positions`` positions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.small_map_conv import SMALL_MAP_POSITIONS, SmallMapConv2d, conv2d_as_matmul

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = [  # (N, C_in, H, W, C_out, (kh, kw), stride, padding, dilation, bias)
    (2, 5, 4, 4, 7, (3, 3), (2, 2), (1, 1), (1, 1), False),
    (3, 4, 2, 2, 6, (3, 3), (1, 1), (1, 1), (1, 1), True),
    (2, 3, 7, 5, 4, (3, 2), (2, 1), (1, 0), (1, 1), True),
    (1, 6, 9, 9, 3, (3, 3), (1, 2), (2, 2), (2, 2), False),
    (4, 2, 5, 6, 5, (1, 1), (1, 1), (0, 0), (1, 1), True),
    (2, 3, 6, 6, 2, (5, 5), (3, 3), (2, 1), (1, 1), False),
]


@pytest.mark.parametrize("case", CASES)
def test_conv2d_as_matmul_is_conv2d_values_and_gradients(case):
    n, c, h, w, c_out, kernel, stride, padding, dilation, has_bias = case
    torch.manual_seed(sum(kernel) + c)
    x = torch.randn(n, c, h, w, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(c_out, c, *kernel, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(c_out, dtype=torch.float64, requires_grad=True) if has_bias else None
    y_ref = F.conv2d(x, weight, bias, stride, padding, dilation)
    y = conv2d_as_matmul(x, weight, bias, stride, padding, dilation)
    assert y.shape == y_ref.shape
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)  # float64: the same sums, reordered
    grad = torch.randn_like(y_ref)
    inputs = [x, weight] + ([bias] if has_bias else [])
    ref = torch.autograd.grad(y_ref, inputs, grad)
    got = torch.autograd.grad(y, inputs, grad)
    for g, r in zip(got, ref, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)


def test_float32_agrees_to_rounding_on_the_codecs_largest_small_map_layer_shape():
    torch.manual_seed(0)
    x = torch.randn(2, 64, 4, 4)
    weight = torch.randn(128, 64, 3, 3) / 24
    torch.testing.assert_close(conv2d_as_matmul(x, weight, None, (2, 2), (1, 1)), F.conv2d(x, weight, None, 2, 1))


def test_small_map_conv_has_conv2d_parameters_and_takes_the_matmul_only_where_it_should():
    plain = nn.Conv2d(4, 8, 3, 2, 1, bias=False)
    conv = SmallMapConv2d(4, 8, 3, 2, 1, bias=False)
    conv.load_state_dict(plain.state_dict())
    assert list(conv.state_dict()) == list(plain.state_dict())
    small, large = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 8, 8)  # outputs 2×2 (4 positions) and 4×4 (16)
    assert 4 <= SMALL_MAP_POSITIONS < 16
    conv.train()
    torch.testing.assert_close(conv(small), plain(small))
    assert conv.matmul_calls == 1
    conv(large)
    assert conv.matmul_calls == 1  # 16 > SMALL_MAP_POSITIONS
    conv.eval()
    assert torch.equal(conv(small), plain(small))  # evaluation: nn.Conv2d itself
    assert conv.matmul_calls == 1
    pointwise = SmallMapConv2d(4, 8, 1).train()
    pointwise(small)
    assert pointwise.matmul_calls == 0  # 1×1: already a GEMM in oneDNN
