"""Checkpoint files that are whole at every instant: atomic writes, partial files cleaned up, completeness checked.

Why not Lightning's own writer: ``TorchCheckpointIO`` saves through fsspec's local "transaction", which
stages the file with ``tempfile.mkstemp()`` in ``$TMPDIR`` and then ``shutil.move``s it over the target.
When ``$TMPDIR`` is on another filesystem than the run (node-local ``/tmp`` or ``/dev/shm``, runs on a
shared filesystem: the usual cluster setup) that move is a *copy into the target itself*, so a kill during
it leaves a truncated ``last.ckpt`` where the previous good one was, and a stray file in ``$TMPDIR``.

:class:`AtomicCheckpointIO` (installed by ``train.py`` unless a config names its own ``CheckpointIO``)
writes ``<name>.partial-<random>`` (``_`` in the name as ``-``) in the target's own directory (so on the same filesystem), flushes and
``fsync``s it, renames it over the target with ``os.replace`` (atomic on POSIX), then ``fsync``s the
directory so that the rename itself survives a crash. Until the rename the previous file is untouched:
at every instant the target is either the previous complete checkpoint or the new complete one. The
SLURM signal-time ``hpc_ckpt_<n>.ckpt`` goes through the same path (Lightning's ``trainer.save_checkpoint``).
Remote URLs (``s3://`` …) keep Lightning's writer.

A kill during a save leaves only a ``*.partial-*`` file; :func:`remove_partial_checkpoints` deletes them
when the next ``fit`` of the run starts (it holds the run lock, so no live writer owns them).
:func:`checkpoint_problem` tells a complete checkpoint from a truncated or damaged one (zip directory,
the pickle record, every record's CRC) without unpickling anything.
"""

from __future__ import annotations

import os
import secrets
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

PARTIAL_MARK = ".partial-"


def partial_path(target: Path) -> Path:
    """A fresh temporary name beside ``target``: ``<target name, _ as ->.partial-<16 hex digits>``.

    It never ends in ``.ckpt`` (so it is never taken for a checkpoint) and never holds ``ckpt_``: Lightning
    numbers the next ``hpc_ckpt_<n>.ckpt`` from the digits after ``ckpt_`` in every name in the run directory
    (``hpc_ckpt_1.ckpt.partial-3f0a…`` would read as version 103…).
    """
    return target.with_name(f"{target.name.replace('_', '-')}{PARTIAL_MARK}{secrets.token_hex(8)}")


def is_partial(path: Path) -> bool:
    """Whether ``path`` is a temporary file of :func:`atomic_torch_save` (complete or not, never a checkpoint)."""
    return PARTIAL_MARK in path.name


def fsync_directory(folder: Path) -> None:
    """Make the entries of ``folder`` (a rename into it) durable; a no-op where the OS cannot open a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` such that ``path`` is never seen incomplete, whatever kills the process.

    Written to :func:`partial_path` in the same directory with the process umask's permissions, flushed and
    fsynced, renamed over ``path``; the directory is fsynced after the rename. On an exception the partial
    file is removed; on a kill it stays until :func:`remove_partial_checkpoints`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = partial_path(path)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def remove_partial_checkpoints(*folders: Path) -> list[Path]:
    """Delete the ``*.partial-*`` files directly inside ``folders`` (left by a kill during a save); return them.

    Call only while no process can be writing there (``fit`` holds the run lock).
    """
    removed = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if is_partial(path) and path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def checkpoint_problem(path: str | Path) -> str | None:
    """``None`` when ``path`` is a whole ``torch.save`` archive, else what is wrong, starting with ``truncated``,
    ``damaged`` or ``missing``.

    Reads the zip directory (at the end of the file: catches truncation), requires the pickle record
    ``*/data.pkl``, and checks every record's CRC-32 (catches damaged bytes), without unpickling.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
                return "damaged: no data.pkl record, not a torch.save archive"
            bad = archive.testzip()
            if bad is not None:
                return f"damaged: record {bad} fails its CRC check"
    except FileNotFoundError:
        return "missing"
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as err:
        return f"truncated: not a complete zip archive ({err})"
    return None


class IncompleteCheckpointError(ValueError):
    """A checkpoint to load is truncated or damaged; the message names the file and what is wrong."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with :func:`atomic_torch_save` for local files, and a named error
    instead of torch's ``PytorchStreamReader failed reading zip archive`` when loading an incomplete file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        local = _local_path(path)
        if local is None or storage_options is not None:
            super().save_checkpoint(checkpoint, path, storage_options)  # remote, or its TypeError
            return
        atomic_torch_save(checkpoint, local)

    def load_checkpoint(self, path: _PATH, *args: Any, **kwargs: Any) -> dict[str, Any]:
        local = _local_path(path)
        if local is not None and local.is_file() and (problem := checkpoint_problem(local)) is not None:
            raise IncompleteCheckpointError(f"{local}: not a complete checkpoint ({problem})")
        return super().load_checkpoint(path, *args, **kwargs)


def _local_path(path: _PATH) -> Path | None:
    """``path`` as a local file path, or ``None`` for a remote URL."""
    text = str(path)
    if text.startswith("file://"):
        return Path(text.removeprefix("file://"))
    return None if "://" in text else Path(text)
