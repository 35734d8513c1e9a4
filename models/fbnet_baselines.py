"""The hand-designed networks of Ozawa et al.'s Tables 2/3, for CIFAR-10 (32×32, 10 classes).

The paper's parameter counts identify them: MobileNetV2 2.2 M, ResNet18 11.2 M, vgg11_bn 129 M,
densenet121 7.00 M are torchvision's builders with ``num_classes=10`` (vgg11_bn's 129 M is torchvision's
4096-wide classifier on a 7×7 map; a CIFAR VGG would have ~9 M), DARTS 3.3 M is DARTS' CIFAR-10 network
(Liu et al., ICLR 2019) of the DARTS (V2) cell, 36 initial channels, 20 cells.

===============  ==================================================================================
name             network
===============  ==================================================================================
``mobilenet_v2`` torchvision's MobileNetV2 with the CIFAR strides (the stem conv and the 24-channel
                 stage at stride 1: 32² → 32, 32, 16, 8, 8, 4, 4), ``width`` = its ``width_mult``
``resnet18``     torchvision's ``resnet18(num_classes=10)`` (ImageNet stem: 32² reaches 1² at layer4)
``vgg11_bn``     torchvision's ``vgg11_bn`` layout (features ``A`` with BN, adaptive pool to 7×7,
                 classifier 25088 → 4096 → 4096 → 10), written here so ``width`` can shrink every width
``densenet121``  torchvision's ``DenseNet(growth 32, blocks (6, 12, 24, 16), 64 initial features)``;
                 ``width`` scales the growth rate and the initial features
``darts_v2``     DARTS' ``NetworkCIFAR`` with the ``DARTS_V2`` genotype, C = 36, 20 cells, no
                 auxiliary head and no drop-path (the training tricks of DARTS are not the child recipe);
                 ``width`` scales C, ``cells`` (keyword) the depth
===============  ==================================================================================

All are plain ``nn.Module`` (B, 3, 32, 32) → (B, classes); ``build_baseline(name, num_classes, width)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

BASELINES = ("mobilenet_v2", "resnet18", "vgg11_bn", "densenet121", "darts_v2")
# Tables 2/3: accuracy %, seconds for the 10,000 test images, joules (None: not measured), parameters M
PAPER_BASELINES = {
    "mobilenet_v2": ("MobileNetV2", 94.2, 40.1, 21.1, 2.2),
    "resnet18": ("ResNet18", 93.3, 8.92, None, 11.2),
    "vgg11_bn": ("vgg11_bn", 92.1, 16.6, None, 129.0),
    "densenet121": ("densenet121", 94.1, 26.6, None, 7.00),
    "darts_v2": ("DARTS", 97.4, 266.0, None, 3.3),
}
# MobileNetV2 (t, c, n, s) with the CIFAR strides: the 24-channel stage at stride 1
MOBILENET_V2_CIFAR = [[1, 16, 1, 1], [6, 24, 2, 1], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2],
                      [6, 320, 1, 1]]  # fmt: skip


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def mobilenet_v2_cifar(num_classes: int = 10, width: float = 1.0) -> nn.Module:
    from torchvision.models import MobileNetV2

    net = MobileNetV2(num_classes=num_classes, width_mult=width, inverted_residual_setting=MOBILENET_V2_CIFAR)
    net.features[0][0].stride = (1, 1)  # the stem conv: CIFAR stride 1
    return net


def mobilenet_v2_blocks() -> list[str]:
    """MobileNetV2's 17 inverted-residual blocks in FBNet's block names (Figures 6/7's MobileNetV2 row):
    the first has expansion 1, the others 6, all 3×3."""
    return [("k3_e1" if t == 1 else "k3_e6") for t, _, n, _ in MOBILENET_V2_CIFAR for _ in range(n)]


def resnet18(num_classes: int = 10, width: float = 1.0) -> nn.Module:
    from torchvision.models import resnet18 as build

    if width != 1.0:
        raise ValueError("resnet18 has no width option (torchvision's builder)")
    return build(num_classes=num_classes)


def vgg11_bn(num_classes: int = 10, width: float = 1.0) -> nn.Module:
    layers: list[nn.Module] = []
    c_in = 3
    for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            c = _scaled(int(v), width)
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
    hidden = _scaled(4096, width)
    return nn.Sequential(
        nn.Sequential(*layers),
        nn.AdaptiveAvgPool2d(7),
        nn.Flatten(),
        nn.Sequential(
            nn.Linear(c_in * 49, hidden),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(hidden, hidden),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(hidden, num_classes),
        ),
    )


def densenet121(num_classes: int = 10, width: float = 1.0) -> nn.Module:
    from torchvision.models import DenseNet

    return DenseNet(_scaled(32, width), (6, 12, 24, 16), _scaled(64, width), num_classes=num_classes)


# ------------------------------------------------------------------------------------ DARTS (V2)

# (operation, input state) pairs of the four intermediate nodes, two per node; the output concatenates nodes 2–5
DARTS_V2_NORMAL = [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
                   ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)]  # fmt: skip
DARTS_V2_REDUCE = [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
                   ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)]  # fmt: skip


def _relu_conv_bn(c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int = 1,
                  groups: int = 1) -> list[nn.Module]:  # fmt: skip
    return [nn.ReLU(inplace=False), nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, groups, bias=False)]


def _dil_conv(c: int, stride: int, kernel: int, padding: int, dilation: int) -> nn.Module:
    """ReLU → depthwise k×k (dilated) → 1×1 → BN."""
    return nn.Sequential(*_relu_conv_bn(c, c, kernel, stride, padding, dilation, c), nn.Conv2d(c, c, 1, bias=False),
                         nn.BatchNorm2d(c))  # fmt: skip


def _sep_conv(c: int, stride: int) -> nn.Module:
    """Two (ReLU → depthwise 3×3 → 1×1 → BN), the first with the stride."""
    return nn.Sequential(_dil_conv(c, stride, 3, 1, 1), _dil_conv(c, 1, 3, 1, 1))


class _FactorizedReduce(nn.Module):
    """ReLU → two 1×1 stride-2 convs on offset grids, concatenated → BN (halves the side)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv1 = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.conv2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv1(x), self.conv2(x[:, :, 1:, 1:])], dim=1))


_OPS: dict[str, Callable[[int, int], nn.Module]] = {
    "sep_conv_3x3": _sep_conv,
    "dil_conv_3x3": lambda c, stride: _dil_conv(c, stride, 3, 2, 2),
    "max_pool_3x3": lambda c, stride: nn.MaxPool2d(3, stride, 1),
    "skip_connect": lambda c, stride: nn.Identity() if stride == 1 else _FactorizedReduce(c, c),
}


class _Cell(nn.Module):
    def __init__(self, genotype: list[tuple[str, int]], c_pp: int, c_p: int, c: int, reduction: bool,
                 reduction_prev: bool) -> None:  # fmt: skip
        super().__init__()
        self.pre0 = (_FactorizedReduce(c_pp, c) if reduction_prev else
                     nn.Sequential(*_relu_conv_bn(c_pp, c, 1, 1, 0), nn.BatchNorm2d(c)))  # fmt: skip
        self.pre1 = nn.Sequential(*_relu_conv_bn(c_p, c, 1, 1, 0), nn.BatchNorm2d(c))
        self.inputs = [index for _, index in genotype]
        self.ops = nn.ModuleList(_OPS[name](c, 2 if reduction and index < 2 else 1) for name, index in genotype)

    def forward(self, s0: Tensor, s1: Tensor) -> Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for node in range(len(self.ops) // 2):
            a, b = 2 * node, 2 * node + 1
            states.append(self.ops[a](states[self.inputs[a]]) + self.ops[b](states[self.inputs[b]]))
        return torch.cat(states[2:], dim=1)


class DARTSNetwork(nn.Module):
    """DARTS' CIFAR network: stem 3×3 conv (3C) + BN, ``cells`` cells (reduction at 1/3 and 2/3 of the
    depth, doubling C), global average pool, fc."""

    def __init__(self, num_classes: int = 10, channels: int = 36, cells: int = 20) -> None:
        super().__init__()
        c_curr = 3 * channels
        self.stem = nn.Sequential(nn.Conv2d(3, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, channels
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(cells):
            reduction = i in (cells // 3, 2 * cells // 3)
            c_curr *= 2 if reduction else 1
            genotype = DARTS_V2_REDUCE if reduction else DARTS_V2_NORMAL
            self.cells.append(_Cell(genotype, c_pp, c_p, c_curr, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, 4 * c_curr
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(s1, 1), 1))


def darts_v2(num_classes: int = 10, width: float = 1.0, cells: int = 20) -> nn.Module:
    return DARTSNetwork(num_classes, _scaled(36, width), cells)


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "mobilenet_v2": mobilenet_v2_cifar,
    "resnet18": resnet18,
    "vgg11_bn": vgg11_bn,
    "densenet121": densenet121,
    "darts_v2": darts_v2,
}


def build_baseline(name: str, num_classes: int = 10, width: float = 1.0, **kwargs: int) -> nn.Module:
    """One of :data:`BASELINES` (module docstring); ``width`` < 1 shrinks it for tests and demos."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    return _BUILDERS[name](num_classes=num_classes, width=width, **kwargs)
