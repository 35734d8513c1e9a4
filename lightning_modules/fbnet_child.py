"""Train an architecture exported by ``FBNetSearch`` from scratch (Ozawa et al., §4.4).

The paper's recipe: 140 epochs, SGD lr 0.01, momentum 0.9, weight decay 1e-4, batch 32, plain
cross-entropy (no learning-rate schedule is given; ``schedule: cosine`` is offered).

Test metrics (beside ``test/acc_top1``, ``test/acc_top5``, ``test/loss``): ``test/latency_ms`` and
``test/energy_mj`` (the architecture's table costs per image: the sum the search's loss used, from the
search's ``cost_table.json`` beside the architecture file when there is one), ``test/ms_per_image``
(the child measured on this host: batch 1, median after warm-up, ``costs.threads`` threads),
``test/params`` and ``test/gmacs``. The paper's tables give seconds and joules for the 10,000 test
images: multiply the per-image numbers by 10,000 (``benchmarks/fbnet_report.py`` does).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_modules.classification_steps import log_classification_eval, top_k_accuracies
from models.fbnet import FBNetChildNet, read_architecture
from models.fbnet_costs import CostSettings, CostTable, cost_table_on_rank_zero, costs_from
from models.latency import measure_ms_per_image
from models.mac_count import macs_by_module


class FBNetChild(L.LightningModule):
    """An exported architecture (an ``architecture.txt`` of ``FBNetSearch``) trained from scratch.

    Args:
        architecture: architecture file (``models.fbnet.write_architecture`` format).
        cost_table: cost table JSON of the search (``None``: ``cost_table.json`` beside the architecture
            file if it exists, else measured / read with the arguments below, as the search does).
        costs: :class:`models.fbnet_costs.CostSettings` for a table built here (use the search's);
            its ``threads``, ``warmup`` and ``repeats`` also time ``test/ms_per_image``.
        measure_ms_per_image: measure ``test/ms_per_image`` on this host (batch 1).
        lr: SGD learning rate (paper: 0.01).
        momentum: SGD momentum (paper: 0.9).
        weight_decay: SGD weight decay (paper: 1e-4).
        schedule: ``constant`` (the paper names none) or ``cosine`` (to 0 over the run's epochs).
    """

    def __init__(
        self,
        architecture: str,
        cost_table: str | None = None,
        costs: CostSettings | None = None,
        measure_ms_per_image: bool = True,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        schedule: Literal["constant", "cosine"] = "constant",
    ) -> None:
        super().__init__()
        self.costs = costs_from(costs)
        self.save_hyperparameters(ignore=["costs"])
        self.hparams["costs"] = asdict(self.costs)
        self.space, self.architecture = read_architecture(architecture)
        self.net = FBNetChildNet(self.space, self.architecture)
        n = self.space.num_classes
        self.acc_top1, self.acc_top5 = top_k_accuracies(n)
        self.cost_table: CostTable | None = None

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def table_costs(self) -> tuple[float, float]:
        """(ms, mJ) per image of this architecture from the cost table."""
        if self.cost_table is None:
            hp = self.hparams
            path = Path(hp.cost_table) if hp.cost_table else Path(hp.architecture).with_name("cost_table.json")
            if path.is_file():
                self.cost_table = CostTable.from_json(json.loads(path.read_text()))
                if self.cost_table.latency_ms.shape[0] != self.space.num_layers:
                    raise ValueError(f"{path} has {self.cost_table.latency_ms.shape[0]} layers, the architecture "
                                     f"{self.space.num_layers}")  # fmt: skip
            elif hp.cost_table:
                raise FileNotFoundError(f"cost table {path} not found")
            else:
                self.cost_table = cost_table_on_rank_zero(self.space, self.costs, self._trainer)
        return self.cost_table.architecture_cost(self.architecture)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images, labels = batch
        loss = F.cross_entropy(self(images), labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=images.shape[0])
        return loss

    def _evaluate(self, batch: Any, stage: str) -> None:
        images, labels = batch
        log_classification_eval(self, self(images), labels, stage)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def host_costs(self) -> dict[str, float]:
        """Parameters, GMACs and (with ``measure_ms_per_image``) measured ms per image on the CPU."""
        hp = self.hparams
        net = self.net
        size = self.space.image_size
        example = torch.rand(1, 3, size, size, device=self.device)
        out = {
            "params": float(sum(p.numel() for p in net.parameters())),
            "gmacs": macs_by_module(net, lambda: net(example))[""] / 1e9,
        }
        if hp.measure_ms_per_image:
            threads = torch.get_num_threads()
            torch.set_num_threads(self.costs.threads)
            try:
                out["ms_per_image"] = measure_ms_per_image(net, example, self.costs.warmup, self.costs.repeats)
            finally:
                torch.set_num_threads(threads)
        return out

    def on_test_epoch_end(self) -> None:
        lat, energy = self.table_costs()
        metrics = {"test/latency_ms": lat, "test/energy_mj": energy}
        metrics.update({f"test/{k}": v for k, v in self.host_costs().items()})
        self.log_dict(metrics)

    def on_validation_epoch_end(self) -> None:
        lat, energy = self.table_costs()
        self.log_dict({"val/latency_ms": lat, "val/energy_mj": energy})

    def configure_optimizers(self) -> dict:
        hp = self.hparams
        opt = torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        if hp.schedule == "constant":
            return {"optimizer": opt}
        epochs = max(1, self.trainer.max_epochs or 1)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)}
