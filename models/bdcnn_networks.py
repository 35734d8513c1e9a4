"""The CNNs that B-DCNN converts: torchvision's (published weights via ``weights=``) and two small demo nets.

Every network takes [0, 1] images (what the DataModules yield) and normalises them itself
(``normalize`` → ``net``), so the first decomposed layer sees the input the published weights expect.
Layer names are those of torchvision under ``net.`` (e.g. ``net.features.0`` = AlexNet's conv1).
"""

from __future__ import annotations

from typing import Literal

from torch import nn
from torchvision import models as tvm

from models.code_classifier import ImageNormalize

Arch = Literal["alexnet", "vgg16", "resnet18", "mobilenet_v2", "demo_cnn", "toy3"]

TORCHVISION = {
    "alexnet": (tvm.alexnet, tvm.AlexNet_Weights.IMAGENET1K_V1),
    "vgg16": (tvm.vgg16, tvm.VGG16_Weights.IMAGENET1K_V1),
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1),
    "mobilenet_v2": (tvm.mobilenet_v2, tvm.MobileNet_V2_Weights.IMAGENET1K_V1),
}

ALEXNET_CONV_NAMES = {
    "net.features.0": "conv1",
    "net.features.3": "conv2",
    "net.features.6": "conv3",
    "net.features.8": "conv4",
    "net.features.10": "conv5",
}


def demo_cnn(num_classes: int = 10, width: int = 16) -> nn.Sequential:
    """Four 3×3 convolutions (width, 2·width, 4·width, 4·width; ReLU, max-pool after the first three),
    global average pooling and a linear classifier: an AlexNet-shaped toy that trains in a minute on a CPU."""
    w = width
    return nn.Sequential(
        nn.Conv2d(3, w, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(2 * w, 4 * w, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4 * w, 4 * w, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * w, num_classes),
    )


def toy3(num_classes: int = 10, width: int = 8) -> nn.Sequential:
    """Three layers (conv 3×3 → ReLU → pool, conv 3×3 → ReLU → global pool, linear): the smallest network on
    which the bit search can be compared with an exhaustive search over every Q vector."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )


class NormalizedClassifier(nn.Module):
    """``net(normalize(x))`` for [0, 1] images."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.normalize = ImageNormalize()
        self.net = net

    def forward(self, x):
        return self.net(self.normalize(x))


def build_classifier(arch: Arch, num_classes: int = 1000, pretrained: bool = False, width: int = 16) -> nn.Module:
    """The network ``arch`` wrapped in :class:`NormalizedClassifier`.

    Args:
        arch: ``alexnet``, ``vgg16``, ``resnet18``, ``mobilenet_v2`` (torchvision), ``demo_cnn``, ``toy3``.
        num_classes: classifier outputs; torchvision's published weights need 1000.
        pretrained: load torchvision's ``IMAGENET1K_V1`` weights (downloaded on first use).
        width: channel width of ``demo_cnn``/``toy3``.
    """
    if arch in TORCHVISION:
        builder, weights = TORCHVISION[arch]
        if pretrained and num_classes != 1000:
            raise ValueError(f"the published {arch} weights have 1000 classes, got num_classes={num_classes}")
        net = builder(weights=weights if pretrained else None, num_classes=num_classes)
    elif arch in ("demo_cnn", "toy3"):
        if pretrained:
            raise ValueError(f"{arch} has no published weights: train it (configs/bit_search/demo_pretrain.yaml)")
        net = (demo_cnn if arch == "demo_cnn" else toy3)(num_classes, width)
    else:
        raise ValueError(f"unknown arch {arch!r}; choose from {list(TORCHVISION) + ['demo_cnn', 'toy3']}")
    return NormalizedClassifier(net)
