"""The wire bytes of the runtimes, written and read with :mod:`coding` (no Lightning, no training code).

- Recurrent codec stream (``SCVR`` v2, :mod:`coding.rnn_bitstream`): written from the ±1 codes the edge
  graph produced, with the codec configuration taken from the manifest (the runtime has no
  ``RNNCodec`` object, only its configuration: the header needs the configuration's fingerprint).
- Feature stream (``SCVF``, :mod:`coding.feature_codec`): :class:`coding.feature_codec.FeatureCodec`
  with the settings recorded in the manifest.

``docs/wire-format.md`` specifies both byte by byte.
"""

from __future__ import annotations

import math
import zlib
from types import SimpleNamespace

import numpy as np
import torch

from coding import code_entropy
from coding import rnn_bitstream as rb
from coding.bitpacking import unpack_signs


def codec_namespace(config: dict) -> SimpleNamespace:
    """What :func:`coding.rnn_bitstream.codec_config` reads of a codec: cell, width, bits, reconstruction."""
    return SimpleNamespace(
        cell=config["cell"],
        width=float(config["width"]),
        bits=int(config["bits"]),
        reconstruction=config["reconstruction"],
    )


def rnn_fingerprint(config: dict) -> bytes:
    """4-byte fingerprint of the codec configuration (as :func:`coding.rnn_bitstream.codec_fingerprint`)."""
    return rb.codec_fingerprint(codec_namespace(config))


def write_rnn_stream(codes: np.ndarray, size: tuple[int, int], config: dict, coding: str) -> bytes:
    """A v2 stream of ±1 ``codes`` (T, B, bits, ⌈H/16⌉, ⌈W/16⌉) of images of ``size`` (H, W): the same
    bytes :func:`coding.rnn_bitstream.compress_codes` writes for a codec of configuration ``config``."""
    rb._check_coding(coding)
    codes_t = torch.from_numpy(np.ascontiguousarray(codes, dtype=np.float32))
    iterations, batch, bits, h, w = rb._check_codes(codes_t)
    height, width = (int(s) for s in size)
    expected = (iterations, batch, int(config["bits"]), math.ceil(height / rb.STRIDE), math.ceil(width / rb.STRIDE))
    if (iterations, batch, bits, h, w) != expected:
        raise ValueError(f"codes of {height}×{width} images must have shape {expected}, got {tuple(codes_t.shape)}")
    payload, entropy_coded = rb._payload(codes_t, coding)
    info = rb.BitstreamInfo(
        version=rb.VERSION,
        entropy_coded=entropy_coded,
        batch=batch,
        height=height,
        width=width,
        iterations=iterations,
        bits=bits,
        fingerprint=rnn_fingerprint(config),
        payload_crc32=zlib.crc32(payload),
        header_bytes=rb.HEADER_SIZE,
        payload_bytes=len(payload),
    )
    return rb._pack_header(info) + payload


def read_rnn_stream(
    data: bytes, config: dict, max_pixels: int | None = rb.MAX_PIXELS
) -> tuple[np.ndarray, rb.BitstreamInfo]:
    """±1 codes (T, B, bits, h, w) float32 and the header of a stream, checked against ``config`` (bits,
    fingerprint) and in full (CRCs, sizes) before anything is decoded.

    Raises:
        ValueError: what :func:`coding.rnn_bitstream.read_codes` raises.
    """
    info = rb.parse_header(data)
    if info.bits != int(config["bits"]):
        raise ValueError(f"stream was written with bits={info.bits} per block; this export has bits={config['bits']}")
    if info.fingerprint != rnn_fingerprint(config):
        raise ValueError(
            f"stream was written by a codec of another configuration (fingerprint {info.fingerprint.hex()}); "
            f"this export is {rb.codec_config(codec_namespace(config))}"
        )
    info, payload, _ = rb._checked_payload(data, max_pixels)
    shape = info.code_shape
    codes = code_entropy.decode_codes(payload, shape) if info.entropy_coded else unpack_signs(payload, shape)
    return codes.numpy().astype(np.float32), info


def feature_codec(settings: dict):
    """:class:`coding.feature_codec.FeatureCodec` of the manifest's settings."""
    from coding.feature_codec import FeatureCodec

    return FeatureCodec(**settings)


def write_feature_stream(features: np.ndarray, settings: dict) -> bytes:
    """One image's features (C, H, W) or (1, C, H, W) float32 → a feature stream."""
    return feature_codec(settings).encode(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))


def read_feature_stream(data: bytes) -> np.ndarray:
    """float32 (1, C, H, W) features of a feature stream (every setting is in its header)."""
    from coding.feature_codec import decode

    return decode(data).numpy()[None]
