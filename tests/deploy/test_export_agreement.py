"""splitcv export for every method: checked ONNX graphs and manifest, and the ONNX halves measured against
the PyTorch model on the fixture images (codes, bytes, predictions, logits, cross decoding)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from coding.rnn_bitstream import stream_bytes_per_image
from deploy.export import load_module, split_parts, torch_detections, torch_edge, torch_server
from deploy.images import read_image
from deploy.manifest import ManifestError, read_manifest, sha256_file
from deploy.runtime import EdgeRuntime, ServerRuntime, image_input, pad_to_multiple
from tests.deploy.conftest import CASES, METHODS

pytestmark = pytest.mark.usefixtures("one_thread")

LOGIT_TOLERANCE = 1e-4
"""Largest |ONNX logit − PyTorch logit| allowed on the same stream (measured: below 1e-6 at these widths;
ONNX Runtime's convolutions sum in another order than PyTorch's, so float32 results differ in the last bits)."""
IMAGE_TOLERANCE = 1e-5
"""Largest |ONNX − PyTorch| decoded pixel value (in [0, 1]) on the same stream."""
FEATURE_LEVEL_TOLERANCE = 1e-3
"""Largest fraction of 8-bit feature levels that may differ between the ONNX and PyTorch edges (see
``test_edge_sends_what_pytorch_sends``)."""


@pytest.fixture(scope="module")
def images(fixture_images):
    return [read_image(p) for p in fixture_images]


def parts_of(case, demo_checkpoint):
    """The PyTorch model of a case, split as the export splits it."""
    method = METHODS[case]
    return split_parts(load_module(demo_checkpoint(case), method), method)


@pytest.mark.parametrize("case", list(CASES))
def test_export_writes_checked_graphs_and_a_manifest(case, exported, demo_checkpoint):
    directory = exported(case)
    manifest = read_manifest(directory)
    assert manifest["checkpoint"]["sha256"] == sha256_file(demo_checkpoint(case))
    assert manifest["method"] == METHODS[case]  # read from the checkpoint alone
    for role, graph in manifest["graphs"].items():
        model = onnx.load(str(directory / graph["file"]))
        onnx.checker.check_model(model, full_check=True)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
        names = [i.name for i in model.graph.input]
        assert [i["name"] for i in graph["inputs"]] == names, role
        assert "batch" in graph["inputs"][0]["shape"], role  # dynamic batch everywhere
    if manifest["loop"] is not None:  # recurrent steps: every state in and out, dynamic image size
        step = manifest["graphs"]["edge_step"]
        inputs = {i["name"]: i["shape"] for i in step["inputs"]}
        outputs = {o["name"] for o in step["outputs"]}
        for state in manifest["states"]["encoder"]:
            assert state["name"] in inputs and state["name"] + "_out" in outputs
            assert isinstance(inputs[state["name"]][2], str) and isinstance(inputs[state["name"]][3], str)
        assert manifest["wire"]["format"] == "SCVR" and manifest["wire"]["version"] == 2


def test_a_tampered_graph_or_manifest_is_refused_naming_the_file(exported, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(exported("rnn_compressor"), copy)
    with open(copy / "decoder_step.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ManifestError, match="decoder_step.onnx"):
        ServerRuntime(copy)
    (copy / "manifest.json").write_text(json.dumps({"manifest_version": 99}))
    with pytest.raises(ManifestError, match="manifest_version 99"):
        EdgeRuntime(copy)
    with pytest.raises(ManifestError, match="no manifest"):
        EdgeRuntime(tmp_path)


def pytorch_codes(parts, image: np.ndarray) -> np.ndarray:
    """What the PyTorch model sends before the wire: ±1 codes (T, 1, bits, h, w) or the features."""
    from deploy.runtime import prepare_image

    x = torch.from_numpy(
        image_input(prepare_image(image, {"input": {"size": parts.input_size and [parts.input_size] * 2}}))
    )
    m = parts.torch_module
    with torch.no_grad():
        if parts.method == "rnn_compressor":
            return m.codec.encode(x, parts.iterations).numpy()
        if parts.method == "decoded_recognition":
            return m.compressor.encode(x, parts.iterations).numpy()
        if parts.detection_size is not None:
            return parts.graphs["edge"](x).numpy()
        return m.model.encode(x).numpy()


@pytest.mark.parametrize("case", list(CASES))
def test_edge_sends_what_pytorch_sends(case, exported, demo_checkpoint, images):
    """ONNX edge vs PyTorch edge on the fixture images: for the recurrent codec the ±1 codes (0 differing
    bits here; a bit can only differ where tanh of the binarizer is within float rounding of 0) and the
    stream bytes, equal to the method's own byte metric; for the feature codec the 8-bit levels (a level
    differs where a feature lies within float rounding of a quantiser boundary: ONNX Runtime and PyTorch
    sum convolutions in different orders)."""
    parts = parts_of(case, demo_checkpoint)
    edge = EdgeRuntime(exported(case))
    differing, total = 0, 0
    for image in images:
        stream = edge.encode(image)
        reference = pytorch_codes(parts, image)
        if parts.wire["format"] == "SCVR":
            differing += int((edge.last_sent != reference).sum())
            total += reference.size
            assert stream == torch_edge(parts, image)
            metric = stream_bytes_per_image(torch.from_numpy(reference), parts.wire["coding"])[-1, 0]
            assert len(stream) == int(metric)  # what the method logs as bytes_per_image
        else:
            from coding.minmax_quantization import minmax_quantize

            settings = parts.wire["settings"]
            ours = minmax_quantize(
                torch.from_numpy(edge.last_sent[0]), settings["bits"], settings.get("per_channel", False)
            )
            theirs = minmax_quantize(
                torch.from_numpy(reference[0]), settings["bits"], settings.get("per_channel", False)
            )
            differing += int((ours.levels != theirs.levels).sum())
            total += ours.levels.numel()
            assert np.abs(edge.last_sent - reference).max() < 1e-4
            sizes = parts.torch_module.codec.round_trip(torch.from_numpy(reference))[1]
            assert abs(len(stream) - sizes[0]) <= 0.01 * sizes[0]
    if parts.wire["format"] == "SCVR":
        assert differing == 0, f"{differing}/{total} code bits differ"
    else:
        assert differing / total <= FEATURE_LEVEL_TOLERANCE, f"{differing}/{total} levels differ"


@pytest.mark.parametrize("case", list(CASES))
def test_server_predicts_what_pytorch_predicts_and_streams_cross_over(case, exported, demo_checkpoint, images):
    """The same stream on the ONNX server and on the PyTorch server gives the same label (logits within
    LOGIT_TOLERANCE) or decoded image; a stream of the PyTorch edge decodes on the ONNX server and a
    stream of the ONNX edge on the PyTorch server."""
    parts = parts_of(case, demo_checkpoint)
    directory = exported(case)
    edge, server = EdgeRuntime(directory), ServerRuntime(directory)
    for image in images[:4]:
        for stream in (edge.encode(image), torch_edge(parts, image)):
            if parts.task == "detection":
                for a, b in zip(server.outputs(stream), torch_server(parts, stream), strict=True):
                    assert np.abs(a - b).max() <= LOGIT_TOLERANCE
                continue
            ours, theirs = server.decode(stream), torch_server(parts, stream)
            assert ours.shape == theirs.shape
            if parts.task == "classification":
                assert np.abs(ours - theirs).max() <= LOGIT_TOLERANCE
                assert ours.argmax() == theirs.argmax()
            else:
                assert ours.shape[-2:] == image.shape[:2]
                assert np.abs(ours - theirs).max() <= IMAGE_TOLERANCE


@pytest.mark.parametrize("case", ["shared_trunk_ssd224", "decoded_recognition_ssdlite"])
def test_ssd_server_detects_what_the_pytorch_ssd_detects(case, exported, demo_checkpoint, images):
    """ONNX graphs + torchvision's post-processing on the anchors of the export vs the PyTorch SSD run end
    to end (transform, backbone, head, anchors, NMS, rescaling) on the same stream (shared trunk: SSD224
    behind the split; decoded images: SSDLite on the image decoded from the recurrent codec's stream): the ten best detections
    have the same labels, boxes within 1e-4 of the image side, scores within 1e-5."""
    parts = parts_of(case, demo_checkpoint)
    server = ServerRuntime(exported(case))
    for image in images[:3]:
        ours, theirs = server.predict(torch_edge(parts, image)), torch_detections(parts, image)
        assert len(ours["labels"]) == len(theirs["labels"]) > 0
        assert ours["labels"][:10] == theirs["labels"][:10]
        assert np.abs(np.array(ours["boxes"][:10]) - np.array(theirs["boxes"][:10])).max() <= 1e-4
        assert np.abs(np.array(ours["scores"][:10]) - np.array(theirs["scores"][:10])).max() <= 1e-5


def test_reference_json_holds_pytorch_streams_and_predictions(exported, fixture_images):
    reference = json.loads((exported("code_recognition_from_layer2") / "reference.json").read_text())
    assert sorted(reference) == sorted(p.name for p in fixture_images)
    one = reference[fixture_images[0].name]
    h, w = read_image(fixture_images[0]).shape[:2]
    k, bits = 2, 32
    assert one["bytes"] == 28 + -(-k * bits * -(-h // 16) * -(-w // 16) // 8)  # header + packed codes, by hand
    assert len(one["prediction"]["logits"]) == 10


def test_replicate_padding_matches_the_codec():
    from models.rnn_codec import pad_to_multiple as torch_pad

    x = np.random.default_rng(0).random((1, 3, 35, 18)).astype(np.float32)
    assert np.array_equal(pad_to_multiple(x), torch_pad(torch.from_numpy(x)).numpy())
