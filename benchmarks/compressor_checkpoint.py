"""The recurrent codec of a checkpoint, for the benchmarks that run it outside a Trainer.

Either method's checkpoint works: an ``RNNCompressor``'s (weights under ``codec.``, configuration in its
hyper-parameters ``cell``, ``width``, ``bits``, ``reconstruction``) or a ``CompressedImageRecognition``'s (its
frozen compressor under ``compressor.``, configuration ``codec_cell``, ``codec_width``, ``bits``,
``codec_reconstruction``). Read with ``weights_only=True``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from models.rnn_codec import RNNCodec

PREFIXES = {"codec.": ("cell", "width", "bits", "reconstruction"),
            "compressor.": ("codec_cell", "codec_width", "bits", "codec_reconstruction")}  # fmt: skip


def load_codec(path: str | Path) -> RNNCodec:
    """The codec stored in the checkpoint at ``path``, in ``eval()`` mode with gradients off.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the checkpoint holds no recurrent codec (neither ``codec.*`` nor ``compressor.*`` weights),
            or its weights do not fit the configuration it records; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict", checkpoint)
    hparams = checkpoint.get("hyper_parameters", {})
    for prefix, names in PREFIXES.items():
        weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not weights:
            continue
        defaults = {"cell": "lstm", "width": 1.0, "bits": 32, "reconstruction": "additive"}
        config = {key: hparams.get(name, defaults[key]) for key, name in zip(defaults, names, strict=True)}
        codec = RNNCodec(**config)
        try:
            codec.load_state_dict(weights)
        except RuntimeError as err:
            raise ValueError(f"{path}: the {prefix}* weights do not fit RNNCodec({config}): {err}") from err
        return codec.eval().requires_grad_(False)
    raise ValueError(f"{path} holds no recurrent codec: no codec.* (RNNCompressor) or compressor.* weights")
