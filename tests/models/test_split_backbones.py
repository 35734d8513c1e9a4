"""Split points of the shared trunks: the tensors the paper sends (Table 2), and what each task's server reads."""

import pytest
import torch
from torchvision.models import mobilenet_v2, vgg16

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


def unsplit_keys(key: str) -> str:
    """A split classifier's state key → the same weight's key in the unsplit torchvision network (a sliced
    ``Sequential`` keeps its blocks' original indices)."""
    part, rest = key.split(".", 1)
    if part == "edge":
        return f"features.{rest}"
    index, rest = rest.split(".", 1)  # head = (features[split:], pool, flatten, classifier)
    return f"features.{rest}" if index == "0" else f"classifier.{rest}"


@pytest.mark.parametrize(("trunk", "split"), [("mobilenet_v2", 7), ("vgg16", 24)])
def test_split_classifier_is_the_unsplit_torchvision_network(trunk, split):
    # the same weights in torchvision's own network, called on ImageNet-normalised images: the same logits
    torch.manual_seed(0)
    width = 0.25 if trunk == "mobilenet_v2" else 1.0  # full-width VGG16 (a narrow VGG is not torchvision's)
    if trunk == "mobilenet_v2":
        reference = mobilenet_v2(weights=None, width_mult=width, num_classes=7).eval()
    else:
        reference = vgg16(weights=None, num_classes=7).eval()
    with torch.device("meta"):  # the split model's structure; its weights come from the reference
        model = split_classifier(trunk, num_classes=7, width=width).eval()
    state = reference.state_dict()
    mapped = {key: state[unsplit_keys(key)] for key in model.state_dict()}
    assert set(map(unsplit_keys, mapped)) == set(state)  # every weight of the unsplit network, once
    model.load_state_dict(mapped, assign=True)
    model.normalize = type(model.normalize)()  # its (non-persistent) ImageNet statistics, off the meta device
    images = torch.rand(2, 3, 64, 64)
    normalised = (images - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference(normalised)
        torch.testing.assert_close(model(images), expected, rtol=1e-5, atol=1e-6)
        # the edge sends torchvision's own intermediate tensor
        torch.testing.assert_close(model.encode(images), reference.features[:split](normalised), rtol=1e-5, atol=1e-6)


def test_pretrained_weights_need_full_width():
    with pytest.raises(ValueError, match="width"):
        split_classifier("vgg16", weights="IMAGENET1K_V1", width=0.5)
    with pytest.raises(ValueError, match="trunk"):
        split_classifier("resnet50")
