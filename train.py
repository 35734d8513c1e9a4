"""splitcv's command line: LightningCLI with stable run directories, W&B, checkpoints and SLURM requeue.

    splitcv fit --config configs/trainer/cpu.yaml --config configs/rnn_compressor/demo.yaml
    splitcv fit ... --ckpt_path last            # resume the newest run of that name
    splitcv test --config ... --ckpt_path runs/rnn_compressor/<id>/checkpoints/last.ckpt

What this adds to plain LightningCLI (see DESIGN.md, "Runs, resume, fine-tune"):

- ``run:`` settings (:class:`callbacks.run_directory.RunConfig`) decide the run directory
  ``<root>/<name>/<id>``; it becomes ``trainer.default_root_dir`` and holds checkpoints, config, logs.
- ``ModelCheckpoint(save_last=True)`` into ``<run>/checkpoints`` plus a periodic ``last.ckpt`` saver,
  and the RNG state in every checkpoint, so ``--ckpt_path last`` continues exactly.
- Under SLURM: Lightning's auto-requeue with a configurable signal; a requeued job (same command)
  resumes from the newest of its signal-time and periodic checkpoints, into the same run directory.
- W&B: offline without credentials; run name, group and tags from ``run:``; the id persisted online.
"""

from __future__ import annotations

import logging
import shutil
import signal
import sys
from datetime import timedelta
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.environments import SLURMEnvironment

from callbacks.rng_state import RNGStateCheckpoint
from callbacks.run_directory import (
    RunConfig,
    checkpoint_dir,
    newest_checkpoint,
    resolve_run_dir,
    slurm_run_id,
)
from callbacks.save_config import SaveRunConfig
from callbacks.wandb_run import wandb_logger_args

log = logging.getLogger("splitcv")

WANDB_LOGGER = "lightning.pytorch.loggers.WandbLogger"
CSV_LOGGER = "lightning.pytorch.loggers.CSVLogger"


def _loggers(trainer_cfg: Namespace) -> list[Namespace]:
    logger = trainer_cfg.get("logger")
    if isinstance(logger, list):
        return [item for item in logger if isinstance(item, Namespace)]
    return [logger] if isinstance(logger, Namespace) else []


class SplitCVCLI(LightningCLI):
    """LightningCLI with splitcv's run directory, checkpointing, W&B and SLURM conventions."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=SaveRunConfig,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={
                "logger": {"class_path": WANDB_LOGGER, "init_args": {"project": "splitcv"}},
            },
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_class_arguments(RunConfig, "run")

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand]
        run = RunConfig(**cfg.run.as_dict())
        model_class = str(cfg.model.class_path).rsplit(".", 1)[-1]
        ckpt_path = cfg.get("ckpt_path")
        run_dir = resolve_run_dir(run, model_class, resume_last=ckpt_path == "last")
        run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir = run_dir
        cfg.trainer.default_root_dir = str(run_dir)
        name = f"{run.name or run_dir.parent.name}/{run_dir.name}"
        for logger in _loggers(cfg.trainer):
            self._configure_logger(logger, run_dir, name, run)
        self.trainer_defaults["callbacks"] = self._run_callbacks(run, run_dir, cfg.trainer)
        self.extra_plugins: list = []
        self._configure_slurm(cfg, run, run_dir)
        log.info("run directory: %s", run_dir)
        print(f"[splitcv] run directory: {run_dir}", file=sys.stderr)

    @staticmethod
    def _configure_logger(logger: Namespace, run_dir: Path, name: str, run: RunConfig) -> None:
        init = logger.get("init_args") or Namespace()
        if logger.class_path == WANDB_LOGGER:
            group = run.group or name.split("/")[0]
            for key, value in wandb_logger_args(run_dir, name, group, run.tags).items():
                if init.get(key) is None or key in ("save_dir", "id", "resume"):
                    init[key] = value
            if run.parent:
                init["job_type"] = init.get("job_type") or "fine-tune"
        elif logger.class_path == CSV_LOGGER:
            init["save_dir"], init["name"], init["version"] = str(run_dir), "csv", ""
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

    def _configure_slurm(self, cfg: Namespace, run: RunConfig, run_dir: Path) -> None:
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
        if cfg.get("ckpt_path") is None and slurm_run_id() is not None:
            newest = newest_checkpoint(run_dir)
            if newest is not None:
                cfg.ckpt_path = str(newest)
                print(f"[splitcv] SLURM job {slurm_run_id()}: resuming from {newest}", file=sys.stderr)

    def instantiate_trainer(self, **kwargs):
        plugins = kwargs.pop("plugins", None) or self._get(self.config_init, "trainer", default={}).get("plugins")
        plugins = [] if plugins is None else plugins if isinstance(plugins, list) else [plugins]
        return super().instantiate_trainer(plugins=[*plugins, *getattr(self, "extra_plugins", [])] or None, **kwargs)


def main(args: list[str] | None = None) -> None:
    """Console-script entry point (``splitcv``)."""
    SplitCVCLI(args=args)


if __name__ == "__main__":
    main()
