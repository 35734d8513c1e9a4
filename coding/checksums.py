"""SHA-256 of a file, read in 1 MiB blocks: how a results record names its checkpoint and a deployment
manifest names its graphs (no Lightning, no torch: the edge and server runtimes use it)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
