"""FBNet's nine candidate blocks (Wu et al., CVPR 2019, Table 2), each with BatchNorm.

=============  =========  ======  =====  ==============================================================
name           expansion  kernel  group  layers
=============  =========  ======  =====  ==============================================================
``k3_e1``      1          3       1      1×1 conv (e·C_in) + BN + ReLU → 3×3 depthwise (stride s) + BN
``k3_e1_g2``   1          3       2      + ReLU → 1×1 conv (C_out) + BN; residual add when s = 1 and
``k3_e3``      3          3       1      C_in = C_out. With group 2 both 1×1 convs are group
``k3_e6``      6          3       1      convolutions and a channel shuffle follows the first
``k5_e1``      1          5       1      (ShuffleNet), as in FBNet's Figure 3.
``k5_e1_g2``   1          5       2
``k5_e3``      3          5       1
``k5_e6``      6          5       1
``skip``       –          –       –      identity when s = 1 and C_in = C_out; otherwise (a layer that
                                         changes the shape cannot be skipped) 1×1 conv (stride s) +
                                         BN + ReLU, as in FBNet's reference builder
=============  =========  ======  =====  ==============================================================

The order above is FBNet's (and the HANNA energy table's column order).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn


@dataclass(frozen=True)
class BlockSpec:
    """One candidate: ``expansion``, ``kernel``, ``group``; ``kernel == 0`` is the skip."""

    name: str
    expansion: int
    kernel: int
    group: int


CANDIDATES: tuple[BlockSpec, ...] = (
    BlockSpec("k3_e1", 1, 3, 1),
    BlockSpec("k3_e1_g2", 1, 3, 2),
    BlockSpec("k3_e3", 3, 3, 1),
    BlockSpec("k3_e6", 6, 3, 1),
    BlockSpec("k5_e1", 1, 5, 1),
    BlockSpec("k5_e1_g2", 1, 5, 2),
    BlockSpec("k5_e3", 3, 5, 1),
    BlockSpec("k5_e6", 6, 5, 1),
    BlockSpec("skip", 0, 0, 0),
)
CANDIDATE_NAMES: tuple[str, ...] = tuple(c.name for c in CANDIDATES)
SKIP = CANDIDATE_NAMES.index("skip")


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    """Conv (no bias, "same" padding) + BatchNorm (+ ReLU)."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ChannelShuffle(nn.Module):
    """ShuffleNet's channel shuffle: (B, g·n, H, W) → interleave the g groups."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        return x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class InvertedResidual(nn.Module):
    """FBNet's IRF block: group 1×1 expand → shuffle → k×k depthwise → group 1×1 project (+ residual)."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int, kernel: int, group: int) -> None:
        super().__init__()
        mid = c_in * expansion
        for channels in (c_in, mid, c_out):
            if channels % group:
                raise ValueError(f"group {group} needs channel counts divisible by it, got {c_in}→{mid}→{c_out}")
        layers: list[nn.Module] = [conv_bn(c_in, mid, 1, groups=group)]
        if group > 1:
            layers.append(ChannelShuffle(group))
        layers += [conv_bn(mid, mid, kernel, stride, groups=mid), conv_bn(mid, c_out, 1, groups=group, relu=False)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        y = self.body(x)
        return x + y if self.residual else y


def build_block(name: str, c_in: int, c_out: int, stride: int) -> nn.Module:
    """The candidate ``name`` (one of :data:`CANDIDATE_NAMES`) mapping (C_in, H, W) to (C_out, H/s, W/s)."""
    if name not in CANDIDATE_NAMES:
        raise ValueError(f"unknown FBNet block {name!r}; choose one of {', '.join(CANDIDATE_NAMES)}")
    spec = CANDIDATES[CANDIDATE_NAMES.index(name)]
    if spec.kernel == 0:
        return nn.Identity() if stride == 1 and c_in == c_out else conv_bn(c_in, c_out, 1, stride)
    return InvertedResidual(c_in, c_out, stride, spec.expansion, spec.kernel, spec.group)
