"""The recurrent codec's bitstream: a small versioned header, then the codes of every iteration.

``compress(codec, images, T)`` runs the encoder (binarizer in its eval, sign mode) and writes the
±1 codes; ``decompress(codec, data)`` runs the decoder on them and returns exactly what
``codec.forward(images, T)["x_hat"].clamp(0, 1)`` gives in ``eval()`` mode.

Header (24 bytes, little-endian, ``struct`` format ``"<4sBBHHHHH4sI"``):

=======  ======  =========  ============================================================================
offset   size    type       field
=======  ======  =========  ============================================================================
0        4       bytes      magic ``b"SCVR"`` (splitcv recurrent codec)
4        1       uint8      format version, currently 1
5        1       uint8      flags: bit 0 = payload entropy coded (:mod:`coding.code_entropy`); others 0
6        2       uint16     B, images in the batch
8        2       uint16     H, original image height in pixels (before padding to a multiple of 16)
10       2       uint16     W, original image width in pixels
12       2       uint16     T, iterations coded
14       2       uint16     bits per 16×16 block and iteration (the codec's ``bits``)
16       4       bytes      codec configuration fingerprint: the first 4 bytes of SHA-256 of
                            ``"cell=<cell>;width=<width!r>;bits=<bits>;reconstruction=<rec>"``
20       4       uint32     CRC-32 (``zlib.crc32``) of the payload
=======  ======  =========  ============================================================================

Payload: the codes, shape ``(T, B, bits, ⌈H/16⌉, ⌈W/16⌉)``, either bit-packed
(:func:`coding.bitpacking.pack_signs`: iteration, batch, channel, row, column order, ``+1 → 1``),
exactly ``⌈T·B·bits·h·w / 8⌉`` bytes, or entropy coded (:func:`coding.code_entropy.encode_codes`).
Without entropy coding each iteration therefore costs ``bits / 256`` bits per pixel of the padded
image — 0.125 bpp for the default 32 bits whenever H and W are multiples of 16.

The fingerprint covers the codec's *configuration*, not its weights: a stream decoded with a codec of
another configuration fails with a clear error, one decoded with other weights of the same
configuration decodes to a wrong image silently.
"""

from __future__ import annotations

import hashlib
import math
import struct
import zlib
from dataclasses import dataclass

import torch
from torch import Tensor

from coding import code_entropy
from coding.bitpacking import pack_signs, packed_size, unpack_signs
from models.rnn_codec import STRIDE, RNNCodec

MAGIC = b"SCVR"
VERSION = 1
FLAG_ENTROPY_CODED = 0x01
_HEADER = struct.Struct("<4sBBHHHHH4sI")
HEADER_SIZE = _HEADER.size
"""Bytes of the header, 24."""
_MAX_U16 = 0xFFFF


def header_size() -> int:
    """Bytes of the header (24), the same for every stream of this version."""
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


def parse_header(data: bytes) -> BitstreamInfo:
    """Read and check the header of ``data``.

    Raises:
        ValueError: naming what is wrong: not a splitcv recurrent-codec stream (wrong magic), a
            truncated header, an unsupported version, unknown flags, or zero sizes.
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
    if len(data) < HEADER_SIZE:
        raise ValueError(f"truncated bitstream: {len(data)} bytes, the header alone is {HEADER_SIZE} bytes")
    _, version, flags, batch, height, width, iterations, bits, fingerprint, crc = _HEADER.unpack_from(data)
    if version != VERSION:
        raise ValueError(f"unsupported bitstream version {version}; this reader supports version {VERSION}")
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


def compress_codes(codec: RNNCodec, codes: Tensor, size: tuple[int, int], entropy_coding: bool = False) -> bytes:
    """Write a stream for codes already computed by ``codec`` (e.g. the first k of T iterations).

    Args:
        codec: the codec that produced ``codes`` (its configuration goes into the header).
        codes: ±1 codes of shape (T, B, bits, ⌈H/16⌉, ⌈W/16⌉).
        size: the original (H, W) of the images.
        entropy_coding: entropy code the payload (:mod:`coding.code_entropy`) instead of bit-packing it.
    """
    _check_codec(codec)
    height, width = (int(s) for s in size)
    if codes.ndim != 5:
        raise ValueError(f"codes must have shape (T, B, bits, h, w), got {tuple(codes.shape)}")
    iterations, batch = codes.shape[:2]
    expected = (iterations, batch, codec.bits, math.ceil(height / STRIDE), math.ceil(width / STRIDE))
    if tuple(codes.shape) != expected:
        raise ValueError(
            f"codes of images of size {height}×{width} must have shape {expected}, got {tuple(codes.shape)}"
        )
    if min(iterations, batch, height, width) < 1 or max(iterations, batch, height, width, codec.bits) > _MAX_U16:
        raise ValueError(
            f"T={iterations}, B={batch}, H={height}, W={width}, bits={codec.bits} must be in 1..{_MAX_U16}"
        )
    payload = code_entropy.encode_codes(codes) if entropy_coding else pack_signs(codes)
    header = _HEADER.pack(
        MAGIC,
        VERSION,
        FLAG_ENTROPY_CODED if entropy_coding else 0,
        batch,
        height,
        width,
        iterations,
        codec.bits,
        codec_fingerprint(codec),
        zlib.crc32(payload),
    )
    return header + payload


def compress(codec: RNNCodec, images: Tensor, iterations: int, entropy_coding: bool = False) -> bytes:
    """Encode ``images`` for ``iterations`` steps and return the bitstream.

    Args:
        codec: the recurrent codec; its binarizer is used in eval (sign) mode whatever its mode.
        images: float tensor (B, 3, H, W) in [0, 1]; any H, W (padded internally, cropped on decode).
        iterations: T ≥ 1; each iteration adds ``codec.bits / 256`` bpp to the payload.
        entropy_coding: entropy code the codes losslessly (see :mod:`coding.code_entropy`).

    Raises:
        ValueError: images of the wrong shape, dtype or range; iterations out of 1..65535.
    """
    _check_codec(codec)
    _check_images(images)
    if not isinstance(iterations, int) or not 1 <= iterations <= _MAX_U16:
        raise ValueError(f"iterations must be an int in 1..{_MAX_U16}, got {iterations!r}")
    codes = codec.encode(images, iterations)
    return compress_codes(codec, codes, (images.shape[-2], images.shape[-1]), entropy_coding)


def read_codes(codec: RNNCodec, data: bytes) -> tuple[Tensor, BitstreamInfo]:
    """Check ``data`` against ``codec`` and return its ±1 codes (T, B, bits, h, w) and header.

    Raises:
        ValueError: a foreign, truncated, corrupted (CRC mismatch) stream, or one written by a codec
            of another configuration.
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
    payload = bytes(data[HEADER_SIZE:])
    shape = info.code_shape
    if info.entropy_coded:
        code_entropy.split_stream(payload, shape)  # length checks before the checksum, for a clear message
    else:
        expected = packed_size(math.prod(shape))
        if len(payload) != expected:
            kind = "truncated" if len(payload) < expected else "has trailing bytes"
            raise ValueError(
                f"bitstream {kind}: codes of shape {shape} need {expected} payload bytes, got {len(payload)}"
            )
    if zlib.crc32(payload) != info.payload_crc32:
        raise ValueError("bitstream corrupted: payload CRC-32 does not match the header")
    codes = code_entropy.decode_codes(payload, shape) if info.entropy_coded else unpack_signs(payload, shape)
    return codes, info


@torch.no_grad()
def decompress_all_iterations(codec: RNNCodec, data: bytes) -> Tensor:
    """Reconstructions after each iteration, (T, B, 3, H, W), clamped to [0, 1]."""
    codes, info = read_codes(codec, data)
    weight = next(codec.parameters())
    x_hats = codec.decode(codes.to(device=weight.device, dtype=weight.dtype), size=(info.height, info.width))
    return x_hats.clamp(0, 1)


def decompress(codec: RNNCodec, data: bytes) -> Tensor:
    """The final reconstruction (B, 3, H, W) in [0, 1]: equals ``codec.forward(x, T)["x_hat"].clamp(0, 1)``
    of the encoded images with the codec in ``eval()`` mode."""
    return decompress_all_iterations(codec, data)[-1]
