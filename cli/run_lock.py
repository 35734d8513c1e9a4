"""One live process per run directory: a lock file that names its owner and is taken over when the owner is dead.

``<run dir>/run.lock`` holds JSON: host, pid, the process start time (so a reused pid is not mistaken for
the owner), the SLURM job id and restart count, and the command. It is created atomically
(``O_CREAT | O_EXCL``) and removed when the command ends. A lock left by a process that is gone is *stale*
and taken over with a message:

- same host: the pid no longer exists, or it is another process than the one that wrote the lock;
- any host: the same SLURM job wrote it in an earlier segment (``SLURM_RESTART_COUNT`` differs: SLURM
  ends every process of a job before it requeues it).

Otherwise the owner may be alive (on this host; or on another host, where it cannot be checked) and
:class:`RunLockedError` names it and the file to delete if that process is known to be gone.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

LOCK_FILE = "run.lock"


class RunLockedError(RuntimeError):
    """Another live process holds the run directory; the message names it."""


def _process_start_time(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (Linux ``/proc``), ``None`` where unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of proc(5), counted after the command name


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _owner(environ: dict[str, str] | os._Environ = os.environ) -> dict:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "start_time": _process_start_time(pid),
        "slurm_job": environ.get("SLURM_JOB_ID"),
        "slurm_restart": environ.get("SLURM_RESTART_COUNT", "0"),
        "command": " ".join(sys.argv),
    }


def stale_reason(holder: dict, environ: dict[str, str] | os._Environ = os.environ) -> str | None:
    """Why the process that wrote ``holder`` is certainly gone, or ``None`` if it may be alive."""
    me = _owner(environ)
    job = holder.get("slurm_job")
    if job and job == me["slurm_job"] and str(holder.get("slurm_restart", "0")) != me["slurm_restart"]:
        return f"SLURM job {job} was requeued (restart {holder.get('slurm_restart', '0')} → {me['slurm_restart']})"
    if holder.get("host") != me["host"]:
        return None
    pid = int(holder.get("pid", -1))
    if pid == me["pid"]:
        return None  # this very process holds it: a second command inside one process is still a second user
    if not _pid_alive(pid):
        return f"process {pid} on {me['host']} has exited"
    started = holder.get("start_time")
    if started is not None and _process_start_time(pid) not in (None, started):
        return f"pid {pid} on {me['host']} now belongs to another process"
    return None


class RunLock:
    """The lock of one run directory (a context manager; :meth:`acquire` / :meth:`release` otherwise)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.held = False

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            json.dump(_owner(), handle)
        return True

    def acquire(self) -> RunLock:
        """Take the lock, taking over a stale one.

        Raises:
            RunLockedError: a live process (or one on another host) holds it.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # another process may take over the same stale lock at the same moment
            if self._create():
                self.held = True
                return self
            try:
                holder = json.loads(self.path.read_text() or "{}")
            except FileNotFoundError:
                continue  # released between our two calls
            except (OSError, ValueError):
                holder = {}
            reason = (
                stale_reason(holder) if holder else "the lock file is empty or unreadable (a crash while writing it)"
            )
            if reason is None:
                raise RunLockedError(
                    f"{self.path.parent} is in use by pid {holder.get('pid')} on {holder.get('host')} "
                    f"(`{holder.get('command', '?')}`). Wait for it to end, or choose another --run.id. If that "
                    f"process is gone (e.g. a crashed node), delete {self.path} and run again."
                )
            print(f"[splitcv] taking over the stale lock {self.path}: {reason}", file=sys.stderr)
            self.path.unlink(missing_ok=True)
        raise RunLockedError(f"could not take {self.path}: other processes keep taking it")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
