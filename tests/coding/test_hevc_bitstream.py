"""HEVC without a container (coding/hevc_bitstream.py): the parameter sets are functions of the settings only, the
receiver's rebuilt HEIF file is x265's byte for byte, and the stream is as small as the paper's BPG rows need."""

import numpy as np
import pytest
import torch

from coding import hevc_bitstream as hb
from coding.feature_codec import FeatureCodec, decode
from coding.image_codecs import available_codecs, decode_array, encode_array

pytestmark = pytest.mark.skipif("hevc" not in available_codecs(), reason="no HEVC in this pillow-heif build")


def images(rng, shape, top, dtype):
    """Random, constant, smooth and sparse planes of one shape."""
    yield rng.integers(0, top, shape).astype(dtype)
    yield np.full(shape, rng.integers(0, top), dtype)
    ramp = np.add.outer(np.arange(shape[0]), np.arange(shape[1])) * 3 % top
    yield (ramp if len(shape) == 2 else np.stack([ramp, 0 * ramp, 0 * ramp], axis=-1)).astype(dtype)
    sparse = np.zeros(shape, dtype)
    sparse[rng.random(shape) < 0.05] = top - 1
    yield sparse


@pytest.mark.parametrize(
    ("shape", "dtype", "top", "chroma"),
    [
        ((112, 224, 3), np.uint8, 256, "420"),  # MobileNetV2's r_channel image
        ((56, 40, 3), np.uint8, 256, "444"),
        ((42, 70), np.uint8, 256, "420"),  # grey (mono / square layouts)
        ((36, 28), np.uint16, 1024, "420"),  # 10-bit grey
    ],
)
def test_parameter_sets_do_not_depend_on_content_and_decoding_equals_heif(shape, dtype, top, chroma):
    rng = np.random.default_rng(0)
    for qp in (10, 35, 50):
        settings = hb.settings_of(np.zeros(shape, dtype), qp, chroma)
        for image in images(rng, shape, top, dtype):
            payload = hb.encode(image, qp, chroma)
            heif = encode_array(image, "hevc", qp=qp, chroma=chroma)
            # mode 0: nothing of the container or the parameter sets is sent — only mdat's NAL units
            assert payload[0] == hb.MODE_IMPLIED, (qp, payload[:8])
            assert payload[1:] == heif[heif.index(b"mdat") + 4 :]
            assert hb.to_heif(payload, settings) == heif  # the receiver rebuilds x265's very file
            decoded = hb.decode(payload, settings)
            assert np.array_equal(decoded, decode_array(heif, "hevc", grey=len(shape) == 2))


def test_sent_parameter_sets_are_spliced_back_exactly():
    # mode 1 (parameter sets that would differ from the regenerated ones): an hvcC box of another length
    # moves everything after it; the rebuilt file must still be x265's, with iloc's offset following mdat
    image = np.random.default_rng(1).integers(0, 256, (30, 50), np.uint8)
    heif = encode_array(image, "hevc", qp=30)
    mine, template = hb._layout(heif), hb._template(hb.settings_of(image, 30, "420"))
    assert hb._rebuild(template, mine.nal_units, mine.hvcc_body) == heif
    longer = hb._rebuild(template, mine.nal_units, mine.hvcc_body + b"\0\0\0")
    assert len(longer) == len(heif) + 3 and hb._layout(longer).nal_units == mine.nal_units
    payload = bytes([hb.MODE_PARAMETER_SETS]) + len(mine.hvcc_body).to_bytes(2, "big") + mine.hvcc_body + mine.nal_units
    assert np.array_equal(hb.decode(payload, hb.settings_of(image, 30, "420")), decode_array(heif, "hevc", grey=True))


def test_feature_streams_are_as_small_as_bpg_and_decode_like_heif():
    zeros = torch.zeros(512, 14, 14)
    # all-zero VGG16 pool4 at QP 35: 24 header + 8 range + 1 mode + the slice NAL unit (4-byte length + 54)
    whole = FeatureCodec("hevc", 35).encode(zeros)
    assert len(whole) <= 130
    assert len(FeatureCodec("heif", 35).encode(zeros)) - len(whole) > 300  # the HEIF container it drops
    features = torch.relu(torch.randn(32, 28, 28, generator=torch.Generator().manual_seed(0))) * 2
    for qp in (35, 40, 50):
        bare, heif = FeatureCodec("hevc", qp).encode(features), FeatureCodec("heif", qp).encode(features)
        assert torch.equal(decode(bare), decode(heif))  # the same HEVC coding, only the container differs
        assert len(bare) < len(heif) - 300
    sizes = [len(FeatureCodec("hevc", qp).encode(features)) for qp in (35, 40, 50)]
    assert sizes == sorted(sizes, reverse=True)


def test_bad_payloads_are_named():
    settings = hb.Settings(16, 16, True, 8, "420", 30)
    with pytest.raises(hb.HevcStreamError, match="empty"):
        hb.decode(b"", settings)
    with pytest.raises(hb.HevcStreamError, match="mode"):
        hb.decode(b"\x07abc", settings)
    with pytest.raises(hb.HevcStreamError, match="NAL unit 0 claims"):
        hb.decode(b"\x00\x00\x00\x01\x00\x28\x01", settings)
    with pytest.raises(hb.HevcStreamError, match="type 32"):  # a VPS where a slice must be
        hb.decode(b"\x00\x00\x00\x00\x03\x40\x01\x0c", settings)
    with pytest.raises(hb.HevcStreamError, match="QP"):
        hb.decode(b"\x00", hb.Settings(16, 16, True, 8, "420", 60))
    other = hb.encode(np.zeros((16, 24), np.uint8), 30)  # a slice of another size
    with pytest.raises(ValueError):
        hb.decode(b"\x02" + encode_array(np.zeros((16, 24), np.uint8), "hevc", qp=30), settings)
    try:  # a slice coded for 16×24 under a 16×16 parameter set: refused, or a 16×16 image
        shape = hb.decode(other, settings).shape
    except ValueError:
        shape = None
    assert shape in (None, (16, 16))
