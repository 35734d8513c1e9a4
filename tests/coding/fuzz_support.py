"""What the stream fuzzers share (tests/coding/bitstream_fuzz.py, tests/coding/feature_stream_fuzz.py): the random
edits of a byte string, hypothesis settings, the JSON report of a fuzz process, and running that process from a
test (in its own process, so that a segfault in a decoder fails the test instead of killing pytest)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st


class PropertyBroken(Exception):
    """A case decoded to something other than the right result or a ``ValueError``."""


T = TypeVar("T")


def decoded_or_counted(
    decode: Callable[[bytes], T], data: bytes, counter: Counter, words: Sequence[str], case: str, shown: str
) -> T | None:
    """``decode(data)``, or ``None`` after counting a ``ValueError`` under the first of ``words`` its message
    contains (``ValueError: other`` if none); any other exception breaks the property (``case``: the setting
    and kind of edit, ``shown``: the stream as the report quotes it)."""
    try:
        return decode(data)
    except ValueError as error:
        message = str(error)
        word = next((w for w in words if w in message), "other")
        counter[f"ValueError: {word}"] += 1
        return None
    except Exception as error:  # anything else (MemoryError, RuntimeError, ...) breaks the property
        raise PropertyBroken(f"{case}: {type(error).__name__}: {error}; stream {shown}") from error


def edits_strategy() -> st.SearchStrategy:
    """1–4 edits (op, position, value): bit flips, byte overwrites, truncation, insertion, deletion."""
    edit = st.tuples(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]), st.integers(0, 10_000),
                     st.integers(0, 255))  # fmt: skip
    return st.lists(edit, min_size=1, max_size=4)


def apply_edits(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for op, position, value in edits:
        i = position % (len(out) + 1)
        if op == "flip" and i < len(out):
            out[i] ^= 1 << (value % 8)
        elif op == "set" and i < len(out):
            out[i] = value
        elif op == "truncate":
            del out[i:]
        elif op == "insert":
            out[i:i] = bytes([value]) * (1 + value % 9)
        elif op == "delete" and i < len(out):
            del out[i : i + 1 + value % 9]
    return bytes(out)


def fuzz_settings(examples: int) -> settings:
    """Reproducible hypothesis settings (derandomised, no database) for ``examples`` cases."""
    return settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))  # fmt: skip


def run_and_report(steps: list[Callable[[], None]], outcomes: dict[str, Counter], **extra) -> int:
    """Run the fuzz steps; print one JSON line (``extra``, cases, outcomes per kind, peak resident memory);
    exit status 1 if a step broke the property (printed on stderr), else 0."""
    status = 0
    try:
        for step in steps:
            step()
    except PropertyBroken as error:
        print(f"PROPERTY BROKEN: {error}", file=sys.stderr)
        status = 1
    report = {
        **extra,
        "cases": sum(sum(c.values()) for c in outcomes.values()),
        "outcomes": {kind: dict(sorted(c.items())) for kind, c in sorted(outcomes.items())},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(report))
    return status


def run_fuzz_script(script: Path, examples: int) -> dict:
    """Run a fuzz script in a subprocess; assert it exited 0; its JSON report."""
    run = subprocess.run(
        [sys.executable, str(script), "--examples", str(examples)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, (
        f"fuzz process exited with {run.returncode} (negative: killed by a signal)\n{run.stderr}"
    )
    report = json.loads(run.stdout.strip().splitlines()[-1])
    print(json.dumps(report, indent=1))
    return report
