"""The wire of every split pipeline, as one type: ``transmit(x) -> Transmission``.

Every recognition method is an edge module, a wire and a server module (``docs/design.md``). Whatever
the wire carries — images, the recurrent compressor's codes, intermediate features — it does one thing:
turn a batch into real bytes, one stream per item, and give back what the server decodes from them.

- :class:`ImageChannelWire` — images through a channel of :mod:`coding.image_channel`: the recurrent
  compressor's bitstream (:class:`~coding.image_channel.RNNChannel`) or a classical codec
  (:class:`~coding.image_channel.ClassicalChannel`: JPEG / WebP / AVIF / HEVC, at a quality, a target bpp or
  a byte budget per image).
- :class:`CodeStreamWire` — the recurrent compressor's ±1 codes (decoder removed on the edge): each
  image's codes written to its own bitstream (:func:`coding.rnn_bitstream.compress_codes`) and read back.
- :class:`FeatureCodecWire` — intermediate features through :class:`coding.feature_codec.FeatureCodec`
  (min–max quantisation, channel tiling, an image codec), by its public ``round_trip``.

The bytes are always those of the real streams (headers and side information included), counted per
item; ``settings`` says what determined them, so a results record can name the wire it measured.
(Not to be confused with :class:`coding.image_channel.Transmission`, which is one image's result inside a
channel.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from coding.feature_codec import FeatureCodec
from coding.image_channel import ClassicalChannel, RNNChannel, weights_digest
from coding.image_codecs import to_float_chw
from coding.rnn_bitstream import Coding, codec_config, compress_codes, read_codes
from models.rnn_codec import RNNCodec


@dataclass(frozen=True)
class Transmission:
    """What a batch cost on the wire and what the server got.

    Attributes:
        decoded: what the server decodes, in the layout the wire was given (same item axis).
        bytes_per_item: real bytes sent for each item of the batch (its whole stream).
        settings: what determined the bytes and the decoded values (codec, quality, k, …).
    """

    decoded: Tensor
    bytes_per_item: list[int]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes_per_item)


@runtime_checkable
class Wire(Protocol):
    """Anything that sends a batch as real bytes: ``transmit(x) -> Transmission``."""

    def transmit(self, x: Tensor) -> Transmission: ...


def _check_images(images: Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images (B, 3, H, W) in [0, 1], got shape {tuple(images.shape)}")


class ImageChannelWire:
    """Images (B, 3, H, W) in [0, 1] through a channel of :mod:`coding.image_channel`, one stream each.

    The decoded images are float32 in [0, 1] on the input's device, quantised to 256 levels as the server
    stores them (the channel's uint8 output).

    Args:
        channel: an :class:`~coding.image_channel.RNNChannel` or a
            :class:`~coding.image_channel.ClassicalChannel`.
    """

    def __init__(self, channel: RNNChannel | ClassicalChannel) -> None:
        if not hasattr(channel, "transmit") or not hasattr(channel, "settings"):
            raise TypeError(f"expected a coding.image_channel channel, got {type(channel).__name__}")
        self.channel = channel

    def transmit(self, x: Tensor, budgets: Sequence[int] | None = None) -> Transmission:
        """Send every image; ``budgets`` (bytes, one per image) only for a classical channel that needs them."""
        _check_images(x)
        if budgets is not None and len(budgets) != x.shape[0]:
            raise ValueError(f"{len(budgets)} budgets for a batch of {x.shape[0]} images")
        decoded, sizes = [], []
        for i, image in enumerate(x.detach().float().cpu()):
            budget = None if budgets is None else int(budgets[i])
            sent = self.channel.transmit(image.clamp(0, 1), budget)
            decoded.append(to_float_chw(sent.image))
            sizes.append(sent.bytes)
        return Transmission(torch.stack(decoded).to(x.device), sizes, self.channel.settings())


class CodeStreamWire:
    """The recurrent compressor's codes (T, B, bits, h, w) — T iterations, item axis 1 — as one real
    bitstream per image (:func:`coding.rnn_bitstream.compress_codes`), read back by
    :func:`~coding.rnn_bitstream.read_codes` (lossless: the decoded codes equal the sent ones).

    Args:
        codec: the compressor whose encoder made the codes (its configuration is in every header).
        size: (H, W) of the coded images (stored in the header; the server crops its reconstruction to it).
        coding: payload coding: ``packed``, ``entropy`` or ``smallest`` (per stream).
    """

    def __init__(self, codec: RNNCodec, size: tuple[int, int], coding: Coding = "smallest") -> None:
        self.codec, self.size, self.coding = codec, (int(size[0]), int(size[1])), coding

    def settings(self) -> dict[str, Any]:
        return {
            "wire": "rnn_codes",
            "coding": self.coding,
            "codec": codec_config(self.codec),
            "weights_sha256": weights_digest(self.codec),
        }

    def transmit(self, x: Tensor) -> Transmission:
        if x.ndim != 5:
            raise ValueError(f"expected codes (T, B, bits, h, w), got shape {tuple(x.shape)}")
        decoded, sizes = [], []
        for b in range(x.shape[1]):
            stream = compress_codes(self.codec, x[:, b : b + 1], self.size, self.coding)
            sizes.append(len(stream))
            decoded.append(read_codes(self.codec, stream)[0])
        codes = torch.cat(decoded, dim=1).to(x.device, x.dtype)
        return Transmission(codes, sizes, {**self.settings(), "iterations": int(x.shape[0])})


class FeatureCodecWire:
    """Features (B, C, H, W) through :class:`coding.feature_codec.FeatureCodec` (its ``round_trip``)."""

    def __init__(self, codec: FeatureCodec) -> None:
        self.codec = codec

    def settings(self) -> dict[str, Any]:
        c = self.codec
        return {
            "wire": "features",
            "name": c.name,
            "codec": c.codec,
            "quality": c.quality,
            "layout": c.layout,
            "bits": c.bits,
            "per_channel": c.per_channel,
            "chroma": c.chroma,
        }

    def transmit(self, x: Tensor) -> Transmission:
        if x.ndim != 4:
            raise ValueError(f"expected features (B, C, H, W), got shape {tuple(x.shape)}")
        decoded, sizes = self.codec.round_trip(x)
        return Transmission(decoded, [int(s) for s in sizes], self.settings())
