"""Where a run lives on disk, stable across SLURM requeues.

Layout: ``<root>/<name>/<run_id>/`` holding ``checkpoints/last.ckpt`` (and the best checkpoint by
``run.monitor`` when one is set), ``hpc_ckpt_<n>.ckpt`` (written by Lightning on the SLURM requeue signal),
``config.yaml`` (the fit's resolved config; every later command writes ``config.<segment>.yaml`` beside
it), ``run.lock`` while a fit runs, ``wandb/`` or ``csv/``, and ``plots/`` from plotting callbacks.

The run id is, in order: the one given; ``slurm-<job id>`` under SLURM (the same on every rank and after
a requeue; ``<array job>_<task>`` for array tasks); with ``--ckpt_path last``, the newest run of that
name that has a checkpoint; else a timestamp (made unique).

A run id is one run: :func:`has_run` tells whether a directory already holds one, and the command line
refuses to start a fresh ``fit`` there.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from cli.checkpoint_io import checkpoint_problem
from cli.run_lock import LOCK_FILE

CONFIG_FILE = "config.yaml"


@dataclass
class RunConfig:
    """Naming, checkpointing and requeue settings of a run (the ``run:`` section of a config).

    Args:
        root: folder under which runs are written.
        name: experiment name (a subfolder of ``root``); default: the model class in snake case.
        id: run id (a subfolder of ``name``); default: ``slurm-<job id>`` under SLURM, else a timestamp.
        group: W&B group (default: ``name``); offline requeue segments share it.
        tags: W&B tags.
        parent: checkpoint this run was fine-tuned from, recorded in the W&B config (informational;
            default: the model's ``init_from`` / ``init_compressor_from``).
        monitor: metric that picks the best checkpoint (``None``: keep only last).
        monitor_mode: ``min`` or ``max`` for ``monitor``.
        checkpoint_every_n_steps: also save ``last.ckpt`` every N optimizer steps (backs up the
            signal-time checkpoint, which can fail).
        checkpoint_every_minutes: also save ``last.ckpt`` every this many minutes of training.
        requeue_signal: the signal SLURM sends before the time limit (``SIGUSR2`` where NCCL owns USR1).
        resume_if_present: with ``fit --ckpt_path last``, start a fresh run when there is nothing to resume
            (for job scripts that are simply resubmitted); otherwise that is an error.
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
    resume_if_present: bool = False


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
    """Whether ``path`` is a whole ``torch.save`` archive (see :func:`cli.checkpoint_io.checkpoint_problem`)."""
    return checkpoint_problem(path) is None


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The most recently written complete one of ``hpc_ckpt_*.ckpt`` and ``checkpoints/*.ckpt``.

    Checkpoints are written atomically (``cli.checkpoint_io``), but a file written by another tool, a full
    disk or a damaged disk can still be incomplete: such files are skipped with a warning on stderr naming
    them and what is wrong, and the next newest complete one is taken.
    """
    candidates = [*run_dir.glob("hpc_ckpt_*.ckpt"), *checkpoint_dir(run_dir).glob("*.ckpt")]
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        kind, _, detail = problem.partition(": ")
        print(f"[splitcv] warning: skipping {kind} checkpoint {path}: {detail}", file=sys.stderr)
    return None


def resolve_run_dir(config: RunConfig, model_class: str, resume_last: bool = False) -> Path:
    """The run directory for ``config`` (see the module docstring for the rules)."""
    experiment = Path(config.root) / (config.name or snake_case(model_class))
    run_id = config.id or slurm_run_id()  # under SLURM, `last` is the job's own run (array tasks run side by side)
    if run_id is not None:
        return experiment / run_id
    if resume_last and experiment.is_dir():
        newest = {d: newest_checkpoint(d) for d in experiment.iterdir() if d.is_dir()}
        previous = {d: ckpt.stat().st_mtime for d, ckpt in newest.items() if ckpt is not None}
        if previous:
            return max(previous, key=previous.__getitem__)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir, n = experiment / stamp, 1
    while run_dir.exists():  # two runs started within one second
        n += 1
        run_dir = experiment / f"{stamp}-{n}"
    return run_dir


def run_of_checkpoint(path: str | Path) -> Path | None:
    """The run directory a checkpoint file was written into (``<run>/checkpoints/*.ckpt`` or
    ``<run>/hpc_ckpt_*.ckpt`` beside a ``config.yaml``), or ``None`` for a file outside any run."""
    path = Path(path)
    for run_dir in (path.parent.parent, path.parent):
        if (run_dir / CONFIG_FILE).is_file() or checkpoint_dir(run_dir) == path.parent:
            return run_dir
    return None


def has_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` already holds a run (anything but a lock file)."""
    return run_dir.is_dir() and any(p.name != LOCK_FILE for p in run_dir.iterdir())


def segment_name(run_dir: Path, subcommand: str) -> str:
    """A name for this command's files in ``run_dir``, never one already used.

    ``"fit"`` for the fit that starts the run (its config is ``config.yaml``); later commands get
    ``"<subcommand>"``, then ``"<subcommand>-2"``, ``-3``, …: a resumed fit ``"fit-2"``, a test ``"test"``.
    """
    if subcommand == "fit" and not (run_dir / CONFIG_FILE).exists():
        return "fit"
    first = [] if subcommand == "fit" else [subcommand]
    for name in [*first, *(f"{subcommand}-{n}" for n in range(2, 10_000))]:
        if not (run_dir / config_file(name)).exists():
            return name
    raise RuntimeError(f"{run_dir} holds 10,000 configs of {subcommand}")


def config_file(segment: str) -> str:
    """``config.yaml`` for the run's first fit, ``config.<segment>.yaml`` for every later command."""
    return CONFIG_FILE if segment == "fit" else f"config.{segment}.yaml"


def snapshot(run_dir: Path) -> set[Path]:
    """Every path under ``run_dir`` now (to remove later what a failed command added)."""
    return set(run_dir.rglob("*")) if run_dir.is_dir() else set()


def remove_new_paths(run_dir: Path, before: set[Path], created: bool) -> list[Path]:
    """Remove what appeared under ``run_dir`` since ``before`` (the whole directory if ``created``); return
    the top-most removed paths. In a directory that existed before, checkpoints and the lock are never
    removed: a live fit of that run may have written them meanwhile."""
    if created:
        shutil.rmtree(run_dir, ignore_errors=True)
        experiment = run_dir.parent
        if experiment.is_dir() and not any(experiment.iterdir()):
            experiment.rmdir()
        return [run_dir]
    keep = checkpoint_dir(run_dir)
    new = sorted(
        p
        for p in snapshot(run_dir) - before
        if p.suffix != ".ckpt" and p.name != LOCK_FILE and keep not in (p, *p.parents)
    )
    new_set = set(new)
    tops = [p for p in new if new_set.isdisjoint(p.parents)]
    for path in tops:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return tops


class FirstBatchMarker(Callback):
    """Records whether the command got past its first batch (``fit``: a training step), i.e. whether what it
    wrote is worth keeping after a failure."""

    def __init__(self) -> None:
        self.progressed = False

    def _mark(self, *args, **kwargs) -> None:
        self.progressed = True

    on_train_batch_end = _mark
    on_test_batch_end = _mark
    on_predict_batch_end = _mark

    def on_validation_batch_end(self, trainer, *args, **kwargs) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "validate":
            self.progressed = True
