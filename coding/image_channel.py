"""The wire of recognition on decoded images: one source image in, the server's decoded image and the
bytes that were sent out.

- :class:`RNNChannel` — the recurrent compressor's real bitstream: ``decompress(codec, compress(codec,
  x, k))`` on one image at its own resolution (one stream per image, its header included).
- :class:`ClassicalChannel` — JPEG / WebP / AVIF / HEVC (:mod:`coding.image_codecs`) at a fixed
  quality, at ``target_bpp``, or at a per-image byte budget (:mod:`coding.matched_rate`), e.g. the
  bytes the learned compressor spent on the same image.

Both return a :class:`Transmission`; the decoded image is uint8, as a server would store or feed it
(the recurrent decoder's [0, 1] output rounded to the nearest of 256 levels).

:func:`weights_digest` fingerprints a codec's *weights* (the bitstream header only fingerprints its
configuration), so a cache of decoded images can be keyed on the exact compressor that made it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from coding.image_codecs import decode_image, encode_image, get_codec, to_float_chw, to_uint8_hwc
from coding.matched_rate import budget_from_bpp, encode_within_budget
from coding.rnn_bitstream import Coding, codec_config, compress, decompress
from models.rnn_codec import RNNCodec

ChannelName = Literal["rnn", "jpeg", "webp", "avif", "hevc"]
CLASSICAL = ("jpeg", "webp", "avif", "hevc")


@dataclass(frozen=True)
class Transmission:
    """What one image cost on the wire and what the server got.

    Attributes:
        image: the decoded image, uint8 (H, W, 3), the source's size.
        bytes: bytes sent (the whole stream or file: headers and container included).
        quality: classical codecs: the quality used (``None`` for the recurrent codec).
        fits: ``False`` when a byte budget could not be met even at the lowest quality.
    """

    image: np.ndarray
    bytes: int
    quality: int | None = None
    fits: bool = True


def weights_digest(module: nn.Module) -> str:
    """SHA-256 (hex) over the module's state dict: every key, dtype, shape and value, in key order."""
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


class RNNChannel:
    """The recurrent compressor at ``iterations`` k: the image's real bitstream, decoded.

    Args:
        codec: the (frozen) codec; it runs on whatever device it is on, under ``torch.no_grad``.
        iterations: k, iterations sent (k · bits / 256 bpp of payload).
        coding: payload of the stream: ``packed`` (the bits as they are, k · bits / 256 bpp), ``entropy``
            (rANS, :mod:`coding.code_entropy`) or ``smallest`` (the smaller of the two, per stream).
    """

    name = "rnn"

    def __init__(self, codec: RNNCodec, iterations: int, coding: Coding = "packed") -> None:
        if not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be a positive int, got {iterations!r}")
        self.codec = codec
        self.iterations = iterations
        self.coding = coding

    def settings(self) -> dict:
        """What determines the decoded images and bytes: codec configuration and weights, k, payload coding."""
        return {
            "channel": "rnn",
            "iterations": self.iterations,
            "coding": self.coding,
            "codec": codec_config(self.codec),
            "weights_sha256": weights_digest(self.codec),
        }

    @torch.no_grad()
    def transmit(self, image: np.ndarray, budget: int | None = None) -> Transmission:
        """Code ``image`` (uint8 (H, W, 3)) into one stream and decode it; ``budget`` must be ``None``."""
        if budget is not None:
            raise ValueError("the recurrent channel spends k · bits / 256 bpp; it takes no byte budget")
        weight = next(self.codec.parameters())
        x = to_float_chw(to_uint8_hwc(image)).unsqueeze(0).to(device=weight.device, dtype=weight.dtype)
        stream = compress(self.codec, x, self.iterations, coding=self.coding)
        decoded = decompress(self.codec, stream)[0].float().cpu()
        return Transmission(to_uint8_hwc(decoded), len(stream))


class ClassicalChannel:
    """A classical codec at one quality, at ``target_bpp``, or at a byte budget given per image.

    Exactly one of ``quality`` and ``target_bpp`` may be set; with neither, every call must give a
    ``budget`` (the bytes another channel spent on that image).

    Args:
        codec: ``jpeg``, ``webp``, ``avif`` or ``hevc``.
        quality: fixed codec quality for every image (one quality per run).
        target_bpp: per-image budget ``target_bpp · H · W / 8`` bytes, matched by quality search.
    """

    def __init__(self, codec: str, quality: int | None = None, target_bpp: float | None = None) -> None:
        if codec not in CLASSICAL:
            raise ValueError(f"classical channel must be one of {CLASSICAL}, got {codec!r}")
        get_codec(codec)  # available in this build?
        if quality is not None and target_bpp is not None:
            raise ValueError("give either quality or target_bpp for a classical channel, not both")
        if quality is not None:
            encode_image(np.zeros((16, 16, 3), np.uint8), codec, quality)  # checks the range, names the codec
        if target_bpp is not None:
            budget_from_bpp(target_bpp, 1, 1)  # checks the sign
        self.name = codec
        self.quality = quality
        self.target_bpp = target_bpp

    @property
    def needs_budget(self) -> bool:
        """True when every image needs a budget from outside (matched to another channel's bytes)."""
        return self.quality is None and self.target_bpp is None

    def settings(self) -> dict:
        return {"channel": self.name, "quality": self.quality, "target_bpp": self.target_bpp}

    def transmit(self, image: np.ndarray, budget: int | None = None) -> Transmission:
        """Encode and decode ``image`` (uint8 (H, W, 3)); ``budget`` (bytes) only when :attr:`needs_budget`."""
        array = to_uint8_hwc(image)
        if self.needs_budget != (budget is not None):
            raise ValueError(
                f"the {self.name} channel {'needs' if self.needs_budget else 'takes no'} per-image byte budget"
            )
        if self.quality is not None:
            data, quality, fits = encode_image(array, self.name, self.quality), self.quality, True
        else:
            if budget is None:
                budget = budget_from_bpp(self.target_bpp, array.shape[0], array.shape[1])
            encoded = encode_within_budget(array, self.name, int(budget))
            data, quality, fits = encoded.data, encoded.quality, encoded.fits
        return Transmission(decode_image(data, self.name), len(data), quality, fits)
