"""Split points of the shared trunks: the tensors the paper sends (Table 2), and what each task's server reads."""

import pytest
import torch

from coding.feature_tiling import image_shape
from models.split_backbones import SPLIT_SHAPE_224, SplitSSDTrunk, split_classifier, split_feature_shape, split_ssd224
from models.ssd import feature_map_shapes


@pytest.mark.parametrize(
    ("trunk", "sent", "tiled"),
    [("vgg16", (512, 14, 14), (224, 448, 3)), ("mobilenet_v2", (32, 28, 28), (112, 224, 3))],
)
def test_the_edge_sends_the_papers_tensor(trunk, sent, tiled):
    # VGG16 after pool4: 224 / 2⁴ = 14, 512 channels; MobileNetV2 after block 6: 224 / 2³ = 28, 32 channels
    assert split_feature_shape(trunk, 224) == sent == SPLIT_SHAPE_224[trunk]
    assert image_shape("r_channel", sent) == tiled


def test_ssd224_sources_come_from_the_sent_tensor():
    with torch.device("meta"):
        vgg, mobilenet = split_ssd224("vgg16"), split_ssd224("mobilenet_v2")
    # VGG16: pool4 (sent), fc7 at 14, extras 7, 4, 2, 1; MobileNetV2: block 6 (sent), fc7 at 7, extras 4, 2, 1
    assert feature_map_shapes(vgg) == [
        (512, 14, 14),
        (1024, 14, 14),
        (512, 7, 7),
        (256, 4, 4),
        (256, 2, 2),
        (256, 1, 1),
    ]
    assert feature_map_shapes(mobilenet) == [(32, 28, 28), (1024, 7, 7), (512, 4, 4), (256, 2, 2), (256, 1, 1)]
    assert isinstance(vgg.backbone.trunk, SplitSSDTrunk)
    # SSD300's boxes per location (4, 6, 6, 6, 4, 4) on the six VGG maps
    assert vgg.anchor_generator.num_anchors_per_location() == [4, 6, 6, 6, 4, 4]


def test_classifier_head_is_the_rest_of_the_network():
    model = split_classifier("mobilenet_v2", num_classes=7, width=0.25).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert model(images).shape == (2, 7)
        assert torch.equal(model(images), model.head(model.encode(images)))


def test_pretrained_weights_need_full_width():
    with pytest.raises(ValueError, match="width"):
        split_classifier("vgg16", weights="IMAGENET1K_V1", width=0.5)
    with pytest.raises(ValueError, match="trunk"):
        split_classifier("resnet50")
