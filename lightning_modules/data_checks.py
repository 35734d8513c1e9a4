"""Checks of a LightningModule against the DataModule it is given, run in ``setup`` before any step."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn


class ClassCountError(ValueError):
    """The model has fewer outputs than the DataModule has classes."""


def check_class_count(num_classes: int, trainer: L.Trainer | None, argument: str = "num_classes") -> None:
    """Compare a model's class count with ``trainer.datamodule.num_classes`` (when the DataModule has one).

    Fewer model classes than data classes is an error (the labels would index past the logits at the first
    step); more is a warning (the extra outputs are never a target).

    Raises:
        ClassCountError: ``num_classes`` < the DataModule's; the message names both and the argument to set.
    """
    datamodule = getattr(trainer, "datamodule", None)
    data_classes = getattr(datamodule, "num_classes", None)
    if not isinstance(data_classes, int):
        return
    name = type(datamodule).__name__
    if num_classes < data_classes:
        raise ClassCountError(
            f"the model has {argument}={num_classes} but {name} has {data_classes} classes (labels 0..{data_classes - 1}); "
            f"set --model.init_args.{argument} {data_classes}"
        )
    if num_classes > data_classes:
        rank_zero_warn(f"the model has {argument}={num_classes} but {name} has only {data_classes} classes")
