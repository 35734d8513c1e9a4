"""``splitcv serve EXPORT_DIR``: the server half behind a TCP socket on 127.0.0.1.

One connection at a time, requests answered in order (:mod:`deploy.protocol`). A stream that cannot be
read (bad magic, CRC, truncated, another codec's) gets an error reply and the connection goes on; a
frame that breaks the framing, or a peer silent for ``recv_timeout`` seconds, gets an error reply (when
possible) and the connection is closed; the server keeps listening either way. It stops by itself
after ``max_requests`` streams or ``idle_timeout`` seconds without a connection, and on Ctrl-C.
Imports no Lightning and no training code.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import time
from pathlib import Path

from deploy.protocol import REQUEST, PeerClosed, ProtocolError, check_loopback, recv_frame, send_reply
from deploy.runtime import ServerRuntime


def _log(message: str) -> None:
    print(f"[splitcv serve] {message}", file=sys.stderr, flush=True)


def _answer(runtime: ServerRuntime, stream: bytes) -> dict:
    start = time.perf_counter()
    try:
        reply = {"ok": True, "prediction": runtime.predict(stream)}
    except Exception as error:
        reply = {"ok": False, "error": f"{type(error).__name__}: {error}"}
    reply["bytes"] = len(stream)
    reply["server_ms"] = (time.perf_counter() - start) * 1e3
    return reply


def serve(
    export_dir: str | Path,
    port: int = 0,
    host: str = "127.0.0.1",
    port_file: str | Path | None = None,
    max_requests: int | None = None,
    idle_timeout: float = 60.0,
    recv_timeout: float = 10.0,
    threads: int = 1,
) -> dict:
    """Serve until ``max_requests`` streams were answered or no connection came for ``idle_timeout`` s.
    Returns ``{"requests", "errors", "connections"}``."""
    check_loopback(host)
    runtime = ServerRuntime(export_dir, threads)  # manifest and graphs checked before listening
    stats = {"requests": 0, "errors": 0, "connections": 0}
    with socket.create_server((host, port)) as listener:
        listener.settimeout(idle_timeout)
        bound = listener.getsockname()[1]
        if port_file is not None:
            tmp = Path(str(port_file) + ".tmp")
            tmp.write_text(f"{bound}\n")
            tmp.replace(port_file)
        _log(f"{runtime.manifest['method']} server listening on {host}:{bound}")
        try:
            while max_requests is None or stats["requests"] < max_requests:
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    _log(f"no connection for {idle_timeout:g} s; stopping")
                    break
                stats["connections"] += 1
                with conn:
                    conn.settimeout(recv_timeout)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    _connection(conn, runtime, stats, max_requests)
        except KeyboardInterrupt:
            _log("interrupted")
    _log(f"served {stats['requests']} streams ({stats['errors']} errors) on {stats['connections']} connections")
    return stats


def _connection(conn: socket.socket, runtime: ServerRuntime, stats: dict, max_requests: int | None) -> None:
    while max_requests is None or stats["requests"] < max_requests:
        try:
            stream = recv_frame(conn, REQUEST)
        except PeerClosed:
            return
        except (ProtocolError, TimeoutError) as error:
            stats["errors"] += 1
            message = "timed out waiting for a frame" if isinstance(error, TimeoutError) else str(error)
            _log(f"closing the connection: {message}")
            with contextlib.suppress(OSError):
                send_reply(conn, {"ok": False, "error": f"ProtocolError: {message}", "bytes": 0, "server_ms": 0.0})
            return
        except OSError as error:
            _log(f"connection lost: {error}")
            return
        reply = _answer(runtime, stream)
        stats["requests"] += 1
        stats["errors"] += not reply["ok"]
        if not reply["ok"]:
            _log(f"stream {stats['requests']}: {reply['error']}")
        try:
            send_reply(conn, reply)
        except OSError as error:
            _log(f"connection lost while replying: {error}")
            return
