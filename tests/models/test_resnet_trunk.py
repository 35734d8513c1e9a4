"""ResNet-18 trunks that start at layer2/3/4: shapes, parameter counts, and equality with torchvision."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import resnet18

from models.resnet_trunk import TRUNK_INPUT, ResNetTrunk, resnet18_classifier

pytestmark = pytest.mark.usefixtures("one_thread")


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_resnet18_classifier_parameter_count_for_100_classes():
    net = resnet18_classifier(100)
    assert count(net) == 11_227_812
    assert net.fc.out_features == 100
    assert count(net.conv1) + count(net.bn1) + count(net.layer1) == 157_504
    assert (count(net.layer2), count(net.layer3)) == (525_568, 2_099_712)


@pytest.mark.parametrize(
    ("start", "expected"),
    [("layer2", 11_227_812 - 157_504), ("layer3", 11_227_812 - 157_504 - 525_568), ("layer4", 8_445_028)],
)
def test_trunk_parameter_count_is_resnet18_minus_removed_stages(start, expected):
    assert count(ResNetTrunk(start, num_classes=100)) == expected


@pytest.mark.parametrize("start", ["layer2", "layer3", "layer4"])
def test_trunk_equals_the_rest_of_torchvision_resnet18(start):
    torch.manual_seed(0)
    full = resnet18(num_classes=7).eval()
    trunk = ResNetTrunk(start, num_classes=7).eval()
    missing, unexpected = trunk.load_state_dict(full.state_dict(), strict=False)
    assert missing == []  # the trunk's names are torchvision's
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        h = full.maxpool(full.relu(full.bn1(full.conv1(x))))
        for name in ("layer1", "layer2", "layer3"):
            if name == start:
                break
            h = getattr(full, name)(h)
        channels, stride = TRUNK_INPUT[start]
        assert h.shape == (1, channels, 64 // stride, 64 // stride)
        torch.testing.assert_close(trunk(h), full(x))


def test_trunk_names_the_expected_input_on_a_wrong_one():
    with pytest.raises(ValueError, match=r"expects \(B, 128"):
        ResNetTrunk("layer3", num_classes=10)(torch.rand(1, 64, 28, 28))
    with pytest.raises(ValueError, match="start must be one of"):
        ResNetTrunk("layer1")  # type: ignore[arg-type]
