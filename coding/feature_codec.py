"""The feature codec of split inference (Hiraga et al.): a (C, H, W) float tensor ↔ bytes on the wire.

Edge: min–max quantisation to n bits (:mod:`coding.minmax_quantization`, eq. 7) → channel tiling into
one image (:mod:`coding.feature_tiling`) → an image codec. Server: the inverse, with everything it needs
read from the stream itself. ``encode(features) -> bytes`` and ``decode(bytes) -> features``; the byte
count is the whole stream, header and ranges included.

Stream (format version 2) = header (24 bytes) + ranges + image payload. Header, little-endian,
``struct`` ``"<4sBBBBBBHHHII"``:

=======  ======  =========  ============================================================================
offset   size    type       field
=======  ======  =========  ============================================================================
0        4       bytes      magic ``b"SCVF"`` (splitcv feature codec)
4        1       uint8      format version, 2
5        1       uint8      image codec id: 0 png, 1 webp, 2 hevc (bare, BPG-like), 3 avif, 4 heif
6        1       uint8      layout id: 0 r_channel, 1 mono, 2 square
7        1       uint8      n, bits per level: 8, or 10 (png / hevc / heif with a grey layout)
8        1       uint8      flags: bit 0 = one range per channel (else one per tensor); bit 1 = 4:4:4
                            (r_channel with hevc / heif / avif); other bits 0
9        1       uint8      webp / avif quality 0..100; hevc / heif QP 0..51 (hevc: needed to rebuild
                            the parameter sets); 255 for png
10       2       uint16     C, channels
12       2       uint16     H, feature height
14       2       uint16     W, feature width
16       4       uint32     CRC-32 (``zlib.crc32``) of everything after the header (ranges + payload)
20       4       uint32     CRC-32 of header bytes 0..19
=======  ======  =========  ============================================================================

Ranges: k float32 minima, then k float32 maxima (k = 1, or C per channel: 8 or 8·C bytes); finite,
min ≤ max.

Payload, by codec (the tiled image's size is implied by C, H, W and the layout,
:func:`coding.feature_tiling.image_shape`; grey for ``mono``/``square``, RGB for ``r_channel``):

- ``hevc``: the container-free HEVC payload of :mod:`coding.hevc_bitstream` — a mode byte and the slice
  NAL units; the HEIF container and the parameter sets are rebuilt by the receiver from (image size,
  grey/RGB, bits, chroma, QP), as BPG sends slice data behind a few bytes of header. The paper's
  default. An all-zero (512, 14, 14) tensor at QP 35 is 24 + 8 + 1 + 58 = 91 bytes whole.
- ``heif``: the same HEVC coding in pillow-heif's HEIF file (~380 bytes of container more).
- ``png``, ``webp``, ``avif``: the image file.

The reader trusts nothing: the header CRC, every field against the others (ids, bits for the codec and
layout, flags, quality range, at most :data:`MAX_ELEMENTS` elements), the body CRC, finite ranges with
min ≤ max, and the payload's image size against the tile size the header implies **before** its pixels
are decoded; every failure — decoder exceptions included (Pillow's ``DecompressionBombError``,
pillow-heif's ``IndexError`` / ``EOFError``, ...) — is a :class:`FeatureStreamError` (a ``ValueError``)
saying what was wrong (fuzzed by ``tests/coding/feature_stream_fuzz.py``).

``quality`` is the codec's own knob: 0..100, higher = better, for ``webp`` and ``avif``; for ``hevc`` /
``heif`` the constant QP 0..51 like BPG's (lower = better); ``png`` is lossless and takes none.
``None`` picks the codec's default (:data:`DEFAULT_QUALITY`: QP 35, the paper's BPG row; quality 80,
the paper's WebP row).
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

from coding import hevc_bitstream, image_codecs
from coding.feature_tiling import LAYOUTS, Layout, check_layout, image_shape, tile, untile
from coding.minmax_quantization import Quantized, minmax_dequantize, minmax_quantize

FeatureImageCodec = Literal["png", "webp", "hevc", "avif", "heif"]
FEATURE_CODECS: tuple[str, ...] = get_args(FeatureImageCodec)
DEFAULT_QUALITY: dict[str, int | None] = {"png": None, "webp": 80, "hevc": 35, "avif": 80, "heif": 35}
"""The setting ``quality=None`` picks: the paper's BPG qp35 and WebP q80 rows (Tables 6–9)."""
MAGIC = b"SCVF"
VERSION = 2
FLAG_PER_CHANNEL = 0x01
FLAG_CHROMA_444 = 0x02
_HEADER = struct.Struct("<4sBBBBBBHHHII")
HEADER_SIZE = _HEADER.size
"""Bytes of the fixed header, 24 (the ranges follow it)."""
_NO_QUALITY = 255
_MAX_U16 = 0xFFFF
MAX_ELEMENTS = 1 << 22
"""Largest C·H·W a stream may carry (4.2 M; VGG16's pool4 at 224 is 0.1 M): a forged header cannot make
the reader allocate more."""
_HEVC = ("hevc", "heif")
_TEN_BIT = ("png", "hevc", "heif")
_CHROMA_444 = ("hevc", "heif", "avif")


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
    return {"png": None, "webp": (0, 100), "avif": (0, 100), "hevc": (0, 51), "heif": (0, 51)}[codec]


def check_setting(codec: str, quality: int | None, layout: str, bits: int, chroma: str) -> None:
    """Refuse a combination the codec cannot code (the same rules for the encoder and the reader).

    Raises:
        ValueError: what is impossible, named.
    """
    if codec not in FEATURE_CODECS:
        raise ValueError(f"unknown feature codec {codec!r}; expected one of {FEATURE_CODECS}")
    check_layout(layout)
    limits = quality_range(codec)
    if limits is None:
        if quality is not None:
            raise ValueError(f"{codec!r} is lossless and takes no quality; got {quality!r}")
    elif isinstance(quality, bool) or not isinstance(quality, int):
        raise ValueError(f"{codec!r} needs an int quality in {limits[0]}..{limits[1]}, got {quality!r}")
    elif not limits[0] <= quality <= limits[1]:
        knob = "qp" if codec in _HEVC else "quality"
        raise ValueError(f"{codec!r} {knob} must be in {limits[0]}..{limits[1]}, got {quality}")
    if bits not in (8, 10):
        raise ValueError(f"bits must be 8 or 10, got {bits!r}")
    if bits == 10 and (codec not in _TEN_BIT or layout == "r_channel"):
        raise ValueError(
            f"10-bit levels need codec 'png', 'hevc' or 'heif' and a grey layout ('mono'/'square'), "
            f"got codec {codec!r}, layout {layout!r}"
        )
    if chroma not in ("420", "444"):
        raise ValueError(f"chroma must be '420' or '444', got {chroma!r}")
    if chroma == "444" and (layout != "r_channel" or codec not in _CHROMA_444):
        raise ValueError(
            f"chroma '444' applies to the 'r_channel' layout with {_CHROMA_444} only, got {codec!r}, {layout!r}"
        )


@dataclass(frozen=True)
class FeatureCodec:
    """One setting of the feature codec.

    Args:
        codec: image codec: ``hevc`` (constant QP like BPG, no container: the paper's), ``heif`` (the
            same in a HEIF container), ``png`` (lossless), ``webp``, ``avif``.
        quality: ``webp`` / ``avif`` quality 0..100 (higher = better); ``hevc`` / ``heif`` QP 0..51
            (lower = better); ``png`` takes none. ``None``: :data:`DEFAULT_QUALITY` of the codec.
        layout: ``r_channel`` (the paper's: mosaic in R, G = B = 0), ``mono`` (the same mosaic, 4:0:0)
            or ``square`` (near-square mosaic, 4:0:0); see :mod:`coding.feature_tiling`.
        bits: n of the min–max quantisation: 8, or 10 for ``png`` / ``hevc`` / ``heif`` with a grey layout.
        per_channel: one min/max per channel instead of one per tensor (the paper's).
        chroma: subsampling of the ``r_channel`` RGB image: ``420`` (BPG's default and the paper's
            setting) or ``444`` (``hevc`` / ``heif`` / ``avif``).

    Raises:
        ValueError: an impossible combination, named, at construction (before any work).
    """

    codec: FeatureImageCodec = "hevc"
    quality: int | None = None
    layout: Layout = "r_channel"
    bits: int = 8
    per_channel: bool = False
    chroma: Literal["420", "444"] = "420"

    def __post_init__(self) -> None:
        if self.codec not in FEATURE_CODECS:
            raise ValueError(f"unknown feature codec {self.codec!r}; expected one of {FEATURE_CODECS}")
        if self.quality is None:
            object.__setattr__(self, "quality", DEFAULT_QUALITY[self.codec])
        image_codecs.get_codec("hevc" if self.codec in _HEVC else self.codec)  # available in this build?
        check_setting(self.codec, self.quality, self.layout, self.bits, self.chroma)

    @property
    def name(self) -> str:
        """Short label, e.g. ``hevc-qp35-r_channel-8b``."""
        knob = "" if self.quality is None else (f"-qp{self.quality}" if self.codec in _HEVC else f"-q{self.quality}")
        extra = ("-perch" if self.per_channel else "") + ("-444" if self.chroma == "444" else "")
        return f"{self.codec}{knob}-{self.layout}-{self.bits}b{extra}"

    # ----------------------------------------------------------------------------------- edge
    def encode(self, features: Tensor) -> bytes:
        """Bytes of one image's features, (C, H, W) or (1, C, H, W), float."""
        if features.ndim == 4 and features.shape[0] == 1:
            features = features[0]
        if features.ndim != 3:
            raise ValueError(f"expected one image's features (C, H, W) or (1, C, H, W), got {tuple(features.shape)}")
        if max(features.shape) > _MAX_U16 or features.numel() > MAX_ELEMENTS:
            raise ValueError(
                f"feature dimensions must be < {_MAX_U16 + 1} and C·H·W ≤ {MAX_ELEMENTS}, got {tuple(features.shape)}"
            )
        q = minmax_quantize(features, self.bits, self.per_channel)
        levels = q.levels.numpy().astype(np.uint8 if self.bits == 8 else np.uint16)
        image = tile(levels, self.layout)
        if self.codec == "hevc":
            payload = hevc_bitstream.encode(image, self.quality, self.chroma)
        elif self.codec == "heif":
            payload = image_codecs.encode_array(image, "hevc", qp=self.quality, chroma=self.chroma)
        else:
            payload = image_codecs.encode_array(image, self.codec, self.quality, chroma=self.chroma)
        ranges = q.minimum.numpy().astype("<f4").tobytes() + q.maximum.numpy().astype("<f4").tobytes()
        body = ranges + payload
        flags = (FLAG_PER_CHANNEL if self.per_channel else 0) | (FLAG_CHROMA_444 if self.chroma == "444" else 0)
        fields = _HEADER.pack(
            MAGIC,
            VERSION,
            FEATURE_CODECS.index(self.codec),
            LAYOUTS.index(self.layout),
            self.bits,
            flags,
            _NO_QUALITY if self.quality is None else self.quality,
            *features.shape,
            zlib.crc32(body),
            0,
        )
        return _seal(fields) + body

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


def _seal(header: bytes) -> bytes:
    """The header with its own CRC (over bytes 0..19) in its last four bytes."""
    return header[: HEADER_SIZE - 4] + struct.pack("<I", zlib.crc32(header[: HEADER_SIZE - 4]))


def read_header(data: bytes) -> FeatureStreamInfo:
    """Parse and validate the header of a feature stream (both CRCs, every field against the others).

    Raises:
        FeatureStreamError: too short, wrong magic, version or CRC, unknown ids, an impossible setting,
            a shape out of range, a body too short for its ranges and image.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise FeatureStreamError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < HEADER_SIZE:
        raise FeatureStreamError(f"a feature stream has a {HEADER_SIZE}-byte header; got {len(data)} bytes")
    magic, version, codec_id, layout_id, bits, flags, quality, c, h, w, body_crc, header_crc = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FeatureStreamError(f"not a feature stream: magic {magic!r}, expected {MAGIC!r}")
    if zlib.crc32(data[: HEADER_SIZE - 4]) != header_crc:
        raise FeatureStreamError("header CRC mismatch: the header is corrupt")
    if version != VERSION:
        raise FeatureStreamError(f"feature stream version {version} is not supported (this reader: {VERSION})")
    if codec_id >= len(FEATURE_CODECS) or layout_id >= len(LAYOUTS):
        raise FeatureStreamError(f"unknown codec id {codec_id} or layout id {layout_id}")
    if flags & ~(FLAG_PER_CHANNEL | FLAG_CHROMA_444):
        raise FeatureStreamError(f"invalid header: unknown flags {flags:#x}")
    codec, layout = FEATURE_CODECS[codec_id], LAYOUTS[layout_id]
    chroma = "444" if flags & FLAG_CHROMA_444 else "420"
    limits = quality_range(codec)
    if limits is None and quality != _NO_QUALITY:
        raise FeatureStreamError(f"invalid header: {codec} takes no quality, got {quality}")
    try:
        check_setting(codec, None if limits is None else quality, layout, bits, chroma)
    except ValueError as error:
        raise FeatureStreamError(f"invalid header: {error}") from error
    if min(c, h, w) == 0 or c * h * w > MAX_ELEMENTS:
        raise FeatureStreamError(f"invalid feature shape ({c}, {h}, {w}): empty or over {MAX_ELEMENTS} elements")
    info = FeatureStreamInfo(
        version=version,
        codec=codec,
        layout=layout,
        bits=bits,
        per_channel=bool(flags & FLAG_PER_CHANNEL),
        chroma=chroma,
        quality=None if limits is None else quality,
        shape=(c, h, w),
    )
    if len(data) <= HEADER_SIZE + info.ranges_size:
        raise FeatureStreamError(
            f"stream truncated: {len(data)} bytes; the ranges end at {HEADER_SIZE + info.ranges_size}, an image follows"
        )
    if zlib.crc32(data[HEADER_SIZE:]) != body_crc:
        raise FeatureStreamError("body CRC mismatch: the ranges or the image are corrupt, or the stream is truncated")
    return info


def _decode_image(payload: bytes, info: FeatureStreamInfo) -> np.ndarray:
    """The tiled image of the payload, checked to be exactly the size, kind and depth the header implies."""
    expected = image_shape(info.layout, info.shape)
    grey = info.layout != "r_channel"
    dtype = np.uint16 if info.bits == 10 else np.uint8
    if info.codec == "hevc":
        settings = hevc_bitstream.Settings(expected[0], expected[1], grey, info.bits, info.chroma, info.quality)
        image = hevc_bitstream.decode(payload, settings)
    else:
        image = image_codecs.decode_array(
            payload, "hevc" if info.codec == "heif" else info.codec, grey=grey, shape=expected[:2]
        )
    if image.shape != expected or image.dtype != dtype:
        raise FeatureStreamError(
            f"the {info.codec} image is {image.dtype} {image.shape}; the header implies {np.dtype(dtype)} {expected}"
        )
    if info.bits == 10 and int(image.max()) >= 1 << 10:
        raise FeatureStreamError(f"the {info.codec} image holds {int(image.max())}, above 10 bits")
    return image


def decode(data: bytes) -> Tensor:
    """float32 (C, H, W) features from a feature stream (see the module docstring).

    Raises:
        FeatureStreamError: an invalid stream (header, CRCs, ranges), or an image that does not decode
            or is not the one the header implies; the message says which.
    """
    info = read_header(data)
    data = bytes(data)
    k = info.ranges_size // 8
    start = HEADER_SIZE
    lo = np.frombuffer(data, "<f4", k, start)
    hi = np.frombuffer(data, "<f4", k, start + 4 * k)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise FeatureStreamError("the stream's min/max ranges are not finite")
    if (lo > hi).any():
        raise FeatureStreamError("the stream's ranges have min > max")
    payload = data[start + 8 * k :]
    try:
        image = _decode_image(payload, info)
    except FeatureStreamError:
        raise
    except Exception as error:
        raise FeatureStreamError(
            f"cannot decode the {info.codec} image of the stream ({len(payload)} bytes): {type(error).__name__}: {error}"
        ) from error
    levels = untile(image, info.layout, info.shape)
    quantized = Quantized(
        torch.from_numpy(levels.astype(np.int32)),
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
