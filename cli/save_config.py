"""Save the resolved config beside the run, never over an earlier one, and send it to W&B."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger


class SaveRunConfig(SaveConfigCallback):
    """The resolved config in the run directory (``trainer.default_root_dir``), uploaded to W&B as run config.

    The command line chooses ``config_filename``: ``config.yaml`` for the fit that starts a run,
    ``config.<segment>.yaml`` (``config.fit-2.yaml``, ``config.test.yaml``, …) for every later command
    (:func:`cli.run_directory.segment_name`). An existing file is never overwritten.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        if trainer.is_global_zero:
            path = Path(trainer.default_root_dir) / self.config_filename
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                raise FileExistsError(f"{path} exists; the resolved config of an earlier command is never overwritten")
            self.parser.save(self.config, path, skip_none=False, multifile=self.multifile)
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.experiment.config.update(self.config.as_dict(), allow_val_change=True)
        self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)
