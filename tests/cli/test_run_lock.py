"""The run lock: who holds a run directory, when a lock is stale (dead pid, reused pid, SLURM requeue)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cli.run_directory import config_file, has_run, remove_new_paths, run_of_checkpoint, segment_name, snapshot
from cli.run_lock import LOCK_FILE, RunLock, RunLockedError, _process_start_time, stale_reason

HOST = os.uname().nodename


def exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_only_when_the_holder_is_certainly_gone():
    me = {"host": HOST, "pid": os.getpid(), "start_time": _process_start_time(os.getpid())}
    assert stale_reason(me) is None  # this very process
    parent = {"host": HOST, "pid": os.getppid(), "start_time": _process_start_time(os.getppid())}
    assert stale_reason(parent) is None  # alive
    assert "has exited" in stale_reason({**parent, "pid": exited_pid()})
    assert "another process" in stale_reason({**parent, "start_time": "1"})  # the pid was reused
    elsewhere = {"host": "node17", "pid": 1, "slurm_job": "4242", "slurm_restart": "0"}
    assert stale_reason(elsewhere, environ={"SLURM_JOB_ID": "4242"}) is None  # cannot be checked from here
    requeued = {"SLURM_JOB_ID": "4242", "SLURM_RESTART_COUNT": "1"}
    assert "requeued (restart 0 → 1)" in stale_reason(elsewhere, environ=requeued)
    assert stale_reason(elsewhere, environ={"SLURM_JOB_ID": "99", "SLURM_RESTART_COUNT": "1"}) is None


def test_lock_is_exclusive_and_released(tmp_path):
    with RunLock(tmp_path) as lock:
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == HOST
        with pytest.raises(RunLockedError, match=f"in use by pid {os.getpid()} on {HOST}"):
            RunLock(tmp_path).acquire()
        assert lock.held
    assert not (tmp_path / LOCK_FILE).exists()
    (tmp_path / LOCK_FILE).write_text("")  # a crash while writing it
    RunLock(tmp_path).acquire().release()


def test_run_contents_and_segment_names(tmp_path):
    assert not has_run(tmp_path / "absent") and not has_run(tmp_path)
    (tmp_path / LOCK_FILE).write_text("{}")
    assert not has_run(tmp_path)  # a lock alone is no run
    assert segment_name(tmp_path, "fit") == "fit" and config_file("fit") == "config.yaml"
    (tmp_path / "config.yaml").write_text("")
    assert has_run(tmp_path)
    assert segment_name(tmp_path, "fit") == "fit-2" and segment_name(tmp_path, "test") == "test"
    (tmp_path / "config.test.yaml").write_text("")
    assert segment_name(tmp_path, "test") == "test-2"
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    assert run_of_checkpoint(ckpt) == tmp_path and run_of_checkpoint(tmp_path / "hpc_ckpt_1.ckpt") == tmp_path
    assert run_of_checkpoint(tmp_path.parent / "loose.ckpt") is None


def test_a_failed_command_removes_only_what_it_added(tmp_path):
    run_dir = tmp_path / "exp" / "run"
    (run_dir / "wandb").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("fit")
    before = snapshot(run_dir)
    added = [run_dir / "config.test.yaml", run_dir / "wandb" / "offline-run-1" / "run.wandb"]
    kept = [run_dir / "checkpoints" / "epoch005.ckpt", run_dir / "hpc_ckpt_2.ckpt", run_dir / LOCK_FILE]
    for path in added + kept:  # the last three: a live fit of the same run, meanwhile
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    removed = remove_new_paths(run_dir, before, created=False)
    assert sorted(removed) == [run_dir / "config.test.yaml", run_dir / "wandb" / "offline-run-1"]
    assert all(p.exists() for p in kept) and (run_dir / "config.yaml").exists() and (run_dir / "wandb").is_dir()
    assert remove_new_paths(run_dir, set(), created=True) == [run_dir] and not (tmp_path / "exp").exists()
