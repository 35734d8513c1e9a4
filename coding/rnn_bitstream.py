"""The recurrent codec's bitstream: a small versioned, checksummed header, then the codes of every iteration.

``compress(codec, images, T)`` runs the encoder (binarizer in its eval, sign mode) and writes the
±1 codes; ``decompress(codec, data)`` runs the decoder on them and returns exactly what
``codec.forward(images, T)["x_hat"].clamp(0, 1)`` gives in ``eval()`` mode.
:func:`stream_bytes_per_image` is *the* size of a stream: every module, callback and benchmark that
reports bytes or bits per pixel of this codec takes them from it.

Header (28 bytes, little-endian, ``struct`` format ``"<4sBBHHHHH4sII"``), format version 2:

=======  ======  =========  ============================================================================
offset   size    type       field
=======  ======  =========  ============================================================================
0        4       bytes      magic ``b"SCVR"`` (splitcv recurrent codec)
4        1       uint8      format version, currently 2
5        1       uint8      flags: bit 0 = payload entropy coded (:mod:`coding.code_entropy`), else
                            bit-packed; others 0
6        2       uint16     B, images in the batch
8        2       uint16     H, original image height in pixels (before padding to a multiple of 16)
10       2       uint16     W, original image width in pixels
12       2       uint16     T, iterations coded
14       2       uint16     bits per 16×16 block and iteration (the codec's ``bits``)
16       4       bytes      codec configuration fingerprint: the first 4 bytes of SHA-256 of
                            ``"cell=<cell>;width=<width!r>;bits=<bits>;reconstruction=<rec>"``
20       4       uint32     CRC-32 (``zlib.crc32``) of the payload
24       4       uint32     CRC-32 of header bytes 0–23 (checked before any field is trusted)
=======  ======  =========  ============================================================================

Payload: the codes, shape ``(T, B, bits, ⌈H/16⌉, ⌈W/16⌉)``, either bit-packed
(:func:`coding.bitpacking.pack_signs`: iteration, batch, channel, row, column order, ``+1 → 1``),
exactly ``⌈T·B·bits·h·w / 8⌉`` bytes, or entropy coded (:func:`coding.code_entropy.encode_codes`: one
chunk per iteration with its own probabilities and length). By default (``coding="smallest"``) each
stream holds whichever of the two is smaller, and the flag says which. Bit-packed, each iteration
costs ``bits / 256`` bits per pixel of the padded image — 0.125 bpp for the default 32 bits whenever
H and W are multiples of 16.

Progressive: in both payloads the first k iterations come first and decode on their own;
:func:`first_iterations` cuts a T-iteration stream to its first k without decoding anything.

Reading an untrusted stream (:func:`read_codes`): magic and version; the header CRC; the flags and
sizes; the codec's bits and fingerprint; then every shape field against the payload (its exact length
when packed; the chunk structure and what the chunks can hold when entropy coded) — all before the
payload CRC and before any decoder runs, so a forged or corrupted stream raises ``ValueError`` and
allocates nothing its payload does not bound. ``max_pixels`` additionally refuses streams that claim
more than that many pixels (B·H·W). Version 1 streams (24-byte header without its own check,
entropy-coded payload of one table over all iterations) are refused with a clear error: re-encode.

The fingerprint covers the codec's *configuration*, not its weights: a stream decoded with a codec of
another configuration fails with a clear error, one decoded with other weights of the same
configuration decodes to a wrong image silently.
"""

from __future__ import annotations

import hashlib
import math
import struct
import zlib
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from coding import code_entropy
from coding.bitpacking import pack_signs, packed_size, signs_to_bits, unpack_signs
from models.rnn_codec import STRIDE, RNNCodec

MAGIC = b"SCVR"
VERSION = 2
FLAG_ENTROPY_CODED = 0x01
_FIELDS = struct.Struct("<4sBBHHHHH4sI")
_HEADER_CRC = struct.Struct("<I")
HEADER_SIZE = _FIELDS.size + _HEADER_CRC.size
"""Bytes of the header, 28."""
_MAX_U16 = 0xFFFF
MAX_PIXELS = 1 << 28
"""Default limit on B·H·W of a stream to decode (268 M pixels, e.g. 64 images of 2048×2048)."""

Coding = Literal["smallest", "packed", "entropy"]
CODINGS: tuple[str, ...] = ("smallest", "packed", "entropy")


def header_size() -> int:
    """Bytes of the header (28), the same for every stream of this version."""
    return HEADER_SIZE


def codec_config(codec: RNNCodec) -> str:
    """The configuration string that the fingerprint hashes."""
    return f"cell={codec.cell};width={float(codec.width)!r};bits={codec.bits};reconstruction={codec.reconstruction}"


def codec_fingerprint(codec: RNNCodec) -> bytes:
    """4-byte fingerprint of the codec's configuration (not of its weights)."""
    return hashlib.sha256(codec_config(codec).encode()).digest()[:4]


@dataclass(frozen=True)
class BitstreamInfo:
    """What the header of a stream says, plus the sizes of its two parts."""

    version: int
    entropy_coded: bool
    batch: int
    height: int
    width: int
    iterations: int
    bits: int
    fingerprint: bytes
    payload_crc32: int
    header_bytes: int
    payload_bytes: int

    @property
    def code_shape(self) -> tuple[int, int, int, int, int]:
        """Shape of the codes in the payload: (T, B, bits, ⌈H/16⌉, ⌈W/16⌉)."""
        return (
            self.iterations,
            self.batch,
            self.bits,
            math.ceil(self.height / STRIDE),
            math.ceil(self.width / STRIDE),
        )

    @property
    def pixels(self) -> int:
        """Original pixels over the batch, B·H·W (the denominator of bits per pixel)."""
        return self.batch * self.height * self.width

    @property
    def total_bytes(self) -> int:
        return self.header_bytes + self.payload_bytes


def _pack_header(info: BitstreamInfo) -> bytes:
    fields = _FIELDS.pack(
        MAGIC,
        VERSION,
        FLAG_ENTROPY_CODED if info.entropy_coded else 0,
        info.batch,
        info.height,
        info.width,
        info.iterations,
        info.bits,
        info.fingerprint,
        info.payload_crc32,
    )
    return fields + _HEADER_CRC.pack(zlib.crc32(fields))


def parse_header(data: bytes) -> BitstreamInfo:
    """Read and check the header of ``data`` (not its payload).

    Raises:
        ValueError: naming what is wrong: not a splitcv recurrent-codec stream (wrong magic), a
            truncated header, an unsupported version (version 1 included), a header CRC mismatch,
            unknown flags, or zero sizes.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError(f"expected a bytes object, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < len(MAGIC) and MAGIC.startswith(data):
        raise ValueError(f"truncated bitstream: {len(data)} bytes, the header alone is {HEADER_SIZE} bytes")
    if data[: len(MAGIC)] != MAGIC:
        raise ValueError(
            f"not a splitcv recurrent-codec bitstream: magic is {data[: len(MAGIC)]!r}, expected {MAGIC!r}"
        )
    if len(data) > len(MAGIC):
        version = data[len(MAGIC)]
        if version == 1:
            raise ValueError(
                "bitstream format version 1 is no longer read (its header had no checksum and its entropy-coded "
                f"payload cannot be decoded safely); re-encode the images with this version ({VERSION})"
            )
        if version != VERSION:
            raise ValueError(f"unsupported bitstream version {version}; this reader supports version {VERSION}")
    if len(data) < HEADER_SIZE:
        raise ValueError(f"truncated bitstream: {len(data)} bytes, the header alone is {HEADER_SIZE} bytes")
    (header_crc,) = _HEADER_CRC.unpack_from(data, _FIELDS.size)
    if zlib.crc32(data[: _FIELDS.size]) != header_crc:
        raise ValueError("bitstream header corrupted: header CRC-32 does not match")
    _, version, flags, batch, height, width, iterations, bits, fingerprint, crc = _FIELDS.unpack_from(data)
    if flags & ~FLAG_ENTROPY_CODED:
        raise ValueError(f"unknown flags 0x{flags:02x} in the bitstream header (known: 0x{FLAG_ENTROPY_CODED:02x})")
    if min(batch, height, width, iterations, bits) == 0:
        raise ValueError(
            f"corrupt header: B={batch}, H={height}, W={width}, T={iterations}, bits={bits} must all be positive"
        )
    return BitstreamInfo(
        version=version,
        entropy_coded=bool(flags & FLAG_ENTROPY_CODED),
        batch=batch,
        height=height,
        width=width,
        iterations=iterations,
        bits=bits,
        fingerprint=fingerprint,
        payload_crc32=crc,
        header_bytes=HEADER_SIZE,
        payload_bytes=len(data) - HEADER_SIZE,
    )


def stream_sizes(data: bytes) -> dict[str, int]:
    """``{"header_bytes", "payload_bytes", "total_bytes"}`` of a stream."""
    info = parse_header(data)
    return {
        "header_bytes": info.header_bytes,
        "payload_bytes": info.payload_bytes,
        "total_bytes": info.total_bytes,
    }


def payload_bits_per_pixel(data: bytes) -> float:
    """Payload bits divided by B·H·W (original pixels), header excluded."""
    info = parse_header(data)
    return info.payload_bytes * 8 / info.pixels


def payload_bits_per_pixel_per_iteration(data: bytes) -> float:
    """:func:`payload_bits_per_pixel` divided by T: exactly ``bits / 256`` for bit-packed streams of
    images whose sides are multiples of 16 and ``T·B·bits·h·w`` a multiple of 8."""
    return payload_bits_per_pixel(data) / parse_header(data).iterations


def _check_coding(coding: str) -> None:
    if coding not in CODINGS:
        raise ValueError(f"coding must be one of {CODINGS}, got {coding!r}")


def _check_codes(codes: Tensor) -> tuple[int, int, int, int, int]:
    if not isinstance(codes, Tensor) or codes.ndim != 5:
        raise ValueError(f"codes must be a tensor of shape (T, B, bits, h, w), got {getattr(codes, 'shape', codes)}")
    return tuple(codes.shape)  # type: ignore[return-value]


def stream_bytes_per_image(codes: Tensor, coding: Coding = "smallest") -> Tensor:
    """Real bytes of each image's own stream for k = 1..T iterations: an int64 tensor (T, B) whose entry
    ``[k − 1, b]`` is ``len(compress(codec, images[b:b+1], k, coding))`` — header counted once per image,
    payload as :func:`compress` writes it (bit-packed, entropy coded, or the smaller of the two).

    The payloads are produced for real (bit-packing sizes follow from the code count; every iteration
    of every image is entropy coded unless ``coding="packed"``); one call serves all k, because both
    payloads put the first k iterations first.

    Args:
        codes: ±1 codes (T, B, bits, ⌈H/16⌉, ⌈W/16⌉) of ``codec.encode`` or of ``codec(x, T)["codes"]``
            in eval mode (any device).
        coding: ``smallest`` (what :func:`compress` writes by default), ``packed`` or ``entropy``.

    Raises:
        ValueError: codes not 5-D or not exactly ±1; an unknown ``coding``.
    """
    _check_coding(coding)
    iterations, batch, bits, h, w = _check_codes(codes)
    codes = codes.detach().to("cpu", torch.float32)  # ±1 are exact in any float type (bf16 under autocast)
    signs_to_bits(codes)  # ±1 check, also for the packed sizes
    ks = np.arange(1, iterations + 1)
    packed = np.array([packed_size(int(k) * bits * h * w) for k in ks], dtype=np.int64)
    sizes = np.empty((iterations, batch), dtype=np.int64)
    for b in range(batch):
        if coding == "packed":
            payload = packed
        else:
            chunks = code_entropy.iteration_chunks(codes[:, b : b + 1])
            entropy = np.cumsum([len(chunk) for chunk in chunks], dtype=np.int64)
            payload = entropy if coding == "entropy" else np.minimum(packed, entropy)
        sizes[:, b] = HEADER_SIZE + payload
    return torch.from_numpy(sizes)


def _check_codec(codec: RNNCodec) -> None:
    if not isinstance(codec, RNNCodec):
        raise ValueError(f"expected an RNNCodec, got {type(codec).__name__}")


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor):
        raise ValueError(f"images must be a torch.Tensor of shape (B, 3, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a float tensor in [0, 1], got dtype {images.dtype}")
    b, _, h, w = images.shape
    if min(b, h, w) == 0 or max(b, h, w) > _MAX_U16:
        raise ValueError(f"batch, height and width must be in 1..{_MAX_U16}, got B={b}, H={h}, W={w}")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values")
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 1:
        raise ValueError(f"images must be in [0, 1], got values in [{low:.4g}, {high:.4g}]")


def _payload(codes: Tensor, coding: str) -> tuple[bytes, bool]:
    """``(payload, entropy_coded)`` for ``coding``; ``smallest`` keeps bit-packing on a tie."""
    if coding == "entropy":
        return code_entropy.encode_codes(codes), True
    packed = pack_signs(codes)
    if coding == "packed":
        return packed, False
    coded = code_entropy.encode_codes(codes)
    return (coded, True) if len(coded) < len(packed) else (packed, False)


def compress_codes(codec: RNNCodec, codes: Tensor, size: tuple[int, int], coding: Coding = "smallest") -> bytes:
    """Write a stream for codes already computed by ``codec`` (e.g. the first k of T iterations).

    Args:
        codec: the codec that produced ``codes`` (its configuration goes into the header).
        codes: ±1 codes of shape (T, B, bits, ⌈H/16⌉, ⌈W/16⌉).
        size: the original (H, W) of the images.
        coding: payload: ``smallest`` (the smaller of bit-packed and entropy coded, the flag says which),
            ``packed`` or ``entropy`` (:mod:`coding.code_entropy`).
    """
    _check_codec(codec)
    _check_coding(coding)
    height, width = (int(s) for s in size)
    iterations, batch = _check_codes(codes)[:2]
    expected = (iterations, batch, codec.bits, math.ceil(height / STRIDE), math.ceil(width / STRIDE))
    if tuple(codes.shape) != expected:
        raise ValueError(
            f"codes of images of size {height}×{width} must have shape {expected}, got {tuple(codes.shape)}"
        )
    if min(iterations, batch, height, width) < 1 or max(iterations, batch, height, width, codec.bits) > _MAX_U16:
        raise ValueError(
            f"T={iterations}, B={batch}, H={height}, W={width}, bits={codec.bits} must be in 1..{_MAX_U16}"
        )
    payload, entropy_coded = _payload(codes.detach().to("cpu", torch.float32), coding)
    info = BitstreamInfo(
        version=VERSION,
        entropy_coded=entropy_coded,
        batch=batch,
        height=height,
        width=width,
        iterations=iterations,
        bits=codec.bits,
        fingerprint=codec_fingerprint(codec),
        payload_crc32=zlib.crc32(payload),
        header_bytes=HEADER_SIZE,
        payload_bytes=len(payload),
    )
    return _pack_header(info) + payload


def compress(codec: RNNCodec, images: Tensor, iterations: int, coding: Coding = "smallest") -> bytes:
    """Encode ``images`` for ``iterations`` steps and return the bitstream.

    Args:
        codec: the recurrent codec; its binarizer is used in eval (sign) mode whatever its mode.
        images: float tensor (B, 3, H, W) in [0, 1]; any H, W (padded internally, cropped on decode).
        iterations: T ≥ 1; each iteration adds ``codec.bits / 256`` bpp to a bit-packed payload.
        coding: ``smallest`` (default), ``packed`` or ``entropy``; see :func:`compress_codes`.

    Raises:
        ValueError: images of the wrong shape, dtype or range; iterations out of 1..65535; unknown coding.
    """
    _check_codec(codec)
    _check_images(images)
    _check_coding(coding)
    if not isinstance(iterations, int) or not 1 <= iterations <= _MAX_U16:
        raise ValueError(f"iterations must be an int in 1..{_MAX_U16}, got {iterations!r}")
    codes = codec.encode(images, iterations)
    return compress_codes(codec, codes, (images.shape[-2], images.shape[-1]), coding)


def _checked_payload(data: bytes, max_pixels: int | None) -> tuple[BitstreamInfo, bytes, list | None]:
    """Header, payload and (entropy coded) its chunks, every shape field checked against the payload and
    the payload CRC verified; nothing decoded."""
    info = parse_header(data)
    if max_pixels is not None and info.pixels > max_pixels:
        raise ValueError(
            f"bitstream claims B·H·W = {info.batch}·{info.height}·{info.width} = {info.pixels} pixels, more than "
            f"max_pixels={max_pixels}; pass a larger max_pixels (or None) to decode it"
        )
    payload = bytes(data[HEADER_SIZE:])
    shape = info.code_shape
    chunks = None
    if info.entropy_coded:
        chunks = code_entropy.split_chunks(payload, shape)  # before the checksum, for a clear message
    else:
        expected = packed_size(math.prod(shape))
        if len(payload) != expected:
            kind = "truncated" if len(payload) < expected else "has trailing bytes"
            raise ValueError(
                f"bitstream {kind}: codes of shape {shape} need {expected} payload bytes, got {len(payload)}"
            )
    if zlib.crc32(payload) != info.payload_crc32:
        raise ValueError("bitstream corrupted: payload CRC-32 does not match the header")
    return info, payload, chunks


def read_codes(codec: RNNCodec, data: bytes, max_pixels: int | None = MAX_PIXELS) -> tuple[Tensor, BitstreamInfo]:
    """Check ``data`` against ``codec`` and return its ±1 codes (T, B, bits, h, w) and header.

    Raises:
        ValueError: a foreign, truncated or corrupted (header or payload CRC) stream, one whose shape
            fields do not fit its payload, one written by a codec of another configuration, or one of
            more than ``max_pixels`` pixels.
    """
    _check_codec(codec)
    info = parse_header(data)
    if info.bits != codec.bits:
        raise ValueError(f"bitstream was written with bits={info.bits} per block, but this codec has bits={codec.bits}")
    if info.fingerprint != codec_fingerprint(codec):
        raise ValueError(
            "bitstream was written by a codec of another configuration (fingerprint "
            f"{info.fingerprint.hex()}); this codec is {codec_config(codec)} (fingerprint "
            f"{codec_fingerprint(codec).hex()})"
        )
    info, payload, _ = _checked_payload(data, max_pixels)
    shape = info.code_shape
    codes = code_entropy.decode_codes(payload, shape) if info.entropy_coded else unpack_signs(payload, shape)
    return codes, info


def first_iterations(data: bytes, k: int) -> bytes:
    """The stream of the first ``k`` iterations of ``data`` (same payload coding), without decoding the
    codes: entropy-coded payloads are cut after chunk k, bit-packed ones after ``k·B·bits·h·w`` bits.

    Raises:
        ValueError: ``data`` is not a valid stream (see :func:`read_codes`), or ``k`` is not in 1..T.
    """
    info, payload, chunks = _checked_payload(data, max_pixels=None)
    if not isinstance(k, int) or not 1 <= k <= info.iterations:
        raise ValueError(f"k must be an int in 1..{info.iterations} (the stream's iterations), got {k!r}")
    if chunks is not None:
        side = code_entropy.side_info_bytes(info.bits)
        cut = payload[: sum(side + len(encoded) for _, encoded in chunks[:k])]
    else:
        n = k * math.prod(info.code_shape[1:])
        bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8))[:n]
        cut = np.packbits(bits).tobytes()
    prefix = replace(info, iterations=k, payload_crc32=zlib.crc32(cut), payload_bytes=len(cut))
    return _pack_header(prefix) + cut


@torch.no_grad()
def decompress_all_iterations(codec: RNNCodec, data: bytes, max_pixels: int | None = MAX_PIXELS) -> Tensor:
    """Reconstructions after each iteration, (T, B, 3, H, W), clamped to [0, 1]."""
    codes, info = read_codes(codec, data, max_pixels)
    weight = next(codec.parameters())
    x_hats = codec.decode(codes.to(device=weight.device, dtype=weight.dtype), size=(info.height, info.width))
    return x_hats.clamp(0, 1)


def decompress(codec: RNNCodec, data: bytes, max_pixels: int | None = MAX_PIXELS) -> Tensor:
    """The final reconstruction (B, 3, H, W) in [0, 1]: equals ``codec.forward(x, T)["x_hat"].clamp(0, 1)``
    of the encoded images with the codec in ``eval()`` mode."""
    return decompress_all_iterations(codec, data, max_pixels)[-1]
