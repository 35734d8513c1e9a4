"""The two halves run with ONNX Runtime, from an export directory alone (no Lightning, no training code).

:class:`EdgeRuntime` turns an image (uint8 RGB) into the wire bytes: pre-processing as the manifest
says, the edge graph (k times for the recurrent codec, states fed back), then :mod:`deploy.streams`.
:class:`ServerRuntime` turns wire bytes into the prediction: the stream checked and read by
:mod:`coding`, the server graph(s), the answer as a JSON-ready dict (:func:`prediction_of`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from deploy.manifest import read_manifest
from deploy.streams import read_feature_stream, read_rnn_stream, write_feature_stream, write_rnn_stream

STRIDE = 16


def session(directory: Path, graph: dict, threads: int = 1):
    """An ONNX Runtime CPU session of one graph of the manifest."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(directory / graph["file"]), options, providers=["CPUExecutionProvider"])


def image_input(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) → float32 (1, 3, H, W) = x / 255."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image (H, W, 3), got {getattr(image, 'shape', image)}")
    return (image.astype(np.float32) / 255).transpose(2, 0, 1)[None].copy()


def prepare_image(image: np.ndarray, manifest: dict) -> np.ndarray:
    """The edge's input image: resized (Pillow, bilinear) to the manifest's fixed ``input.size`` when
    the network has one (VGG16's classifier head takes one feature size only), else unchanged."""
    size = (manifest.get("input") or {}).get("size")
    if not size or tuple(image.shape[:2]) == tuple(size):
        return image
    from PIL import Image

    return np.array(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def run(graph, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run a session on the feeds it has inputs for (an exporter drops inputs a graph does not use,
    e.g. ``recon`` of a one-shot decoder step)."""
    names = {i.name for i in graph.get_inputs()}
    return graph.run(None, {k: v for k, v in feeds.items() if k in names})


def pad_to_multiple(x: np.ndarray, multiple: int = STRIDE) -> np.ndarray:
    """Replicate the bottom rows and right columns up to multiples of ``multiple`` (as the codec does)."""
    ph, pw = (-x.shape[-2]) % multiple, (-x.shape[-1]) % multiple
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="edge")


def zero_states(specs: list[dict], batch: int, height: int, width: int) -> dict[str, np.ndarray]:
    """The first iteration's states of a padded (height, width) input."""
    return {
        s["name"]: np.zeros((batch, s["channels"], height // s["stride"], width // s["stride"]), np.float32)
        for s in specs
    }


def ssd_detections(bbox_regression: np.ndarray, cls_logits: np.ndarray, anchors: np.ndarray, settings: dict) -> dict:
    """The SSD head's raw outputs of one image → ``{"boxes", "scores", "labels"}`` with torchvision's own
    post-processing (``SSD.postprocess_detections``: box decoding, clipping, per-class score threshold and
    top-k, batched NMS), boxes divided by the network's input side (xyxy in [0, 1] of the image)."""
    from types import SimpleNamespace

    import torch
    from torchvision.models.detection._utils import BoxCoder
    from torchvision.models.detection.ssd import SSD

    size = settings["size"]
    config = SimpleNamespace(
        box_coder=BoxCoder(weights=tuple(settings["box_coder_weights"])),
        **{k: settings[k] for k in ("score_thresh", "nms_thresh", "detections_per_img", "topk_candidates")},
    )
    outputs = {"bbox_regression": torch.from_numpy(bbox_regression[:1]), "cls_logits": torch.from_numpy(cls_logits[:1])}
    with torch.no_grad():
        found = SSD.postprocess_detections(config, outputs, [torch.from_numpy(anchors)], [(size, size)])[0]
    return {
        "boxes": (found["boxes"] / size).tolist(),
        "scores": found["scores"].tolist(),
        "labels": found["labels"].tolist(),
    }


def prediction_of(output, task: str) -> dict:
    """What the server answers: classification ``{label, top5, logits}``; reconstruction the decoded
    image rounded to uint8 (``height``, ``width``, ``image_sha256``); detection (``output`` already the
    detections) ``{boxes, scores, labels}``."""
    if task == "detection":
        return output
    if task == "classification":
        logits = output[0].astype(np.float64)
        order = np.argsort(-logits, kind="stable")
        return {"label": int(order[0]), "top5": [int(i) for i in order[:5]], "logits": logits.tolist()}
    image = np.round(np.clip(output[0], 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
    return {
        "height": int(image.shape[0]),
        "width": int(image.shape[1]),
        "image_sha256": hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest(),
    }


class EdgeRuntime:
    """The edge half: ``encode(image) -> bytes`` (and :attr:`last_sent`, the codes or features sent)."""

    def __init__(self, directory: str | Path, threads: int = 1) -> None:
        self.directory = Path(directory)
        self.manifest = m = read_manifest(self.directory)
        self.wire = m["wire"]
        role = "edge_step" if m["loop"] else "edge"
        self.session = session(self.directory, m["graphs"][role], threads)
        self.last_sent: np.ndarray | None = None

    def encode(self, image: np.ndarray) -> bytes:
        m = self.manifest
        x = image_input(prepare_image(image, m))
        if m["loop"] is None:
            (features,) = run(self.session, {"image": x})
            self.last_sent = features
            return write_feature_stream(features, self.wire["settings"])
        height, width = x.shape[-2:]
        centred = pad_to_multiple(x) - np.float32(0.5)
        hp, wp = centred.shape[-2:]
        enc = zero_states(m["states"]["encoder"], 1, hp, wp)
        codes = []
        if m["loop"] == "closed":
            dec = zero_states(m["states"]["decoder"], 1, hp, wp)
            recon = np.zeros_like(centred)
            names = list(enc) + list(dec)
            for _ in range(m["iterations"]):
                out = run(self.session, {"target": centred, "recon": recon, **enc, **dec})
                codes.append(out[0])
                recon = out[1]
                states = dict(zip(names, out[2:], strict=True))
                enc, dec = {n: states[n] for n in enc}, {n: states[n] for n in dec}
        else:
            names = list(enc)
            for _ in range(m["iterations"]):
                out = run(self.session, {"centred": centred, **enc})
                codes.append(out[0])
                enc = dict(zip(names, out[1:], strict=True))
        self.last_sent = np.stack(codes)
        return write_rnn_stream(self.last_sent, (height, width), self.wire["codec"], self.wire["coding"])


class ServerRuntime:
    """The server half: ``decode(stream)`` → logits or the decoded image; ``predict(stream)`` → the answer."""

    def __init__(self, directory: str | Path, threads: int = 1, max_pixels: int = 1 << 26) -> None:
        self.directory = Path(directory)
        self.manifest = m = read_manifest(self.directory)
        self.max_pixels = max_pixels
        graphs = m["graphs"]
        self.anchors = None
        if "detection" in m:
            from deploy.manifest import sha256_file

            entry = m["detection"]["anchors"]
            path = self.directory / entry["file"]
            if not path.is_file() or sha256_file(path) != entry["sha256"]:
                raise ValueError(f"{path}: missing, or its SHA-256 differs from the manifest's")
            self.anchors = np.load(path, allow_pickle=False)
        self.decoder = session(self.directory, graphs["decoder_step"], threads) if "decoder_step" in graphs else None
        self.head = session(self.directory, graphs["head"], threads) if "head" in graphs else None

    def outputs(self, stream: bytes) -> list[np.ndarray]:
        """The server graphs' raw outputs for ``stream`` (the decoded image alone for the compressor)."""
        m = self.manifest
        if m["wire"]["format"] == "SCVF":
            return run(self.head, {"features": read_feature_stream(stream)})
        codes, info = read_rnn_stream(stream, m["wire"]["codec"], self.max_pixels)
        if self.decoder is None:  # decoder removed: the codes go into the head
            if info.iterations != m["iterations"]:
                raise ValueError(
                    f"this model classifies k={m['iterations']} iterations of codes; the stream has {info.iterations}"
                )
            return run(self.head, {"codes": codes})
        batch, _, h, w = codes.shape[1:]
        recon = np.zeros((batch, 3, h * STRIDE, w * STRIDE), np.float32)
        dec = zero_states(m["states"]["decoder"], batch, h * STRIDE, w * STRIDE)
        names = list(dec)
        for step in codes:
            out = run(self.decoder, {"codes": step, "recon": recon, **dec})
            recon = out[0]
            dec = dict(zip(names, out[1:], strict=True))
        image = np.clip(recon[..., : info.height, : info.width] + np.float32(0.5), 0, 1)
        if self.head is None:
            return [image]
        if m["server_input"] == "uint8":
            image = np.round(image * np.float32(255)).astype(np.uint8).astype(np.float32) / np.float32(255)
        return run(self.head, {"image": np.ascontiguousarray(image)})

    def decode(self, stream: bytes):
        """Logits, the decoded image, or (detection) the detections of ``stream``."""
        outputs = self.outputs(stream)
        if self.anchors is not None:
            return ssd_detections(*outputs, self.anchors, self.manifest["detection"])
        return outputs[0]

    def predict(self, stream: bytes) -> dict:
        return prediction_of(self.decode(stream), self.manifest["task"])
