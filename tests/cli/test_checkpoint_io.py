"""Atomic checkpoint writes: a process killed while saving, with ``$TMPDIR`` on another filesystem (a tmpfs),
leaves the previous checkpoint whole; the partial file it leaves is removed at the next start; a fit killed
during a save resumes with ``--ckpt_path last`` from a complete checkpoint."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from cli.checkpoint_io import (
    AtomicCheckpointIO,
    IncompleteCheckpointError,
    atomic_torch_save,
    checkpoint_problem,
    is_partial,
    partial_path,
    remove_partial_checkpoints,
)
from cli.run_directory import newest_checkpoint
from tests.conftest import TINY_COMPRESSOR

REPO = Path(__file__).resolve().parents[2]

WRITER = """
import sys, torch
from cli.checkpoint_io import atomic_torch_save
target, n = sys.argv[1], int(sys.argv[2])
for version in range(1, 1_000_000):
    atomic_torch_save({"version": version, "data": torch.full((n,), float(version))}, target)
"""


@pytest.fixture
def other_fs_tmpdir(tmp_path: Path) -> Iterator[Path]:
    """A fresh ``$TMPDIR`` on a tmpfs (``/dev/shm``) when that is another filesystem than ``tmp_path``, as on
    a cluster node (the case where Lightning's own writer truncates the target); else one beside ``tmp_path``."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != tmp_path.stat().st_dev:
        folder = shm / f"splitcv-test-{uuid.uuid4().hex}"
    else:
        folder = tmp_path / "tmpdir"
    folder.mkdir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def partials(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if ".partial-" in p.name)


def kill_when(proc: subprocess.Popen, predicate, timeout: float = 240) -> None:
    """SIGKILL ``proc`` as soon as ``predicate()`` holds (polled without sleeping)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"the process ended before the moment to kill it (rc {proc.returncode}):\n{out}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the moment to kill")
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow  # a child process importing torch and Lightning
def test_a_writer_killed_mid_save_leaves_the_previous_checkpoint_whole(tmp_path: Path, other_fs_tmpdir: Path) -> None:
    target = tmp_path / "last.ckpt"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(other_fs_tmpdir), "OMP_NUM_THREADS": "1"}
    caught = 0
    for _ in range(3):  # a kill that lands just after a rename is retried: the partial file must be seen left behind
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(target), str(8_000_000)],  # 32 MB per save
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        kill_when(proc, lambda: target.exists() and bool(partials(tmp_path)))
        left = partials(tmp_path)
        assert checkpoint_problem(target) is None
        saved = torch.load(target, weights_only=True)
        assert saved["data"].shape == (8_000_000,) and bool((saved["data"] == saved["version"]).all())
        assert list(other_fs_tmpdir.iterdir()) == []  # nothing staged in $TMPDIR
        if left:
            caught += 1
            assert checkpoint_problem(left[0]) is not None or left[0].stat().st_size > 0
            assert remove_partial_checkpoints(tmp_path) == left and partials(tmp_path) == []
            break
    assert caught, "no kill landed during a save in 3 tries"


def test_save_replaces_the_target_and_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "hpc_ckpt_1.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, target)
    AtomicCheckpointIO().save_checkpoint({"step": 2}, target)
    assert torch.load(target, weights_only=True) == {"step": 2}
    assert sorted(p.name for p in target.parent.iterdir()) == ["hpc_ckpt_1.ckpt"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary new file, not mkstemp's 0600


def test_a_partial_hpc_file_does_not_change_lightnings_next_hpc_number(tmp_path: Path) -> None:
    from lightning.pytorch.trainer.connectors.checkpoint_connector import _CheckpointConnector

    atomic_torch_save({"step": 1}, tmp_path / "hpc_ckpt_1.ckpt")
    partial = partial_path(tmp_path / "hpc_ckpt_2.ckpt")
    partial.write_bytes(b"PK")  # what a kill during the next signal-time save leaves
    assert "ckpt_" not in partial.name and is_partial(partial)
    assert _CheckpointConnector.hpc_save_path(tmp_path) == str(tmp_path / "hpc_ckpt_2.ckpt")
    assert remove_partial_checkpoints(tmp_path) == [partial]


def test_a_failing_save_removes_its_partial_file_and_keeps_the_target(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1}, target)
    with pytest.raises(Exception):  # noqa: B017  (whatever pickle raises for a lambda)
        atomic_torch_save({"step": 2, "unpicklable": lambda: None}, target)
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert partials(tmp_path) == []


def truncated_copy(source: Path, target: Path, keep: float) -> Path:
    data = source.read_bytes()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data[: int(len(data) * keep)])
    return target


def test_resume_skips_an_incomplete_newest_checkpoint_and_takes_the_previous_complete_one(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    older = run / "hpc_ckpt_1.ckpt"
    atomic_torch_save({"step": 1, "w": torch.arange(1000.0)}, older)
    last = run / "checkpoints" / "last.ckpt"
    truncated_copy(older, last, keep=0.8)
    os.utime(older, (1, 1))  # older than last.ckpt
    assert newest_checkpoint(run) == older
    assert f"skipping truncated checkpoint {last}: not a complete zip archive" in capsys.readouterr().err
    # damaged bytes inside an otherwise whole archive (same size, zip directory intact) are caught by the CRCs
    data = bytearray(older.read_bytes())
    where = data.index(torch.arange(1000.0).numpy().tobytes()[400:416])
    data[where] ^= 0xFF
    last.write_bytes(bytes(data))
    assert "fails its CRC check" in checkpoint_problem(last)
    assert newest_checkpoint(run) == older
    assert f"skipping damaged checkpoint {last}: record" in capsys.readouterr().err
    older.unlink()
    assert newest_checkpoint(run) is None


def test_loading_an_incomplete_checkpoint_names_the_file(tmp_path: Path) -> None:
    whole = tmp_path / "whole.ckpt"
    atomic_torch_save({"step": 1}, whole)
    broken = truncated_copy(whole, tmp_path / "broken.ckpt", keep=0.5)
    assert AtomicCheckpointIO().load_checkpoint(whole, weights_only=True) == {"step": 1}
    with pytest.raises(IncompleteCheckpointError, match=f"{broken}: not a complete checkpoint"):
        AtomicCheckpointIO().load_checkpoint(broken, weights_only=True)


def fit_command(root: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "train.py", "fit", *TINY_COMPRESSOR,
        "--model.width", "0.5", "--model.iterations", "1",  # ~100 MB checkpoints: a save takes a while
        "--data.patches_per_image", "1", "--data.batch_size", "1",
        "--trainer.limit_val_batches", "0", "--trainer.max_epochs", "-1", "--trainer.limit_train_batches", "1.0",
        "--run.checkpoint_every_n_steps", "1", "--run.root", str(root), "--run.id", "killed", *extra,
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_fit_killed_during_a_save_resumes_from_a_complete_checkpoint(tmp_path: Path, other_fs_tmpdir: Path) -> None:
    env = {
        **os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(other_fs_tmpdir), "WANDB_MODE": "disabled",
        "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
    }  # fmt: skip
    checkpoints = tmp_path / "runs" / "rnn_compressor" / "killed" / "checkpoints"
    last = checkpoints / "last.ckpt"
    cmd = fit_command(tmp_path / "runs", "--trainer.max_steps", "1000")
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # a complete last.ckpt exists, and the next save has begun: kill now
    kill_when(first, lambda: last.exists() and checkpoints.is_dir() and bool(partials(checkpoints)))
    left = partials(checkpoints)
    assert left, "the kill did not land during a save"
    assert checkpoint_problem(last) is None
    step = torch.load(last, weights_only=True)["global_step"]
    assert not any(p.stat().st_size > 1_000_000 for p in other_fs_tmpdir.rglob("*"))  # nothing staged in $TMPDIR

    resumed = subprocess.run(
        fit_command(tmp_path / "runs", "--trainer.max_steps", str(step + 1), "--ckpt_path", "last"),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-3000:]
    assert f"resuming {last}" in output and "Restored all states from the checkpoint" in output
    assert all(f"removed {p}" in output for p in left)
    assert partials(checkpoints) == [] and sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt"]
    assert torch.load(last, weights_only=True)["global_step"] == step + 1
