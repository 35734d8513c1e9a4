"""Two processes over TCP on 127.0.0.1: `splitcv serve` and `splitcv edge` (through tests/deploy/no_lightning.py,
which fails if either imported Lightning or the training code), the fixture's test images, a corrupted,
a truncated and an unframed stream; the server answers errors, survives them, and stops by itself."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.images import read_image
from deploy.protocol import REQUEST, recv_reply, send_frame
from deploy.runtime import EdgeRuntime

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("no_lightning.py")
CASE = "code_recognition_from_layer2"


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(RUNNER), *args], cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
    )


def _wait_for(path: Path, process: subprocess.Popen, log: Path, seconds: float = 120) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().strip():
            return int(path.read_text())
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"the server did not start listening:\n{log.read_text()}")


@pytest.mark.slow
def test_serve_and_edge_over_loopback_survive_bad_streams(exported, fixture_images, tmp_path):
    directory = exported(CASE)
    n = len(fixture_images)
    requests = 2 + n + 1  # truncated + valid (by hand), the images, the edge's corrupted copy
    port_file, server_log, edge_log = tmp_path / "port", tmp_path / "serve.log", tmp_path / "edge.log"
    server = _start(
        ["serve", str(directory), "--port-file", str(port_file), "--max-requests", str(requests),
         "--idle-timeout", "120", "--recv-timeout", "60"],
        server_log,
    )  # fmt: skip
    try:
        port = _wait_for(port_file, server, server_log)
        stream = EdgeRuntime(directory).encode(read_image(fixture_images[0]))
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            send_frame(sock, REQUEST, stream[: len(stream) // 2])  # a truncated stream, framed correctly
            truncated = recv_reply(sock)
            send_frame(sock, REQUEST, stream)  # the same connection goes on
            valid = recv_reply(sock)
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")  # not a frame: error reply, connection closed
            unframed = recv_reply(sock)
        summary_path = tmp_path / "summary.json"
        edge = _start(
            ["edge", str(directory), *map(str, fixture_images), "--port", str(port), "--corrupt-check",
             "--reference", str(directory / "reference.json"), "--summary-json", str(summary_path), "--timeout", "60"],
            edge_log,
        )  # fmt: skip
        assert edge.wait(timeout=300) == 0, edge_log.read_text()
        assert server.wait(timeout=120) == 0, server_log.read_text()  # stopped by itself after `requests`
    finally:
        for process in (server, locals().get("edge")):
            if process is not None and process.poll() is None:
                process.kill()
    assert not truncated["ok"] and "truncated" in truncated["error"]
    assert valid["ok"] and valid["bytes"] == len(stream)
    assert not unframed["ok"] and "ProtocolError" in unframed["error"]
    summary = json.loads(summary_path.read_text())
    reference = json.loads((directory / "reference.json").read_text())
    assert summary["images"] == n and summary["errors"] == 0 and not summary["failed"]
    assert summary["corrupt_check"]["rejected"] and "CRC" in summary["corrupt_check"]["error"]
    for row in summary["rows"]:
        assert row["bytes"] == reference[row["image"]]["bytes"] == row["reply"]["bytes"]
        assert row["reply"]["prediction"]["label"] == reference[row["image"]]["prediction"]["label"]
    assert summary["streams_identical"] == summary["predictions_identical"] == n
    assert summary["bytes_per_image"] == sum(r["bytes"] for r in reference.values()) / n
    assert f"served {requests} streams (3 errors) on 3 connections" in server_log.read_text()


def test_the_server_binds_to_loopback_only(exported):
    from deploy.server import serve

    with pytest.raises(ValueError, match="loopback interface only"):
        serve(exported(CASE), host="0.0.0.0", max_requests=1, idle_timeout=0.1)
