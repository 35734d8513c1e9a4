"""Classical image codecs behind one interface, so they sit on the same rate–distortion plot as the
learned codecs: ``encode_image(image, codec, quality) -> bytes`` and ``decode_image(data, codec)``.

Codecs (the bytes returned are the whole file, container and headers included — that is what would be
sent; for tiny images the container dominates, e.g. ~450 bytes of HEIF boxes, ~300 of AVIF):

========  ====================  ==========  ==================================================================
name      library               quality     settings
========  ====================  ==========  ==================================================================
``png``   Pillow (zlib)         ignored     lossless, ``compress_level=9``; ``quality`` is accepted and ignored
``jpeg``  Pillow (libjpeg)      1..100      baseline, ``subsampling="4:2:0"``, Pillow's default Huffman tables
``webp``  Pillow (libwebp)      0..100      lossy (always 4:2:0), Pillow's default ``method=4``
``avif``  Pillow (libavif)      0..100      ``subsampling="4:2:0"``, Pillow's default ``speed=6``; if this Pillow
                                            lacks AVIF, pillow-heif's AV1 encoder is used when it has one
``hevc``  pillow-heif (x265)    0..100      HEIF container (``.heic``), ``chroma=420``; libheif maps quality to
                                            x265's rate control. The BPG files of the papers carry the
                                            same HEVC coding with a few bytes of header instead:
                                            :mod:`coding.hevc_bitstream` sends only the slice data
========  ====================  ==========  ==================================================================

All lossy codecs use 4:2:0 chroma subsampling so that they compare like for like. Higher quality
always means better fidelity and more bytes.

Images: ``numpy.ndarray`` uint8 (H, W, 3), or a ``torch.Tensor`` (3, H, W) — float in [0, 1] (rounded to
8 bits) or uint8. Decoding returns uint8 (H, W, 3).

Planes (:func:`encode_array` / :func:`decode_array`, used by the feature codec, :mod:`coding.feature_codec`):
also grey images (H, W) — a 4:0:0 image for ``png``, ``hevc`` and ``avif``; ``webp`` has no grey mode,
so libwebp codes the grey as RGB (luma only, flat chroma) — and 10-bit grey (uint16 values < 1024) for
``png`` (a 16-bit PNG) and ``hevc`` (Main 10). HEVC can be run at a constant quantisation parameter
like BPG: ``qp`` 0..51 is handed to x265 as ``x265:qp`` (libheif passes ``x265:`` parameters to
``x265_param_parse`` after its own quality mapping, so the constant-QP rate control replaces it);
each +6 QP doubles x265's quantiser step. ``chroma`` picks 4:2:0 (the default everywhere, BPG's too)
or 4:4:4 for RGB images (``jpeg``, ``avif``, ``hevc``).

Errors: an unknown codec, a quality out of range, or a codec missing from the installed Pillow /
pillow-heif build raises ``ValueError`` naming it and listing the codecs that are available.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np
import torch
from PIL import Image, features
from torch import Tensor


@dataclass(frozen=True)
class ImageCodec:
    """One classical codec: its name, quality range and whether it is lossless.

    Args:
        name: registry key.
        quality_min: lowest accepted quality (``None`` when quality is ignored).
        quality_max: highest accepted quality (``None`` when quality is ignored).
        lossless: the round trip is exact.
        library: what implements it here.
    """

    name: str
    quality_min: int | None
    quality_max: int | None
    lossless: bool
    library: str

    @property
    def qualities(self) -> range | None:
        """Every accepted quality, or ``None`` when quality is ignored."""
        if self.quality_min is None or self.quality_max is None:
            return None
        return range(self.quality_min, self.quality_max + 1)


CODECS: dict[str, ImageCodec] = {
    "png": ImageCodec("png", None, None, True, "Pillow (zlib)"),
    "jpeg": ImageCodec("jpeg", 1, 100, False, "Pillow (libjpeg)"),
    "webp": ImageCodec("webp", 0, 100, False, "Pillow (libwebp)"),
    "avif": ImageCodec("avif", 0, 100, False, "Pillow (libavif) or pillow-heif (AV1)"),
    "hevc": ImageCodec("hevc", 0, 100, False, "pillow-heif (x265 encoder, libde265 decoder)"),
}

_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF"}


@cache
def _heif_info() -> dict | None:
    try:
        import pillow_heif
    except ImportError:
        return None
    return pillow_heif.libheif_info()


def _heif_avif() -> bool:
    info = _heif_info()
    return bool(info and info.get("AVIF"))


@cache
def _availability() -> dict[str, str | None]:
    """codec → ``None`` if available, else the reason it is not."""
    heif = _heif_info()
    reasons: dict[str, str | None] = {
        "png": None if features.check("zlib") else "Pillow was built without zlib",
        "jpeg": None if features.check("jpg") else "Pillow was built without libjpeg",
        "webp": None if features.check("webp") else "Pillow was built without libwebp",
        "avif": None
        if features.check("avif") or _heif_avif()
        else "neither Pillow (needs >= 11.2 with libavif) nor pillow-heif has an AVIF encoder",
    }
    if heif is None:
        reasons["hevc"] = "pillow-heif is not installed"
    elif not heif.get("HEIF"):
        reasons["hevc"] = "this pillow-heif build has no HEVC (x265) encoder"
    elif not any("265" in name or "hevc" in name.lower() for name in heif.get("decoders", {})):
        reasons["hevc"] = "this pillow-heif build has no HEVC decoder"
    else:
        reasons["hevc"] = None
    return reasons


def available_codecs() -> list[str]:
    """Names of the codecs usable with the installed Pillow / pillow-heif build."""
    return [name for name, reason in _availability().items() if reason is None]


def unavailable_codecs() -> dict[str, str]:
    """Codec → reason, for the codecs this build lacks."""
    return {name: reason for name, reason in _availability().items() if reason is not None}


def get_codec(codec: str) -> ImageCodec:
    """The registry entry of an available codec.

    Raises:
        ValueError: unknown codec, or one this build lacks (with the reason and the available ones).
    """
    if codec not in CODECS:
        raise ValueError(
            f"unknown image codec {codec!r}; known codecs: {sorted(CODECS)}, available here: {available_codecs()}"
        )
    reason = _availability()[codec]
    if reason is not None:
        raise ValueError(f"image codec {codec!r} is not available: {reason}; available here: {available_codecs()}")
    return CODECS[codec]


def check_quality(codec: str, quality: int | None) -> int | None:
    """Return ``quality`` if ``codec`` accepts it (``None`` for codecs that ignore it)."""
    spec = get_codec(codec)
    if spec.qualities is None:
        return None
    if isinstance(quality, bool) or not isinstance(quality, int | np.integer):
        raise ValueError(
            f"quality for {codec!r} must be an int in {spec.quality_min}..{spec.quality_max}, got {quality!r}"
        )
    if not spec.quality_min <= quality <= spec.quality_max:
        raise ValueError(
            f"quality {quality} is out of range for {codec!r}: expected {spec.quality_min}..{spec.quality_max}"
        )
    return int(quality)


def to_uint8_hwc(image: np.ndarray | Tensor) -> np.ndarray:
    """uint8 (H, W, 3) C-contiguous array from an ndarray (H, W, 3) uint8 or a tensor (3, H, W)
    (float in [0, 1], rounded to the nearest of 256 levels, or uint8)."""
    if isinstance(image, Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image tensors must have shape (3, H, W), got {tuple(image.shape)}")
        if image.is_floating_point():
            if not torch.isfinite(image).all() or image.min() < 0 or image.max() > 1:
                raise ValueError("float image tensors must be finite and in [0, 1]")
            image = (image.detach().cpu() * 255).round().to(torch.uint8)
        elif image.dtype != torch.uint8:
            raise ValueError(f"image tensors must be float in [0, 1] or uint8, got {image.dtype}")
        array = image.cpu().permute(1, 2, 0).numpy()
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image arrays must be uint8 of shape (H, W, 3), got {image.dtype} {image.shape}")
        array = image
    else:
        raise ValueError(
            f"image must be a numpy array (H, W, 3) uint8 or a tensor (3, H, W), got {type(image).__name__}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"image is empty: shape {array.shape}")
    return np.ascontiguousarray(array)


def to_float_chw(array: np.ndarray) -> Tensor:
    """float32 tensor (3, H, W) in [0, 1] from a uint8 (H, W, 3) array."""
    return torch.from_numpy(np.array(array, dtype=np.uint8)).permute(2, 0, 1).float() / 255


_HEVC_QP_MAX = 51
_TEN_BIT_CODECS = ("png", "hevc")


def _check_plane(array: np.ndarray, codec: str) -> int:
    """Bit depth (8 or 10) of a grey (H, W) or RGB (H, W, 3) plane that ``codec`` can take."""
    if not isinstance(array, np.ndarray):
        raise ValueError(f"expected a numpy array, got {type(array).__name__}")
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3) or 0 in array.shape:
        raise ValueError(f"expected a grey (H, W) or RGB (H, W, 3) array, got shape {array.shape}")
    if array.dtype == np.uint8:
        return 8
    if array.dtype == np.uint16:
        if array.ndim != 2 or codec not in _TEN_BIT_CODECS:
            raise ValueError(
                f"10-bit input is supported as a grey plane for {_TEN_BIT_CODECS}, not {codec!r} {array.shape}"
            )
        if array.max() >= 1024:
            raise ValueError(f"10-bit planes hold values < 1024, got a maximum of {int(array.max())}")
        return 10
    raise ValueError(f"expected uint8 (or 10-bit uint16) pixels, got {array.dtype}")


def _encode_heif(array: np.ndarray, fmt: str, quality: int | None, qp: int | None, chroma: str) -> bytes:
    import pillow_heif

    height, width = array.shape[:2]
    if array.dtype == np.uint16:  # pillow-heif takes 16-bit samples MSB-aligned and writes 10 bits
        heif = pillow_heif.from_bytes("I;16", (width, height), (array.astype("<u2") << 6).tobytes())
    else:
        heif = pillow_heif.from_bytes("RGB" if array.ndim == 3 else "L", (width, height), array.tobytes())
    options: dict = {"quality": quality}
    if array.ndim == 3:
        options["chroma"] = int(chroma)
    if qp is not None:
        options["enc_params"] = {"x265:qp": str(qp)}
    buffer = io.BytesIO()
    heif.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def encode_array(
    array: np.ndarray,
    codec: str,
    quality: int | None = None,
    *,
    qp: int | None = None,
    chroma: Literal["420", "444"] = "420",
) -> bytes:
    """Encode one grey (H, W) or RGB (H, W, 3) plane (see the module docstring) and return the file's bytes.

    Args:
        array: uint8 (H, W) or (H, W, 3); or uint16 (H, W) with 10-bit values for ``png`` / ``hevc``.
        codec: one of :data:`CODECS` available here.
        quality: codec quality, higher = better; ignored for ``png``; must be ``None`` when ``qp`` is given.
        qp: ``hevc`` only: constant quantisation parameter 0..51 (lower = better), like BPG's ``-q``.
        chroma: ``"420"`` or ``"444"`` subsampling of RGB images (``webp`` is always 4:2:0).

    Raises:
        ValueError: unknown or unavailable codec, an impossible setting (named), or a malformed array.
    """
    get_codec(codec)
    depth = _check_plane(array, codec)
    if chroma not in ("420", "444"):
        raise ValueError(f"chroma must be '420' or '444', got {chroma!r}")
    if chroma == "444" and codec == "webp":
        raise ValueError("lossy WebP is always 4:2:0; chroma='444' is impossible for 'webp'")
    if qp is not None:
        if codec != "hevc":
            raise ValueError(f"qp applies to 'hevc' only, not {codec!r}")
        if isinstance(qp, bool) or not isinstance(qp, int | np.integer) or not 0 <= qp <= _HEVC_QP_MAX:
            raise ValueError(f"hevc qp must be an int in 0..{_HEVC_QP_MAX}, got {qp!r}")
        if quality is not None:
            raise ValueError("give either quality or qp for 'hevc', not both")
    else:
        quality = check_quality(codec, quality)
    array = np.ascontiguousarray(array)
    if codec == "hevc":
        return _encode_heif(array, "HEIF", quality, None if qp is None else int(qp), chroma)
    if codec == "avif" and not features.check("avif"):
        return _encode_heif(array, "AVIF", quality, None, chroma)
    subsampling = "4:2:0" if chroma == "420" else "4:4:4"
    options: dict = {
        "png": {"compress_level": 9},
        "jpeg": {"quality": quality, "subsampling": subsampling},
        "webp": {"quality": quality, "lossless": False},
        "avif": {"quality": quality, "subsampling": subsampling},
    }[codec]
    image = Image.fromarray(array)
    if codec == "webp" and depth == 8 and array.ndim == 2:
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=_PIL_FORMAT[codec], **options)
    return buffer.getvalue()


def decode_array(data: bytes, codec: str, grey: bool = False, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Decode bytes written by :func:`encode_array`: uint8 (H, W, 3), or with ``grey`` the grey plane
    (H, W) — uint8, or uint16 with 10-bit values for a 10-bit file.

    Args:
        shape: the (H, W) the image must have; checked from the file's header **before** any pixel is
            decoded (a forged file cannot make the decoder allocate more).

    Raises:
        ValueError: unknown or unavailable codec, data that is not a decodable file of that codec, or an
            image of another size than ``shape``; whatever the decoder raises on bad data (Pillow's
            ``DecompressionBombError``, pillow-heif's ``IndexError`` / ``EOFError``, ...) comes as a
            ``ValueError`` naming it.
    """
    get_codec(codec)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError(f"expected bytes to decode, got {type(data).__name__}")
    data = bytes(data)

    def check_size(width: int, height: int) -> None:
        if shape is not None and (height, width) != tuple(shape):
            raise ValueError(f"the {codec} image is {height}×{width}, expected {shape[0]}×{shape[1]}")

    try:
        if codec == "hevc" or (codec == "avif" and not features.check("avif")):
            import pillow_heif

            heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False)
            expected = "image/heic" if codec == "hevc" else "image/avif"
            if heif.mimetype != expected:
                raise ValueError(f"the data is {heif.mimetype}, not {expected}")
            check_size(*heif.size)
            if heif.mode.startswith("I;16"):
                array = np.asarray(heif).astype(np.uint16) >> 6
            else:
                array = np.asarray(heif.to_pillow())
        else:
            with Image.open(io.BytesIO(data)) as opened:
                if opened.format != _PIL_FORMAT[codec]:
                    raise ValueError(f"the data is a {opened.format} file, not {_PIL_FORMAT[codec]}")
                check_size(*opened.size)
                if opened.mode.startswith("I;16"):
                    array = np.asarray(opened).astype(np.uint16)
                else:
                    array = np.asarray(opened if opened.mode in ("L", "RGB") else opened.convert("RGB"))
    except Exception as error:
        raise ValueError(
            f"cannot decode the data as {codec!r} ({len(data)} bytes): {type(error).__name__}: {error}"
        ) from error
    if grey and array.ndim == 3:
        array = array[..., 0]  # a grey image coded as RGB (WebP): R = G = B
    elif not grey and array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]
    return np.ascontiguousarray(array)


def encode_image(image: np.ndarray | Tensor, codec: str, quality: int | None = None) -> bytes:
    """Encode one RGB image and return the file's bytes (container included).

    Args:
        image: uint8 array (H, W, 3), or tensor (3, H, W) float in [0, 1] or uint8.
        codec: one of :data:`CODECS` available here (:func:`available_codecs`).
        quality: codec quality, higher = better; ignored (may be ``None``) for ``"png"``.

    Raises:
        ValueError: unknown or unavailable codec, quality out of range, or a malformed image.
    """
    return encode_array(to_uint8_hwc(image), codec, check_quality(codec, quality))


def decode_image(data: bytes, codec: str) -> np.ndarray:
    """Decode bytes written by :func:`encode_image` with ``codec``; uint8 (H, W, 3).

    Raises:
        ValueError: unknown or unavailable codec, or data that is not a decodable file of that codec.
    """
    return decode_array(data, codec)
