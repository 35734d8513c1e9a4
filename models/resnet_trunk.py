"""ResNet-18 classifiers, whole or cut so that they start at a later stage.

The decoder-removed recognisers of Shibata, Ohara and Yamauchi ("画像の圧縮復元認識フレームワークの軽量化と
高速化") feed the compressor's codes, through an adapter, into a ResNet-18 [He et al., CVPR 2016] whose
first stages are removed. The paper names a variant by the *last removed* stage; we name it by the
*first kept* one:

===================  ====================  ==========================  =====================
paper                ours (``start``)      removed                     trunk input (224×224)
===================  ====================  ==========================  =====================
提案手法 (layer1)     ``"layer2"``          stem (conv1, bn1, pool), layer1   64 × 56 × 56 (H/4)
提案手法 (layer2)     ``"layer3"``          … and layer2                128 × 28 × 28 (H/8)
提案手法 (layer3)     ``"layer4"``          … and layer3                256 × 14 × 14 (H/16)
===================  ====================  ==========================  =====================

Both builders reuse torchvision's ``resnet18`` (so the ``weights=`` API and the state-dict names
``layer2.0.conv1.weight`` … ``fc.bias`` are torchvision's) and replace the 1000-way ``fc`` by a new
``num_classes``-way one when the class count differs.

Parameter counts with 100 classes: whole network 11,227,812; stem + layer1 157,504; layer2 525,568;
layer3 2,099,712; layer4 8,393,728; fc 51,300.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn
from torchvision.models import ResNet, ResNet18_Weights, resnet18

TrunkStart = Literal["layer2", "layer3", "layer4"]

TRUNK_STAGES: tuple[str, ...] = ("layer1", "layer2", "layer3", "layer4")

TRUNK_INPUT: dict[str, tuple[int, int]] = {"layer2": (64, 4), "layer3": (128, 8), "layer4": (256, 16)}
"""``start`` → (channels, stride) of the tensor the trunk expects: ResNet-18's activation before that stage."""


def resnet18_classifier(num_classes: int = 1000, weights: ResNet18_Weights | None = None) -> ResNet:
    """torchvision's ResNet-18 with a ``num_classes``-way ``fc``.

    Args:
        num_classes: output classes. With pretrained ``weights`` and a class count other than 1000, the
            pretrained ``fc`` is replaced by a freshly initialised one.
        weights: torchvision weights (e.g. ``ResNet18_Weights.IMAGENET1K_V1``, downloaded on first use)
            or ``None`` for random initialisation.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if weights is None:
        return resnet18(weights=None, num_classes=num_classes)
    net = resnet18(weights=weights)
    if num_classes != net.fc.out_features:
        net.fc = nn.Linear(net.fc.in_features, num_classes)
    return net


class ResNetTrunk(nn.Module):
    """ResNet-18 from stage ``start`` to the logits: the stages from ``start`` on, global pooling, ``fc``.

    Input: the activation ResNet-18 has before ``start`` (see :data:`TRUNK_INPUT`), e.g.
    (B, 64, H/4, W/4) for ``start="layer2"``. Output: logits (B, num_classes).

    Args:
        start: first kept stage, ``"layer2"``, ``"layer3"`` or ``"layer4"``.
        num_classes: output classes.
        weights: torchvision weights for the kept stages (``None``: random initialisation).
    """

    def __init__(
        self, start: TrunkStart = "layer2", num_classes: int = 1000, weights: ResNet18_Weights | None = None
    ) -> None:
        super().__init__()
        if start not in TRUNK_INPUT:
            raise ValueError(f"start must be one of {sorted(TRUNK_INPUT)}, got {start!r}")
        self.start = start
        self.in_channels, self.stride = TRUNK_INPUT[start]
        net = resnet18_classifier(num_classes, weights)
        self.stage_names = TRUNK_STAGES[TRUNK_STAGES.index(start) :]
        for name in self.stage_names:  # same attribute names as torchvision → same state-dict keys
            setattr(self, name, getattr(net, name))
        self.avgpool = net.avgpool
        self.fc = net.fc

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"ResNetTrunk(start={self.start!r}) expects (B, {self.in_channels}, h, w), got {tuple(x.shape)}"
            )
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.fc(self.avgpool(x).flatten(1))
