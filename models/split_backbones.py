"""One frozen ImageNet CNN split in two, its front shared by every task (Hiraga, Nakada, Nakajima).

The **edge** runs the front of a *classifying* ImageNet network once per image; the **wire** carries
its output (identity, or a feature codec's encode → decode round trip); each task's **server** part
finishes the work:

============  ==============================  ===============  ===================================
trunk         edge (frozen)                   sent at 224      classification server
============  ==============================  ===============  ===================================
vgg16         ``features[:24]`` (to pool4)    (512, 14, 14)    ``features[24:]`` + avgpool + fc6–8
mobilenet_v2  ``features[:7]`` (stem + 6 IR)  (32, 28, 28)     ``features[7:]`` + pool + classifier
============  ==============================  ===============  ===================================

**SSD224 wiring** (detection at the classifier's 224×224 input; SSD's default boxes, matching, loss
and NMS are torchvision's, through :func:`models.ssd.ssd_from_feature_maps`):

- VGG16 — the paper: "SSD's structure unchanged, the source map moves from conv4_3 to pool4". Sources:
  the transmitted pool4 map (512×14×14, with SSD's L2 normalisation, scale 20, as conv4_3 had), and
  fc7 (1024×14×14) computed on the server from it by VGG16's own conv5_1–conv5_3 (the classifying
  checkpoint's weights), pool5 (3×3, stride 1), atrous fc6 (3×3, dilation 6) and fc7 (1×1), then
  four SSD extra layers (512, 256, 256, 256 channels): maps 14, 14, 7, 4, 2, 1; 4, 6, 6, 6, 4, 4
  default boxes per location (SSD300's pattern).
- MobileNetV2 — the paper: "the output of Bottleneck14 goes into SSD's conv5_1, and the source map
  moves from conv4_3 to Bottleneck7". Its split tensor is "the 6th inverted-residual output" and it
  also calls that "Bottleneck7"/"conv7" (the stem counted as 1), so the numbering is ambiguous; ours:
  source 1 is the transmitted block-6 output (32×28×28, L2-normalised); the server runs MobileNetV2's
  ``features[7:15]`` (blocks 7–14, pretrained, to 160×7×7: the first 160-channel block, stride 32),
  then SSD's VGG layers conv5_1–5_3 (new, 512 channels), pool5, fc6 and fc7 (1024) → source 2
  (1024×7×7), then three extras (512, 256, 256): maps 28, 7, 4, 2, 1; 4, 6, 6, 4, 4 boxes per location.
  Every source is computed from the transmitted tensor. (With ``features[:14]`` instead — 96×14×14
  into conv5_1 — the VGG layers would run at 14×14 and the MAC saving fall to ~4 %, far from the
  paper's 9.77 %; at 7×7 it is ~9.4 %: see ``benchmarks/shared_trunk_macs.py``.)

Pretrained weights through torchvision's ``weights=`` (``"IMAGENET1K_V1"`` for VGG16,
``"IMAGENET1K_V1"``/``"IMAGENET1K_V2"`` for MobileNetV2); ``width`` < 1 (tests, CPU demos) shrinks every
layer and needs ``weights=None``. Inputs are images in [0, 1]; the classifier normalises them with
ImageNet statistics itself, the SSD in its ``transform`` (and resizes them to ``image_size``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import MobileNet_V2_Weights, VGG16_Weights, mobilenet_v2, vgg16
from torchvision.models.detection.ssd import SSD
from torchvision.models.vgg import VGG, make_layers

from models.code_classifier import IMAGENET_MEAN, IMAGENET_STD, ImageNormalize
from models.split_model import Part, SplitView
from models.ssd import ssd_from_feature_maps

Trunk = Literal["vgg16", "mobilenet_v2"]
TRUNKS: tuple[str, ...] = ("vgg16", "mobilenet_v2")
SPLIT_INDEX = {"vgg16": 24, "mobilenet_v2": 7}
"""The edge is ``features[:SPLIT_INDEX[trunk]]``."""
SPLIT_SHAPE_224 = {"vgg16": (512, 14, 14), "mobilenet_v2": (32, 28, 28)}
"""The transmitted tensor at 224×224 and width 1 (the paper's Table 2)."""
MOBILENET_SSD_END = 15
"""MobileNetV2's server blocks before SSD's conv5_1 are ``features[7:15]`` (see the module docstring)."""
_VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class RoundTrip(Protocol):
    """What the wire needs of a codec: ``round_trip(batch) -> (decoded batch, bytes per image)``."""

    def round_trip(self, features: Tensor) -> tuple[Tensor, list[int]]: ...


class FeatureWire(nn.Module):
    """The link between edge and server: identity while ``codec`` is ``None``, else every image's
    features are encoded to bytes and decoded again (no gradient flows through it; the edge is frozen).

    Attributes:
        codec: any object with ``round_trip`` (e.g. :class:`coding.feature_codec.FeatureCodec`), or ``None``.
        last_sizes: bytes per image of the last batch that went through a codec (empty otherwise).
    """

    def __init__(self) -> None:
        super().__init__()
        self.codec: RoundTrip | None = None
        self.last_sizes: list[int] = []

    def forward(self, features: Tensor) -> Tensor:
        if self.codec is None:
            self.last_sizes = []
            return features
        with torch.no_grad():
            decoded, self.last_sizes = self.codec.round_trip(features)
        return decoded


def _check_width(trunk: str, width: float, weights: str | None) -> None:
    if trunk not in TRUNKS:
        raise ValueError(f"unknown trunk {trunk!r}; expected one of {TRUNKS}")
    if not 0 < width <= 1:
        raise ValueError(f"width must be in (0, 1], got {width}")
    if weights is not None and width != 1:
        raise ValueError(f"pretrained weights exist at width 1 only; got width={width} with weights={weights!r}")


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def load_imagenet_classifier(trunk: Trunk, weights: str | None = None, width: float = 1.0) -> nn.Module:
    """torchvision's VGG16 or MobileNetV2 classifier (1000 classes), with ``weights`` (an enum name of
    ``VGG16_Weights`` / ``MobileNet_V2_Weights``, downloaded on first use) or random at ``width``."""
    _check_width(trunk, width, weights)
    if trunk == "mobilenet_v2":
        return mobilenet_v2(weights=MobileNet_V2_Weights[weights] if weights else None, width_mult=width)
    if width == 1:
        return vgg16(weights=VGG16_Weights[weights] if weights else None)
    cfg = [v if v == "M" else _scaled(v, width) for v in _VGG16_CFG]
    with torch.device("meta"):  # VGG's constructor would allocate the full-width 25088×4096 fc6 first
        net = VGG(nn.Sequential(), num_classes=1000, init_weights=False)
    hidden, last = _scaled(4096, width), cfg[-2]
    net.features = make_layers(cfg)
    net.avgpool = nn.AdaptiveAvgPool2d((7, 7))
    net.classifier = nn.Sequential(
        nn.Linear(last * 7 * 7, hidden),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(hidden, hidden),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(hidden, 1000),
    )
    for layer in net.modules():  # torchvision's VGG initialisation
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, 0, 0.01)
            nn.init.zeros_(layer.bias)
    return net


def _replace_last_linear(classifier: nn.Sequential, num_classes: int) -> None:
    last = classifier[-1]
    if num_classes != last.out_features:
        classifier[-1] = nn.Linear(last.in_features, num_classes)


def split_feature_shape(trunk: Trunk, image_size: int = 224, width: float = 1.0) -> tuple[int, int, int]:
    """(C, H, W) sent by the edge of ``trunk`` at a square ``image_size`` (a dry run on the meta device)."""
    _check_width(trunk, width, None)
    with torch.device("meta"):
        net = load_imagenet_classifier(trunk, None, width)
        out = net.features[: SPLIT_INDEX[trunk]](torch.zeros(1, 3, image_size, image_size))
    return tuple(int(s) for s in out.shape[1:])  # type: ignore[return-value]


class SplitClassifier(nn.Module):
    """Images in [0, 1] → ImageNet normalisation → edge → wire → the rest of the classifier → logits."""

    def __init__(self, edge: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.normalize = ImageNormalize(IMAGENET_MEAN, IMAGENET_STD)
        self.edge = edge
        self.wire = FeatureWire()
        self.head = head

    def encode(self, images: Tensor) -> Tensor:
        """What the edge sends (before the wire)."""
        return self.edge(self.normalize(images))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.wire(self.encode(images)))


def split_classifier(
    trunk: Trunk, num_classes: int = 1000, weights: str | None = None, width: float = 1.0
) -> SplitClassifier:
    """The classifier of ``trunk`` cut at the split point; its last layer is new if ``num_classes`` ≠ 1000."""
    net = load_imagenet_classifier(trunk, weights, width)
    edge = net.features[: SPLIT_INDEX[trunk]]
    _replace_last_linear(net.classifier, num_classes)
    if trunk == "vgg16":
        head = nn.Sequential(net.features[SPLIT_INDEX[trunk] :], net.avgpool, nn.Flatten(1), net.classifier)
    else:
        head = nn.Sequential(net.features[SPLIT_INDEX[trunk] :], nn.AdaptiveAvgPool2d(1), nn.Flatten(1), net.classifier)
    return SplitClassifier(edge, head)


class L2Norm(nn.Module):
    """SSD's L2 normalisation of its first source over channels, times a learnt per-channel scale (20)."""

    def __init__(self, channels: int, scale: float = 20.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), scale))

    def forward(self, x: Tensor) -> Tensor:
        return self.weight.view(1, -1, 1, 1) * F.normalize(x, dim=1)


def ssd_fc_layers(in_channels: int, conv5_channels: int | None, fc_channels: int) -> nn.Sequential:
    """SSD's VGG tail on a stride-16 map: [conv5_1–5_3 (new, when ``conv5_channels``)], pool5 3×3 s1,
    atrous fc6 (3×3, dilation 6), fc7 (1×1), each conv followed by ReLU (Liu et al. 2016)."""
    layers: list[nn.Module] = []
    channels = in_channels
    if conv5_channels is not None:
        for _ in range(3):
            layers += [nn.Conv2d(channels, conv5_channels, 3, padding=1), nn.ReLU(inplace=True)]
            channels = conv5_channels
    layers += [
        nn.MaxPool2d(3, stride=1, padding=1),
        nn.Conv2d(channels, fc_channels, 3, padding=6, dilation=6),
        nn.ReLU(inplace=True),
        nn.Conv2d(fc_channels, fc_channels, 1),
        nn.ReLU(inplace=True),
    ]
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


class SplitSSDTrunk(nn.Module):
    """Normalised image → edge → wire → ``{"split": L2Norm(sent), "fc7": server(sent)}`` (SSD's first two
    sources; the extra layers follow in :class:`models.ssd.FeatureMapsBackbone`)."""

    def __init__(self, edge: nn.Module, server: nn.Module, split_channels: int) -> None:
        super().__init__()
        self.edge = edge
        self.wire = FeatureWire()
        self.l2norm = L2Norm(split_channels)
        self.server = server

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        sent = self.wire(self.edge(x))
        return OrderedDict([("split", self.l2norm(sent)), ("fc7", self.server(sent))])


def split_ssd224(
    trunk: Trunk,
    num_classes: int = 21,
    weights: str | None = None,
    width: float = 1.0,
    image_size: int = 224,
    mobilenet_server_end: int = MOBILENET_SSD_END,
    **ssd_kwargs,
) -> SSD:
    """SSD224 over the split trunk (wiring in the module docstring); a torchvision ``SSD`` whose
    ``backbone.trunk`` is a :class:`SplitSSDTrunk`. ``mobilenet_server_end``: MobileNetV2's server blocks
    before conv5_1 are ``features[7:mobilenet_server_end]`` (15: to 160×7×7; 14: to 96×14×14).
    ``ssd_kwargs`` go to ``SSD`` (post-processing)."""
    if not SPLIT_INDEX["mobilenet_v2"] < mobilenet_server_end <= 18:
        raise ValueError(f"mobilenet_server_end must be in 8..18, got {mobilenet_server_end}")
    net = load_imagenet_classifier(trunk, weights, width)
    split = SPLIT_INDEX[trunk]
    edge = net.features[:split]
    if trunk == "vgg16":
        split_channels = net.features[split - 3].out_channels  # conv5_1's input = conv4_3's output
        server = nn.Sequential(net.features[split:30], ssd_fc_layers(split_channels, None, _scaled(1024, width)))
        extras = [_scaled(c, width) for c in (512, 256, 256, 256)]
    else:
        split_channels = net.features[split - 1].out_channels
        blocks = net.features[split:mobilenet_server_end]
        server = nn.Sequential(
            blocks, ssd_fc_layers(blocks[-1].out_channels, _scaled(512, width), _scaled(1024, width))
        )
        extras = [_scaled(c, width) for c in (512, 256, 256)]
    backbone = SplitSSDTrunk(edge, server, split_channels)
    return ssd_from_feature_maps(backbone, image_size, num_classes, extra_channels=extras, head="ssd", **ssd_kwargs)


def split_trunk_of(model: nn.Module) -> SplitClassifier | SplitSSDTrunk:
    """The part holding ``edge`` and ``wire`` of a :func:`split_classifier` or :func:`split_ssd224` model."""
    if isinstance(model, SplitClassifier):
        return model
    trunk = getattr(getattr(model, "backbone", None), "trunk", None)
    if isinstance(trunk, SplitSSDTrunk):
        return trunk
    raise TypeError(f"not a split model: {type(model).__name__}")


def split_model(model: nn.Module) -> SplitView:
    """The edge/server accounting (:mod:`models.split_model`) of a :func:`split_classifier` or
    :func:`split_ssd224` model: edge = ``edge`` (the frozen front), server = everything else. For an SSD
    the counted network is its backbone and head on normalised images (the anchor decoding and NMS are not
    multiply–accumulates), and only the edge is timed."""
    split = split_trunk_of(model)
    if isinstance(model, SplitClassifier):
        return SplitView(model, Part([model.edge], model.encode), lambda sent: model.head(model.wire(sent)))
    network = _SSDNetwork(model)
    return SplitView(
        network,
        Part([split.edge], lambda x: split.edge(model.transform.normalize(x))),
        run=lambda x: network(model.transform.normalize(x)),
    )


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Deployed parameters ``{"edge", "server", "total"}`` of a split model (server = all but the edge)."""
    return split_model(model).parameter_counts()


def mac_counts(model: nn.Module, images: Tensor) -> dict[str, int]:
    """Multiply–accumulates of one forward pass on ``images`` (already at the network's input size):
    ``{"edge", "server", "total"}`` (see :func:`split_model`). The wire is left out (its codec is not a
    network)."""
    split = split_trunk_of(model)
    codec, split.wire.codec = split.wire.codec, None
    try:
        return split_model(model).mac_counts(images)
    finally:
        split.wire.codec = codec


class _SSDNetwork(nn.Module):
    """An SSD's layers alone: normalised images → backbone → head (for counting; no transform or NMS)."""

    def __init__(self, ssd: SSD) -> None:
        super().__init__()
        self.backbone, self.head = ssd.backbone, ssd.head

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.head(list(self.backbone(x).values()))
