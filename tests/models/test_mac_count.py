"""MAC counts of the recognition pipelines against hand derivations and torchvision's published figure."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import ResNet18_Weights

from models.code_classifier import CodeRecognitionNet
from models.rnn_codec import scaled

pytestmark = pytest.mark.usefixtures("one_thread")


def encoder_macs(width: float, side: int, iterations: int, bits: int = 32) -> int:
    """Toderici's encoder + binarizer from the layer table: conv 3×3/2, three ConvLSTMs (3×3/2 input
    kernel, 1×1 hidden kernel, 4 gates), 1×1 binarizer; the hidden convolution runs every iteration."""
    c64, c256, c512 = scaled(64, width), scaled(256, width), scaled(512, width)
    per_iteration = (
        3 * c64 * 9 * (side // 2) ** 2
        + (c64 * 9 + c256) * 4 * c256 * (side // 4) ** 2
        + (c256 * 9 + c512) * 4 * c512 * (side // 8) ** 2
        + (c512 * 9 + c512) * 4 * c512 * (side // 16) ** 2
        + c512 * bits * (side // 16) ** 2
    )
    return iterations * per_iteration


@pytest.mark.parametrize("variant", ["conventional", "from_layer2", "from_layer4"])
@pytest.mark.parametrize("iterations", [1, 2])
def test_edge_macs_are_the_encoder_layer_table(variant, iterations):
    net = CodeRecognitionNet(variant, iterations=iterations, codec_width=0.465)
    counts = net.mac_counts(torch.rand(1, 3, 224, 224))
    assert counts["edge"] == encoder_macs(0.465, 224, iterations)
    assert counts["edge"] + counts["server"] == counts["total"]


def test_conventional_server_is_the_decoder_plus_torchvisions_resnet18():
    net = CodeRecognitionNet("conventional", num_classes=1000, iterations=1, codec_width=0.25)
    image = torch.rand(1, 3, 224, 224)
    counts = net.mac_counts(image)
    decoder_only = CodeRecognitionNet("conventional", num_classes=1000, iterations=1, codec_width=0.25)
    decoder_only.classifier = torch.nn.Identity()  # what remains: encoder + decoder
    codec_macs = decoder_only.mac_counts(image)["total"]
    resnet18_gmacs = ResNet18_Weights.IMAGENET1K_V1.meta["_ops"]  # torchvision's figure, in GMACs
    assert (counts["total"] - codec_macs) / 1e9 == pytest.approx(resnet18_gmacs, abs=5e-4)
