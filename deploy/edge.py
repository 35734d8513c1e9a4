"""``splitcv edge EXPORT_DIR IMAGES… --port P``: the edge half on images, one stream per image to
``splitcv serve`` on 127.0.0.1, a Rich progress bar, and a summary.

Per image: read (Pillow) → :class:`deploy.runtime.EdgeRuntime` (edge ms: pre-processing, the ONNX
graph, writing the stream) → one ``SCVQ`` frame → the server's ``SCVA`` reply (wire ms: the round trip
minus the server's own ``server_ms``). With ``--reference`` (``reference.json`` of ``splitcv export
--reference-images``) each stream and prediction is compared with PyTorch's: identical streams,
identical labels (or decoded images), the largest logit difference. ``--corrupt-check`` also sends a
copy of the first stream with one payload byte flipped and expects an error reply. Bounded: one
request per image (plus one), each with a timeout. Imports no Lightning and no training code.
"""

from __future__ import annotations

import hashlib
import json
import socket
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from deploy.images import read_image
from deploy.protocol import REQUEST, ProtocolError, check_loopback, recv_reply, send_frame
from deploy.runtime import EdgeRuntime


def corrupted(stream: bytes) -> bytes:
    """``stream`` with the last byte's bits inverted (in the payload, so only its CRC can tell)."""
    return stream[:-1] + bytes([stream[-1] ^ 0xFF])


def _reference(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable reference.json ({error})") from error


def _agreement(name: str, stream: bytes, reply: dict, reference: dict) -> dict:
    ref = reference.get(name)
    if ref is None:
        return {}
    out = {"stream_identical": hashlib.sha256(stream).hexdigest() == ref["stream_sha256"]}
    got, want = reply.get("prediction") or {}, ref["prediction"]
    if "boxes" in want:  # detection: the ten best detections
        out["label_identical"] = got.get("labels", [])[:10] == want["labels"][:10]
        pairs = zip(got.get("boxes", [])[:10], want["boxes"][:10], strict=False)
        out["max_box_diff"] = max((abs(a - b) for p, q in pairs for a, b in zip(p, q, strict=True)), default=0.0)
    elif "label" in want:
        out["label_identical"] = got.get("label") == want["label"]
        if got.get("logits") is not None:
            out["max_logit_diff"] = max(abs(a - b) for a, b in zip(got["logits"], want["logits"], strict=True))
    else:
        out["image_identical"] = got.get("image_sha256") == want["image_sha256"]
    return out


def run_edge(
    export_dir: str | Path,
    images: list[Path],
    port: int,
    host: str = "127.0.0.1",
    reference: str | Path | None = None,
    corrupt_check: bool = False,
    timeout: float = 30.0,
    threads: int = 1,
    console: Console | None = None,
) -> dict:
    """Send ``images`` through the edge runtime to the server; returns the summary (with every reply)."""
    check_loopback(host)
    console = console or Console(stderr=True)
    loaded = [(path, read_image(path)) for path in images]  # unreadable images fail before any work
    runtime = EdgeRuntime(export_dir, threads)
    refs = _reference(reference) if reference else {}
    rows = []
    with _connect(host, port, timeout) as sock, Progress(console=console) as progress:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = progress.add_task(f"edge → {host}:{port}", total=len(loaded))
        first = None
        for path, image in loaded:
            start = time.perf_counter()
            stream = runtime.encode(image)
            encoded = time.perf_counter()
            reply = _request(sock, stream, len(rows), len(loaded))
            done = time.perf_counter()
            first = first or stream
            rows.append(
                {
                    "image": path.name,
                    "bytes": len(stream),
                    "edge_ms": (encoded - start) * 1e3,
                    "server_ms": reply.get("server_ms", 0.0),
                    "wire_ms": (done - encoded) * 1e3 - reply.get("server_ms", 0.0),
                    "reply": reply,
                    **_agreement(path.name, stream, reply, refs),
                }
            )
            progress.advance(task)
        corrupt = None
        if corrupt_check and first is not None:
            reply = _request(sock, corrupted(first), len(rows), len(loaded))
            corrupt = {"rejected": not reply["ok"], "error": reply.get("error")}
    summary = _summary(rows, runtime.manifest, corrupt)
    _print(console, summary)
    return summary


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    """A connection to the server, retried for up to ``timeout`` seconds (a server started just before
    may still be loading its graphs)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection((host, port), timeout=timeout)
        except ConnectionRefusedError as error:
            if time.monotonic() >= deadline:
                raise ConnectionError(f"no server listening on {host}:{port} after {timeout:g} s") from error
            time.sleep(0.2)


def _request(sock: socket.socket, stream: bytes, done: int, total: int) -> dict:
    """Send one stream and wait for its reply; a lost connection is an error naming how far it got."""
    try:
        send_frame(sock, REQUEST, stream)
        return recv_reply(sock)
    except (OSError, ProtocolError) as error:
        raise ConnectionError(
            f"no reply from the server after {done} of {total} images ({type(error).__name__}: {error}); did it reach its "
            "--max-requests or --idle-timeout?"
        ) from error


def _summary(rows: list[dict], manifest: dict, corrupt: dict | None) -> dict:
    def median(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    summary = {
        "method": manifest["method"],
        "images": len(rows),
        "bytes_per_image": sum(r["bytes"] for r in rows) / len(rows),
        "edge_ms": median("edge_ms"),
        "wire_ms": median("wire_ms"),
        "server_ms": median("server_ms"),
        "errors": sum(not r["reply"]["ok"] for r in rows),
        "corrupt_check": corrupt,
        "rows": rows,
    }
    compared = [r for r in rows if "stream_identical" in r]
    if compared:
        summary["reference_images"] = len(compared)
        summary["streams_identical"] = sum(r["stream_identical"] for r in compared)
        key = "label_identical" if "label_identical" in compared[0] else "image_identical"
        summary["predictions_identical"] = sum(r[key] for r in compared)
        for name in ("max_logit_diff", "max_box_diff"):
            diffs = [r[name] for r in compared if name in r]
            summary[name] = max(diffs) if diffs else None
    summary["failed"] = bool(summary["errors"]) or (corrupt is not None and not corrupt["rejected"])
    return summary


def _print(console: Console, s: dict) -> None:
    table = Table(title=f"splitcv edge — {s['method']}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("images", str(s["images"]))
    table.add_row("bytes per image (mean)", f"{s['bytes_per_image']:.1f}")
    for key in ("edge_ms", "wire_ms", "server_ms"):
        table.add_row(f"{key.replace('_ms', '')} ms (median)", f"{s[key]:.2f}")
    table.add_row("error replies", str(s["errors"]))
    if "reference_images" in s:
        n = s["reference_images"]
        table.add_row("streams identical to PyTorch's", f"{s['streams_identical']}/{n}")
        table.add_row("predictions identical to PyTorch's", f"{s['predictions_identical']}/{n}")
        if s["max_logit_diff"] is not None:
            table.add_row("max |logit − PyTorch logit|", f"{s['max_logit_diff']:.2e}")
        if s["max_box_diff"] is not None:
            table.add_row("max |box − PyTorch box| (10 best, × image side)", f"{s['max_box_diff']:.2e}")
    if s["corrupt_check"] is not None:
        table.add_row("corrupted stream rejected", "yes" if s["corrupt_check"]["rejected"] else "NO")
    console.print(table)
