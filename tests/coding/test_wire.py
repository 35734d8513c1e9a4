"""Every wire implements one protocol; its bytes are the real streams' bytes and its output what they decode to."""

from __future__ import annotations

import pytest
import torch

from coding.feature_codec import FeatureCodec
from coding.feature_codec import decode as decode_features
from coding.image_channel import ClassicalChannel, RNNChannel
from coding.image_codecs import decode_image, encode_image, to_float_chw, to_uint8_hwc
from coding.rnn_bitstream import compress, decompress, stream_bytes_per_image
from coding.wire import CodeStreamWire, FeatureCodecWire, ImageChannelWire, Transmission, Wire
from models.code_classifier import CodeEncoder
from models.rnn_codec import RNNCodec


@pytest.fixture(scope="module")
def codec() -> RNNCodec:
    torch.manual_seed(0)
    return RNNCodec(width=0.0625).eval()


def test_jpeg_wire_sends_each_image_as_its_own_file():
    torch.manual_seed(1)
    images = torch.rand(3, 3, 24, 40)
    out = ImageChannelWire(ClassicalChannel("jpeg", quality=50)).transmit(images)
    assert isinstance(out, Transmission) and out.decoded.shape == images.shape
    for i, image in enumerate(images):
        data = encode_image(to_uint8_hwc(image), "jpeg", 50)  # an independent encode of the same image
        assert out.bytes_per_item[i] == len(data)
        assert torch.equal(out.decoded[i], to_float_chw(decode_image(data, "jpeg")))
    assert out.settings == {"channel": "jpeg", "quality": 50, "target_bpp": None}


def test_jpeg_wire_meets_per_image_budgets():
    torch.manual_seed(2)
    images = torch.rand(2, 3, 32, 32)
    budgets = [700, 900]
    out = ImageChannelWire(ClassicalChannel("jpeg")).transmit(images, budgets)
    assert all(0 < b <= budget for b, budget in zip(out.bytes_per_item, budgets, strict=True))
    with pytest.raises(ValueError, match="2 budgets"):
        ImageChannelWire(ClassicalChannel("jpeg")).transmit(torch.rand(3, 3, 32, 32), budgets)


def test_rnn_image_wire_is_the_bitstream_of_each_image(codec):
    torch.manual_seed(3)
    images = torch.rand(2, 3, 32, 48)
    out = ImageChannelWire(RNNChannel(codec, iterations=2)).transmit(images)
    for i in range(2):
        one = torch.from_numpy(to_uint8_hwc(images[i])).permute(2, 0, 1).float().unsqueeze(0) / 255
        stream = compress(codec, one, 2, coding="packed")
        assert out.bytes_per_item[i] == len(stream)
        assert torch.equal(out.decoded[i], to_float_chw(to_uint8_hwc(decompress(codec, stream)[0])))
    assert out.settings["iterations"] == 2


def test_code_wire_is_lossless_and_its_bytes_are_the_estimated_stream_sizes(codec):
    torch.manual_seed(4)
    images = torch.rand(3, 3, 32, 48)
    encoder = CodeEncoder(width=0.0625).eval()
    encoder.load_state_dict({k: v for k, v in codec.state_dict().items() if not k.startswith("decoder.")})
    with torch.no_grad():
        codes = encoder(images, 2)  # (T=2, B=3, bits, 2, 3)
    out = CodeStreamWire(codec, (32, 48), coding="smallest").transmit(codes)
    assert torch.equal(out.decoded, codes)
    # the estimate CodeRecognition logs from the codes alone equals the streams actually written
    assert out.bytes_per_item == stream_bytes_per_image(codes, "smallest")[-1].tolist()
    assert out.settings["iterations"] == 2


def test_feature_wire_bytes_are_the_streams_bytes():
    torch.manual_seed(5)
    features = torch.randn(2, 8, 6, 5)
    codec = FeatureCodec(codec="png", quality=None, layout="mono")
    out = FeatureCodecWire(codec).transmit(features)
    for i in range(2):
        data = codec.encode(features[i])
        assert out.bytes_per_item[i] == len(data)
        assert torch.equal(out.decoded[i], decode_features(data))
    assert out.settings["name"] == codec.name


def test_every_wire_satisfies_the_protocol(codec):
    wires = [
        ImageChannelWire(ClassicalChannel("jpeg", quality=50)),
        ImageChannelWire(RNNChannel(codec, 1)),
        CodeStreamWire(codec, (32, 32)),
        FeatureCodecWire(FeatureCodec(codec="png", quality=None, layout="mono")),
    ]
    assert all(isinstance(w, Wire) for w in wires)


def test_wrong_layouts_are_refused_before_any_work(codec):
    with pytest.raises(ValueError, match="images"):
        ImageChannelWire(ClassicalChannel("jpeg", quality=50)).transmit(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="codes"):
        CodeStreamWire(codec, (32, 32)).transmit(torch.rand(1, 32, 2, 2))
    with pytest.raises(ValueError, match="features"):
        FeatureCodecWire(FeatureCodec(codec="png", quality=None, layout="mono")).transmit(torch.rand(8, 6, 5))
