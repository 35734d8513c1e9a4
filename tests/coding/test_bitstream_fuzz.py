"""The bitstream reader never crashes: fuzzing in a subprocess (tests/coding/bitstream_fuzz.py), so that a
segfault in a decoder fails this test instead of killing pytest."""

from pathlib import Path

import pytest

from tests.coding.fuzz_support import run_fuzz_script

SCRIPT = Path(__file__).with_name("bitstream_fuzz.py")


@pytest.mark.slow
def test_fuzzed_streams_decode_right_or_raise_value_error():
    report = run_fuzz_script(SCRIPT, examples=120)
    outcomes = report["outcomes"]
    for coding in ("packed", "entropy"):
        # every one of the 28·8 header bits, flipped, is refused
        assert sum(outcomes[f"{coding}/header_flip"].values()) == 28 * 8
        assert all(k.startswith("ValueError") for k in outcomes[f"{coding}/header_flip"])
        # every bit of flags (8) and of B, H, W, T, bits (5 × 16), forged with valid CRCs
        assert sum(outcomes[f"{coding}/forged_field"].values()) == 8 + 5 * 16
        for kind in ("payload", "payload_forged", "forged_header"):
            assert sum(outcomes[f"{coding}/{kind}"].values()) > 0
    assert report["cases"] >= 2 * (28 * 8 + 88) + 2 * 120
    assert report["peak_rss_mb"] < 2000  # no multi-GB allocation from a forged size
