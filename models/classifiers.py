"""Image classifiers by name, in torchvision's builder style: ``build_classifier("resnet50", num_classes=10)``.

The network is torchvision's (``torchvision.models.get_model``: its own registry of builders and weights
enums), its ``fc`` layer replaced when ``num_classes`` differs from the weights' 1000, behind
:class:`models.code_classifier.ImageNormalize`, so it takes images in [0, 1] as every recogniser here does.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import get_model, get_model_weights

from models.code_classifier import ImageNormalize


def build_classifier(arch: str = "resnet50", num_classes: int = 1000, weights: str | None = None) -> nn.Sequential:
    """``nn.Sequential(ImageNormalize(), net)``: a torchvision classifier on [0, 1] images.

    Args:
        arch: any name ``torchvision.models.get_model`` knows whose classifier layer is ``fc`` (``resnet50``,
            ``resnet18``, ``shufflenet_v2_x0_5``, …).
        num_classes: outputs; the ``fc`` layer is new (randomly initialised) when it differs from the network's.
        weights: the name of a member of the architecture's weights enum (``IMAGENET1K_V1``, ``IMAGENET1K_V2``;
            downloaded on first use) or ``None`` (random initialisation).

    Raises:
        ValueError: the architecture has no ``fc`` classifier layer, or ``num_classes`` < 1.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    net = get_model(arch, weights=get_model_weights(arch)[weights] if weights else None)
    if not isinstance(getattr(net, "fc", None), nn.Linear):
        raise ValueError(f"arch {arch!r} has no `fc` classifier layer; use a ResNet-style torchvision model")
    if num_classes != net.fc.out_features:
        net.fc = nn.Linear(net.fc.in_features, num_classes)
    return nn.Sequential(ImageNormalize(), net)
