"""``manifest.json`` of an exported split model: what each half is, how to feed it, what goes on the wire.

Written by :mod:`deploy.export`, read (and checked: version, method, every graph file present with the
SHA-256 it was written with) by the runtimes before any work. Fields:

- ``manifest_version`` (1), ``method`` (``rnn_compressor``, ``code_recognition``, ``decoded_recognition``,
  ``shared_trunk``), ``task`` (``reconstruction`` / ``classification``), ``num_classes``;
- ``checkpoint``: file name and SHA-256 of the checkpoint exported;
- ``input``: RGB, ``x = uint8 / 255`` (float32), NCHW; for the recurrent codec the edge pads the bottom
  and right edges by replication to a multiple of 16 and centres (``x − 0.5``);
- ``iterations`` and ``loop`` (``closed``: residual coding, the edge runs the decoder step too;
  ``open``: the same centred image every iteration, decoder removed);
- ``wire``: ``format`` (``SCVR`` recurrent codec stream v2, or ``SCVF`` feature stream), its version and
  settings (codec configuration + payload coding, or the feature codec's settings);
- ``graphs``: per role (``edge_step``, ``decoder_step``, ``head``, ``edge``) the ONNX file, its SHA-256,
  opset, and the names and shapes (symbolic dims as strings) of its inputs and outputs;
- ``states``: per recurrent graph, every state tensor's name, channels and stride (state side = padded
  image side / stride), so the runtime can build the zero states of the first iteration.
"""

from __future__ import annotations

import json
from pathlib import Path

from coding.checksums import file_sha256 as sha256_file

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
REQUIRED = ("method", "task", "input", "iterations", "loop", "wire", "graphs", "states", "checkpoint")
METHODS = ("rnn_compressor", "code_recognition", "decoded_recognition", "shared_trunk")


class ManifestError(ValueError):
    """An export directory that cannot be used; the message names the file."""


def write_manifest(directory: Path, manifest: dict) -> Path:
    """Write ``manifest.json`` atomically (temporary file, then rename)."""
    path = Path(directory) / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def read_manifest(directory: str | Path, check_files: bool = True) -> dict:
    """The manifest of an export directory, checked before it is trusted.

    Raises:
        ManifestError: no manifest, unreadable JSON, another version or method, a graph file missing
            or with another SHA-256 than the manifest records.
    """
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest; is {directory} the --out of `splitcv export`?")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"{path}: not a readable manifest ({error})") from error
    if not isinstance(manifest, dict) or manifest.get("manifest_version") != MANIFEST_VERSION:
        version = manifest.get("manifest_version") if isinstance(manifest, dict) else None
        raise ManifestError(f"{path}: manifest_version {version!r}, this runtime reads {MANIFEST_VERSION}")
    if manifest.get("method") not in METHODS:
        raise ManifestError(f"{path}: unknown method {manifest.get('method')!r}; expected one of {METHODS}")
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise ManifestError(f"{path}: incomplete manifest, missing {', '.join(missing)}")
    for role, graph in manifest["graphs"].items():
        file = directory / graph["file"]
        if not file.is_file():
            raise ManifestError(f"{path}: graph {role!r} file {file} is missing")
        if check_files and sha256_file(file) != graph["sha256"]:
            raise ManifestError(f"{file}: SHA-256 differs from the manifest's; re-export instead of editing graphs")
    return manifest
