"""splitcv's LightningCLI (``fit``/``validate``/``test``/``predict``): stable run directories, W&B, checkpoints, SLURM.

    splitcv fit --config configs/trainer/cpu.yaml --config configs/rnn_compressor/demo.yaml
    splitcv fit ... --ckpt_path last            # resume the newest run of that name (or of --run.id)
    splitcv test ... --ckpt_path last           # evaluate that run's newest checkpoint
    splitcv test --config ... --ckpt_path runs/rnn_compressor/<id>/checkpoints/last.ckpt

What this adds to plain LightningCLI (see docs/design.md, "Runs, resume, fine-tune"):

- ``run:`` settings (:class:`cli.run_directory.RunConfig`) decide the run directory
  ``<root>/<name>/<id>``; it becomes ``trainer.default_root_dir`` and holds checkpoints, config, logs.
- A run id is one run: a ``fit`` without ``--ckpt_path`` into a directory that holds a run refuses before
  any work; a fit holds ``run.lock`` so that a second live process cannot write into the same run.
- ``--ckpt_path last`` means the newest complete checkpoint of the run (``checkpoints/last.ckpt`` or a
  SLURM ``hpc_ckpt_*.ckpt``); with nothing to resume it is an error (``fit`` may opt into a fresh start
  with ``--run.resume_if_present true``), never a silent fresh start or metrics of an untrained model.
- The fit's resolved config is ``config.yaml``; every later command writes ``config.<segment>.yaml``.
- A command that fails before its first batch removes what it wrote (run directory, W&B offline run).
- ``ModelCheckpoint(save_last=True)`` into ``<run>/checkpoints`` plus a periodic ``last.ckpt`` saver,
  and the RNG state in every checkpoint, so ``--ckpt_path last`` continues exactly. Every checkpoint is
  written atomically (``cli.checkpoint_io.AtomicCheckpointIO``: a temporary file beside it, fsynced, renamed),
  so a kill during a save leaves the previous one whole, whatever ``$TMPDIR`` is; a fit removes the
  ``*.partial-*`` files such a kill left, and ``last`` skips an incomplete file, naming it.
- Under SLURM: Lightning's auto-requeue with a configurable signal; a requeued job (same command)
  resumes from the newest of its signal-time and periodic checkpoints, into the same run directory.
- W&B: offline without credentials; run name, group and tags from ``run:``; the id persisted online.
- ``--config .../debug.yaml`` is applied after the other config files wherever it stands, so its limits
  win; flags after it still override it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
from datetime import timedelta
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.plugins.io import CheckpointIO

from callbacks.epoch_metrics_line import EpochMetricsLine
from callbacks.rng_state import RNGStateCheckpoint
from cli.checkpoint_io import AtomicCheckpointIO, remove_partial_checkpoints
from cli.noise import silence_known_noise
from cli.parse_errors import concise_error, help_tip, unrecognized_with_suggestions
from cli.run_directory import (
    FirstBatchMarker,
    RunConfig,
    checkpoint_dir,
    config_file,
    has_run,
    newest_checkpoint,
    remove_new_paths,
    resolve_run_dir,
    run_of_checkpoint,
    segment_name,
    slurm_run_id,
    snapshot,
)
from cli.run_lock import RunLock, RunLockedError
from cli.save_config import SaveRunConfig
from cli.wandb_run import wandb_logger_args

log = logging.getLogger("splitcv")

WANDB_LOGGER = "lightning.pytorch.loggers.WandbLogger"
CSV_LOGGER = "lightning.pytorch.loggers.CSVLogger"


RUN_DIR_ENV, CKPT_ENV = "SPLITCV_RUN_DIR", "SPLITCV_CKPT_PATH"  # rank 0 → processes Lightning launches
SPECIAL_CKPT = ("last", "hpc", "best", "registry")

CKPT_HELP = {
    "fit": (
        "Resume this run: a checkpoint file, or `last` = the newest complete checkpoint (checkpoints/last.ckpt "
        "or a SLURM hpc_ckpt_*.ckpt) of --run.id (under SLURM by default: this job's run) or else of the newest "
        "run named --run.name. With nothing to resume `last` is an error unless --run.resume_if_present true. "
        "Weights, optimiser, scheduler, loop position and RNG state are restored. Not for fine-tuning: use the "
        "model's init_from. Without it, fit starts a new run and refuses a run directory that already holds one."
    ),
    "eval": (
        "Checkpoint to evaluate: a file (its run directory receives this command's config and logs), or "
        "`last` = the newest complete checkpoint of --run.id (under SLURM by default: this job's run) or else "
        "of the newest run named --run.name; an error when there is none. Without it the model is evaluated "
        "as constructed."
    ),
}


class RunExistsError(FileExistsError):
    """``fit`` without ``--ckpt_path`` into a directory that already holds a run."""


class NothingToResumeError(FileNotFoundError):
    """``--ckpt_path last`` found no checkpoint."""


def is_secondary_process(environ: dict[str, str] | os._Environ = os.environ) -> bool:
    """Whether this is a process of a distributed run other than global rank 0 (DDP child, srun task > 0)."""
    return any(int(environ.get(key) or 0) != 0 for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def debug_configs_last(args: list[str]) -> list[str]:
    """Move each ``--config …/debug.yaml`` right after the last other ``--config`` (flags keep their place), so
    the debug limits win over a method config wherever the debug config is given."""
    units: list[list[str]] = []
    i = 0
    while i < len(args):
        take = 2 if args[i] == "--config" and i + 1 < len(args) else 1
        units.append(args[i : i + take])
        i += take

    def config_path(unit: list[str]) -> str | None:
        if unit[0] == "--config" and len(unit) == 2:
            return unit[1]
        return unit[0].split("=", 1)[1] if unit[0].startswith("--config=") else None

    debug = [u for u in units if (path := config_path(u)) is not None and Path(path).name == "debug.yaml"]
    others = [n for n, u in enumerate(units) if config_path(u) is not None and u not in debug]
    if not debug or not others:
        return list(args)
    rest = [u for u in units if u not in debug]
    last = max(n for n, u in enumerate(rest) if config_path(u) is not None)
    reordered = [*rest[: last + 1], *debug, *rest[last + 1 :]]
    return [token for unit in reordered for token in unit]


class _RunState:
    """What this command did to its run directory: to undo it on an early failure and to release the lock."""

    def __init__(self, run_dir: Path, subcommand: str, lock: bool) -> None:
        self.run_dir = run_dir
        self.subcommand = subcommand
        self.created = not run_dir.exists()
        self.before = snapshot(run_dir)
        self.lock = RunLock(run_dir).acquire() if lock else None
        run_dir.mkdir(parents=True, exist_ok=True)
        if lock:  # no live process writes here now: what a killed save left is garbage
            for path in remove_partial_checkpoints(run_dir, checkpoint_dir(run_dir)):
                print(f"[splitcv] removed {path}, left by a save that was interrupted", file=sys.stderr)
        self.progress = FirstBatchMarker()

    def abandon(self) -> None:
        """After a failure before the first batch: end the W&B run as failed, remove what was written."""
        if self.progress.progressed:
            return
        wandb = sys.modules.get("wandb")
        if wandb is not None and getattr(wandb, "run", None) is not None:
            wandb.run.finish(exit_code=1)
        removed = remove_new_paths(self.run_dir, self.before, self.created)
        first = "training step" if self.subcommand == "fit" else "batch"
        shown = ", ".join(str(p) for p in removed) or "nothing"
        print(
            f"[splitcv] {self.subcommand} failed before its first {first}; removed what it wrote: {shown}",
            file=sys.stderr,
        )

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


def _loggers(trainer_cfg: Namespace) -> list[Namespace]:
    logger = trainer_cfg.get("logger")
    if isinstance(logger, list):
        return [item for item in logger if isinstance(item, Namespace)]
    return [logger] if isinstance(logger, Namespace) else []


class SplitCVArgumentParser(LightningArgumentParser):
    """Errors first and readable: no 60 lines of usage before them, no union bookkeeping (see cli.parse_errors)."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            return super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        subcommand = str(parser.prog).rsplit(" ", 1)[-1] if " " in str(parser.prog) else ""
        where = f"splitcv {subcommand}".rstrip()
        text = concise_error(message)
        if text.startswith("unrecognized arguments:"):
            text = unrecognized_with_suggestions(text, list(parser._option_string_actions))
        sys.stderr.write(f"{where}: error: {text}\n{help_tip(subcommand, message)}\n")
        sys.exit(2)


class SplitCVCLI(LightningCLI):
    """LightningCLI with splitcv's run directory, checkpointing, W&B and SLURM conventions."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        self.run_state: _RunState | None = None
        silence_known_noise()
        saved_env = {key: os.environ.get(key) for key in (RUN_DIR_ENV, CKPT_ENV)}
        if args is None:  # LightningCLI reads sys.argv itself (and warns when given both)
            sys.argv[1:] = debug_configs_last(sys.argv[1:])
        elif isinstance(args, list):
            args = debug_configs_last(args)
        try:
            super().__init__(
                subclass_mode_model=True,
                subclass_mode_data=True,
                save_config_callback=SaveRunConfig,
                save_config_kwargs={"overwrite": False},
                trainer_defaults={
                    "logger": {"class_path": WANDB_LOGGER, "init_args": {"project": "splitcv"}},
                },
                args=args,
                run=run,
                parser_class=SplitCVArgumentParser,
            )
        except BaseException:
            if self.run_state is not None:
                self.run_state.abandon()
            raise
        finally:
            if self.run_state is not None:
                self.run_state.release()
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_class_arguments(RunConfig, "run")

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        for action in parser._actions:
            if action.dest == "ckpt_path":
                action.help = CKPT_HELP["fit" if subcommand == "fit" else "eval"]
        return parser

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand]
        run = RunConfig(**cfg.run.as_dict())
        if run.parent is None:
            run.parent = cfg.run.parent = _parent_checkpoint(cfg.model)
        model_class = str(cfg.model.class_path).rsplit(".", 1)[-1]
        secondary = is_secondary_process()
        if secondary and RUN_DIR_ENV in os.environ:  # a process Lightning launched: rank 0 has decided
            run_dir = Path(os.environ[RUN_DIR_ENV])
            cfg.ckpt_path = os.environ.get(CKPT_ENV) or None
        else:
            run_dir = self._choose_run(cfg, run, model_class, check=not secondary)
            os.environ[RUN_DIR_ENV], os.environ[CKPT_ENV] = str(run_dir), str(cfg.get("ckpt_path") or "")
        segment = segment_name(run_dir, self.subcommand) if not secondary else self.subcommand
        if not secondary:
            self.run_state = _RunState(run_dir, self.subcommand, lock=self.subcommand == "fit")
        self.save_config_kwargs["config_filename"] = config_file(segment)
        self.run_dir = run_dir
        cfg.trainer.default_root_dir = str(run_dir)
        name = f"{run.name or run_dir.parent.name}/{run_dir.name}"
        for logger in _loggers(cfg.trainer):
            self._configure_logger(logger, run_dir, name, run, self.subcommand, segment)
        self.trainer_defaults["callbacks"] = self._run_callbacks(run, run_dir, cfg.trainer)
        if self.run_state is not None:
            self.trainer_defaults["callbacks"].append(self.run_state.progress)
        self.extra_plugins: list = []
        self._configure_slurm(run, run_dir)
        log.info("run directory: %s", run_dir)
        print(f"[splitcv] run directory: {run_dir}", file=sys.stderr)

    def _choose_run(self, cfg: Namespace, run: RunConfig, model_class: str, check: bool) -> Path:
        """The run directory, with ``cfg.ckpt_path`` resolved to a file; every refusal happens here, before any work."""
        subcommand, ckpt_path = self.subcommand, cfg.get("ckpt_path")
        if ckpt_path == "last":
            run_dir = resolve_run_dir(run, model_class, resume_last=True)
            newest = newest_checkpoint(run_dir) if run_dir.is_dir() else None
            if newest is not None:
                cfg.ckpt_path = str(newest)
                action = "resuming" if subcommand == "fit" else f"{subcommand} of"
                print(f"[splitcv] --ckpt_path last: {action} {newest}", file=sys.stderr)
                return run_dir
            where = run_dir if run.id or slurm_run_id() else f"any run under {run_dir.parent}"
            if subcommand == "fit" and run.resume_if_present:
                cfg.ckpt_path = None
                print(f"[splitcv] --ckpt_path last: nothing to resume in {where}; starting fresh", file=sys.stderr)
                return run_dir
            missing = (
                f"--ckpt_path last: no checkpoint in {where} (looked for complete checkpoints/*.ckpt and "
                "hpc_ckpt_*.ckpt)."
            )
            if subcommand == "fit":
                raise NothingToResumeError(
                    f"{missing} Start a new run without --ckpt_path, or add --run.resume_if_present true to start "
                    "fresh whenever there is nothing to resume."
                )
            raise NothingToResumeError(f"{missing} Train it first (splitcv fit ...), or give a checkpoint file.")
        if ckpt_path is not None and ckpt_path not in SPECIAL_CKPT and "://" not in str(ckpt_path):
            if not Path(ckpt_path).is_file():
                raise FileNotFoundError(f"--ckpt_path {ckpt_path}: no such checkpoint file")
            owner = run_of_checkpoint(ckpt_path)
            if subcommand != "fit" and run.id is None and owner is not None:
                return owner
        run_dir = resolve_run_dir(run, model_class)
        if subcommand != "fit" or ckpt_path is not None:
            return run_dir
        requeued = slurm_run_id() is not None and (
            run.id is None or int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0
        )
        if requeued and (newest := newest_checkpoint(run_dir)) is not None:
            cfg.ckpt_path = str(newest)
            print(f"[splitcv] SLURM job {slurm_run_id()}: resuming from {newest}", file=sys.stderr)
        elif check and not requeued and has_run(run_dir):
            raise RunExistsError(
                f"{run_dir} already holds a run, and fit without --ckpt_path starts a new one. Continue that run "
                f"with --ckpt_path last{'' if run.id else ' --run.id ' + run_dir.name}, or start another with a new "
                "--run.id (or none: a timestamp)."
            )
        return run_dir

    @staticmethod
    def _configure_logger(
        logger: Namespace, run_dir: Path, name: str, run: RunConfig, subcommand: str, segment: str
    ) -> None:
        init = logger.get("init_args") or Namespace()
        if logger.class_path == WANDB_LOGGER:
            group = run.group or name.split("/")[0]
            for key, value in wandb_logger_args(run_dir, name, group, run.tags).items():
                if init.get(key) is None or key in ("save_dir", "id", "resume"):
                    init[key] = value
            if subcommand != "fit":
                init["job_type"] = init.get("job_type") or subcommand
            elif run.parent:
                init["job_type"] = init.get("job_type") or "fine-tune"
        elif logger.class_path == CSV_LOGGER:  # csv/metrics.csv for the first fit, csv/<segment>/ for later ones
            init["save_dir"], init["name"], init["version"] = str(run_dir), "csv", "" if segment == "fit" else segment
        logger.init_args = init

    @staticmethod
    def _run_callbacks(run: RunConfig, run_dir: Path, trainer_cfg: Namespace) -> list:
        dirpath = checkpoint_dir(run_dir)
        callbacks = [
            ModelCheckpoint(
                dirpath=dirpath,
                filename="epoch{epoch:03d}-step{step:07d}",
                auto_insert_metric_name=False,
                monitor=run.monitor,
                mode=run.monitor_mode,
                save_top_k=1 if run.monitor else 0,
                save_last=True,
                enable_version_counter=False,
            ),
            RNGStateCheckpoint(),
            EpochMetricsLine(),
        ]
        periodic = {}
        if run.checkpoint_every_n_steps:
            periodic["every_n_train_steps"] = run.checkpoint_every_n_steps
        elif run.checkpoint_every_minutes:
            periodic["train_time_interval"] = timedelta(minutes=run.checkpoint_every_minutes)
        if periodic:
            callbacks.append(
                ModelCheckpoint(dirpath=dirpath, save_top_k=0, save_last=True, enable_version_counter=False, **periodic)
            )
        if trainer_cfg.get("enable_progress_bar") is not False:
            has_bar = any("ProgressBar" in str(c.get("class_path", "")) for c in trainer_cfg.get("callbacks") or [])
            if not has_bar:
                callbacks.append(RichProgressBar())
        return callbacks

    def _configure_slurm(self, run: RunConfig, run_dir: Path) -> None:
        if not SLURMEnvironment.detect():
            return
        requeue_signal = getattr(signal, run.requeue_signal, None)
        if not isinstance(requeue_signal, signal.Signals):
            raise ValueError(f"run.requeue_signal={run.requeue_signal!r} is not a signal name (SIGUSR1, SIGUSR2)")
        self.extra_plugins.append(SLURMEnvironment(auto_requeue=True, requeue_signal=requeue_signal))
        if shutil.which("scontrol") is None:
            print(
                "[splitcv] warning: SLURM detected but `scontrol` is not on PATH: on "
                f"{run.requeue_signal} the run will checkpoint into {run_dir} but cannot requeue itself; "
                "resubmit the same command to resume.",
                file=sys.stderr,
            )

    def instantiate_trainer(self, **kwargs):
        plugins = kwargs.pop("plugins", None) or self._get(self.config_init, "trainer", default={}).get("plugins")
        plugins = [] if plugins is None else plugins if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):  # checkpoints written atomically by default
            plugins = [*plugins, AtomicCheckpointIO()]
        trainer = super().instantiate_trainer(plugins=[*plugins, *getattr(self, "extra_plugins", [])] or None, **kwargs)
        for logger in trainer.loggers:
            # Lightning always passes ``anonymous=None`` to wandb.init, and wandb >= 0.19 warns on every run that
            # the setting has no effect; there is no public way to leave it out.
            init = getattr(logger, "_wandb_init", None)
            if isinstance(init, dict) and init.get("anonymous", "") is None:
                del init["anonymous"]
        return trainer


def _parent_checkpoint(model_cfg: Namespace) -> str | None:
    """The checkpoint a model is fine-tuned from: its ``init_from`` or ``init_<part>_from`` argument."""
    init = model_cfg.get("init_args") or Namespace()
    for key, value in init.items():
        if key.startswith("init_") and key.endswith("from") and isinstance(value, str) and value:
            return value
    return None


def run_lightning_cli(args: list[str] | None = None) -> None:
    """``fit``/``validate``/``test``/``predict``; refusals about the run directory are one line, not a traceback."""
    try:
        SplitCVCLI(args=args)
    except (RunExistsError, NothingToResumeError, RunLockedError) as err:
        sys.exit(f"splitcv: error: {err}")
