"""The bit-serial kernel (AND + popcount on 64-bit words) equals the quantised float reference exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from models.bdcnn import BinaryDecomposedConv2d, BinaryDecomposedLinear
from models.bitserial import BitSerialLayer, integer_reference, pack_bits

pytestmark = pytest.mark.usefixtures("one_thread")


def test_pack_bits_layout():
    bits = np.zeros((1, 70), dtype=np.uint8)
    bits[0, [0, 2, 63, 64, 69]] = 1
    words = pack_bits(bits)
    assert words.dtype == np.uint64 and words.shape == (1, 2)
    assert int(words[0, 0]) == 1 + 4 + 2**63 and int(words[0, 1]) == 1 + 2**5


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("bits", [1, 3, 8])
def test_kernel_equals_the_integer_and_float_reference(backend, bits):
    torch.manual_seed(bits)
    conv = nn.Conv2d(20, 6, 3, stride=2, padding=1, dilation=1)
    layer = BinaryDecomposedConv2d(conv, 3, bits=bits, method="greedy")
    x = torch.randn(2, 20, 9, 7)  # D = 180: three words, the last one partly padding
    kernel = BitSerialLayer(layer, backend=backend)
    levels, _, _ = kernel.levels(x)
    z = kernel.integer_outputs(levels)
    assert z.dtype == torch.int64
    assert torch.equal(z, integer_reference(layer, levels))  # exact integers
    with torch.no_grad():
        assert torch.allclose(kernel(x), layer(x), rtol=1e-5, atol=1e-5)

    linear = BinaryDecomposedLinear(nn.Linear(130, 5), 2, bits=bits, method="greedy")
    xl = torch.randn(3, 130)
    k2 = BitSerialLayer(linear, backend=backend)
    levels, _, _ = k2.levels(xl)
    assert torch.equal(k2.integer_outputs(levels), integer_reference(linear, levels))
    with torch.no_grad():
        assert torch.allclose(k2(xl), linear(xl), rtol=1e-5, atol=1e-5)


def test_kernel_refuses_what_it_cannot_run():
    depthwise = BinaryDecomposedConv2d(nn.Conv2d(4, 4, 3, groups=4), 1, bits=2, method="greedy")
    with pytest.raises(ValueError, match="groups=1"):
        BitSerialLayer(depthwise)
    with pytest.raises(ValueError, match="bits=None"):
        BitSerialLayer(BinaryDecomposedLinear(nn.Linear(4, 2), 1, bits=None, method="greedy"))
