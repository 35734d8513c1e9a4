"""The feature codec of split inference (Hiraga et al.): a (C, H, W) float tensor ↔ bytes on the wire.

Edge: min–max quantisation to n bits (:mod:`coding.minmax_quantization`, eq. 7) → channel tiling into
one image (:mod:`coding.feature_tiling`) → an image codec (:func:`coding.image_codecs.encode_array`).
Server: the inverse, with everything it needs read from the stream itself. ``encode(features) ->
bytes`` and ``decode(bytes) -> features``; the byte count is the whole stream, header and ranges
included.

Stream = header (20 bytes) + ranges + image file. Header, little-endian, ``struct`` ``"<4sBBBBBBHHHI"``:

=======  ======  =========  ============================================================================
offset   size    type       field
=======  ======  =========  ============================================================================
0        4       bytes      magic ``b"SCVF"`` (splitcv feature codec)
4        1       uint8      format version, currently 1
5        1       uint8      image codec id: 0 png, 1 webp, 2 hevc, 3 avif
6        1       uint8      layout id: 0 r_channel, 1 mono, 2 square
7        1       uint8      n, bits per level (8, or 10 for png / hevc grey layouts)
8        1       uint8      flags: bit 0 = one range per channel (else one per tensor); bit 1 = 4:4:4
9        1       uint8      quality (webp, avif), qp (hevc), 255 for png — informational
10       2       uint16     C, channels
12       2       uint16     H, feature height
14       2       uint16     W, feature width
16       4       uint32     CRC-32 (``zlib.crc32``) of everything after the header
=======  ======  =========  ============================================================================

Ranges: k float32 minima, then k float32 maxima (k = 1, or C per channel: 8 or 8·C bytes).
Image: the image codec's file (PNG, WebP, HEIF with HEVC, AVIF), container included.

``quality`` is the codec's own knob: 0..100, higher = better, for ``webp`` and ``avif``; for ``hevc``
it is the constant QP 0..51 like BPG's (lower = better); ``png`` is lossless and takes none.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor

from coding import image_codecs
from coding.feature_tiling import LAYOUTS, Layout, check_layout, image_shape, tile, untile
from coding.minmax_quantization import Quantized, minmax_dequantize, minmax_quantize

FeatureImageCodec = Literal["png", "webp", "hevc", "avif"]
FEATURE_CODECS: tuple[str, ...] = get_args(FeatureImageCodec)
MAGIC = b"SCVF"
VERSION = 1
FLAG_PER_CHANNEL = 0x01
FLAG_CHROMA_444 = 0x02
_HEADER = struct.Struct("<4sBBBBBBHHHI")
HEADER_SIZE = _HEADER.size
"""Bytes of the fixed header, 20 (the ranges follow it)."""
_NO_QUALITY = 255
_MAX_U16 = 0xFFFF


class FeatureStreamError(ValueError):
    """The bytes are not a valid feature stream; the message says what is wrong."""


@dataclass(frozen=True)
class FeatureStreamInfo:
    """What a stream's header says."""

    version: int
    codec: str
    layout: str
    bits: int
    per_channel: bool
    chroma: str
    quality: int | None
    shape: tuple[int, int, int]

    @property
    def ranges_size(self) -> int:
        return 8 * (self.shape[0] if self.per_channel else 1)


def quality_range(codec: str) -> tuple[int, int] | None:
    """Accepted ``quality`` of ``codec`` (``None``: takes none)."""
    return {"png": None, "webp": (0, 100), "avif": (0, 100), "hevc": (0, 51)}[codec]


@dataclass(frozen=True)
class FeatureCodec:
    """One setting of the feature codec.

    Args:
        codec: image codec: ``png`` (lossless), ``webp``, ``hevc`` (constant QP, like BPG), ``avif``.
        quality: ``webp`` / ``avif`` quality 0..100 (higher = better); ``hevc`` QP 0..51 (lower =
            better); ``None`` for ``png``.
        layout: ``r_channel`` (the paper's: mosaic in R, G = B = 0), ``mono`` (the same mosaic, 4:0:0)
            or ``square`` (near-square mosaic, 4:0:0); see :mod:`coding.feature_tiling`.
        bits: n of the min–max quantisation: 8, or 10 for ``png`` / ``hevc`` with a grey layout.
        per_channel: one min/max per channel instead of one per tensor (the paper's).
        chroma: subsampling of the ``r_channel`` RGB image: ``420`` (BPG's default and the paper's
            setting) or ``444`` (``hevc`` / ``avif``).

    Raises:
        ValueError: an impossible combination, named, at construction (before any work).
    """

    codec: FeatureImageCodec = "hevc"
    quality: int | None = 35
    layout: Layout = "r_channel"
    bits: int = 8
    per_channel: bool = False
    chroma: Literal["420", "444"] = "420"

    def __post_init__(self) -> None:
        if self.codec not in FEATURE_CODECS:
            raise ValueError(f"unknown feature codec {self.codec!r}; expected one of {FEATURE_CODECS}")
        image_codecs.get_codec(self.codec)  # available in this build?
        check_layout(self.layout)
        limits = quality_range(self.codec)
        if limits is None:
            if self.quality is not None:
                raise ValueError(f"{self.codec!r} is lossless and takes no quality; got {self.quality!r}")
        elif isinstance(self.quality, bool) or not isinstance(self.quality, int):
            raise ValueError(f"{self.codec!r} needs an int quality in {limits[0]}..{limits[1]}, got {self.quality!r}")
        elif not limits[0] <= self.quality <= limits[1]:
            knob = "qp" if self.codec == "hevc" else "quality"
            raise ValueError(f"{self.codec!r} {knob} must be in {limits[0]}..{limits[1]}, got {self.quality}")
        if self.bits not in (8, 10):
            raise ValueError(f"bits must be 8 or 10, got {self.bits!r}")
        if self.bits == 10 and (self.codec not in ("png", "hevc") or self.layout == "r_channel"):
            raise ValueError(
                f"10-bit levels need codec 'png' or 'hevc' and a grey layout ('mono'/'square'), "
                f"got codec {self.codec!r}, layout {self.layout!r}"
            )
        if self.chroma not in ("420", "444"):
            raise ValueError(f"chroma must be '420' or '444', got {self.chroma!r}")
        if self.chroma == "444" and (self.layout != "r_channel" or self.codec not in ("hevc", "avif")):
            raise ValueError(f"chroma '444' applies to the 'r_channel' layout with 'hevc' or 'avif' only, got {self}")

    @property
    def name(self) -> str:
        """Short label, e.g. ``hevc-qp35-r_channel-8b``."""
        knob = "" if self.quality is None else (f"-qp{self.quality}" if self.codec == "hevc" else f"-q{self.quality}")
        extra = ("-perch" if self.per_channel else "") + ("-444" if self.chroma == "444" else "")
        return f"{self.codec}{knob}-{self.layout}-{self.bits}b{extra}"

    # ----------------------------------------------------------------------------------- edge
    def encode(self, features: Tensor) -> bytes:
        """Bytes of one image's features, (C, H, W) or (1, C, H, W), float."""
        if features.ndim == 4 and features.shape[0] == 1:
            features = features[0]
        if features.ndim != 3:
            raise ValueError(f"expected one image's features (C, H, W) or (1, C, H, W), got {tuple(features.shape)}")
        if max(features.shape) > _MAX_U16:
            raise ValueError(f"feature dimensions must be < {_MAX_U16 + 1}, got {tuple(features.shape)}")
        q = minmax_quantize(features, self.bits, self.per_channel)
        levels = q.levels.numpy().astype(np.uint8 if self.bits == 8 else np.uint16)
        image = tile(levels, self.layout)
        qp = self.quality if self.codec == "hevc" else None
        quality = None if self.codec == "hevc" else self.quality
        payload = image_codecs.encode_array(image, self.codec, quality, qp=qp, chroma=self.chroma)
        ranges = q.minimum.numpy().astype("<f4").tobytes() + q.maximum.numpy().astype("<f4").tobytes()
        body = ranges + payload
        flags = (FLAG_PER_CHANNEL if self.per_channel else 0) | (FLAG_CHROMA_444 if self.chroma == "444" else 0)
        header = _HEADER.pack(
            MAGIC,
            VERSION,
            FEATURE_CODECS.index(self.codec),
            LAYOUTS.index(self.layout),
            self.bits,
            flags,
            _NO_QUALITY if self.quality is None else self.quality,
            *features.shape,
            zlib.crc32(body),
        )
        return header + body

    # --------------------------------------------------------------------------------- server
    @staticmethod
    def decode(data: bytes) -> Tensor:
        """float32 (C, H, W) features from :meth:`encode`'s bytes (any setting; it is in the header)."""
        return decode(data)

    def round_trip(self, features: Tensor) -> tuple[Tensor, list[int]]:
        """Encode and decode each image of a batch (B, C, H, W): (decoded batch on the input's device
        and dtype, bytes per image)."""
        decoded, sizes = [], []
        for one in features.detach().cpu().float():
            data = self.encode(one)
            sizes.append(len(data))
            decoded.append(decode(data))
        return torch.stack(decoded).to(features.device, features.dtype), sizes


def read_header(data: bytes) -> FeatureStreamInfo:
    """Parse and validate the header of a feature stream (CRC included).

    Raises:
        FeatureStreamError: too short, wrong magic or version, unknown ids, bad sizes or CRC mismatch.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise FeatureStreamError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < HEADER_SIZE:
        raise FeatureStreamError(f"a feature stream has a {HEADER_SIZE}-byte header; got {len(data)} bytes")
    magic, version, codec_id, layout_id, bits, flags, quality, c, h, w, crc = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FeatureStreamError(f"not a feature stream: magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise FeatureStreamError(f"feature stream version {version} is not supported (this reader: {VERSION})")
    if codec_id >= len(FEATURE_CODECS) or layout_id >= len(LAYOUTS):
        raise FeatureStreamError(f"unknown codec id {codec_id} or layout id {layout_id}")
    if bits not in (8, 10) or flags & ~(FLAG_PER_CHANNEL | FLAG_CHROMA_444):
        raise FeatureStreamError(f"invalid header: bits={bits}, flags={flags:#x}")
    if min(c, h, w) == 0:
        raise FeatureStreamError(f"invalid feature shape ({c}, {h}, {w})")
    info = FeatureStreamInfo(
        version=version,
        codec=FEATURE_CODECS[codec_id],
        layout=LAYOUTS[layout_id],
        bits=bits,
        per_channel=bool(flags & FLAG_PER_CHANNEL),
        chroma="444" if flags & FLAG_CHROMA_444 else "420",
        quality=None if quality == _NO_QUALITY else quality,
        shape=(c, h, w),
    )
    if len(data) < HEADER_SIZE + info.ranges_size:
        raise FeatureStreamError(f"stream truncated: {len(data)} bytes, ranges end at {HEADER_SIZE + info.ranges_size}")
    if zlib.crc32(data[HEADER_SIZE:]) != crc:
        raise FeatureStreamError("CRC mismatch: the stream is corrupt or truncated")
    return info


def decode(data: bytes) -> Tensor:
    """float32 (C, H, W) features from a feature stream (see the module docstring).

    Raises:
        FeatureStreamError: an invalid stream, or an image of the wrong shape inside it.
    """
    info = read_header(data)
    data = bytes(data)
    k = info.ranges_size // 8
    start = HEADER_SIZE
    lo = np.frombuffer(data, "<f4", k, start)
    hi = np.frombuffer(data, "<f4", k, start + 4 * k)
    try:
        image = image_codecs.decode_array(data[start + 8 * k :], info.codec, grey=info.layout != "r_channel")
        levels = untile(image, info.layout, info.shape)
    except ValueError as error:
        raise FeatureStreamError(f"cannot decode the {info.codec} image of the stream: {error}") from error
    top = (1 << info.bits) - 1
    quantized = Quantized(
        torch.from_numpy(np.minimum(levels.astype(np.int32), top)),
        torch.from_numpy(lo.copy()),
        torch.from_numpy(hi.copy()),
        info.bits,
    )
    return minmax_dequantize(quantized)


def tiled_image_shape(codec: FeatureCodec, shape: tuple[int, int, int]) -> tuple[int, ...]:
    """Shape of the image that ``codec`` codes for a (C, H, W) tensor."""
    return image_shape(codec.layout, shape)


def feature_psnr(decoded: Tensor, original: Tensor) -> float:
    """Feature PSNR in dB: 10·log10((max − min)² / MSE), the peak being the original tensor's range
    (the span the min–max quantiser maps to 2ⁿ − 1); ``inf`` when equal."""
    original, decoded = original.detach().double(), decoded.detach().double()
    mse = float(((decoded - original) ** 2).mean())
    peak = float(original.max() - original.min())
    if mse == 0:
        return float("inf")
    return 10 * math.log10(max(peak, 1e-30) ** 2 / mse)
