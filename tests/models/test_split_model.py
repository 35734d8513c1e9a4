"""The one edge/server accounting: counts derived by hand on small networks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.code_classifier import CodeRecognitionNet
from models.split_backbones import split_classifier
from models.split_backbones import split_model as backbone_split_model
from models.split_model import Part, SplitModel, SplitView


class Tiny(nn.Module):
    """edge: conv 3→4, 3×3, pad 1 (called ``repeat`` times); server: flatten + linear 256 → 10."""

    def __init__(self, repeat: int = 1) -> None:
        super().__init__()
        self.repeat = repeat
        self.front = nn.Conv2d(3, 4, 3, padding=1)
        self.back = nn.Sequential(nn.Flatten(1), nn.Linear(4 * 8 * 8, 10))

    def encode(self, x):
        for _ in range(self.repeat - 1):
            self.front(x)
        return self.front(x)

    def forward(self, x):
        return self.back(self.encode(x))


def tiny_view(net: Tiny) -> SplitView:
    return SplitView(net, Part([net.front], net.encode), net.back)


def test_counts_by_hand():
    view = tiny_view(Tiny())
    assert isinstance(view, SplitModel)
    edge_params, server_params = 3 * 4 * 9 + 4, 256 * 10 + 10
    assert view.parameter_counts() == {
        "edge": edge_params,
        "server": server_params,
        "total": edge_params + server_params,
    }
    edge_macs, server_macs = 8 * 8 * 4 * 3 * 9, 256 * 10  # per output pixel and channel: 3·9 products
    assert view.mac_counts(torch.rand(1, 3, 8, 8)) == {
        "edge": edge_macs,
        "server": server_macs,
        "total": edge_macs + server_macs,
    }
    # MACs scale with the batch; a module called three times counts three times
    assert tiny_view(Tiny(repeat=3)).mac_counts(torch.rand(2, 3, 8, 8))["edge"] == 2 * 3 * edge_macs
    assert list(view.server.deployed) == [view.network.back]


def test_shared_parameters_count_once():
    net = Tiny()
    net.back[1].weight = nn.Parameter(torch.zeros(10, 256))
    net.alias = net.back  # the same module under two names
    assert tiny_view(net).parameter_counts()["total"] == 3 * 4 * 9 + 4 + 256 * 10 + 10


def test_edge_modules_must_belong_to_the_network():
    with pytest.raises(ValueError, match="not submodules"):
        SplitView(Tiny(), Part([nn.Conv2d(3, 4, 3)]))


def test_timing_each_side_restores_every_mode():
    net = Tiny()
    net.back.eval()  # a frozen part stays in eval, the rest in train
    times = tiny_view(net).ms_per_image(torch.rand(1, 3, 8, 8), warmup=1, repeats=3)
    assert times["edge"] > 0 and times["server"] > 0
    assert net.training and net.front.training and not net.back.training
    assert SplitView(net, Part([net.front])).ms_per_image(torch.rand(1, 3, 8, 8)) == {"edge": None, "server": None}
    untimed_edge = SplitView(net, Part([net.front], net.encode, timed=False), net.back)
    times = untimed_edge.ms_per_image(torch.rand(1, 3, 8, 8), warmup=0, repeats=1)
    assert times["edge"] is None and times["server"] > 0


def test_code_recognition_edge_is_encoder_and_binarizer():
    net = CodeRecognitionNet("from_layer2", num_classes=10, iterations=2, codec_width=0.0625)
    counts = net.parameter_counts()
    edge = sum(p.numel() for m in (net.codec.encoder, net.codec.binarizer) for p in m.parameters())
    server = sum(p.numel() for m in (net.adapter, net.trunk) for p in m.parameters())
    assert counts == {"edge": edge, "server": server, "total": edge + server}
    # the server side deploys exactly the adapter and the cut trunk (and the parameter-free normalisation)
    deployed = {id(m) for m in net.split_model().server.deployed if sum(p.numel() for p in m.parameters())}
    assert deployed == {id(net.adapter), id(net.trunk)}


def test_shared_trunk_classifier_edge_is_the_front():
    model = split_classifier("mobilenet_v2", 10, width=0.25)
    view = backbone_split_model(model)
    assert view.parameter_counts()["edge"] == sum(p.numel() for p in model.edge.parameters())
    times = view.ms_per_image(torch.rand(1, 3, 64, 64), warmup=0, repeats=1)
    assert times["edge"] > 0 and times["server"] > 0
