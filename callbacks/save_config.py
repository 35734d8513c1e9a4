"""Save the resolved config beside the run (overwritten on requeue) and send it to W&B."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger


class SaveRunConfig(SaveConfigCallback):
    """``config.yaml`` in the run directory (``trainer.default_root_dir``), uploaded to W&B as run config."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        if trainer.is_global_zero:
            path = Path(trainer.default_root_dir) / self.config_filename
            path.parent.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, path, skip_none=False, overwrite=True, multifile=self.multifile)
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.experiment.config.update(self.config.as_dict(), allow_val_change=True)
        self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)
