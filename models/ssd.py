"""SSD detectors assembled from torchvision's detection parts.

Every model returned here is a ``torchvision.models.detection.SSD``: its default boxes come from
``DefaultBoxGenerator``, matching from ``SSDMatcher``, box encoding from ``BoxCoder`` (weights 10, 10,
5, 5), the loss with 3:1 hard-negative mining and the post-processing (``batched_nms``) from ``SSD``
itself. Nothing of that is re-implemented here; this module only chooses the backbone, the extra
layers, the head and the default boxes, and checks them against the input size.

Inputs follow torchvision: a list of (or a batched) float images in [0, 1]; the model normalises them
with its backbone's statistics (``image_mean`` / ``image_std`` inside ``model.transform``) and resizes
them to its fixed ``size``. In training mode ``model(images, targets)`` returns
``{"bbox_regression", "classification"}`` losses; in eval mode a list of
``{"boxes" (N, 4) xyxy pixels, "scores", "labels"}``, one per image.

Builders:

- :func:`ssd300_vgg16` — torchvision's own SSD300 (VGG16 to conv4_3 with L2 norm, atrous fc6/fc7,
  conv8_2 … conv11_2; default boxes of the SSD paper, steps 8, 16, 32, 64, 100, 300); 8,732 default
  boxes at 300.
- :func:`ssdlite320_mobilenet_v2` — MobileNetV2 with SSDLite heads (Sandler et al. 2018, §6.2):
  3,234 default boxes at 320.
- :func:`build_ssd` — the SSD named by ``arch`` (the factory LightningModules call).
- :func:`ssd_from_feature_maps` — an SSD (or SSDLite) head over *any* module that returns an ordered
  dict of feature maps, plus extra stride-2 layers; default boxes tiled on the grid each feature map
  actually has at the given input size.

:func:`feature_map_shapes` and :func:`num_default_boxes` report what a built model produces at a
given input size (the tests compare them with values derived by hand).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torchvision.models import MobileNet_V2_Weights, VGG16_Weights, mobilenet_v2, vgg16
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD, SSDFeatureExtractorVGG, SSDHead
from torchvision.models.detection.ssdlite import SSDLiteHead
from torchvision.models.vgg import cfgs as vgg_cfgs
from torchvision.models.vgg import make_layers
from torchvision.ops.misc import Conv2dNormActivation

HeadType = Literal["ssd", "ssdlite"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's SSD300: its VGG16 "IMAGENET1K_FEATURES" weights (converted from Caffe) expect 0–255
# inputs minus the mean, hence std = 1/255.
VGG_SSD_MEAN = (0.48235, 0.45882, 0.40784)
VGG_SSD_STD = (1.0 / 255.0, 1.0 / 255.0, 1.0 / 255.0)

SSD300_ASPECT_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
SSD300_SCALES = [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05]
SSD300_STEPS = [8, 16, 32, 64, 100, 300]


def _size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``int`` or ``(height, width)`` → ``(height, width)``, validated."""
    hw = (int(image_size), int(image_size)) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    return hw  # type: ignore[return-value]


def _bn(eps: float = 1e-3, momentum: float = 0.03) -> partial:
    # torchvision's SSDLite batch-norm settings
    return partial(nn.BatchNorm2d, eps=eps, momentum=momentum)


def ssd_extra_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """SSD's extra layer (conv8_2 / conv9_2 style): 1×1 to ``out/2``, ReLU, 3×3 stride 2 pad 1, ReLU.

    Halves the map rounding up: ``n → ⌈n/2⌉``.
    """
    mid = max(1, out_channels // 2)
    block = nn.Sequential(
        nn.Conv2d(in_channels, mid, kernel_size=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid, out_channels, kernel_size=3, stride=2, padding=1),
        nn.ReLU(inplace=True),
    )
    for layer in block.modules():
        if isinstance(layer, nn.Conv2d):  # torchvision's SSD initialisation of new layers
            nn.init.xavier_uniform_(layer.weight)
            nn.init.constant_(layer.bias, 0.0)
    return block


def ssdlite_extra_block(in_channels: int, out_channels: int, bn_momentum: float = 0.03) -> nn.Sequential:
    """SSDLite's extra layer (MobileNetV2 §6.2, torchvision's layout): 1×1 to ``out/2``, depthwise 3×3
    stride 2, 1×1 to ``out``, each with BatchNorm and ReLU6. ``n → ⌈n/2⌉``."""
    mid = max(1, out_channels // 2)
    norm = _bn(momentum=bn_momentum)
    block = nn.Sequential(
        Conv2dNormActivation(in_channels, mid, kernel_size=1, norm_layer=norm, activation_layer=nn.ReLU6),
        Conv2dNormActivation(mid, mid, kernel_size=3, stride=2, groups=mid, norm_layer=norm, activation_layer=nn.ReLU6),
        Conv2dNormActivation(mid, out_channels, kernel_size=1, norm_layer=norm, activation_layer=nn.ReLU6),
    )
    for layer in block.modules():
        if isinstance(layer, nn.Conv2d):  # torchvision's SSDLite initialisation
            nn.init.normal_(layer.weight, mean=0.0, std=0.03)
    return block


class FeatureMapsBackbone(nn.Module):
    """A trunk returning ordered feature maps, followed by extra layers on its last map.

    ``forward(x)`` returns ``OrderedDict`` of the trunk's maps (keys kept) then one map per extra
    block (keys ``"extra0"``, ``"extra1"``, …), each extra block applied to the previous output.

    Attributes:
        trunk: the given feature extractor (frozen by ``Detector(freeze_backbone=True)``).
        extra: the new layers.
        out_channels: channels of every returned map, in order.
    """

    def __init__(self, trunk: nn.Module, extra: nn.ModuleList, out_channels: list[int]) -> None:
        super().__init__()
        self.trunk = trunk
        self.extra = extra
        self.out_channels = list(out_channels)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.trunk(x)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        out = OrderedDict(features)
        last = next(reversed(out.values()))
        for i, block in enumerate(self.extra):
            last = block(last)
            out[f"extra{i}"] = last
        return out


@torch.no_grad()
def _probe(module: nn.Module, size: tuple[int, int], meta: bool = False) -> list[tuple[int, int, int]]:
    """(C, H, W) of each map ``module`` returns for one zero image of ``size`` (eval mode, restored).

    ``meta``: run on PyTorch's ``meta`` device, shapes without arithmetic (VGG16 at 300 costs nothing;
    BatchNorm-heavy nets are slower there than for real, and modules that encode bytes cannot run there).
    """
    was_training = module.training
    module.eval()
    try:
        if meta:
            fake = {name: torch.empty_like(t, device="meta") for name, t in module.state_dict(keep_vars=True).items()}
            out = functional_call(module, fake, (torch.zeros(1, 3, *size, device="meta"),))
        else:
            param = next(module.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
            out = module(torch.zeros(1, 3, *size, device=device))
    except RuntimeError as err:  # e.g. a 3×3 valid convolution on a 2×2 map
        raise ValueError(f"input {size[0]}×{size[1]}: a feature map vanishes ({err})") from err
    finally:
        module.train(was_training)
    if isinstance(out, Tensor):
        out = {"0": out}
    return [tuple(int(s) for s in t.shape[1:]) for t in out.values()]  # type: ignore[misc]


def feature_map_shapes(model: SSD, image_size: int | Sequence[int] | None = None) -> list[tuple[int, int, int]]:
    """(C, H, W) of each feature map the heads see, for an input of ``image_size`` (default: the model's)."""
    size = _size(image_size) if image_size is not None else tuple(model.transform.fixed_size[::-1])
    return _probe(model.backbone, size, meta=isinstance(model.backbone, SSDFeatureExtractorVGG))  # type: ignore[arg-type]


def num_default_boxes(model: SSD, image_size: int | Sequence[int] | None = None) -> int:
    """Default boxes (anchors) of ``model`` for one image: Σ_k H_k·W_k·(boxes per location)_k."""
    shapes = feature_map_shapes(model, image_size)
    per_location = model.anchor_generator.num_anchors_per_location()
    return sum(h * w * a for (_, h, w), a in zip(shapes, per_location, strict=True))


def _check_maps(shapes: list[tuple[int, int, int]], size: tuple[int, int], what: str) -> None:
    if any(h < 1 or w < 1 for _, h, w in shapes):
        raise ValueError(f"{what} at input {size[0]}×{size[1]}: a feature map vanishes ({shapes}); use a larger input")


def default_aspect_ratios(num_maps: int, head: HeadType) -> list[list[int]]:
    """Aspect ratios per map: SSDLite uses {2, 3} everywhere; SSD the SSD300 pattern generalised
    (first and last two maps {2}, the others {2, 3}): 4 or 6 default boxes per location."""
    if head == "ssdlite" or num_maps < 4:
        return [[2, 3] for _ in range(num_maps)]
    return [[2]] + [[2, 3] for _ in range(num_maps - 3)] + [[2], [2]]


def ssd_from_feature_maps(
    backbone: nn.Module,
    image_size: int | Sequence[int],
    num_classes: int = 21,
    extra_channels: Sequence[int] = (512, 256, 256, 128),
    head: HeadType = "ssd",
    out_channels: Sequence[int] | None = None,
    aspect_ratios: Sequence[Sequence[int]] | None = None,
    min_ratio: float = 0.2,
    max_ratio: float = 0.9,
    scales: Sequence[float] | None = None,
    image_mean: Sequence[float] = IMAGENET_MEAN,
    image_std: Sequence[float] = IMAGENET_STD,
    bn_momentum: float = 0.03,
    **ssd_kwargs,
) -> SSD:
    """An SSD whose heads read the maps of ``backbone`` plus ``len(extra_channels)`` extra layers.

    Args:
        backbone: module mapping a normalised image batch (B, 3, H, W) to a ``Tensor`` or an ordered
            dict of feature maps (any channels, any strides, largest first as SSD expects). It is
            stored as ``model.backbone.trunk``.
        image_size: network input, ``int`` or ``(height, width)``; images are resized to it.
        num_classes: classes including the background (21 for VOC).
        extra_channels: output channels of the extra layers appended after the last map, each
            halving its size (``n → ⌈n/2⌉``, 3×3 stride 2 pad 1). Empty: none.
        head: ``"ssd"`` (3×3 convolutions, extras ``ssd_extra_block``) or ``"ssdlite"`` (depthwise
            separable heads with BatchNorm, extras ``ssdlite_extra_block``).
        out_channels: the backbone's channels if known; checked against a dry run.
        aspect_ratios: per map, the extra aspect ratios of ``DefaultBoxGenerator`` (2 + 2·len boxes per
            location); default :func:`default_aspect_ratios`.
        min_ratio, max_ratio: smallest / largest default-box scale (relative to the input side),
            linear in between (SSD paper eq. 4) when ``scales`` is not given.
        scales: explicit scales, one per map plus one (``DefaultBoxGenerator``'s ``scales``).
        image_mean, image_std: normalisation of the [0, 1] input (the backbone's training statistics).
        bn_momentum: BatchNorm momentum of the SSDLite extras and heads (torchvision's 0.03 suits
            long runs; short CPU runs need ~0.1 for the running statistics to catch up).
        **ssd_kwargs: passed to ``torchvision.models.detection.SSD`` (``score_thresh``, ``nms_thresh``,
            ``detections_per_img``, ``topk_candidates``, ``iou_thresh``, ``positive_fraction``).

    The default boxes use no ``steps``: box centres are ``(i + 0.5) / H_k`` on the grid each map
    really has at ``image_size`` (so a 14×14 map at 224 gets a 16-pixel step, not a 300-pixel
    step scaled by accident). Raises ``ValueError`` before training if a map vanishes at this size
    or if ``out_channels`` / ``aspect_ratios`` / ``scales`` do not fit the number of maps.
    """
    if head not in ("ssd", "ssdlite"):
        raise ValueError(f"head must be 'ssd' or 'ssdlite', got {head!r}")
    size = _size(image_size)
    trunk_shapes = _probe(backbone, size)
    _check_maps(trunk_shapes, size, "backbone")
    channels = [c for c, _, _ in trunk_shapes]
    if out_channels is not None and list(out_channels) != channels:
        raise ValueError(f"out_channels {list(out_channels)} given, but the backbone returns {channels}")
    block = partial(ssdlite_extra_block, bn_momentum=bn_momentum) if head == "ssdlite" else ssd_extra_block
    extra = nn.ModuleList()
    previous = channels[-1]
    for c in extra_channels:
        extra.append(block(previous, int(c)))
        previous = int(c)
    all_channels = channels + [int(c) for c in extra_channels]
    features = FeatureMapsBackbone(backbone, extra, all_channels)
    shapes = _probe(features, size)
    _check_maps(shapes, size, "extra layers")
    n = len(shapes)
    ratios = [list(r) for r in aspect_ratios] if aspect_ratios is not None else default_aspect_ratios(n, head)
    if len(ratios) != n:
        raise ValueError(f"{len(ratios)} aspect-ratio lists for {n} feature maps")
    if scales is not None and len(scales) != n + 1:
        raise ValueError(f"scales needs {n + 1} values (one per map plus one), got {len(scales)}")
    anchors = DefaultBoxGenerator(
        ratios, min_ratio=min_ratio, max_ratio=max_ratio, scales=list(scales) if scales is not None else None
    )
    per_location = anchors.num_anchors_per_location()
    if head == "ssdlite":
        ssd_head: nn.Module = SSDLiteHead(all_channels, per_location, num_classes, _bn(momentum=bn_momentum))
    else:
        ssd_head = SSDHead(all_channels, per_location, num_classes)
    return SSD(
        features,
        anchors,
        (size[1], size[0]),  # torchvision's SSD takes (width, height)
        num_classes,
        image_mean=list(image_mean),
        image_std=list(image_std),
        head=ssd_head,
        **ssd_kwargs,
    )


def vgg16_features(weights: VGG16_Weights | None = None) -> nn.Sequential:
    """VGG16's convolutional part (``torchvision.models.vgg16(...).features``, same module names), without
    building the 120 M-parameter classifier when no weights are loaded (VGG's own initialisation)."""
    if weights is not None:
        return vgg16(weights=weights).features
    features = make_layers(vgg_cfgs["D"], batch_norm=False)
    for layer in features.modules():
        if isinstance(layer, nn.Conv2d):  # torchvision's VGG._initialize_weights
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(layer.bias, 0)
    return features


def ssd300_vgg16(
    num_classes: int = 21,
    weights_backbone: VGG16_Weights | str | None = None,
    trainable_backbone_layers: int | None = None,
    image_size: int = 300,
    **ssd_kwargs,
) -> SSD:
    """SSD300 VGG16 (Liu et al. 2016) in torchvision's layout, with ``num_classes`` outputs.

    The same parts and module names as ``torchvision.models.detection.ssd300_vgg16`` (its
    ``SSDFeatureExtractorVGG``: conv4_3 with L2 norm, atrous fc6/fc7, conv8_2 … conv11_2; ``SSDHead``;
    ``DefaultBoxGenerator`` with scales 0.07 … 1.05 and steps 8, 16, 32, 64, 100, 300; its Caffe-VGG
    normalisation), so its state dicts load; only VGG's classifier, which SSD drops, is never built.

    Args:
        num_classes: classes including the background (21 for VOC).
        weights_backbone: ImageNet VGG16 weights, e.g. ``"IMAGENET1K_FEATURES"`` (the ones the SSD
            paper and torchvision's SSD300 start from; downloaded on first use); ``None``: random.
        trainable_backbone_layers: VGG16 stages left trainable (0–5; as torchvision: 4 with weights,
            5 without).
        image_size: square input side. At 300 the default boxes are exactly the paper's; at any other
            size the ``steps`` are dropped and box centres follow the feature maps' real grids. The
            two 3×3 valid convolutions at the end need conv9_2 ≥ 3×3: 224 fails with a ``ValueError``
            (conv4_3 28, fc7 14, conv8_2 7, conv9_2 4, conv10_2 2, conv11_2 nothing).
        **ssd_kwargs: ``SSD`` post-processing / matching options.
    """
    size = _size(image_size)
    if size[0] != size[1]:
        raise ValueError(f"ssd300_vgg16 takes a square image_size, got {image_size!r}")
    if isinstance(weights_backbone, str):
        weights_backbone = VGG16_Weights[weights_backbone]
    if trainable_backbone_layers is None:
        trainable_backbone_layers = 4 if weights_backbone is not None else 5
    if not 0 <= trainable_backbone_layers <= 5:
        raise ValueError(f"trainable_backbone_layers must be in 0..5, got {trainable_backbone_layers}")
    features = vgg16_features(weights_backbone)
    # as torchvision's _vgg_extractor: stages start at 0 and after each of the first four max-pools
    stages = [0] + [i for i, b in enumerate(features) if isinstance(b, nn.MaxPool2d)][:-1]
    freeze_before = len(features) if trainable_backbone_layers == 0 else stages[5 - trainable_backbone_layers]
    features[:freeze_before].requires_grad_(False)
    backbone = SSDFeatureExtractorVGG(features, highres=False)
    _check_maps(_probe(backbone, size, meta=True), size, "ssd300_vgg16")
    if size[0] == 300:
        anchors = DefaultBoxGenerator(SSD300_ASPECT_RATIOS, scales=SSD300_SCALES, steps=SSD300_STEPS)
    else:
        anchors = DefaultBoxGenerator(SSD300_ASPECT_RATIOS, scales=SSD300_SCALES)
    head = SSDHead([512, 1024, 512, 256, 256, 256], anchors.num_anchors_per_location(), num_classes)
    defaults = {"image_mean": list(VGG_SSD_MEAN), "image_std": list(VGG_SSD_STD)}
    return SSD(backbone, anchors, (size[1], size[0]), num_classes, head=head, **{**defaults, **ssd_kwargs})


class MobileNetV2SSDLiteTrunk(nn.Module):
    """MobileNetV2's two SSDLite sources (Sandler et al. 2018, §6.2): the expansion (1×1) output of the
    last stride-2 inverted residual (output stride 16; 576 channels at width 1) and the final 1×1 conv
    (stride 32; 1280 channels). Returns ``{"c4", "c5"}``."""

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        c4 = [i for i, b in enumerate(features) if getattr(b, "stride", 1) == 2 and hasattr(b, "conv")][-1]
        if features[c4].use_res_connect:
            raise ValueError("the last stride-2 block of MobileNetV2 must not have a residual connection")
        self.stage1 = nn.Sequential(*features[:c4], features[c4].conv[0])  # up to the expansion 1×1
        self.stage2 = nn.Sequential(*features[c4].conv[1:], *features[c4 + 1 :])  # depthwise on, to the end

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        c4 = self.stage1(x)
        return OrderedDict([("c4", c4), ("c5", self.stage2(c4))])


def ssdlite320_mobilenet_v2(
    num_classes: int = 21,
    weights_backbone: MobileNet_V2_Weights | str | None = None,
    width_mult: float = 1.0,
    image_size: int | Sequence[int] = 320,
    min_depth: int = 16,
    bn_momentum: float = 0.03,
    **ssd_kwargs,
) -> SSD:
    """MobileNetV2-SSDLite (Sandler et al. 2018, §6.2), built with :func:`ssd_from_feature_maps`.

    Sources: MobileNetV2's stride-16 expansion layer and its last layer (see
    :class:`MobileNetV2SSDLiteTrunk`), then four SSDLite extra layers (512, 256, 256, 128 channels ×
    ``width_mult``, at least ``min_depth``), SSDLite heads (depthwise separable), 6 default boxes per
    location (aspect ratios {1, 1', 2, ½, 3, ⅓}), scales 0.2 … 0.95; torchvision's SSDLite post-processing
    (score 0.001, NMS 0.55, 300 detections). At 320: maps 20, 10, 5, 3, 2, 1 → 3,234 default boxes.

    **Relation to the compressed-recognition paper's "MobileNet-SSD"** (Takase et al.): that is the
    MobileNetV1-SSD of the Caffe/TensorFlow model zoos (MobileNetV1 conv11/conv13 at strides 16/32, plain
    SSD 3×3 heads, 300×300, VOC07+12 ≈ 72.7 mAP). torchvision ships no MobileNetV1, so we use its
    successor with the same detector structure (two backbone sources at strides 16 and 32, four extra
    stride-2 layers, six maps, six boxes per location) and the lighter SSDLite heads; public PyTorch
    MobileNetV2-SSDLite recipes reach 68.6–68.9 VOC07 mAP. Pass ``image_size=300`` for the paper's input.

    Args:
        num_classes: classes including the background (21 for VOC).
        weights_backbone: ImageNet MobileNetV2 weights (``"IMAGENET1K_V1"`` / ``"IMAGENET1K_V2"``; only at
            ``width_mult=1``); ``None``: random (normal init as torchvision's SSDLite).
        width_mult: channel multiplier of MobileNetV2 and of the extra layers.
        image_size: network input side(s).
        min_depth: smallest channel count of an extra layer.
        bn_momentum: momentum of every BatchNorm (torchvision's SSDLite: 0.03; ~0.1 for short runs).
        **ssd_kwargs: ``SSD`` options (override the SSDLite defaults above).
    """
    if isinstance(weights_backbone, str):
        weights_backbone = MobileNet_V2_Weights[weights_backbone]
    if weights_backbone is not None and width_mult != 1.0:
        raise ValueError(f"ImageNet MobileNetV2 weights exist for width_mult=1.0 only, got {width_mult}")
    norm = _bn(momentum=bn_momentum)
    net = mobilenet_v2(weights=weights_backbone, width_mult=width_mult, norm_layer=norm)
    if weights_backbone is None:
        for layer in net.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, mean=0.0, std=0.03)
    trunk = MobileNetV2SSDLiteTrunk(net.features)
    depth = [max(min_depth, int(d * width_mult)) for d in (512, 256, 256, 128)]
    defaults = {"score_thresh": 0.001, "nms_thresh": 0.55, "detections_per_img": 300, "topk_candidates": 300}
    return ssd_from_feature_maps(
        trunk,
        image_size,
        num_classes,
        extra_channels=depth,
        head="ssdlite",
        min_ratio=0.2,
        max_ratio=0.95,
        bn_momentum=bn_momentum,
        **{**defaults, **ssd_kwargs},
    )


def trunk_modules(model: SSD) -> list[nn.Module]:
    """The pretrained (backbone-network) part of a model built here, i.e. what a frozen backbone freezes:
    ``backbone.trunk`` for :func:`ssd_from_feature_maps` models; VGG16's conv1_1 … conv5_3 for
    :func:`ssd300_vgg16` (not the new fc6/fc7, extras or the conv4_3 L2-norm scale)."""
    backbone = model.backbone
    if isinstance(backbone, FeatureMapsBackbone):
        return [backbone.trunk]
    if isinstance(backbone, SSDFeatureExtractorVGG):
        return [backbone.features, nn.Sequential(*backbone.extra[0][:-1])]
    raise TypeError(f"no known pretrained part in a backbone of type {type(backbone).__name__}")


Arch = Literal["ssd300_vgg16", "ssdlite_mobilenet_v2"]


def build_ssd(
    arch: Arch,
    num_classes: int,
    image_size: int,
    width_mult: float = 1.0,
    weights_backbone: str | None = None,
    bn_momentum: float = 0.03,
    **ssd_kwargs: Any,
) -> nn.Module:
    """The SSD named by ``arch`` (see :mod:`models.ssd`)."""
    if arch == "ssd300_vgg16":
        if width_mult != 1.0:
            raise ValueError(f"ssd300_vgg16 has no width multiplier, got width_mult={width_mult}")
        return ssd300_vgg16(num_classes, weights_backbone, image_size=image_size, **ssd_kwargs)
    if arch == "ssdlite_mobilenet_v2":
        return ssdlite320_mobilenet_v2(
            num_classes, weights_backbone, width_mult, image_size, bn_momentum=bn_momentum, **ssd_kwargs
        )
    raise ValueError(f"unknown arch {arch!r}; expected 'ssd300_vgg16' or 'ssdlite_mobilenet_v2'")
