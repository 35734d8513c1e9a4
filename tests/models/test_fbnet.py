"""FBNet blocks, the CIFAR-10 search space, per-sample Gumbel mixing, export and the child network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.fbnet import (
    FBNetChildNet,
    FBNetSupernet,
    argmax_architecture,
    cifar10_space,
    one_hot,
    read_architecture,
    sample_architectures,
    write_architecture,
)
from models.fbnet_blocks import CANDIDATE_NAMES, ChannelShuffle, InvertedResidual, build_block

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [[8, 1, 1], [16, 2, 2]]  # three searchable layers


@pytest.mark.parametrize("name", CANDIDATE_NAMES)
@pytest.mark.parametrize(("c_in", "c_out", "stride"), [(8, 8, 1), (8, 16, 2)])
def test_every_block_maps_the_shape_and_has_batchnorm_after_each_conv(name, c_in, c_out, stride):
    block = build_block(name, c_in, c_out, stride)
    assert block(torch.rand(2, c_in, 8, 8)).shape == (2, c_out, 8 // stride, 8 // stride)
    modules = list(block.modules())
    convs = [i for i, m in enumerate(modules) if isinstance(m, nn.Conv2d)]
    assert all(isinstance(modules[i + 1], nn.BatchNorm2d) for i in convs)
    if name == "skip" and (c_in, stride) == (c_out, 1):
        assert isinstance(block, nn.Identity)
    elif name == "skip":  # a layer that changes the shape cannot be skipped: 1×1 projection
        assert [m.kernel_size for m in modules if isinstance(m, nn.Conv2d)] == [(1, 1)]


def test_block_parameters_follow_expansion_kernel_and_group():
    # k5_e6 8→8: expand 8·48, depthwise 48·25, project 48·8, BN 2·(48+48+8)
    assert sum(p.numel() for p in build_block("k5_e6", 8, 8, 1).parameters()) == 384 + 1200 + 384 + 208
    # k3_e1_g2 8→16: group-2 1×1 convs halve the 1×1 weights: 8·8/2, 8·9, 8·16/2, BN 2·(8+8+16)
    g2 = build_block("k3_e1_g2", 8, 16, 1)
    assert sum(p.numel() for p in g2.parameters()) == 32 + 72 + 64 + 64
    assert any(isinstance(m, ChannelShuffle) for m in g2.modules())
    assert isinstance(g2, InvertedResidual) and not g2.residual
    assert build_block("k3_e3", 8, 8, 1).residual and not build_block("k3_e3", 8, 8, 2).residual


def test_channel_shuffle_interleaves_the_groups():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert ChannelShuffle(2)(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_cifar10_space_has_22_layers_and_stops_at_4x4():
    space = cifar10_space()
    assert space.num_layers == 22
    assert [s.stride for s in space.layers] == [1, 2, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1]
    assert [s.c_out for s in space.layers] == [24] + [32] * 4 + [64] * 4 + [96] * 4 + [160] * 4 + [320] * 5
    sides = [s.input_size for s in space.layers]
    assert sides[:2] == [32, 32] and sides[-1] == 4 and min(sides) == 4
    for a, b in zip(space.layers, space.layers[1:], strict=False):  # each layer feeds the next
        assert b.c_in == a.c_out and b.input_size == a.input_size // a.stride


def test_all_skip_child_has_the_paper_smallest_size():
    # stem 3·16·9 + BN 32 = 464; 1×1 projections (+BN) 16→24: 432, 24→32: 832, 32→64: 2176, 64→96: 6336,
    # 96→160: 15680, 160→320: 51840; head 320·320 + BN 640 = 103040; fc 3210. Total 184,010 ≤ 0.19 M
    # (S1-L35/S2-L35); a 1280-wide head would not fit under it.
    child = FBNetChildNet(cifar10_space(), ["skip"] * 22)
    assert sum(p.numel() for p in child.parameters()) == 184_010


def test_gumbel_samples_differ_across_the_batch_and_are_distributions():
    net = FBNetSupernet(cifar10_space(width=0.25, stages=TINY))
    torch.manual_seed(0)
    w = net.sample_weights(8, temperature=1.0)
    assert w.shape == (8, 3, 9)
    torch.testing.assert_close(w.sum(-1), torch.ones(8, 3))
    assert all(not torch.allclose(w[0], w[i]) for i in range(1, 8))
    # each image's output depends on its own draw only: mixing row 0 into image 1 changes image 1
    x = torch.rand(8, 3, 32, 32)
    net.eval()
    out = net(x, w)
    w2 = w.clone()
    w2[1] = w[0]
    out2 = net(x, w2)
    torch.testing.assert_close(out2[0], out[0])
    torch.testing.assert_close(out2[2:], out[2:])
    assert not torch.allclose(out2[1], out[1])


def test_one_hot_supernet_equals_the_child_with_the_same_weights():
    space = cifar10_space(width=0.25, stages=TINY)
    arch = ["k5_e3", "k3_e1_g2", "skip"]
    net, child = FBNetSupernet(space).eval(), FBNetChildNet(space, arch).eval()
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("layers.")}
    for i, name in enumerate(arch):
        chosen = net.layers[i].ops[CANDIDATE_NAMES.index(name)].state_dict()
        state.update({f"layers.{i}.{k}": v for k, v in chosen.items()})
    del state["theta"]
    child.load_state_dict(state)  # strict: the child has exactly the chosen blocks, nothing else
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(child(x), net(x, one_hot(arch)))
    assert [type(m) for m in child.layers] == [InvertedResidual, InvertedResidual, nn.Identity]


def test_argmax_and_sampling_export():
    theta = torch.zeros(3, 9)
    theta[0, 8], theta[1, 3], theta[2, 1] = 5.0, 5.0, 5.0
    assert argmax_architecture(theta) == ["skip", "k3_e6", "k3_e1_g2"]
    sure = torch.full((3, 9), -50.0)
    sure[:, 2] = 50.0
    assert sample_architectures(sure, 4) == [["k3_e3"] * 3] * 4
    draws = sample_architectures(torch.zeros(3, 9), 200, torch.Generator().manual_seed(0))
    assert len({tuple(a) for a in draws}) > 100  # uniform logits: many different architectures


def test_architecture_file_round_trip_and_errors(tmp_path):
    space = cifar10_space(width=0.5, stages=TINY)
    arch = ["k3_e6", "skip", "k5_e1_g2"]
    path = write_architecture(tmp_path / "a.txt", space, arch, comment="two\nlines")
    text = path.read_text()
    assert "layer 1  skip      c_in=4    c_out=8    stride=2 input=32" in text
    assert read_architecture(path) == (space, arch)
    path.write_text(text.replace("k5_e1_g2", "k7_e9"))
    with pytest.raises(ValueError, match="k7_e9"):
        read_architecture(path)
    path.write_text(text.replace("layer 2", "layer 5"))
    with pytest.raises(ValueError, match="out of order"):
        read_architecture(path)
    with pytest.raises(ValueError, match="5 layers, the space 3"):
        FBNetChildNet(space, arch[:2] + arch)
