"""``splitcv search``: the B-DCNN bit search (:mod:`lightning_modules.bit_search_cli`), through the same run
directory, ``run.lock`` and early-failure clean-up as ``fit`` (:class:`cli.lightning_cli._RunState`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cli.lightning_cli import RUN_DIR_ENV, _RunState, is_secondary_process
from cli.run_directory import RunConfig
from cli.run_lock import RunLockedError


def search_main(argv: list[str]) -> dict | None:
    """``splitcv search``: the B-DCNN bit search (:mod:`lightning_modules.bit_search_cli`), through the same
    run directory, ``run.lock`` and early-failure clean-up as ``fit`` (:class:`_RunState`).

    It drives ``trainer.validate`` over candidate bit widths rather than fitting, so it has its own parser.
    """
    from lightning_modules.bit_search_cli import build_parser, execute, search_run_dir

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
    from lightning_modules.bit_search_tables import SearchStateError

    try:
        search_main(argv)
    except (RunLockedError, SearchStateError) as err:
        sys.exit(f"splitcv: error: {err}")
