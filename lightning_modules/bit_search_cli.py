"""``splitcv search``: the parser and the work of the B-DCNN bit search command.

``train.py`` runs it through the same run-directory, run-lock and early-failure clean-up code as ``fit``
(:func:`search_main`): the run directory is :func:`cli.run_directory.resolve_run_dir`'s
``<root>/<name>/<id>`` (name default ``bit_search``); a search into a directory that already holds a run
is refused unless ``--resume true`` continues the search saved there; ``run.lock`` is held while it runs
(a second live search of the same run is refused); a failure before the first validation batch removes
what the command wrote.

Files: ``<run>/search_config.yaml`` (the resolved config; ``search_config.resume-N.yaml`` for a resume),
``<run>/search/`` (:mod:`lightning_modules.bit_search_driver`), W&B under ``<run>/wandb``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import lightning as L

from cli.lightning_cli import RUN_DIR_ENV, _RunState, is_secondary_process
from cli.run_directory import RunConfig, has_run, resolve_run_dir, slurm_run_id
from cli.run_lock import RunLockedError
from lightning_modules.bit_search import BitSearch
from lightning_modules.bit_search_tables import SearchStateError

MODEL_CLASS = "BitSearch"  # the experiment folder is snake_case of it: runs/bit_search/<id>


def build_parser():
    """``splitcv search``'s parser: ``--config``, ``--seed_everything``, ``--resume``, ``run``, ``model``,
    ``data``, ``trainer``."""
    from jsonargparse import ActionConfigFile
    from lightning.pytorch.cli import LightningArgumentParser

    parser = LightningArgumentParser(
        prog="splitcv search",
        description="Algorithm 1 (B-DCNN quantisation-bit search) over a validation subset, with a sweep over D.",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="config files (compose; later ones win)")
    parser.add_argument("--seed_everything", type=int | bool, default=0)
    parser.add_argument(
        "--resume",
        type=bool,
        default=False,
        help="continue the search saved in the run directory (--run.id, else the newest run of --run.name "
        "holding one); every saved table is checked before it is used",
    )
    parser.add_class_arguments(RunConfig, "run")
    parser.add_lightning_class_args(BitSearch, "model", subclass_mode=True)
    parser.add_lightning_class_args(L.LightningDataModule, "data", subclass_mode=True)
    parser.add_lightning_class_args(L.Trainer, "trainer")
    return parser


def search_run_dir(run: RunConfig, resume: bool, environ=None) -> tuple[Path, bool]:
    """The run directory and whether to resume, every refusal made here before any work.

    Without ``--resume``: :func:`resolve_run_dir`; a directory that already holds a run is refused — except
    for a requeued SLURM job (``SLURM_RESTART_COUNT`` > 0): it resumes the search its run holds by itself, or
    starts afresh when the earlier segment saved none, like a requeued ``fit``. With ``--resume``: ``--run.id`` (or the SLURM job's run) must hold
    ``search/state.json``; without an id, the newest run of that name holding one.
    """
    environ = os.environ if environ is None else environ
    run_dir = resolve_run_dir(run, MODEL_CLASS)
    saved = run_dir / "search" / "state.json"
    if not resume:
        requeued = slurm_run_id(environ) is not None and int(environ.get("SLURM_RESTART_COUNT") or 0) > 0
        if requeued and saved.is_file():
            print(
                f"[splitcv] SLURM job {slurm_run_id(environ)} requeued: resuming the search in {run_dir}",
                file=sys.stderr,
            )
            return run_dir, True
        if has_run(run_dir) and not requeued:  # a requeued job with no table yet starts afresh, as fit does
            raise SearchStateError(
                f"{run_dir} already holds a run; continue its search with --resume true"
                f"{'' if run.id else ' --run.id ' + run_dir.name}, or start another with a new --run.id "
                "(or none: a timestamp)"
            )
        return run_dir, False
    if run.id is None and slurm_run_id(environ) is None:
        found = sorted(run_dir.parent.glob("*/search/state.json"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise SearchStateError(f"--resume: nothing to resume under {run_dir.parent} (no */search/state.json)")
        return found[-1].parent.parent, True
    if not saved.is_file():
        raise SearchStateError(f"--resume: nothing to resume: {saved} does not exist")
    return run_dir, True


def config_name(run_dir: Path, resume: bool) -> str:
    """``search_config.yaml`` for the search that starts the run, ``search_config.resume-N.yaml`` after."""
    if not resume and not (run_dir / "search_config.yaml").exists():
        return "search_config.yaml"
    n = 1
    while (run_dir / f"search_config.resume-{n}.yaml").exists():
        n += 1
    return f"search_config.resume-{n}.yaml"


def execute(parser, cfg, run_dir: Path, callbacks: list[L.Callback], save_config: bool = True) -> dict[str, Any]:
    """Build everything from ``cfg`` into ``run_dir`` and search (``callbacks`` join the Trainer's; a process
    that Lightning launched for DDP passes ``save_config=False``)."""
    from lightning.pytorch.callbacks import RichProgressBar
    from lightning.pytorch.loggers import WandbLogger

    from cli.wandb_run import wandb_logger_args
    from lightning_modules.bit_search_driver import run_search
    from lightning_modules.bit_search_report import print_summary

    run = RunConfig(**cfg.run.as_dict())
    if cfg.seed_everything is not False:
        L.seed_everything(cfg.seed_everything if cfg.seed_everything is not True else None)
    logger_cfg = cfg.trainer.get("logger")
    if logger_cfg not in (None, False, True) and str(getattr(logger_cfg, "class_path", "")).endswith("WandbLogger"):
        name = f"{run_dir.parent.name}/{run_dir.name}"
        logger_cfg.init_args = logger_cfg.get("init_args") or {}
        for key, value in wandb_logger_args(run_dir, name, run.group or run_dir.parent.name, run.tags).items():
            logger_cfg.init_args[key] = value
    if save_config:
        parser.save(cfg, run_dir / config_name(run_dir, cfg.resume), overwrite=False, skip_validation=True)
    init = parser.instantiate(cfg)
    trainer_kwargs = dict(init.trainer)
    if isinstance(trainer_kwargs.get("logger"), bool):
        trainer_kwargs["logger"] = False
    extra = list(trainer_kwargs.pop("callbacks", None) or [])
    if trainer_kwargs.get("enable_progress_bar") is not False and not any(
        "ProgressBar" in type(c).__name__ for c in extra
    ):
        extra.append(RichProgressBar())
    trainer_kwargs.update(default_root_dir=str(run_dir), callbacks=[*extra, *callbacks], enable_checkpointing=False)
    trainer = L.Trainer(**trainer_kwargs)
    if isinstance(trainer.logger, WandbLogger):
        trainer.logger.log_hyperparams(cfg.as_dict())
    summary = run_search(init.model, init.data, trainer, run_dir / "search", resume=cfg.resume)
    print_summary(summary, run_dir / "search")
    return summary


def search_main(argv: list[str]) -> dict | None:
    """``splitcv search``: the B-DCNN bit search (:mod:`lightning_modules.bit_search_cli`), through the same
    run directory, ``run.lock`` and early-failure clean-up as ``fit`` (:class:`_RunState`).

    It drives ``trainer.validate`` over candidate bit widths rather than fitting, so it has its own parser.
    """
    parser = build_parser()
    cfg = parser.parse_args(argv)
    saved_env = os.environ.get(RUN_DIR_ENV)
    secondary = is_secondary_process()
    if secondary and saved_env is not None:  # a process Lightning launched: rank 0 has decided
        run_dir, state = Path(saved_env), None
    else:
        run_dir, cfg.resume = search_run_dir(RunConfig(**cfg.run.as_dict()), cfg.resume)
        os.environ[RUN_DIR_ENV] = str(run_dir)
        state = None if secondary else _RunState(run_dir, "search", lock=True)
    print(f"[splitcv] run directory: {run_dir}", file=sys.stderr)
    try:
        return execute(parser, cfg, run_dir, [state.progress] if state else [], save_config=state is not None)
    except BaseException:
        if state is not None:
            state.abandon()
        raise
    finally:
        if state is not None:
            state.release()
        if saved_env is None:
            os.environ.pop(RUN_DIR_ENV, None)


def run_search_command(argv: list[str]) -> None:
    """``search_main`` with refusals (a locked run, a search state that does not match) as one line."""
    try:
        search_main(argv)
    except (RunLockedError, SearchStateError) as err:
        sys.exit(f"splitcv: error: {err}")
