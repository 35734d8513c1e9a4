"""HEVC still images without a container, as BPG sends them: the slice data, and only what the decoder
cannot rebuild.

The paper codes its tiles with BPG, whose files are a few bytes of header plus HEVC slice data (no VPS,
parameter sets in a compact form). pillow-heif writes a HEIF container instead (``ftyp``, ``meta`` with
``hdlr``/``iloc``/``iinf``/``pitm``/``iprp`` → ``ipco`` → ``hvcC`` (VPS, SPS, PPS) + ``colr``/``ispe``/
``pixi``, ``ipma``; then ``mdat`` with the NAL units), ~380 bytes of which do not depend on the pixels.
This module sends only the ``mdat`` NAL units; the receiver regenerates the container and parameter
sets **deterministically** by encoding an all-zero image of the same settings — (width, height, grey
or RGB, bit depth, chroma, QP) — through the same pillow-heif/x265 build (cached per setting), splices the
received NAL units into it and decodes in process with libde265.

The encoder checks, for every image, that the splice rebuilds **the very HEIF file** x265 wrote, byte for
byte, so the decoded image is the HEIF path's exactly. x265's VPS/SPS/PPS are functions of the settings
only (``tests/coding/test_hevc_bitstream.py`` checks it over random, constant and structured images);
should a build ever make them depend on content, the parameter sets are sent (mode 1), and should the
container differ in any other way, the whole HEIF file is sent (mode 2) — never a wrong image.

Payload (what :func:`encode` returns and :func:`decode` reads; its settings travel elsewhere, in the
feature stream's header):

======  =====================  ====================================================================
mode    bytes after the mode   meaning
======  =====================  ====================================================================
0       NAL units              ``mdat`` content: each NAL unit as a 4-byte big-endian length + the NAL
                               unit (the slice; container and parameter sets implied by the settings)
1       u16 n, n bytes, NALs   the ``hvcC`` box body (n bytes), then the NAL units as in mode 0
2       HEIF file              the whole file, as :func:`coding.image_codecs.encode_array` writes it
======  =====================  ====================================================================

Requires pillow-heif with x265 and libde265 (:func:`coding.image_codecs.get_codec` ``("hevc")``).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from coding import image_codecs

MODE_IMPLIED = 0
MODE_PARAMETER_SETS = 1
MODE_HEIF = 2
_CONTAINERS = {b"meta": 4, b"iprp": 0, b"ipco": 0}
"""Boxes holding boxes, and the bytes of full-box version/flags before their children."""
_VCL_TYPES = range(0, 32)
_SEI_TYPES = (39, 40)


class HevcStreamError(ValueError):
    """A payload (or a HEIF file) this module cannot read; the message says what is wrong."""


@dataclass(frozen=True)
class Settings:
    """What the receiver must know to rebuild the container: the image and the encoder's settings."""

    height: int
    width: int
    grey: bool
    depth: int  # 8 or 10 (10: grey only)
    chroma: str  # "420" or "444" (RGB only)
    qp: int

    def blank(self) -> np.ndarray:
        shape = (self.height, self.width) if self.grey else (self.height, self.width, 3)
        return np.zeros(shape, np.uint16 if self.depth == 10 else np.uint8)


def settings_of(array: np.ndarray, qp: int, chroma: str) -> Settings:
    depth = 10 if array.dtype == np.uint16 else 8
    return Settings(int(array.shape[0]), int(array.shape[1]), array.ndim == 2, depth, chroma, int(qp))


@dataclass(frozen=True)
class _Layout:
    """Where the parts of a pillow-heif HEIF file are: byte offsets into it."""

    data: bytes
    hvcc: tuple[int, int]  # (box start, box size)
    ancestors: tuple[int, ...]  # size-field offsets of the boxes holding hvcC (meta, iprp, ipco)
    base_offset: int  # offset of iloc's base_offset field (u32): where the mdat content starts
    extent_length: int  # offset of iloc's extent_length field (u32)
    mdat: int  # start of the mdat box (the last box)

    @property
    def nal_units(self) -> bytes:
        return self.data[self.mdat + 8 :]

    @property
    def hvcc_body(self) -> bytes:
        start, size = self.hvcc
        return self.data[start + 8 : start + size]


def _boxes(data: bytes, start: int, end: int):
    """(offset, size, type) of each box in data[start:end]; refuses sizes that run past ``end``."""
    offset = start
    while offset < end:
        if end - offset < 8:
            raise HevcStreamError(f"a box header at byte {offset} is cut off")
        size, kind = struct.unpack_from(">I4s", data, offset)
        if size < 8 or offset + size > end:  # 64-bit and to-the-end sizes are not written by pillow-heif
            raise HevcStreamError(f"box {kind!r} at byte {offset} has size {size}, outside its parent")
        yield offset, size, kind
        offset += size


def _layout(data: bytes) -> _Layout:
    """Locate hvcC, iloc's one extent and mdat in a HEIF file as pillow-heif writes it.

    Raises:
        HevcStreamError: any other structure (then the file is sent whole).
    """
    found: dict[str, object] = {}

    def walk(start: int, end: int, parents: tuple[int, ...]) -> None:
        for offset, size, kind in _boxes(data, start, end):
            if kind in _CONTAINERS:
                walk(offset + 8 + _CONTAINERS[kind], offset + size, (*parents, offset))
            elif kind == b"hvcC":
                found["hvcc"], found["ancestors"] = (offset, size), parents
            elif kind == b"iloc":
                found["iloc"] = (offset, size)
            elif kind == b"mdat" and not parents:
                if offset + size != len(data):
                    raise HevcStreamError("mdat is not the last box")
                found["mdat"] = offset

    walk(0, len(data), ())
    if not {"hvcc", "iloc", "mdat"} <= set(found):
        raise HevcStreamError(f"not a one-image HEIF file of pillow-heif (found {sorted(found)})")
    iloc, size = found["iloc"]
    # iloc version 0, offset_size = length_size = base_offset_size = 4, index_size = 0; one item (ID 1,
    # data reference 0) with a base offset, one extent at offset 0 of a length: the whole mdat content
    expected_head = b"\x00\x00\x00\x00\x44\x40\x00\x01\x00\x01\x00\x00"
    if (
        size != 34
        or data[iloc + 8 : iloc + 20] != expected_head
        or data[iloc + 24 : iloc + 30] != bytes([0, 1, 0, 0, 0, 0])
    ):
        raise HevcStreamError("iloc is not version 0 with one item of one extent")
    base_offset, extent_length = iloc + 20, iloc + 30
    mdat = found["mdat"]
    if (
        struct.unpack_from(">I", data, base_offset)[0] != mdat + 8
        or struct.unpack_from(">I", data, extent_length)[0] != len(data) - mdat - 8
    ):
        raise HevcStreamError("the item's extent is not the whole mdat")
    return _Layout(data, found["hvcc"], found["ancestors"], base_offset, extent_length, mdat)


def _rebuild(template: _Layout, nal_units: bytes, hvcc_body: bytes | None = None) -> bytes:
    """The template file with ``nal_units`` in mdat (and ``hvcc_body`` as the hvcC box body)."""
    data = bytearray(template.data[: template.mdat])
    if hvcc_body is not None:
        start, size = template.hvcc
        delta = 8 + len(hvcc_body) - size
        data[start : start + size] = struct.pack(">I4s", 8 + len(hvcc_body), b"hvcC") + hvcc_body
        for parent in template.ancestors:
            struct.pack_into(">I", data, parent, struct.unpack_from(">I", data, parent)[0] + delta)
        mdat = template.mdat + delta
        base_offset, extent_length = (
            (field + delta if field > start else field) for field in (template.base_offset, template.extent_length)
        )
    else:
        mdat, base_offset, extent_length = template.mdat, template.base_offset, template.extent_length
    struct.pack_into(">I", data, base_offset, mdat + 8)
    struct.pack_into(">I", data, extent_length, len(nal_units))
    return bytes(data) + struct.pack(">I4s", 8 + len(nal_units), b"mdat") + nal_units


@lru_cache(maxsize=32)
def _template(settings: Settings) -> _Layout:
    """The HEIF file of an all-zero image of ``settings`` (what the receiver regenerates)."""
    s = settings
    return _layout(image_codecs.encode_array(s.blank(), "hevc", qp=s.qp, chroma=s.chroma))


def check_settings(settings: Settings) -> Settings:
    """Refuse settings no encoder here produced (before any work).

    Raises:
        HevcStreamError: size, depth, chroma or QP out of range, named.
    """
    s = settings
    if not (0 < s.height <= 16384 and 0 < s.width <= 16384):
        raise HevcStreamError(f"image size {s.height}×{s.width} is outside 1..16384")
    if s.depth not in (8, 10) or (s.depth == 10 and not s.grey):
        raise HevcStreamError(f"bit depth {s.depth} with {'grey' if s.grey else 'RGB'} is not a setting")
    if s.chroma not in ("420", "444") or (s.grey and s.chroma != "420"):
        raise HevcStreamError(f"chroma {s.chroma!r} is not a setting of a {'grey' if s.grey else 'RGB'} image")
    if not 0 <= s.qp <= 51:
        raise HevcStreamError(f"QP {s.qp} is outside 0..51")
    return s


def check_nal_units(data: bytes) -> int:
    """Number of NAL units in length-prefixed ``data``; every length must fit and the units be slices
    (or SEI), at least one slice.

    Raises:
        HevcStreamError: what is wrong.
    """
    offset, count, slices = 0, 0, 0
    while offset < len(data):
        if len(data) - offset < 4:
            raise HevcStreamError(f"a NAL unit length at byte {offset} is cut off")
        (length,) = struct.unpack_from(">I", data, offset)
        if length < 3 or offset + 4 + length > len(data):
            raise HevcStreamError(f"NAL unit {count} claims {length} bytes; {len(data) - offset - 4} follow")
        header = data[offset + 4]
        kind = (header >> 1) & 0x3F
        if header & 0x80 or (kind not in _VCL_TYPES and kind not in _SEI_TYPES):
            raise HevcStreamError(f"NAL unit {count} has type {kind} (forbidden bit {header >> 7}); expected a slice")
        slices += kind in _VCL_TYPES
        offset += 4 + length
        count += 1
    if slices == 0:
        raise HevcStreamError("no slice NAL unit")
    return count


def encode(array: np.ndarray, qp: int, chroma: str = "420") -> bytes:
    """The payload of one grey (H, W) / RGB (H, W, 3) uint8 plane, or 10-bit grey (uint16), at constant ``qp``.

    Raises:
        ValueError: as :func:`coding.image_codecs.encode_array`.
    """
    heif = image_codecs.encode_array(array, "hevc", qp=qp, chroma=chroma)
    try:
        mine = _layout(heif)
        template = _template(check_settings(settings_of(array, qp, chroma)))
    except HevcStreamError:
        return bytes([MODE_HEIF]) + heif
    nal_units = mine.nal_units
    if _rebuild(template, nal_units) == heif:
        return bytes([MODE_IMPLIED]) + nal_units
    body = mine.hvcc_body
    if len(body) <= 0xFFFF and _rebuild(template, nal_units, body) == heif:
        return bytes([MODE_PARAMETER_SETS]) + struct.pack(">H", len(body)) + body + nal_units
    return bytes([MODE_HEIF]) + heif


def to_heif(payload: bytes, settings: Settings) -> bytes:
    """The HEIF file a payload stands for (checked: structure only, no pixel decoded).

    Raises:
        HevcStreamError: an empty payload, an unknown mode, lengths that do not fit, no slice.
    """
    if not payload:
        raise HevcStreamError("empty HEVC payload")
    mode, rest = payload[0], payload[1:]
    if mode == MODE_HEIF:
        return rest
    if mode not in (MODE_IMPLIED, MODE_PARAMETER_SETS):
        raise HevcStreamError(f"unknown HEVC payload mode {mode}")
    template = _template(check_settings(settings))
    hvcc = None
    if mode == MODE_PARAMETER_SETS:
        if len(rest) < 2:
            raise HevcStreamError("HEVC payload cut off in the parameter-set length")
        (n,) = struct.unpack_from(">H", rest)
        if len(rest) < 2 + n:
            raise HevcStreamError(f"HEVC payload claims {n} bytes of parameter sets; {len(rest) - 2} follow")
        hvcc, rest = rest[2 : 2 + n], rest[2 + n :]
    check_nal_units(rest)
    return _rebuild(template, rest, hvcc)


def decode(payload: bytes, settings: Settings) -> np.ndarray:
    """The plane a payload codes: uint8 (H, W[, 3]) or 10-bit uint16 (H, W), exactly of ``settings``' size.

    Raises:
        HevcStreamError: any malformed payload, a decoder failure, or an image of another size or kind.
    """
    heif = to_heif(bytes(payload), settings)
    try:
        import pillow_heif

        image = pillow_heif.open_heif(io.BytesIO(heif), convert_hdr_to_8bit=False)
        if image.mimetype != "image/heic":
            raise HevcStreamError(f"the payload is {image.mimetype}, not image/heic")
        expected_mode = "I;16" if settings.depth == 10 else ("L" if settings.grey else "RGB")
        if tuple(image.size) != (settings.width, settings.height) or not image.mode.startswith(expected_mode):
            raise HevcStreamError(
                f"the image is {image.size[0]}×{image.size[1]} {image.mode}, expected "
                f"{settings.width}×{settings.height} {expected_mode}"
            )
        array = np.asarray(image).astype(np.uint16) >> 6 if settings.depth == 10 else np.asarray(image.to_pillow())
    except HevcStreamError:
        raise
    except Exception as error:
        raise HevcStreamError(f"cannot decode the HEVC payload: {type(error).__name__}: {error}") from error
    expected = (settings.height, settings.width) + (() if settings.grey else (3,))
    if array.shape != expected:
        raise HevcStreamError(f"decoded an image of shape {array.shape}, expected {expected}")
    return np.ascontiguousarray(array)
