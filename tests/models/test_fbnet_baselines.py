"""The Tables 2/3 baselines: parameter counts against the paper's table, torchvision's builders and DARTS'
own log; MobileNetV2's CIFAR strides; every baseline maps a CIFAR batch to 10 logits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.fbnet_baselines import BASELINES, PAPER_BASELINES, build_baseline, mobilenet_v2_blocks

pytestmark = pytest.mark.usefixtures("one_thread")


def count(name: str, **kwargs) -> int:
    with torch.device("meta"):  # no memory for vgg11_bn's 129 M
        return sum(p.numel() for p in build_baseline(name, **kwargs).parameters())


@pytest.mark.parametrize("name", BASELINES)
def test_parameter_counts_round_to_the_papers_tables(name):
    # printed 2.2M, 11.2M, 129M, 7.00M, 3.3M; densenet121 is 6.96 M (torchvision's, also kuangliu's CIFAR
    # one), so its "7.00" holds to 0.1 M only
    paper_m = PAPER_BASELINES[name][4]
    assert round(count(name) / 1e6, 0 if paper_m >= 100 else 1) == paper_m


def test_torchvision_counts_and_darts_log_exactly():
    from torchvision import models as tv

    with torch.device("meta"):
        assert count("vgg11_bn") == sum(p.numel() for p in tv.vgg11_bn(num_classes=10).parameters())
        assert count("mobilenet_v2") == sum(p.numel() for p in tv.mobilenet_v2(num_classes=10).parameters())
        assert count("densenet121") == sum(p.numel() for p in tv.densenet121(num_classes=10).parameters())
    # DARTS' train.py logs "param size = 3.349342MB" for DARTS_V2, 36 channels, 20 cells (auxiliary head excluded)
    assert count("darts_v2") == 3_349_342


def test_mobilenet_v2_runs_at_the_cifar_strides():
    net = build_baseline("mobilenet_v2", width=0.25).eval()
    sides = []
    hooks = [m.register_forward_hook(lambda m, i, o: sides.append(o.shape[-1])) for m in net.features]
    net(torch.rand(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    # stem, then the 17 blocks (t,c,n,s): (1,16,1,1) (6,24,2,1) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2) (6,320,1,1), last conv
    assert sides == [32, 32, 32, 32, 16, 16, 16, 8, 8, 8, 8, 8, 8, 8, 4, 4, 4, 4, 4]
    assert mobilenet_v2_blocks() == ["k3_e1"] + ["k3_e6"] * 16


@pytest.mark.parametrize("name", BASELINES)
def test_every_baseline_classifies_a_cifar_batch(name):
    kwargs = {"width": 1.0 if name == "resnet18" else 0.125}
    if name == "darts_v2":
        kwargs["cells"] = 3
    net = build_baseline(name, **kwargs)
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())


def test_bad_baseline_arguments():
    with pytest.raises(ValueError, match="unknown baseline 'vgg16'"):
        build_baseline("vgg16")
    with pytest.raises(ValueError, match="width"):
        build_baseline("resnet18", width=0.5)
