"""Top-k accuracy and the evaluation step shared by every classifying LightningModule.

One definition of ``{stage}/acc_top1`` and ``{stage}/acc_top5`` for the whole codebase: plain top-k accuracy
over all images (torchmetrics ``average="micro"``), never the per-class mean (``"macro"``, torchmetrics'
default), which differs on imbalanced sets such as ImageNet-10's pooled classes. The metrics sync across
DDP processes. ``top5`` is top-min(5, num_classes), so tiny fixtures with fewer classes still work.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

STAGES = ("val", "test")


def top_k_accuracies(num_classes: int, stages: Sequence[str] = STAGES) -> tuple[nn.ModuleDict, nn.ModuleDict]:
    """Per-stage micro-averaged top-1 and top-min(5, num_classes) accuracy: assign to ``acc_top1``/``acc_top5``."""
    top5 = min(5, num_classes)
    return (
        nn.ModuleDict({s: MulticlassAccuracy(num_classes, top_k=1, average="micro") for s in stages}),
        nn.ModuleDict({s: MulticlassAccuracy(num_classes, top_k=top5, average="micro") for s in stages}),
    )


def log_classification_eval(module: L.LightningModule, logits: Tensor, labels: Tensor, stage: str) -> None:
    """Log ``{stage}/loss`` (cross-entropy, averaged over processes) and update and log ``{stage}/acc_top1``
    and ``{stage}/acc_top5`` from the module's ``acc_top1`` / ``acc_top5`` (built by :func:`top_k_accuracies`)."""
    n = labels.shape[0]
    module.log(f"{stage}/loss", F.cross_entropy(logits, labels), batch_size=n, sync_dist=True)
    module.acc_top1[stage].update(logits, labels)
    module.acc_top5[stage].update(logits, labels)
    module.log(f"{stage}/acc_top1", module.acc_top1[stage], batch_size=n, prog_bar=stage == "val")
    module.log(f"{stage}/acc_top5", module.acc_top5[stage], batch_size=n)
