"""Where a run lives on disk, stable across SLURM requeues.

Layout: ``<root>/<name>/<run_id>/`` holding ``checkpoints/`` (``last.ckpt``, best, periodic),
``hpc_ckpt_<n>.ckpt`` (written by Lightning on the SLURM requeue signal), ``config.yaml``, ``wandb/``,
``csv/`` and ``plots/``.

The run id is, in order: the one given; ``slurm-<job id>`` under SLURM (the same on every rank and after
a requeue; ``<array job>_<task>`` for array tasks); with ``--ckpt_path last``, the newest run of that
name that has a checkpoint; else a timestamp.
"""

from __future__ import annotations

import os
import re
import sys
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path


@dataclass
class RunConfig:
    """Naming, checkpointing and requeue settings of a run (the ``run:`` section of a config).

    Args:
        root: folder under which runs are written.
        name: experiment name (a subfolder of ``root``); default: the model class in snake case.
        id: run id (a subfolder of ``name``); default: ``slurm-<job id>`` under SLURM, else a timestamp.
        group: W&B group (default: ``name``); offline requeue segments share it.
        tags: W&B tags.
        parent: checkpoint this run was fine-tuned from, recorded in the W&B config (informational).
        monitor: metric that picks the best checkpoint (``None``: keep only last).
        monitor_mode: ``min`` or ``max`` for ``monitor``.
        checkpoint_every_n_steps: also save ``last.ckpt`` every N optimizer steps (backs up the
            signal-time checkpoint, which can fail).
        checkpoint_every_minutes: also save ``last.ckpt`` every this many minutes of training.
        requeue_signal: the signal SLURM sends before the time limit (``SIGUSR2`` where NCCL owns USR1).
    """

    root: str = "runs"
    name: str | None = None
    id: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    parent: str | None = None
    monitor: str | None = None
    monitor_mode: str = "min"
    checkpoint_every_n_steps: int | None = None
    checkpoint_every_minutes: float | None = 30.0
    requeue_signal: str = "SIGUSR1"


def snake_case(name: str) -> str:
    """``RNNCompressor`` → ``rnn_compressor``, ``CodeRecognition`` → ``code_recognition``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def slurm_run_id(environ: dict[str, str] | os._Environ = os.environ) -> str | None:
    """``slurm-<job>`` (``slurm-<array job>_<task>`` in an array), or ``None`` outside SLURM."""
    if "SLURM_ARRAY_JOB_ID" in environ and "SLURM_ARRAY_TASK_ID" in environ:
        return f"slurm-{environ['SLURM_ARRAY_JOB_ID']}_{environ['SLURM_ARRAY_TASK_ID']}"
    if "SLURM_JOB_ID" in environ:
        return f"slurm-{environ['SLURM_JOB_ID']}"
    return None


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def is_complete_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a whole ``torch.save`` archive (its zip directory reads back).

    Lightning writes checkpoints in place, so a job killed mid-write leaves a truncated file; the
    zip central directory sits at the end, so reading it catches truncation without loading tensors.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The most recently written complete one of ``hpc_ckpt_*.ckpt`` and ``checkpoints/last*.ckpt``.

    Truncated files (a job killed while saving) are skipped with a warning on stderr.
    """
    candidates = [*run_dir.glob("hpc_ckpt_*.ckpt"), *checkpoint_dir(run_dir).glob("last*.ckpt")]
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        if is_complete_checkpoint(path):
            return path
        print(f"[splitcv] warning: skipping truncated checkpoint {path}", file=sys.stderr)
    return None


def resolve_run_dir(config: RunConfig, model_class: str, resume_last: bool = False) -> Path:
    """The run directory for ``config`` (see the module docstring for the rules)."""
    experiment = Path(config.root) / (config.name or snake_case(model_class))
    run_id = config.id or slurm_run_id()
    if run_id is None and resume_last and experiment.is_dir():
        newest = {d: newest_checkpoint(d) for d in experiment.iterdir() if d.is_dir()}
        previous = {d: ckpt.stat().st_mtime for d, ckpt in newest.items() if ckpt is not None}
        if previous:
            return max(previous, key=previous.__getitem__)
    if run_id is None:
        run_id = datetime.now().strftime("%Y%m%d-%H%M%S")
    return experiment / run_id
