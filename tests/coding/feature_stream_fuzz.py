"""Fuzzing of the feature stream reader (method 4, :mod:`coding.feature_codec`), run as a script in its own
process (a crash of the process — a segfault in an image decoder — then fails the calling test instead of
killing pytest).

    python tests/coding/feature_stream_fuzz.py [--examples N]

For streams of several settings (HEVC without a container, HEIF, PNG 10-bit, WebP, AVIF; r_channel, mono,
square; per tensor and per channel) it decodes:

* ``header_flip``: every single bit of the 24-byte header flipped (a transmission error);
* ``body_flip``: every single bit of the ranges and the image flipped, body CRC kept;
* ``truncate``: every prefix of the stream; ``append``: 1, 2, 7 and 100 bytes appended;
* ``forged_field``: every bit of every field (codec, layout, bits, flags, quality, C, H, W) flipped
  *with both CRCs recomputed* (a forger; the top 4 bits of C, H, W of HEVC streams on the first only);
* ``forged_range``: NaN, ±inf and min > max ranges with CRCs recomputed;
* ``foreign_payload``: the image replaced by another codec's file, an image of another size, a PNG
  whose header claims 60000×60000 pixels (a decompression bomb), a HEIF file, random bytes, nothing, and
  every HEVC payload mode with garbage — with CRCs recomputed;
* ``forged_body`` (hypothesis): random edits of the body — bit flips, byte overwrites, truncation,
  insertion, deletion — with the body CRC recomputed.

Property: a transmission error (CRCs kept) gives the right tensor or ``ValueError``; a forged stream
(CRCs recomputed) gives ``ValueError`` or a tensor of exactly the shape the header claims, finite and
within the header's ranges. Prints one JSON line: cases and outcomes per kind, the peak resident memory;
exits 1 on a case that broke the property (printed), 0 otherwise.
"""

from __future__ import annotations

import argparse
import io
import struct
import sys
import zlib
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from coding import feature_codec as fc  # noqa: E402
from coding.image_codecs import available_codecs, encode_array  # noqa: E402
from tests.coding.fuzz_support import (
    PropertyBroken,
    apply_edits,
    decoded_or_counted,
    edits_strategy,
    fuzz_settings,
    run_and_report,
)  # noqa: E402

FIELDS = struct.Struct("<4sBBBBBBHHHII")
NAMES = ("magic", "version", "codec", "layout", "bits", "flags", "quality", "c", "h", "w", "body_crc", "header_crc")
FORGEABLE = {"codec": 8, "layout": 8, "bits": 8, "flags": 8, "quality": 8, "c": 16, "h": 16, "w": 16}
OUTCOME_WORDS = (
    "header CRC", "body CRC", "magic", "version", "unknown", "invalid header", "truncated", "shape", "finite",
    "min > max", "expected", "implies", "cannot decode", "NAL", "payload", "mode", "box", "above 10 bits", "header",
)  # fmt: skip


def setting_list() -> list[fc.FeatureCodec]:
    codecs = available_codecs()
    out = [
        fc.FeatureCodec("hevc", 35, "r_channel"),
        fc.FeatureCodec("hevc", 30, "square", bits=10, per_channel=True),
        fc.FeatureCodec("png", None, "square", bits=10, per_channel=True),
        fc.FeatureCodec("png", None, "r_channel"),
        fc.FeatureCodec("webp", 60, "mono"),
    ]
    if "hevc" in codecs:
        out += [fc.FeatureCodec("heif", 40, "mono"), fc.FeatureCodec("hevc", 25, "r_channel", chroma="444")]
    if "avif" in codecs:
        out.append(fc.FeatureCodec("avif", 50, "r_channel"))
    return [c for c in out if c.codec == "png" or c.codec == "webp" or "hevc" in codecs]


def forge(data: bytes, body: bytes | None = None, **fields) -> bytes:
    """Header fields replaced, optionally another body, both CRCs valid again."""
    values = dict(zip(NAMES, FIELDS.unpack_from(data), strict=True))
    body = data[fc.HEADER_SIZE :] if body is None else body
    values.update(fields, body_crc=zlib.crc32(body))
    head = FIELDS.pack(*values.values())[:-4]
    return head + struct.pack("<I", zlib.crc32(head)) + body


def png_bomb() -> bytes:
    """A PNG whose IHDR claims 60000 × 60000 grey pixels (3.6 G) followed by almost no data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    )


class Fuzzer:
    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.features = torch.relu(torch.randn(12, 7, 9, generator=generator)) * 3
        self.streams = {codec.name: codec.encode(self.features) for codec in setting_list()}
        self.expected = {name: fc.decode(data) for name, data in self.streams.items()}
        self.outcomes: dict[str, Counter] = {}

    def check(self, kind: str, name: str, data: bytes, forged: bool) -> None:
        """Decode ``data``; record the outcome; raise PropertyBroken if it breaks the property."""
        counter = self.outcomes.setdefault(kind, Counter())
        tensor = decoded_or_counted(fc.decode, data, counter, OUTCOME_WORDS, f"{name}/{kind}", f"{data[:64].hex()}…")
        if tensor is None:
            return
        expected = self.expected[name]
        if tensor.shape == expected.shape and torch.equal(tensor, expected):
            counter["right tensor"] += 1
            return
        if not forged:
            raise PropertyBroken(f"{name}/{kind}: a wrong tensor without error; stream {data[:64].hex()}…")
        info = fc.read_header(data)
        k = info.ranges_size // 8
        lo = torch.from_numpy(np.frombuffer(data, "<f4", k, fc.HEADER_SIZE).copy()).reshape(-1, 1, 1)
        hi = torch.from_numpy(np.frombuffer(data, "<f4", k, fc.HEADER_SIZE + 4 * k).copy()).reshape(-1, 1, 1)
        slack = 1e-5 * (hi.abs() + lo.abs() + 1)
        if (
            tuple(tensor.shape) != info.shape
            or not bool(torch.isfinite(tensor).all())
            or not bool(((tensor >= lo - slack) & (tensor <= hi + slack)).all())
        ):
            raise PropertyBroken(f"{name}/{kind}: tensor {tuple(tensor.shape)} for a header claiming {info.shape}")
        counter["tensor of the forged header's shape"] += 1

    def flips_truncations_appends(self) -> None:
        for name, data in self.streams.items():
            for bit in range(len(data) * 8):
                flipped = bytearray(data)
                flipped[bit // 8] ^= 1 << (bit % 8)
                kind = "header_flip" if bit < fc.HEADER_SIZE * 8 else "body_flip"
                self.check(kind, name, bytes(flipped), forged=False)
            for end in range(len(data)):
                self.check("truncate", name, data[:end], forged=False)
            for extra in (b"\0", b"\xff\x01", bytes(range(7)), b"\xab" * 100):
                self.check("append", name, data + extra, forged=False)

    def forged_fields(self) -> None:
        for index, (name, data) in enumerate(self.streams.items()):
            values = dict(zip(NAMES, FIELDS.unpack_from(data), strict=True))
            for field, bits in FORGEABLE.items():
                # HEVC rebuilds its container by encoding a blank image of the claimed size (up to 16384²):
                # the top 4 bits of C, H, W are forged on the first stream only, to keep the run short
                expensive = field in ("c", "h", "w") and index > 0 and name.startswith("hevc")
                for bit in range(12 if expensive else bits):
                    self.check("forged_field", name, forge(data, **{field: values[field] ^ (1 << bit)}), forged=True)

    def forged_ranges(self) -> None:
        for name, data in self.streams.items():
            info = fc.read_header(data)
            k = info.ranges_size // 8
            body = data[fc.HEADER_SIZE :]
            for lo, hi in ((np.nan, 1.0), (0.0, np.inf), (-np.inf, 0.0), (2.0, 1.0), (0.0, np.nan)):
                ranges = np.full(k, lo, "<f4").tobytes() + np.full(k, hi, "<f4").tobytes()
                self.check("forged_range", name, forge(data, ranges + body[8 * k :]), forged=True)

    def foreign_payloads(self) -> None:
        rng = np.random.default_rng(1)
        grey = rng.integers(0, 256, (21, 36), dtype=np.uint8)
        rgb = rng.integers(0, 256, (21, 36, 3), dtype=np.uint8)
        files = {
            "png_other_size": encode_array(grey[:10], "png"),
            "png_rgb": encode_array(rgb, "png"),
            "png_bomb": png_bomb(),
            "webp_other_size": encode_array(rgb[:, :20], "webp", 50),
            "jpeg": encode_array(rgb, "jpeg", 50),
            "random": rng.integers(0, 256, 300, dtype=np.uint8).tobytes(),
            "empty": b"",
            "gif": _gif(grey),
        }
        if "hevc" in available_codecs():
            heif = encode_array(grey, "hevc", qp=30)
            files["heif"] = heif
            files["heif_other_size"] = encode_array(grey[:, :30], "hevc", qp=30)
            files["hevc_mode2_heif"] = b"\x02" + heif
            files["hevc_mode2_other_size"] = b"\x02" + files["heif_other_size"]
            files["hevc_mode1_garbage"] = b"\x01\x00\x05" + b"\x01\x02\x03\x04\x05" + b"\x00\x00\x00\x03\x28\x01\xaf"
            files["hevc_mode0_garbage_slice"] = b"\x00\x00\x00\x00\x10\x28\x01" + bytes(
                rng.integers(0, 256, 14, np.uint8)
            )
            files["hevc_mode0_vps"] = b"\x00\x00\x00\x00\x05\x40\x01\x0c\x01\xff"
            files["hevc_mode9"] = b"\x09" + heif
        if "avif" in available_codecs():
            files["avif"] = encode_array(rgb, "avif", 50)
        for name, data in self.streams.items():
            info = fc.read_header(data)
            ranges = data[fc.HEADER_SIZE : fc.HEADER_SIZE + info.ranges_size]
            for payload in files.values():
                self.check("foreign_payload", name, forge(data, ranges + payload), forged=True)
            for other_name, other in self.streams.items():  # another setting's image under this header
                if other_name != name:
                    other_info = fc.read_header(other)
                    self.check(
                        "foreign_payload",
                        name,
                        forge(data, ranges + other[fc.HEADER_SIZE + other_info.ranges_size :]),
                        forged=True,
                    )

    def hypothesis_cases(self, examples: int) -> None:
        @fuzz_settings(examples)
        @given(name=st.sampled_from(list(self.streams)), edits=edits_strategy())
        def body_edits(name, edits):
            data = self.streams[name]
            self.check("forged_body", name, forge(data, apply_edits(data[fc.HEADER_SIZE :], edits)), forged=True)

        body_edits()


def _gif(grey: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="GIF")
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=200, help="hypothesis examples of forged bodies")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    fuzzer = Fuzzer()
    steps = [fuzzer.flips_truncations_appends, fuzzer.forged_fields, fuzzer.forged_ranges, fuzzer.foreign_payloads,
             lambda: fuzzer.hypothesis_cases(args.examples)]  # fmt: skip
    return run_and_report(steps, fuzzer.outcomes, settings=list(fuzzer.streams),
                          stream_bytes={name: len(data) for name, data in fuzzer.streams.items()})  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
