"""Fuzzing of the recurrent codec's bitstream reader, run as a script in its own process (a crash of the
process — a segfault in a decoder — then fails the calling test instead of killing pytest).

    python tests/coding/bitstream_fuzz.py [--examples N]

For a bit-packed and an entropy-coded stream of the same images it decodes:

* ``header_flip``: every single bit of the header flipped (a transmission error): the right image or
  ``ValueError`` (in practice always the error: the header has its own CRC);
* ``forged_field``: every bit of every size/flag field flipped *and both CRCs recomputed* (a forger):
  ``ValueError``, or an image of exactly the shape the forged header claims, in [0, 1];
* ``payload`` (hypothesis): random edits of the payload — bit flips, byte overwrites, truncation,
  insertion, deletion — with the payload CRC kept (transmission error: the right image or
  ``ValueError``) or recomputed (forger: ``ValueError`` or an image of the claimed shape);
* ``forged_header`` (hypothesis): random B, H, W, T, bits and flags with valid CRCs over the real payload.

Prints one JSON line: cases tried and outcomes per mode and kind, the peak resident memory; exits 1
on a case that broke the property (printed), 0 otherwise.
"""

from __future__ import annotations

import argparse
import struct
import sys
import zlib
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from coding import rnn_bitstream as rb  # noqa: E402
from models.rnn_codec import RNNCodec  # noqa: E402
from tests.coding.fuzz_support import (
    PropertyBroken,
    apply_edits,
    decoded_or_counted,
    edits_strategy,
    fuzz_settings,
    run_and_report,
)  # noqa: E402

FIELDS = struct.Struct("<4sBBHHHHH4sI")
NAMES = ("magic", "version", "flags", "batch", "height", "width", "iterations", "bits", "fingerprint", "crc")
SIZE_FIELDS = ("flags", "batch", "height", "width", "iterations", "bits")
OUTCOME_WORDS = (
    "header CRC", "payload CRC", "magic", "version", "flags", "positive", "probability", "truncated", "trailing",
    "cannot hold", "need", "unexpected symbols", "corrupt", "multiple of 4", "bits=", "configuration", "max_pixels",
)  # fmt: skip


def forge(data: bytes, payload: bytes | None = None, **fields) -> bytes:
    """Header fields replaced, optionally another payload, both CRCs valid again."""
    values = dict(zip(NAMES, FIELDS.unpack_from(data), strict=True))
    payload = data[rb.HEADER_SIZE :] if payload is None else payload
    values.update(fields, crc=zlib.crc32(payload))
    head = FIELDS.pack(*values.values())
    return head + struct.pack("<I", zlib.crc32(head)) + payload


def with_payload(data: bytes, payload: bytes) -> bytes:
    """Another payload under the unchanged header (payload CRC now wrong unless the payload is unchanged)."""
    return data[: rb.HEADER_SIZE] + payload


class Fuzzer:
    def __init__(self) -> None:
        torch.manual_seed(0)
        self.codec = RNNCodec(width=0.0625, bits=8).eval()
        x = torch.rand(2, 3, 37, 21, generator=torch.Generator().manual_seed(0))
        self.streams = {coding: rb.compress(self.codec, x, 3, coding=coding) for coding in ("packed", "entropy")}
        self.expected = {coding: rb.decompress(self.codec, data) for coding, data in self.streams.items()}
        self.outcomes: dict[str, Counter] = {}

    def check(self, kind: str, coding: str, data: bytes, forged: bool) -> None:
        """Decode ``data``; record the outcome; raise PropertyBroken if it breaks the property."""
        counter = self.outcomes.setdefault(f"{coding}/{kind}", Counter())
        image = decoded_or_counted(
            lambda d: rb.decompress(self.codec, d), data, counter, OUTCOME_WORDS, f"{coding}/{kind}", data.hex()
        )
        if image is None:
            return
        expected = self.expected[coding]
        if image.shape == expected.shape and torch.equal(image, expected):
            counter["right image"] += 1
            return
        if not forged:
            raise PropertyBroken(f"{coding}/{kind}: a wrong image without error; stream {data.hex()}")
        info = rb.parse_header(data)
        claimed = (info.batch, 3, info.height, info.width)
        if tuple(image.shape) != claimed or not bool(((image >= 0) & (image <= 1)).all()):
            raise PropertyBroken(f"{coding}/{kind}: image {tuple(image.shape)} for a header claiming {claimed}")
        counter["image of the forged header's shape"] += 1

    def header_flips(self) -> None:
        for coding, data in self.streams.items():
            for bit in range(rb.HEADER_SIZE * 8):
                flipped = bytearray(data)
                flipped[bit // 8] ^= 1 << (bit % 8)
                self.check("header_flip", coding, bytes(flipped), forged=False)

    def forged_fields(self) -> None:
        for coding, data in self.streams.items():
            values = dict(zip(NAMES, FIELDS.unpack_from(data), strict=True))
            for name in SIZE_FIELDS:
                for bit in range(8 if name == "flags" else 16):
                    self.check("forged_field", coding, forge(data, **{name: values[name] ^ (1 << bit)}), forged=True)

    def hypothesis_cases(self, examples: int) -> None:
        common = fuzz_settings(examples)

        @common
        @given(coding=st.sampled_from(["packed", "entropy"]), edits=edits_strategy(), recompute_crc=st.booleans())
        def payload_edits(coding, edits, recompute_crc):
            data = self.streams[coding]
            payload = apply_edits(data[rb.HEADER_SIZE :], edits)
            stream = forge(data, payload) if recompute_crc else with_payload(data, payload)
            self.check("payload_forged" if recompute_crc else "payload", coding, stream, forged=recompute_crc)

        size = st.one_of(st.integers(1, 80), st.integers(1, 0xFFFF))

        @common
        @given(coding=st.sampled_from(["packed", "entropy"]), batch=size, height=size, width=size,
               iterations=size, bits=st.sampled_from([8, 8, 8, 1, 32, 0xFFFF]), flags=st.sampled_from([0, 1]))  # fmt: skip
        def forged_headers(coding, batch, height, width, iterations, bits, flags):
            stream = forge(self.streams[coding], batch=batch, height=height, width=width, iterations=iterations,
                           bits=bits, flags=flags)  # fmt: skip
            self.check("forged_header", coding, stream, forged=True)

        payload_edits()
        forged_headers()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=150, help="hypothesis examples per property")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    fuzzer = Fuzzer()
    steps = [fuzzer.header_flips, fuzzer.forged_fields, lambda: fuzzer.hypothesis_cases(args.examples)]
    return run_and_report(steps, fuzzer.outcomes)


if __name__ == "__main__":
    sys.exit(main())
