"""Weights & Biases run identity across SLURM requeues.

Online, the run id is written to ``<run dir>/wandb_id.txt`` the first time and read back on every
requeue, and the run is continued with ``resume="allow"``. Offline runs cannot be resumed, so each
requeue segment gets a fresh id in the same ``group``; sync them later from a login node with
``wandb sync <run dir>/wandb/offline-run-*``.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path

ID_FILE = "wandb_id.txt"


def has_wandb_credentials() -> bool:
    """Whether an API key is available without asking (env var or ``~/.netrc``); never prompts."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_online() -> bool:
    """Online only with credentials and no ``WANDB_MODE=offline/disabled`` override."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        return False
    return has_wandb_credentials()


def persistent_run_id(run_dir: Path) -> str:
    """The W&B id stored in ``run_dir`` (created on first use)."""
    import wandb.util

    path = run_dir / ID_FILE
    if path.is_file():
        return path.read_text().strip()
    run_dir.mkdir(parents=True, exist_ok=True)
    run_id = wandb.util.generate_id()
    path.write_text(run_id + "\n")
    return run_id


def wandb_logger_args(run_dir: Path, name: str, group: str, tags: list[str]) -> dict:
    """Arguments for ``WandbLogger`` so that a requeued run continues (online) or joins its group (offline)."""
    online = wandb_online()
    args = {"save_dir": str(run_dir), "name": name, "group": group, "tags": list(tags), "offline": not online}
    if not online:
        # Lightning's ``offline`` only sets WANDB_MODE when the run starts, after wandb may have read its settings;
        # wandb >= 0.19 then still asks for a key. ``mode`` reaches ``wandb.init`` itself.
        args["mode"] = "disabled" if os.environ.get("WANDB_MODE", "").lower() == "disabled" else "offline"
    if online:
        args.update(id=persistent_run_id(run_dir), resume="allow")
    return args
