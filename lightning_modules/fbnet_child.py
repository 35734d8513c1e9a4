"""Train an architecture exported by ``FBNetSearch``, or one of the Tables 2/3 baselines, from scratch
(Ozawa et al., §4.4).

The paper's recipe: 140 epochs, SGD lr 0.01, momentum 0.9, weight decay 1e-4, batch 32, plain
cross-entropy (no learning-rate schedule is given; ``schedule: cosine`` is offered). The baselines
(``baseline:`` one of :data:`models.fbnet_baselines.BASELINES`: MobileNetV2 with CIFAR strides,
ResNet18, vgg11_bn, densenet121, DARTS V2) are trained with the same recipe, as the paper compares them.

Test metrics (beside ``test/acc_top1``, ``test/acc_top5``, ``test/loss``):

- ``test/latency_ms``, ``test/energy_mj`` (FBNet children only): the architecture's table costs per
  image, the sum the search's loss used, from the search's ``cost_table.json`` beside the architecture
  file when there is one;
- ``test/forward_s`` and ``test/images``: the summed wall time of the model's forward passes over the
  test set (at the test batch size, on this host, after one untimed warm-up forward of the first
  batch) and the number of images: the paper's "推論速度", the
  time to classify the 10,000 CIFAR-10 test images, is ``forward_s`` on the full test set;
- ``test/ms_per_image``: the model measured on this host at batch 1 (median after warm-up,
  ``costs.threads`` threads); × 10 = seconds for 10,000 images at batch 1;
- ``test/proxy_energy_mj``: the documented MAC + bytes energy proxy of one image
  (:func:`models.fbnet_costs.proxy_energy_mj`), for every model (the paper has no energy for the
  baselines other than MobileNetV2);
- ``test/params`` and ``test/gmacs``.

Every validation and test also writes ``<run dir>/results/{val,test}.json`` (the model, its
architecture file or baseline, and the ``{stage}/…`` metrics), which ``benchmarks/fbnet_report.py``
reads whatever the logger.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from callbacks.results_record import write_results
from lightning_modules.classification_steps import log_classification_eval, top_k_accuracies
from models.fbnet import FBNetChildNet, read_architecture
from models.fbnet_baselines import build_baseline
from models.fbnet_costs import CostSettings, CostTable, cost_table_on_rank_zero, costs_from, proxy_energy_mj
from models.latency import measure_ms_per_image
from models.mac_count import macs_by_module


class FBNetChild(L.LightningModule):
    """An exported architecture (an ``architecture.txt`` of ``FBNetSearch``) or a baseline, trained from
    scratch.

    Args:
        architecture: architecture file (``models.fbnet.write_architecture`` format); exactly one of
            ``architecture`` and ``baseline``.
        baseline: a Tables 2/3 network instead (``mobilenet_v2``, ``resnet18``, ``vgg11_bn``,
            ``densenet121``, ``darts_v2``; :mod:`models.fbnet_baselines`).
        baseline_width: channel multiplier of the baseline (1.0: the paper's; smaller for tests).
        baseline_options: further keyword arguments of the baseline's builder (``darts_v2``: ``cells``).
        num_classes: classes of a baseline (an architecture file names its own).
        image_size: input side of a baseline (for the latency, MAC and energy measurements).
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
        architecture: str | None = None,
        baseline: str | None = None,
        baseline_width: float = 1.0,
        baseline_options: dict[str, int] | None = None,
        num_classes: int = 10,
        image_size: int = 32,
        cost_table: str | None = None,
        costs: CostSettings | None = None,
        measure_ms_per_image: bool = True,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        schedule: Literal["constant", "cosine"] = "constant",
    ) -> None:
        super().__init__()
        if (architecture is None) == (baseline is None):
            raise ValueError("FBNetChild needs exactly one of architecture (a file) and baseline (a name)")
        self.costs = costs_from(costs)
        self.save_hyperparameters(ignore=["costs"])
        self.hparams["costs"] = asdict(self.costs)
        if architecture is not None:
            self.space, self.architecture = read_architecture(architecture)
            self.net = FBNetChildNet(self.space, self.architecture)
            self.image_size, n = self.space.image_size, self.space.num_classes
        else:
            self.space, self.architecture = None, None
            self.net = build_baseline(baseline, num_classes, baseline_width, **(baseline_options or {}))
            self.image_size, n = image_size, num_classes
        self.acc_top1, self.acc_top5 = top_k_accuracies(n)
        self.cost_table: CostTable | None = None
        self._forward_s = 0.0
        self._images = 0

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def table_costs(self) -> tuple[float, float] | None:
        """(ms, mJ) per image of this architecture from the cost table (``None`` for a baseline)."""
        if self.architecture is None:
            return None
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

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, labels = batch
        log_classification_eval(self, self(images), labels, "val")

    def on_test_epoch_start(self) -> None:
        self._forward_s, self._images = 0.0, 0

    def test_step(self, batch: Any, batch_idx: int) -> None:
        images, labels = batch
        if batch_idx == 0:  # untimed warm-up: the first call pays one-time kernel and allocator set-up
            self(images)
        if images.is_cuda:
            torch.cuda.synchronize(images.device)
        start = time.perf_counter()
        logits = self(images)
        if logits.is_cuda:
            torch.cuda.synchronize(logits.device)
        self._forward_s += time.perf_counter() - start
        self._images += images.shape[0]
        log_classification_eval(self, logits, labels, "test")

    def host_costs(self) -> dict[str, float]:
        """Parameters, GMACs, proxy energy and (with ``measure_ms_per_image``) batch-1 ms per image."""
        hp = self.hparams
        net = self.net
        example = torch.rand(1, 3, self.image_size, self.image_size, device=self.device)
        was_training = net.training
        net.eval()
        try:
            out = {
                "params": float(sum(p.numel() for p in net.parameters())),
                "gmacs": macs_by_module(net, lambda: net(example))[""] / 1e9,
                "proxy_energy_mj": proxy_energy_mj(net, example, self.costs.pj_per_mac, self.costs.pj_per_byte),
            }
            if hp.measure_ms_per_image:
                threads = torch.get_num_threads()
                torch.set_num_threads(self.costs.threads)
                try:
                    out["ms_per_image"] = measure_ms_per_image(net, example, self.costs.warmup, self.costs.repeats)
                finally:
                    torch.set_num_threads(threads)
        finally:
            net.train(was_training)
        return out

    def on_test_epoch_end(self) -> None:
        metrics: dict[str, float] = {"test/forward_s": self._forward_s, "test/images": float(self._images)}
        if (costs := self.table_costs()) is not None:
            metrics.update({"test/latency_ms": costs[0], "test/energy_mj": costs[1]})
        metrics.update({f"test/{k}": v for k, v in self.host_costs().items()})
        self.log_dict(metrics)

    def on_validation_epoch_end(self) -> None:
        if (costs := self.table_costs()) is not None:
            self.log_dict({"val/latency_ms": costs[0], "val/energy_mj": costs[1]})

    # ----------------------------------------------------------------------------------- results

    def results_record(self, stage: str) -> dict[str, Any]:
        """What ``benchmarks/fbnet_report.py`` needs of a finished evaluation."""
        hp = self.hparams
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith(f"{stage}/")}
        return {
            "method": "fbnet_child",
            "stage": stage,
            "architecture": str(Path(hp.architecture).resolve()) if hp.architecture else None,
            "blocks": self.architecture,
            "baseline": hp.baseline,
            "baseline_width": hp.baseline_width if hp.baseline else None,
            "epoch": self.current_epoch,
            "global_step": self.global_step,
            "metrics": metrics,
        }

    def on_validation_end(self) -> None:
        write_results(self.trainer, "val", lambda: self.results_record("val"))

    def on_test_end(self) -> None:
        write_results(self.trainer, "test", lambda: self.results_record("test"))

    def configure_optimizers(self) -> dict:
        hp = self.hparams
        opt = torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        if hp.schedule == "constant":
            return {"optimizer": opt}
        epochs = max(1, self.trainer.max_epochs or 1)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)}
