"""Framing of the edge ↔ server TCP exchange (``docs/wire-format.md``, "Transport").

Every message is one frame: 4 bytes of magic, a little-endian uint32 length, then that many bytes.
The edge sends ``SCVQ`` frames, one per image, whose body is the image's stream (``SCVR`` or
``SCVF``); the server answers each with one ``SCVA`` frame whose body is UTF-8 JSON:
``{"ok": true, "prediction": {...}, "bytes": n, "server_ms": t}`` or ``{"ok": false, "error": "...",
"bytes": n, "server_ms": t}``. Requests are answered in order on the same connection.
"""

from __future__ import annotations

import json
import socket
import struct

REQUEST = b"SCVQ"
REPLY = b"SCVA"
FRAME = struct.Struct("<4sI")
MAX_FRAME = 64 << 20
"""Largest frame body accepted (64 MiB); a longer one is refused without reading it."""
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ProtocolError(ValueError):
    """A frame that breaks the framing (magic, length): the connection cannot continue."""


class PeerClosed(ConnectionError):
    """The peer closed the connection cleanly between frames."""


def check_loopback(host: str) -> str:
    if host not in LOOPBACK:
        raise ValueError(f"splitcv serves and connects on the loopback interface only (127.0.0.1), got {host!r}")
    return host


def send_frame(sock: socket.socket, magic: bytes, body: bytes) -> None:
    if len(body) > MAX_FRAME:
        raise ValueError(f"frame of {len(body)} bytes exceeds the {MAX_FRAME}-byte limit")
    sock.sendall(FRAME.pack(magic, len(body)) + body)


def recv_exact(sock: socket.socket, n: int, between_frames: bool = False) -> bytes:
    """Exactly ``n`` bytes; :class:`PeerClosed` on a clean close before the first byte of a frame,
    :class:`ProtocolError` on a close in the middle of one."""
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            if between_frames and got == 0:
                raise PeerClosed("peer closed the connection")
            raise ProtocolError(f"connection closed after {got} of {n} bytes of a frame")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_frame(sock: socket.socket, magic: bytes, max_bytes: int = MAX_FRAME) -> bytes:
    """The body of the next frame, whose magic must be ``magic`` and length at most ``max_bytes``."""
    found, length = FRAME.unpack(recv_exact(sock, FRAME.size, between_frames=True))
    if found != magic:
        raise ProtocolError(f"frame magic {found!r}, expected {magic!r}")
    if length > max_bytes:
        raise ProtocolError(f"frame of {length} bytes exceeds the {max_bytes}-byte limit")
    return recv_exact(sock, length)


def send_reply(sock: socket.socket, reply: dict) -> None:
    send_frame(sock, REPLY, json.dumps(reply).encode())


def recv_reply(sock: socket.socket) -> dict:
    body = recv_frame(sock, REPLY)
    try:
        reply = json.loads(body.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProtocolError(f"reply is not UTF-8 JSON: {error}") from error
    if not isinstance(reply, dict) or "ok" not in reply:
        raise ProtocolError(f"reply without 'ok': {str(reply)[:200]}")
    return reply
