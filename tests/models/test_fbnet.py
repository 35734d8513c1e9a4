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


# Ozawa et al., Table 1, one row per stage: (c, n, strides, resolution the stage works at), as printed
TABLE1 = [
    (24, 1, [1], 32),
    (32, 4, [2, 1, 1, 1], 16),
    (64, 4, [2, 1, 1, 1], 8),
    (96, 4, [2, 1, 1, 1], 4),
    (160, 4, [1, 1, 1, 1], 4),
    (320, 4, [2, 1, 1, 1], 2),
    (320, 1, [1], 2),
]


def test_the_default_network_walks_table_1_row_by_row():
    torch.manual_seed(0)
    child = FBNetChildNet(cifar10_space(), ["k3_e3"] * 22).eval()
    shapes: list[tuple[int, ...]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:]))) for m in
             [child.stem, *child.layers, *child.head]]  # fmt: skip
    child(torch.rand(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert shapes[0] == (16, 32, 32)  # 3×3 conv 16, stride 1, at 32²
    layer_shapes, head_shapes = shapes[1:23], shapes[23:]
    expected = [(c, side, side) for c, n, _, side in TABLE1 for _ in range(n)]
    assert layer_shapes == expected
    assert [s.stride for s in child.space.layers] == [s for _, _, strides, _ in TABLE1 for s in strides]
    # head: 1×1 conv 320 at 2², dropout 0.2, flatten = the table's 1² × 1280, fc 10; no pooling
    assert head_shapes == [(320, 2, 2), (320, 2, 2), (1280,), (10,)]
    assert [type(m) for m in child.head] == [nn.Conv2d, nn.Dropout, nn.Flatten, nn.Linear]
    assert child.head[1].p == 0.2 and child.head[0].kernel_size == (1, 1)


def test_the_cifar_mobilenetv2_layout_is_the_named_alternative():
    space = cifar10_space(layout="cifar_mobilenetv2")
    assert [s.stride for s in space.layers] == [1, 2, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1]
    assert space.head_pool and space.head_input_size == 4 and space.fc_inputs == 320
    child = FBNetChildNet(space, ["skip"] * 22)
    assert child(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert any(isinstance(m, nn.AdaptiveAvgPool2d) for m in child.head)
    with pytest.raises(ValueError, match="layout"):
        cifar10_space(layout="imagenet")


def test_all_skip_child_of_table_1_has_the_paper_smallest_size():
    # stem 3·16·9 + BN 32 = 464; 1×1 projections (+BN) where the shape changes: 16→24: 432, 24→32: 832,
    # 32→64: 2176, 64→96: 6336, 96→160: 15680, 160→320: 51840 (the other skips are identities);
    # head conv 320·320 + bias 320 = 102720; fc 1280·10 + 10 = 12810. Total 193,290: the paper's 0.19 M
    # (S1-L35, S2-L35)
    child = FBNetChildNet(cifar10_space(), ["skip"] * 22)
    assert sum(p.numel() for p in child.parameters()) == 193_290
    # the pooled alternative: head 320·320 + BN 640, fc 320·10 + 10: 184,010
    pooled = FBNetChildNet(cifar10_space(layout="cifar_mobilenetv2"), ["skip"] * 22)
    assert sum(p.numel() for p in pooled.parameters()) == 184_010


def test_a_mixed_child_parameter_count_by_hand():
    # layer 0 k3_e1 (16→24 at 32²): expand 16·16 + BN 32, depthwise 16·9 + BN 32, project 16·24 + BN 48 = 896
    # instead of the 432 projection; layer 18 k3_e1_g2 (320→320): group-2 expand 320·320/2 + BN 640,
    # depthwise 320·9 + BN 640, group-2 project 51200 + BN 640 = 107,200 instead of an identity.
    arch = ["skip"] * 22
    arch[0], arch[18] = "k3_e1", "k3_e1_g2"
    child = FBNetChildNet(cifar10_space(), arch)
    assert sum(p.numel() for p in child.parameters()) == 193_290 - 432 + 896 + 107_200


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


@pytest.fixture
def arch_file(tmp_path):
    space = cifar10_space(width=0.5, stages=TINY)
    return write_architecture(tmp_path / "a.txt", space, ["k3_e6", "skip", "k5_e1_g2"]), space


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace(" c_in=4 ", " "), r"a\.txt:\d+: missing key\(s\) c_in"),
        (lambda t: t.replace("layer 1 ", "layer one "), r"a\.txt:\d+: layer index 'one' is not an integer"),
        (lambda t: t.replace("stride=2", "stride=two"), r"a\.txt:\d+: stride='two' is not an integer"),
        (lambda t: t.replace("classes=10", "classes=10 colour=3"), r"a\.txt:\d+: unknown key\(s\) colour"),
        (lambda t: t.replace("head=160", "head=2000000000"), r"a\.txt:\d+: head=2000000000 is outside"),
        (
            lambda t: t.replace("c_out=8    stride=2", "c_out=10   stride=2"),
            r"a\.txt:\d+: layer 2 c_in=8 but layer 1 gives 10",
        ),
        (lambda t: t.replace("input=16", "input=8"), r"a\.txt:\d+: layer 2 input=8 but layer 1 gives 16"),
        (lambda t: t.replace("c_out=8 ", "c_out=7 "), r"a\.txt:\d+: layer \d c_out=7 must be even"),
        (lambda t: t.replace("stride=2", "stride=3"), r"a\.txt:\d+: layer 1 stride=3 must be 1 or 2"),
        (lambda t: t.replace("dropout=0.2", "dropout=1.5"), r"a\.txt:\d+: dropout=1.5 is outside"),
    ],
)
def test_a_bad_architecture_file_is_refused_naming_file_and_line(arch_file, edit, message):
    path, _ = arch_file
    text = path.read_text()
    edited = edit(text)
    assert edited != text, "the edit must change the file"
    path.write_text(edited)
    with pytest.raises(ValueError, match=message):
        read_architecture(path)


def test_the_line_named_is_the_offending_one(arch_file):
    path, _ = arch_file
    lines = path.read_text().splitlines()
    number = next(i for i, line in enumerate(lines, 1) if line.startswith("layer 2"))
    lines[number - 1] = lines[number - 1].replace("c_in=8 ", "c_in=6 ")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"a\.txt:{number}: layer 2 c_in=6 but layer 1 gives 8"):
        read_architecture(path)


def test_a_binary_architecture_file_names_the_file_and_line(arch_file):
    path, _ = arch_file
    path.write_bytes(b"space image=32\nlayer 0 \xff\xfe k3\n")
    with pytest.raises(ValueError, match=r"a\.txt:2: not an architecture file"):
        read_architecture(path)
    path.write_bytes(b"\x00\x01\x02")
    with pytest.raises(ValueError, match=r"a\.txt:1: not an architecture file"):
        read_architecture(path)


def test_a_file_of_the_pooled_format_before_layouts_still_reads(arch_file):
    path, space = arch_file
    path.write_text(path.read_text().replace(" pool=0 dropout=0.2", ""))
    read, _ = read_architecture(path)
    assert read.head_pool and read.dropout == 0.0 and read.layers == space.layers


def test_an_absurd_head_is_refused_before_any_allocation():
    with pytest.raises(ValueError, match="head=2000000000"):
        cifar10_space(head_channels=2_000_000_000)
    with pytest.raises(ValueError, match="parameters"):
        cifar10_space(head_channels=8192, image_size=4096)  # an fc on 8192·256² flattened inputs
