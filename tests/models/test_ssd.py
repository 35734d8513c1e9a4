"""SSD builders: feature-map sizes, default-box counts and positions at 224, 300 and 320, derived by hand.

Size arithmetic used below:
- a 3×3 stride-2 padding-1 convolution (MobileNetV2's strided blocks, every extra layer here) maps n → ⌈n/2⌉;
- VGG16's max-pools map n → ⌊n/2⌋, except pool3 which torchvision's SSD sets to ceil mode (n → ⌈n/2⌉);
  SSD's conv10_2 / conv11_2 are 3×3 without padding (n → n − 2);
- SSD default boxes per location: 2 + 2·(number of extra aspect ratios) — 4 for {2}, 6 for {2, 3}.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v2
from torchvision.models.detection import ssd300_vgg16 as tv_ssd300_vgg16
from torchvision.models.detection.image_list import ImageList

from models.ssd import (
    feature_map_shapes,
    num_default_boxes,
    ssd300_vgg16,
    ssd_from_feature_maps,
    ssdlite320_mobilenet_v2,
    trunk_modules,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def default_boxes(model, size: int) -> list[torch.Tensor]:
    """The model's default boxes (xyxy pixels) at a size×size input, split per feature map (the generator
    only reads the maps' shapes, so zero maps of the probed shapes stand in for a real forward)."""
    features = [torch.zeros(1, c, h, w) for c, h, w in feature_map_shapes(model, size)]
    x = torch.zeros(1, 3, size, size)
    boxes = model.anchor_generator(ImageList(x, [(size, size)]), features)[0]
    per_location = model.anchor_generator.num_anchors_per_location()
    return list(boxes.split([f.shape[-2] * f.shape[-1] * a for f, a in zip(features, per_location, strict=True)]))


def centres(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, :2] + boxes[:, 2:]) / 2


# MobileNetV2-SSDLite. Strided layers: stem (s2), blocks 2, 4, 7 (s2), block 14 (s2; its expansion is the first
# source, at stride 16, 96·6 = 576 channels), then the last 1×1 conv (1280) at stride 32; four extras
# 512, 256, 256, 128. Each step ⌈n/2⌉:
#   224: 112, 56, 28, 14 | 7 | 4, 2, 1, 1
#   300: 150, 75, 38, 19 | 10 | 5, 3, 2, 1
#   320: 160, 80, 40, 20 | 10 | 5, 3, 2, 1
# Six boxes per location everywhere: 224 → 6·(196 + 49 + 16 + 4 + 1 + 1) = 6·267 = 1602;
# 300 → 6·(361 + 100 + 25 + 9 + 4 + 1) = 6·500 = 3000; 320 → 6·(400 + 100 + 25 + 9 + 4 + 1) = 6·539 = 3234
# (3234 is also torchvision's ssdlite320_mobilenet_v3_large count: same grid sizes at 320).
SSDLITE = {
    224: ([14, 7, 4, 2, 1, 1], 1602),
    300: ([19, 10, 5, 3, 2, 1], 3000),
    320: ([20, 10, 5, 3, 2, 1], 3234),
}


@pytest.fixture(scope="module")
def ssdlite320():
    return ssdlite320_mobilenet_v2()


@pytest.mark.parametrize("size", sorted(SSDLITE))
def test_ssdlite_mobilenet_v2_maps_and_default_boxes(ssdlite320, size):
    # the default boxes have no steps, so one model serves every input size
    sides, count = SSDLITE[size]
    shapes = feature_map_shapes(ssdlite320, size)
    assert [(h, w) for _, h, w in shapes] == [(s, s) for s in sides]
    assert [c for c, _, _ in shapes] == [576, 1280, 512, 256, 256, 128]
    assert num_default_boxes(ssdlite320, size) == count
    boxes = default_boxes(ssdlite320, size)
    assert sum(len(b) for b in boxes) == count
    assert [centres(b)[0, 0].item() for b in boxes] == pytest.approx([0.5 * size / s for s in sides], abs=1e-3)


def test_ssdlite_trunk_is_mobilenet_v2_features(ssdlite320):
    # torchvision's MobileNetV2: 3,504,872 parameters, of which the classifier 1280·1000 + 1000 = 1,281,000
    (trunk,) = trunk_modules(ssdlite320)
    assert sum(p.numel() for p in trunk.parameters()) == 3_504_872 - 1_281_000


def test_ssdlite_width_multiplier_scales_the_sources_and_extras():
    # width 0.25: block 14 takes 96·0.25 = 24 channels, expansion 6·24 = 144; the last conv stays 1280
    # (torchvision keeps 1280 for width < 1); extras max(16, int(d·0.25)) = 128, 64, 64, 32
    model = ssdlite320_mobilenet_v2(width_mult=0.25, image_size=128)
    assert tuple(model.transform.fixed_size) == (128, 128)  # inputs are resized to image_size
    assert [c for c, _, _ in feature_map_shapes(model)] == [144, 1280, 128, 64, 64, 32]
    # 128: 64, 32, 16, 8 | 4 | 2, 1, 1, 1
    assert [h for _, h, _ in feature_map_shapes(model)] == [8, 4, 2, 1, 1, 1]


@pytest.fixture(scope="module")
def vgg300():
    return ssd300_vgg16(image_size=300)


# SSD300 VGG16: conv4_3 after pool1, pool2 (floor) and pool3 (ceil); fc7 after pool4 (floor); conv8_2 and conv9_2
# ⌈n/2⌉; conv10_2, conv11_2 n − 2. Boxes per location 4, 6, 6, 6, 4, 4.
#   300: 150, 75, 38 → conv4_3 38, fc7 19, 10, 5, 3, 1 → 4·1444 + 6·361 + 6·100 + 6·25 + 4·9 + 4·1 = 8732 (the paper's)
#   320: 160, 80, 40 → 40, 20, 10, 5, 3, 1 → 4·1600 + 6·400 + 600 + 150 + 36 + 4 = 9590
#   224: 112, 56, 28 → 28, 14, 7, 4, 2, then conv11_2 (3×3 on 2×2) cannot run: refused


def test_ssd300_vgg16_has_torchvisions_layout(vgg300):
    # the same module names and shapes as torchvision's own builder (built on the meta device: no memory, no time)
    with torch.device("meta"):
        reference = tv_ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21)
    ours = {k: tuple(v.shape) for k, v in vgg300.state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert vgg300.anchor_generator.steps == reference.anchor_generator.steps == [8, 16, 32, 64, 100, 300]
    assert vgg300.anchor_generator.scales == reference.anchor_generator.scales
    # the same parameters trainable (no weights: all five VGG stages)
    trainable = {n for n, p in vgg300.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in reference.named_parameters() if p.requires_grad}


def test_ssd300_vgg16_maps_and_default_boxes(vgg300):
    shapes = feature_map_shapes(vgg300)
    assert shapes == [(512, 38, 38), (1024, 19, 19), (512, 10, 10), (256, 5, 5), (256, 3, 3), (256, 1, 1)]
    assert num_default_boxes(vgg300) == 8732
    assert [(h, w) for _, h, w in feature_map_shapes(vgg300, 320)] == [
        (40, 40),
        (20, 20),
        (10, 10),
        (5, 5),
        (3, 3),
        (1, 1),
    ]
    assert num_default_boxes(vgg300, 320) == 9590
    with pytest.raises(ValueError, match="vanishes"):
        feature_map_shapes(vgg300, 224)
    # at 300 the boxes keep the paper's steps 8, 16, 32, 64, 100, 300: first centres 4, 8, 16, 32, 50, 150 px
    firsts = [centres(b)[0, 0].item() for b in default_boxes(vgg300, 300)]
    assert firsts == pytest.approx([4, 8, 16, 32, 50, 150])


def test_ssd300_vgg16_refuses_224_and_follows_the_real_grid_at_320():
    with pytest.raises(ValueError, match="vanishes"):
        ssd300_vgg16(image_size=224)
    model = ssd300_vgg16(image_size=320)
    assert num_default_boxes(model) == 9590
    # steps dropped at 320: centres (i + 0.5)·320 / n for n = 40, 20, 10, 5, 3, 1 → first 4, 8, 16, 32, 53.3, 160
    # (the 300-pixel steps would have put the fifth map's first centre at 50 and a 320/100-cell grid off the map)
    boxes = default_boxes(model, 320)
    assert [centres(b)[0, 0].item() for b in boxes] == pytest.approx([4, 8, 16, 32, 320 / 6, 160], abs=1e-3)
    assert centres(boxes[4])[-1, 0].item() == pytest.approx(2.5 * 320 / 3, abs=1e-3)  # last column of the 3×3 map


class Stride16(nn.Module):
    """Stand-in trunk with VGG16-pool4's output shape: 512 channels at stride 16 (14×14 at 224)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 512, kernel_size=16, stride=16)

    def forward(self, x):
        return self.conv(x)


# Given feature maps. (a) a stride-16, 512-channel trunk (VGG16 pool4's shape) + extras 512, 256, 256, 256 (SSD head):
#   boxes per location 4, 6, 6, 4, 4 (SSD300's pattern for five maps: ratios {2}, {2,3}, {2,3}, {2}, {2})
#   224: 14, 7, 4, 2, 1 → 4·196 + 6·49 + 6·16 + 4·4 + 4·1 = 784 + 294 + 96 + 16 + 4 = 1194
#   300: a 16×16 kernel at stride 16 gives ⌊(300 − 16)/16⌋ + 1 = 18 → 18, 9, 5, 3, 2 → 4·324 + 6·81 + 6·25 + 4·9 + 4·4 = 1984
#   320: 20, 10, 5, 3, 2 → 4·400 + 6·100 + 6·25 + 4·9 + 4·4 = 2402
# (b) MobileNetV2 features[:7] (32 channels at stride 8) + extras 256, 256, 256, 128, 128 (SSDLite, 6 per location):
#   224: 28, 14, 7, 4, 2, 1 → 6·(784 + 196 + 49 + 16 + 4 + 1) = 6·1050 = 6300
#   300: 150, 75, 38 → 38, 19, 10, 5, 3, 2 → 6·(1444 + 361 + 100 + 25 + 9 + 4) = 6·1943 = 11658
#   320: 40, 20, 10, 5, 3, 2 → 6·(1600 + 400 + 100 + 25 + 9 + 4) = 6·2138 = 12828
GIVEN = {
    "pool4": {224: ([14, 7, 4, 2, 1], 1194), 300: ([18, 9, 5, 3, 2], 1984), 320: ([20, 10, 5, 3, 2], 2402)},
    "mnv2_7": {
        224: ([28, 14, 7, 4, 2, 1], 6300),
        300: ([38, 19, 10, 5, 3, 2], 11658),
        320: ([40, 20, 10, 5, 3, 2], 12828),
    },
}


def build_given(kind: str, size: int):
    if kind == "pool4":
        return ssd_from_feature_maps(Stride16(), size, extra_channels=(512, 256, 256, 256), head="ssd")
    trunk = mobilenet_v2().features[:7]
    return ssd_from_feature_maps(trunk, size, extra_channels=(256, 256, 256, 128, 128), head="ssdlite")


@pytest.mark.parametrize("kind", sorted(GIVEN))
@pytest.mark.parametrize("size", [224, 300, 320])
def test_ssd_over_given_feature_maps(kind, size):
    model = build_given(kind, size)
    sides, count = GIVEN[kind][size]
    assert [(h, w) for _, h, w in feature_map_shapes(model)] == [(s, s) for s in sides]
    assert num_default_boxes(model) == count
    boxes = default_boxes(model, size)
    assert sum(len(b) for b in boxes) == count
    # centres on each map's own grid: the first at half a cell, (0.5 / n)·size, for every map
    assert [centres(b)[0, 0].item() for b in boxes] == pytest.approx([0.5 * size / s for s in sides], abs=1e-3)


def test_given_maps_at_224_have_16_pixel_steps_not_300_pixel_ones():
    model = build_given("pool4", 224)
    first = default_boxes(model, 224)[0]
    # 14×14 map at 224: 16-pixel cells, centres 8, 24, …, 216 (4 boxes per location, so every 4th row)
    assert centres(first)[::4, 0][:14].tolist() == pytest.approx([8 + 16 * i for i in range(14)], abs=1e-3)
    # scale 0.2 of 224 = 44.8 px: the first square box spans 8 ± 22.4
    assert first[0].tolist() == pytest.approx([8 - 22.4, 8 - 22.4, 8 + 22.4, 8 + 22.4], abs=1e-3)


def test_given_maps_train_and_detect():
    model = build_given("mnv2_7", 224)
    images = torch.rand(2, 3, 224, 224)
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 100.0, 120.0]]), "labels": torch.tensor([3])}] * 2
    model.train()
    losses = model(list(images), targets)
    assert set(losses) == {"bbox_regression", "classification"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2
    boxes = detections[0]["boxes"]
    assert boxes.shape[1] == 4 and len(boxes) <= model.detections_per_img
    assert (boxes >= 0).all() and (boxes <= 224).all()


def test_bad_arguments_fail_before_training():
    trunk = mobilenet_v2().features[:7]
    with pytest.raises(ValueError, match="out_channels"):
        ssd_from_feature_maps(trunk, 224, out_channels=[64])
    with pytest.raises(ValueError, match="aspect-ratio"):
        ssd_from_feature_maps(trunk, 224, extra_channels=(64,), aspect_ratios=[[2]])
    with pytest.raises(ValueError, match="scales"):
        ssd_from_feature_maps(trunk, 224, extra_channels=(64,), scales=[0.1, 0.5])
    with pytest.raises(ValueError, match="head"):
        ssd_from_feature_maps(trunk, 224, head="yolo")
    with pytest.raises(ValueError, match="width_mult"):
        ssdlite320_mobilenet_v2(weights_backbone="IMAGENET1K_V1", width_mult=0.5)
    # a trunk whose map vanishes at this size (a 32×32 valid convolution on a 16×16 input)
    with pytest.raises(ValueError, match="vanishes"):
        ssd_from_feature_maps(nn.Conv2d(3, 8, kernel_size=32), 16)
