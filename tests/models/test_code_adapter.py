"""Code adapter and the decoder-removed network: shapes for every k, parameter counts vs the paper."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import resnet18

from models.code_adapter import CodeAdapter, code_adapter_parameter_count
from models.code_classifier import VARIANT_START, VARIANTS, CodeEncoder, CodeRecognitionNet
from models.resnet_trunk import TRUNK_INPUT
from models.rnn_codec import RNNCodec

pytestmark = pytest.mark.usefixtures("one_thread")


# Shibata, Ohara, Yamauchi, table 1 (ImageNet-100, ResNet-18): parameters of the deployed pipeline.
PAPER_PARAMS = {
    "conventional": 20_293_224,
    "from_layer2": 14_867_364,
    "from_layer3": 14_581_796,
    "from_layer4": 13_404_452,
}


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def resnet18_activations_224() -> dict[str, torch.Size]:
    """Shape of torchvision ResNet-18's input to layer2/3/4 for one 224×224 image."""
    net = resnet18().eval()
    shapes = {}
    with torch.no_grad():
        h = net.maxpool(net.relu(net.bn1(net.conv1(torch.rand(1, 3, 224, 224)))))
        for name in ("layer1", "layer2", "layer3"):
            h = getattr(net, name)(h)
            shapes[{"layer1": "layer2", "layer2": "layer3", "layer3": "layer4"}[name]] = h.shape
    return shapes


@pytest.fixture(scope="module")
def codes_224() -> torch.Tensor:
    """16 iterations of open-loop codes of one 224×224 image, from a tiny encoder."""
    torch.manual_seed(0)
    return CodeEncoder(width=0.0625).eval()(torch.rand(1, 3, 224, 224), 16)


@pytest.mark.parametrize("variant", ["from_layer2", "from_layer3", "from_layer4"])
def test_adapter_output_is_what_the_trunk_expects_at_224_for_k_1_to_16(variant, codes_224, resnet18_activations_224):
    start = VARIANT_START[variant]
    channels, stride = TRUNK_INPUT[start]
    assert codes_224.shape == (16, 1, 32, 14, 14)
    for k in range(1, 17):
        adapter = CodeAdapter(k * 32, channels, 16 // stride).eval()
        with torch.no_grad():
            out = adapter(codes_224[:k].transpose(0, 1).reshape(1, k * 32, 14, 14))
        assert out.shape == resnet18_activations_224[start], f"k={k}"


@pytest.mark.parametrize("variant", ["from_layer2", "from_layer3", "from_layer4"])
@pytest.mark.parametrize("k", [1, 16])
def test_network_runs_codes_through_adapter_and_trunk_at_224(variant, k, resnet18_activations_224):
    net = CodeRecognitionNet(variant, num_classes=10, iterations=k, codec_width=0.0625).eval()
    seen = {}
    net.adapter.register_forward_hook(lambda m, i, o: seen.update(shape=o.shape))
    with torch.no_grad():
        logits = net(torch.rand(1, 3, 224, 224))
    assert logits.shape == (1, 10)
    assert seen["shape"] == resnet18_activations_224[VARIANT_START[variant]]


@pytest.mark.parametrize("upsample", ["nearest", "bilinear", "depth_to_space"])
@pytest.mark.parametrize(("out_channels", "scale"), [(64, 4), (128, 2), (256, 1)])
def test_adapter_shapes_and_parameter_formula(upsample, out_channels, scale):
    adapter = CodeAdapter(96, out_channels, scale, upsample=upsample, blocks=1)
    assert count(adapter) == code_adapter_parameter_count(96, out_channels, scale, upsample, 1)
    out = adapter(torch.randn(2, 96, 3, 5).sign())
    assert out.shape == (2, out_channels, 3 * scale, 5 * scale)


def test_adapter_counts_reproduce_the_papers_row_differences():
    """The paper's totals differ by 240,000 and 922,368 beyond the removed ResNet stages (525,568 and
    2,099,712): exactly the differences of our adapters at k = 1 (32 code channels)."""
    a2, a3, a4 = (code_adapter_parameter_count(32, c, 16 // s) for c, s in TRUNK_INPUT.values())
    assert (a2, a3, a4) == (92_544, 332_544, 1_254_912)
    p = PAPER_PARAMS
    assert p["from_layer2"] - p["from_layer3"] - 525_568 == a2 - a3
    assert p["from_layer3"] - p["from_layer4"] - 2_099_712 == a3 - a4


def test_network_parameter_counts_at_the_default_width_against_the_paper():
    with torch.device("meta"):
        nets = {v: CodeRecognitionNet(v, num_classes=100, iterations=1, codec_width=0.465) for v in VARIANTS}
    counts = {v: n.parameter_counts() for v, n in nets.items()}
    assert {v: c["total"] for v, c in counts.items()} == {
        "conventional": 19_018_533,
        "from_layer2": 14_921_048,
        "from_layer3": 14_635_480,
        "from_layer4": 13_458_136,
    }
    gaps = {v: counts[v]["total"] - PAPER_PARAMS[v] for v in VARIANTS}
    assert gaps["from_layer2"] == gaps["from_layer3"] == gaps["from_layer4"] == 53_684
    edge = counts["conventional"]["edge"]
    assert all(c["edge"] == edge for c in counts.values())  # same encoder + binarizer everywhere
    assert counts["conventional"]["server"] == count(nets["conventional"].codec.decoder) + 11_227_812
    assert counts["from_layer4"]["server"] == 1_254_912 + 8_445_028


@pytest.mark.parametrize("variant", VARIANTS)
def test_edge_codes_then_server_equal_the_whole_pipeline(variant):
    torch.manual_seed(0)
    net = CodeRecognitionNet(variant, num_classes=5, iterations=2, codec_width=0.0625).eval()
    x = torch.rand(2, 3, 40, 56)  # not multiples of 16: padded inside
    with torch.no_grad():
        codes = net.encode(x)
        assert codes.shape == (2, 2, 32, 3, 4)
        assert set(codes.unique().tolist()) <= {-1.0, 1.0}
        torch.testing.assert_close(net.classify_codes(codes, (40, 56)), net(x))


def test_open_loop_first_iteration_equals_the_closed_loop_codec():
    torch.manual_seed(0)
    codec = RNNCodec(width=0.0625).eval()
    encoder = CodeEncoder(width=0.0625).eval()
    encoder.load_state_dict({k: v for k, v in codec.state_dict().items() if not k.startswith("decoder.")})
    x = torch.rand(1, 3, 32, 48)
    closed = codec.encode(x, 3)
    with torch.no_grad():
        open_loop = encoder(x, 3)
    torch.testing.assert_close(open_loop[0], closed[0])
    assert not torch.equal(open_loop[1], open_loop[0])  # the recurrent state makes iterations differ


@pytest.mark.parametrize("variant", ["conventional", "from_layer3"])
def test_straight_through_gradient_reaches_the_encoder(variant):
    net = CodeRecognitionNet(variant, num_classes=3, iterations=2, codec_width=0.0625).train()
    net(torch.rand(2, 3, 32, 32)).sum().backward()
    trained = [net.codec.encoder.conv.weight] + ([net.codec.decoder.conv1.weight] if variant == "conventional" else [])
    for weight in trained:
        assert weight.grad is not None and weight.grad.abs().sum() > 0
