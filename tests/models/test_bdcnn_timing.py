"""The whole network run bit-serially equals the float simulation of the decomposed network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.bdcnn import convert_to_bdcnn, set_bits
from models.bdcnn_networks import demo_cnn
from models.bdcnn_timing import BitSerialModule, bitserial_network, network_ms_per_image

pytestmark = pytest.mark.usefixtures("one_thread")


def _decomposed(bits):
    torch.manual_seed(0)
    net = demo_cnn(num_classes=5, width=4).eval()
    decomposed = convert_to_bdcnn(net, bases=2, bits=None, layers="all", method="greedy")
    set_bits(decomposed, bits)
    return net, decomposed


@pytest.mark.parametrize("bits", [2, {"0": 4, "3": 3, "6": 2, "9": 5, "13": 8}])
def test_bitserial_network_equals_the_float_simulation(bits):
    net, decomposed = _decomposed(bits)
    serial = bitserial_network(decomposed)
    replaced = [m for m in serial.modules() if isinstance(m, BitSerialModule)]
    assert len(replaced) == 5  # four convolutions and the linear layer, all through the kernel
    assert not any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in serial.modules())
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        expected = decomposed.eval()(x)
        got = serial(x)
        assert not torch.allclose(expected, net(x), atol=1e-3)  # quantisation visibly changes the output
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_network_ms_per_image_reports_both_networks():
    net, decomposed = _decomposed(2)
    result = network_ms_per_image(net, decomposed, torch.rand(3, 16, 16), repeats=2, threads=1)
    assert result["layers"] == 5 and len(result["float_times_ms"]) == len(result["bitserial_times_ms"]) == 2
    assert result["float_min_ms"] == min(result["float_times_ms"])
    assert result["bitserial_min_ms"] == min(result["bitserial_times_ms"])


def test_bitserial_network_refuses_layers_without_bits():
    net, decomposed = _decomposed({"0": 2})
    with pytest.raises(ValueError, match="without bits"):
        bitserial_network(decomposed)
    with pytest.raises(ValueError, match="no binary-decomposed layer"):
        bitserial_network(net)
