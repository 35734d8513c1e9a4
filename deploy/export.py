"""``splitcv export CKPT --out DIR``: a trained split model → ONNX halves + ``manifest.json``.

Per method (the checkpoint says which; ``--method`` overrides the guess):

================================  =========================================  ===========================================
method                            edge graph(s)                              server graph(s)
================================  =========================================  ===========================================
``rnn_compressor``                ``edge_step``: encoder + binarizer +       ``decoder_step``: decoder
                                  decoder step (closed residual loop)
``decoded_recognition``           ``edge_step`` (the frozen compressor)      ``decoder_step`` + ``head`` (recogniser on
                                                                             the decoded image rounded to uint8)
``code_recognition``              ``edge_step``: encoder + binarizer, open   ``head``: adapter + ResNet tail (codes →
(decoder removed)                 loop, k iterations                         logits)
``code_recognition``              ``edge_step`` (closed loop)                ``decoder_step`` + ``head`` (ResNet-18)
(conventional)
``shared_trunk``                  ``edge``: normalisation + frozen front     ``head``: the rest of the classifier
================================  =========================================  ===========================================

Recurrent graphs are *one iteration* with the states as explicit inputs and outputs (the runtime runs
them k times); every graph has a dynamic batch and image size; opset 17; each file is checked with
``onnx.checker`` (full check, shape inference included). This module is the only part of ``deploy``
that imports the training code (to read the checkpoint); the runtimes read only the export directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deploy import halves
from deploy.manifest import MANIFEST_VERSION, METHODS, sha256_file, write_manifest
from deploy.runtime import prediction_of, prepare_image
from deploy.streams import write_rnn_stream

OPSET = 17
EXPORT_SIZE = 64
"""Side of the example image the graphs are traced with (any size works afterwards: dynamic axes)."""
CLASS_METHODS = {
    "RNNCompressor": "rnn_compressor",
    "CodeRecognition": "code_recognition",
    "CompressedImageRecognition": "decoded_recognition",
    "SharedTrunkTask": "shared_trunk",
}
DEFAULT_FEATURE_CODEC = {"codec": "png", "quality": None, "layout": "r_channel", "bits": 8}
"""Feature codec of a shared-trunk export whose checkpoint has none (lossless PNG of 8-bit levels)."""


def _load_raw(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})") from error


def guess_method(checkpoint: dict, path: Path) -> str:
    """The method of a Lightning checkpoint, from its class path or its state-dict keys."""
    hparams = checkpoint.get("hyper_parameters") or {}
    class_path = str(hparams.get("_class_path", ""))
    if class_path.rsplit(".", 1)[-1] in CLASS_METHODS:
        return CLASS_METHODS[class_path.rsplit(".", 1)[-1]]
    keys = list((checkpoint.get("state_dict") or {}).keys())
    if any(k.startswith("codec.encoder.") for k in keys):
        return "rnn_compressor"
    if any(k.startswith("model.codec.encoder.") for k in keys):
        return "code_recognition"
    if any(k.startswith("compressor.encoder.") for k in keys):
        return "decoded_recognition"
    if "trunk" in hparams and "task" in hparams:
        return "shared_trunk"
    raise ValueError(f"{path}: not a checkpoint of a split method ({', '.join(METHODS)}); pass --method")


def load_module(path: Path, method: str) -> nn.Module:
    """The LightningModule of ``method`` from ``path`` on the CPU in ``eval()``; pretrained-weight
    arguments are switched off (the checkpoint holds every weight; nothing is downloaded)."""
    if method == "rnn_compressor":
        from lightning_modules.rnn_compressor import RNNCompressor as cls

        overrides: dict[str, Any] = {}
    elif method == "code_recognition":
        from lightning_modules.code_recognition import CodeRecognition as cls

        overrides = {"pretrained_trunk": False, "init_compressor_from": None}
    elif method == "decoded_recognition":
        from lightning_modules.compressed_image_recognition import CompressedImageRecognition as cls

        overrides = {"weights": None, "detector_weights_backbone": None, "init_compressor_from": None}
    else:
        from lightning_modules.shared_trunk import SharedTrunkTask as cls

        overrides = {"weights": None}
    # weights_only: _load_raw has already read this file with weights_only=True
    module = cls.load_from_checkpoint(path, map_location="cpu", weights_only=True, **overrides)
    return module.eval()


@dataclasses.dataclass
class SplitParts:
    """The torch modules of one export and how the runtimes use them."""

    method: str
    task: str  # "reconstruction" | "classification"
    iterations: int
    loop: str | None  # "closed" | "open" | None (no recurrent codec)
    server_input: str | None  # decoder → head: "clamp" (float in [0, 1]) or "uint8" (rounded)
    wire: dict
    graphs: dict[str, nn.Module]
    cell: str | None = None
    num_classes: int | None = None
    torch_module: nn.Module | None = None  # the LightningModule (PyTorch reference)
    input_size: int | None = None  # a fixed square input side (the network takes no other)
    detection_size: int | None = None  # SSD: the side the edge graph resizes every image to


def _codec_wire(cell: str, width: float, bits: int, reconstruction: str, coding: str) -> dict:
    return {
        "format": "SCVR",
        "version": 2,
        "coding": coding,
        "codec": {"cell": cell, "width": float(width), "bits": int(bits), "reconstruction": reconstruction},
    }


def split_parts(module: nn.Module, method: str, iterations: int | None = None, feature_codec: dict | None = None):
    """Build the export halves of a loaded LightningModule."""
    hp = module.hparams
    if method in ("rnn_compressor", "decoded_recognition"):
        codec = module.codec if method == "rnn_compressor" else module.compressor
        k = iterations or (module.iterations if method == "rnn_compressor" else hp.iterations)
        additive = codec.reconstruction == "additive"
        graphs = {
            "edge_step": halves.ClosedLoopEdgeStep(codec.encoder, codec.binarizer, codec.decoder, codec.cell, additive),
            "decoder_step": halves.DecoderStep(codec.decoder, codec.cell, additive),
        }
        coding = "smallest" if method == "rnn_compressor" else hp.stream_coding
        task, num_classes, server_input = "reconstruction", None, None
        detection_size = None
        if method == "decoded_recognition":
            task, num_classes, server_input = "classification", hp.num_classes, "uint8"
            graphs["head"] = module.recogniser
            if hp.task == "detection":
                detection_size = hp.detector_image_size
                graphs["head"] = halves.SSDNetwork(module.recogniser, detection_size)
                task = "detection"
        wire = _codec_wire(codec.cell, codec.width, codec.bits, codec.reconstruction, coding)
        parts = SplitParts(method, task, k, "closed", server_input, wire, graphs, codec.cell, num_classes, module)
        parts.detection_size = detection_size
        return parts
    if method == "code_recognition":
        net = module.model
        if iterations not in (None, net.iterations):
            raise ValueError(f"this CodeRecognition model was trained for k={net.iterations} iterations")
        wire = _codec_wire(hp.codec_cell, hp.codec_width, hp.bits, hp.codec_reconstruction, "smallest")
        if net.has_decoder:
            codec = net.codec
            additive = codec.reconstruction == "additive"
            graphs = {
                "edge_step": halves.ClosedLoopEdgeStep(
                    codec.encoder, codec.binarizer, codec.decoder, codec.cell, additive
                ),
                "decoder_step": halves.DecoderStep(codec.decoder, codec.cell, additive),
                "head": nn.Sequential(net.normalize, net.classifier),
            }
            return SplitParts(
                method, "classification", net.iterations, "closed", "clamp", wire, graphs, hp.codec_cell,
                hp.num_classes, module,
            )  # fmt: skip
        graphs = {
            "edge_step": halves.OpenLoopEdgeStep(net.codec.encoder, net.codec.binarizer, hp.codec_cell),
            "head": halves.CodesHead(net),
        }
        return SplitParts(
            method, "classification", net.iterations, "open", None, wire, graphs, hp.codec_cell, hp.num_classes, module
        )
    if method == "shared_trunk":
        model = module.model
        settings = feature_codec or (_feature_settings(module.codec) if module.codec is not None else None)
        settings = settings or dict(DEFAULT_FEATURE_CODEC)
        wire = {"format": "SCVF", "settings": settings}
        if module.is_detection:
            size = hp.image_size
            graphs = {
                "edge": halves.DetectionEdge(
                    model.transform.image_mean, model.transform.image_std, size, model.backbone.trunk.edge
                ),
                "head": halves.DetectionHead(model),
            }
            parts = SplitParts(method, "detection", 1, None, None, wire, graphs, None, hp.num_classes or 21, module)
            parts.detection_size = size
            return parts
        graphs = {"edge": halves.FeatureEdge(model.normalize, model.edge), "head": model.head}
        num_classes = model.head[-1][-1].out_features
        # VGG16's head ends in AdaptiveAvgPool2d((7, 7)), which ONNX exports for one input size only
        fixed = module.hparams.image_size if module.hparams.trunk == "vgg16" else None
        if fixed is not None and fixed % 224:
            raise ValueError(
                f"VGG16's head pools to 7×7, which ONNX exports only when the pool5 map is a multiple of 7: "
                f"image_size={fixed} is not a multiple of 224"
            )
        return SplitParts(method, "classification", 1, None, None, wire, graphs, None, num_classes, module, fixed)
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


def _ssd_of(parts: SplitParts) -> nn.Module:
    m = parts.torch_module
    return m.recogniser if parts.method == "decoded_recognition" else m.model


@torch.no_grad()
def _detection_settings(parts: SplitParts, out: Path) -> dict:
    """The SSD's anchors at its input size (``anchors.npy``) and post-processing settings."""
    from torchvision.models.detection.image_list import ImageList

    ssd, size = _ssd_of(parts), parts.detection_size
    tensors = torch.zeros(1, 3, size, size)
    features = list(ssd.backbone(tensors).values())
    anchors = ssd.anchor_generator(ImageList(tensors, [(size, size)]), features)[0].numpy().astype(np.float32)
    np.save(out / "anchors.npy", anchors)
    return {
        "size": size,
        "anchors": {"file": "anchors.npy", "sha256": sha256_file(out / "anchors.npy"), "shape": list(anchors.shape)},
        "box_coder_weights": list(ssd.box_coder.weights),
        "score_thresh": ssd.score_thresh,
        "nms_thresh": ssd.nms_thresh,
        "detections_per_img": ssd.detections_per_img,
        "topk_candidates": ssd.topk_candidates,
        "boxes": "xyxy, normalised by the image's width and height",
    }


def _feature_settings(codec: Any) -> dict:
    return dataclasses.asdict(codec)


# ------------------------------------------------------------------------------------------- ONNX
def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def export_graph(
    module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], dynamic: dict
) -> dict:
    """Export ``module`` traced on ``args`` to ``path``; check it; return its manifest entry."""
    import onnx

    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    return {
        "file": path.name,
        "sha256": sha256_file(path),
        "opset": OPSET,
        "inputs": [{"name": v.name, "shape": _dims(v)} for v in model.graph.input],
        "outputs": [{"name": v.name, "shape": _dims(v)} for v in model.graph.output],
    }


def _image_axes(name: str) -> dict:
    return {0: "batch", 2: f"{name}_height", 3: f"{name}_width"}


def _state_info(states: list[torch.Tensor], names: list[str], padded: int) -> list[dict]:
    return [
        {"name": n, "channels": int(s.shape[1]), "stride": padded // int(s.shape[2])}
        for n, s in zip(names, states, strict=True)
    ]


def export_parts(parts: SplitParts, out: Path) -> dict:
    """Export every graph of ``parts`` into ``out``; returns the manifest's ``graphs`` and ``states``."""
    side = EXPORT_SIZE
    x = torch.rand(1, 3, side, side) - 0.5
    graphs: dict[str, dict] = {}
    states: dict[str, list[dict]] = {}
    cell = parts.cell
    if parts.loop is not None:
        enc_names = halves.state_names("enc", cell, halves.ENCODER_CELLS)
        dec_names = halves.state_names("dec", cell, halves.DECODER_CELLS)
        step = parts.graphs["edge_step"]
        if parts.loop == "closed":
            with torch.no_grad():  # one real step from zero states, for the state shapes
                encoder, decoder = step.encoder, step.decoder
                _, enc = encoder(x, None)
                codes = step.binarizer(_)
                _, dec = decoder(codes, None)
            enc_s, dec_s = halves.flatten_states(enc), halves.flatten_states(dec)
            zeros = [torch.zeros_like(s) for s in (*enc_s, *dec_s)]
            names = ["target", "recon", *enc_names, *dec_names]
            outs = ["codes", "recon_out", *[n + "_out" for n in (*enc_names, *dec_names)]]
            dynamic = {n: _image_axes(n) for n in names} | {n: _image_axes(n) for n in outs}
            graphs["edge_step"] = export_graph(
                step, (x, torch.zeros_like(x), *zeros), out / "edge_step.onnx", names, outs, dynamic
            )
            states["encoder"] = _state_info(enc_s, enc_names, side)
            states["decoder"] = _state_info(dec_s, dec_names, side)
            dstep = parts.graphs["decoder_step"]
            names = ["codes", "recon", *dec_names]
            outs = ["recon_out", *[n + "_out" for n in dec_names]]
            dynamic = {n: _image_axes(n) for n in names + outs}
            graphs["decoder_step"] = export_graph(
                dstep,
                (codes, torch.zeros_like(x), *[torch.zeros_like(s) for s in dec_s]),
                out / "decoder_step.onnx",
                names,
                outs,
                dynamic,
            )
        else:
            with torch.no_grad():
                features, enc = step.encoder(x, None)
                codes = step.binarizer(features)
            enc_s = halves.flatten_states(enc)
            names = ["centred", *enc_names]
            outs = ["codes", *[n + "_out" for n in enc_names]]
            dynamic = {n: _image_axes(n) for n in names + outs}
            graphs["edge_step"] = export_graph(
                step, (x, *[torch.zeros_like(s) for s in enc_s]), out / "edge_step.onnx", names, outs, dynamic
            )
            states["encoder"] = _state_info(enc_s, enc_names, side)
        if "head" in parts.graphs:
            head = parts.graphs["head"]
            if parts.loop == "open":
                example = torch.sign(torch.randn(parts.iterations, 1, codes.shape[1], *codes.shape[-2:])) + 0.0
                example[example == 0] = 1.0
                dynamic = {"codes": {1: "batch", 3: "codes_height", 4: "codes_width"}, "logits": {0: "batch"}}
                graphs["head"] = export_graph(head, (example,), out / "head.onnx", ["codes"], ["logits"], dynamic)
            elif parts.task == "detection":
                outs = ["bbox_regression", "cls_logits"]
                dynamic = {"image": _image_axes("image")} | {n: {0: "batch"} for n in outs}
                graphs["head"] = export_graph(head, (x + 0.5,), out / "head.onnx", ["image"], outs, dynamic)
            else:
                dynamic = {"image": _image_axes("image"), "logits": {0: "batch"}}
                graphs["head"] = export_graph(head, (x + 0.5,), out / "head.onnx", ["image"], ["logits"], dynamic)
    elif parts.detection_size is not None:
        edge, head = parts.graphs["edge"], parts.graphs["head"]
        with torch.no_grad():
            features = edge(x + 0.5)
        graphs["edge"] = export_graph(
            edge, (x + 0.5,), out / "edge.onnx", ["image"], ["features"],
            {"image": _image_axes("image"), "features": {0: "batch"}},
        )  # fmt: skip
        graphs["head"] = export_graph(
            head, (features,), out / "head.onnx", ["features"], ["bbox_regression", "cls_logits"],
            {"features": {0: "batch"}, "bbox_regression": {0: "batch"}, "cls_logits": {0: "batch"}},
        )  # fmt: skip
    else:
        edge, head = parts.graphs["edge"], parts.graphs["head"]
        fixed = parts.input_size is not None
        image = torch.rand(1, 3, parts.input_size, parts.input_size) if fixed else x + 0.5
        with torch.no_grad():
            features = edge(image)
        axes = (lambda name: {0: "batch"}) if fixed else _image_axes
        graphs["edge"] = export_graph(
            edge, (image,), out / "edge.onnx", ["image"], ["features"],
            {"image": axes("image"), "features": axes("features")},
        )  # fmt: skip
        graphs["head"] = export_graph(
            head, (features,), out / "head.onnx", ["features"], ["logits"],
            {"features": axes("features"), "logits": {0: "batch"}},
        )  # fmt: skip
    return {"graphs": graphs, "states": states}


# ----------------------------------------------------------------------------- PyTorch reference
def image_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) → float32 (1, 3, H, W) in [0, 1] (``x / 255``, as the runtimes do)."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255).unsqueeze(0)


@torch.no_grad()
def torch_edge(parts: SplitParts, image: np.ndarray) -> bytes:
    """The stream the PyTorch model sends for ``image`` (uint8 (H, W, 3)), written by :mod:`coding`."""
    from coding import rnn_bitstream as rb

    x = image_tensor(prepare_image(image, {"input": {"size": parts.input_size and [parts.input_size] * 2}}))
    m = parts.torch_module
    size = tuple(x.shape[-2:])
    if parts.method == "rnn_compressor":
        return rb.compress(m.codec, x, parts.iterations, parts.wire["coding"])
    if parts.method == "decoded_recognition":
        return rb.compress(m.compressor, x, parts.iterations, parts.wire["coding"])
    if parts.method == "code_recognition":
        codes = m.model.encode(x)
        if m.model.has_decoder:
            return rb.compress_codes(m.model.codec, codes, size, parts.wire["coding"])
        return write_rnn_stream(codes.numpy(), size, parts.wire["codec"], parts.wire["coding"])
    from coding.feature_codec import FeatureCodec

    if parts.detection_size is not None:
        return FeatureCodec(**parts.wire["settings"]).encode(parts.graphs["edge"](x))
    return FeatureCodec(**parts.wire["settings"]).encode(m.model.encode(x))


@torch.no_grad()
def torch_detections(parts: SplitParts, image: np.ndarray) -> dict:
    """The PyTorch SSD end to end on ``image``, its wire through the export's feature codec; boxes xyxy
    divided by the image's width and height."""
    from coding.feature_codec import FeatureCodec
    from models.split_backbones import split_trunk_of

    h, w = image.shape[:2]
    if parts.method == "decoded_recognition":  # the detector on the image decoded from the stream, as uint8
        from coding import rnn_bitstream as rb
        from coding.image_codecs import to_float_chw, to_uint8_hwc

        stream = torch_edge(parts, image)
        decoded = to_float_chw(to_uint8_hwc(rb.decompress(parts.torch_module.compressor, stream)[0]))
        found = parts.torch_module.recogniser([decoded])[0]
    else:
        ssd = parts.torch_module.model
        wire = split_trunk_of(ssd).wire
        wire.codec = FeatureCodec(**parts.wire["settings"])
        try:
            found = ssd([image_tensor(image)[0]])[0]
        finally:
            wire.codec = None
    scale = torch.tensor([w, h, w, h], dtype=found["boxes"].dtype)
    return {
        "boxes": (found["boxes"] / scale).tolist(),
        "scores": found["scores"].tolist(),
        "labels": found["labels"].tolist(),
    }


@torch.no_grad()
def torch_server(parts: SplitParts, stream: bytes) -> np.ndarray:
    """What the PyTorch model's server computes from ``stream``: logits (1, classes), or the decoded
    image float32 (1, 3, H, W) in [0, 1] for the compressor."""
    from coding import rnn_bitstream as rb
    from coding.image_codecs import to_float_chw, to_uint8_hwc

    m = parts.torch_module
    if parts.method == "rnn_compressor":
        return rb.decompress(m.codec, stream).numpy()
    if parts.method == "decoded_recognition":
        decoded = to_float_chw(to_uint8_hwc(rb.decompress(m.compressor, stream)[0])).unsqueeze(0)
        if parts.detection_size is not None:
            return tuple(t.numpy() for t in parts.graphs["head"](decoded))
        return m.recogniser(decoded).numpy()
    if parts.method == "code_recognition":
        if m.model.has_decoder:
            codes, info = rb.read_codes(m.model.codec, stream)
            return m.model.classify_codes(codes, (info.height, info.width)).numpy()
        from deploy.streams import read_rnn_stream

        codes, _ = read_rnn_stream(stream, parts.wire["codec"])
        return m.model.classify_codes(torch.from_numpy(codes)).numpy()
    from coding.feature_codec import decode

    if parts.detection_size is not None:
        head = parts.graphs["head"]
        return tuple(t.numpy() for t in head(decode(stream).unsqueeze(0)))
    return m.model.head(decode(stream).unsqueeze(0)).numpy()


# ----------------------------------------------------------------------------------------- main
def export(
    checkpoint: str | Path,
    out: str | Path,
    method: str | None = None,
    iterations: int | None = None,
    feature_codec: dict | None = None,
    reference_images: list[Path] | None = None,
) -> dict:
    """Export ``checkpoint`` into ``out`` (created; an existing export there is replaced). Returns the manifest.

    ``reference_images``: images whose PyTorch streams and predictions go to ``reference.json`` (what
    ``splitcv edge --reference`` compares with).
    """
    from deploy.images import list_images, read_image

    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / "manifest.json").is_file():
        raise FileExistsError(f"{out} exists and is not an export directory (no manifest.json); choose another --out")
    images = [
        (p, read_image(p)) for p in (list_images(reference_images) if reference_images else [])
    ]  # bad images fail before any work
    raw = _load_raw(path)
    method = method or guess_method(raw, path)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    module = load_module(path, method)
    parts = split_parts(module, method, iterations, feature_codec)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    exported = export_parts(parts, tmp)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "method": method,
        "task": parts.task,
        "num_classes": parts.num_classes,
        "checkpoint": {"file": path.name, "sha256": sha256_file(path)},
        "input": {
            "color": "RGB",
            "layout": "NCHW",
            "dtype": "float32",
            "scale": "x = uint8 / 255",
            "pad_to_multiple": 16 if parts.loop else None,
            "pad_mode": "replicate (bottom, right)" if parts.loop else None,
            "centre": 0.5 if parts.loop else None,
            "size": [parts.input_size] * 2 if parts.input_size else None,
            "resize": "Pillow bilinear to size" if parts.input_size else None,
        },
        "iterations": parts.iterations,
        "loop": parts.loop,
        "server_input": parts.server_input,
        "wire": parts.wire,
        **exported,
    }
    if parts.detection_size is not None:
        manifest["detection"] = _detection_settings(parts, tmp)
    if images:
        reference = {}
        for image_path, image in images:
            stream = torch_edge(parts, image)
            reference[image_path.name] = {
                "bytes": len(stream),
                "stream_sha256": hashlib.sha256(stream).hexdigest(),
                "prediction": torch_detections(parts, image)
                if parts.detection_size is not None
                else prediction_of(torch_server(parts, stream), parts.task),
            }
        (tmp / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    write_manifest(tmp, manifest)
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)
    return manifest
