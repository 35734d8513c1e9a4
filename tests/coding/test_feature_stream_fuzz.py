"""The feature stream reader never crashes and never returns a wrong tensor for a corrupted stream: fuzzing in a
subprocess (tests/coding/feature_stream_fuzz.py), so that a segfault in an image decoder fails this test instead
of killing pytest."""

from pathlib import Path

from coding.feature_codec import HEADER_SIZE
from tests.coding.fuzz_support import run_fuzz_script

SCRIPT = Path(__file__).with_name("feature_stream_fuzz.py")


def test_fuzzed_feature_streams_decode_right_or_raise_value_error():
    report = run_fuzz_script(SCRIPT, examples=150)
    outcomes, streams = report["outcomes"], report["stream_bytes"]
    assert len(streams) >= 5  # hevc (two layouts), png (two), webp; heif and avif where this build has them
    # transmission errors: every header bit, every body bit, every prefix, appended bytes — all refused
    for kind, count in (
        ("header_flip", HEADER_SIZE * 8 * len(streams)),
        ("body_flip", sum(8 * (n - HEADER_SIZE) for n in streams.values())),
        ("truncate", sum(streams.values())),
        ("append", 4 * len(streams)),
    ):
        assert sum(outcomes[kind].values()) == count, kind
        assert all(k.startswith("ValueError") for k in outcomes[kind]), outcomes[kind]
    # NaN / inf / min > max ranges with valid CRCs: refused
    assert set(outcomes["forged_range"]) <= {"ValueError: finite", "ValueError: min > max"}
    assert sum(outcomes["forged_range"].values()) == 5 * len(streams)
    for kind in ("forged_field", "foreign_payload", "forged_body"):
        assert sum(outcomes[kind].values()) > 0
    assert report["peak_rss_mb"] < 3000  # no multi-GB allocation from a forged size
