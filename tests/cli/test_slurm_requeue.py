"""SLURM auto-requeue: a real train.py process gets the requeue signal, checkpoints, calls
`scontrol requeue <job id>`; the same command started again resumes from that checkpoint.

Waits are bounded but generous (a loaded 2-core machine takes minutes just to import torch and Lightning
in two processes); every failure shows the process's output, which goes to a file (a pipe nobody reads
while the process runs can fill and block it).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cli.run_directory import newest_checkpoint
from tests.conftest import TINY_COMPRESSOR

REPO = Path(__file__).resolve().parents[2]
JOB_ID = "4242"


def slurm_env(tmp_path: Path) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol.log\n')
    scontrol.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(
        PATH=f"{bin_dir}:{env['PATH']}",
        SLURM_JOB_ID=JOB_ID, SLURM_NTASKS="1", SLURM_JOB_NAME="splitcv-test", SLURM_NODELIST="localhost",
        SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0", SLURM_NNODES="1",
        WANDB_MODE="disabled", PYTHONUNBUFFERED="1",
    )  # fmt: skip
    return env


def command(root: Path) -> list[str]:
    return [
        sys.executable, "train.py", "fit", *TINY_COMPRESSOR,
        "--model.width", "0.125", "--model.iterations", "2", "--data.batch_size", "8", "--data.patches_per_image", "40",
        "--trainer.limit_val_batches", "0", "--trainer.max_epochs", "-1", "--trainer.max_steps", "40",
        "--trainer.limit_train_batches", "1.0", "--run.root", str(root), "--run.name", "requeue",
        "--run.checkpoint_every_n_steps", "2",
    ]  # fmt: skip


START_S = 600  # from start to the first checkpoint: imports, data, two training steps
SIGNAL_S = 300  # from the requeue signal to its checkpoint and the scontrol call
RESUME_S = 900  # the whole second run


def wait_for(predicate, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"train.py exited early (rc {proc.returncode}):\n{log.read_text()[-6000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"timed out after {timeout} s; output:\n{log.read_text()[-6000:]}")
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.timeout(START_S + SIGNAL_S + RESUME_S + 60)
def test_requeue_signal_checkpoints_requeues_and_the_same_command_resumes(tmp_path):
    env, cmd = slurm_env(tmp_path), command(tmp_path / "runs")
    run_dir = tmp_path / "runs" / "requeue" / f"slurm-{JOB_ID}"
    last = run_dir / "checkpoints" / "last.ckpt"
    log = tmp_path / "scontrol.log"
    first_log = tmp_path / "first.log"

    with first_log.open("w") as out:
        first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(last.exists, START_S, first, first_log)  # training is under way (last.ckpt appears whole)
        first.send_signal(signal.SIGUSR1)
        wait_for(lambda: log.exists() and any(run_dir.glob("hpc_ckpt_*.ckpt")), SIGNAL_S, first, first_log)
        time.sleep(0.5)
    finally:
        first.kill()  # SLURM ends the job after the requeue
        first.wait()

    assert log.read_text().split() == ["requeue", JOB_ID]
    hpc = run_dir / "hpc_ckpt_1.ckpt"
    saved_step = torch.load(hpc, weights_only=True)["global_step"]
    assert 0 < saved_step < 40
    # Training goes on until SLURM kills the job, so a periodic last.ckpt may land after the
    # requeue checkpoint; the restart must take whichever holds the most recent progress.
    newest = newest_checkpoint(run_dir)
    assert newest in (hpc, last)
    assert torch.load(newest, weights_only=True)["global_step"] >= saved_step

    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=RESUME_S)
    assert second.returncode == 0, second.stderr[-3000:]
    output = second.stdout + second.stderr
    assert f"resuming from {newest}" in output
    assert "Restored all states from the checkpoint" in output
    assert sorted(p.name for p in (tmp_path / "runs" / "requeue").iterdir()) == [f"slurm-{JOB_ID}"]
    assert torch.load(last, weights_only=True)["global_step"] == 40
