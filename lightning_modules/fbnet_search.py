"""FBNet-style differentiable architecture search on CIFAR-10 with a goal accuracy (Ozawa et al.).

One training step (manual optimisation), on the batch ``{"weights": (x, y), "arch": (x, y)}`` of the
CIFAR-10 DataModule's ``split: search``:

1. **weights** on the weight split: per-sample Gumbel-softmax architectures drawn from ``theta``
   *detached*, SGD step on the weights only (``theta`` gets no gradient). ``weight_loss: total`` (the
   default; Algorithm 1 line 12 and Algorithm 2 line 11 backpropagate TotalLoss, as does the FBNet port
   the authors build on): the configured loss with the sampled architectures' costs as constants, so
   the multiplicative losses rescale the CE's gradient and CCEL switches it off once the batch accuracy
   (all-reduced under DDP) reaches the goal (method 1: goal − 0.1); ``weight_loss: ce``: plain CE.
2. **architecture** (after ``warmup_epochs``) on the held-out split: per-sample Gumbel-softmax with
   gradient to ``theta``, the chosen ``loss`` with each sample's expected latency and energy
   ``Σ_l Σ_c w[b, l, c] · table[l, c]`` + the fixed stem/head, Adam step on ``theta`` only (the
   weights are switched off with ``toggle_optimizer``, so they get no gradient from this split).

Temperature: ``initial_temperature · temperature_decay^(e · reference_epochs / search_epochs)`` at
search epoch e (epochs after warm-up), i.e. FBNet's 5.0 × 0.956^epoch over its 90 epochs, rescaled
so that any run length ends at the same temperature.

Cost units seen by the loss: ``latency_unit`` (default µs) and ``energy_unit`` (default µJ) per
image. The log-based losses need every network of the space to cost more than 1 unit (log > 0);
``setup`` checks the cheapest possible network and fails naming a smaller unit otherwise.

Logged: ``train/ce`` and ``train/weight_loss`` (weight split), ``train/loss``, ``train/arch_ce``, ``train/acc`` (architecture
split), ``train/ccel``, ``train/lat_term``, ``train/energy_term``, ``train/expected_latency_ms`` and
``train/expected_energy_mj`` (per sample of the Gumbel draw), ``train/temperature``;
``val/acc_top1`` and ``val/loss`` of the current argmax architecture (through the supernet's shared
weights), ``val/latency_ms``/``val/energy_mj`` (its table costs), ``val/expected_latency_ms`` and
``val/expected_energy_mj`` under ``softmax(theta)``. Written into the run directory
(``trainer.default_root_dir``): ``architecture.txt`` (argmax, every epoch; also
``architectures/epoch_NNN.txt``), ``plots/probabilities_epoch_NNN.png`` (heat map of
``softmax(theta)``, also to W&B), ``cost_table.json``, and at the end of fit
``architecture_sampled.txt`` (the best of ``export_samples`` architectures drawn from
``softmax(theta)``, by validation accuracy through the supernet) and ``export.json`` (every candidate with its accuracy and costs).

Export (``export``): ``argmax`` (default) writes the most probable block of every layer, as the FBNet
port the first author's code builds on does (``sample_architecture_from_the_supernet(...,
hardsampling=True)``); ``best_of_samples`` writes the best of ``export_samples`` architectures drawn
from ``softmax(theta)``, ranked by validation accuracy through the supernet's weights. The latter is
**ours**, not the paper's (which says nothing of how its architectures were taken from the supernet).
At the end of fit ``architecture.txt`` holds the exported one (during the run: the current argmax);
``architecture_argmax.txt`` and ``architecture_sampled.txt`` hold both, whichever is exported.

DDP: the cost table is built on rank 0 and broadcast; the CCEL accuracy is the all-reduced
accuracy of the global batch (every rank takes the same branch); gradients of ``theta`` are averaged
by DDP, which needs ``strategy: ddp_find_unused_parameters_true`` (each of the two backward passes
leaves the other split's parameters unused; ``setup`` refuses plain ``ddp``); logged scalars use
``sync_dist``; evaluation and the export use rank 0's BatchNorm statistics (broadcast first: see
``sync_batchnorm_statistics``); the export's accuracies are all-reduced counts; files are written by rank 0 only.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from models.fbnet import (
    LAYOUTS,
    FBNetSupernet,
    Layout,
    argmax_architecture,
    cifar10_space,
    one_hot,
    sample_architectures,
    write_architecture,
)
from models.fbnet_blocks import CANDIDATE_NAMES
from models.fbnet_costs import CostSettings, CostTable, cost_table_on_rank_zero, costs_from
from models.fbnet_losses import LATENCY_TERMS, LatencyTerm, additive_loss, ccel1_loss, ccel2_loss, fbnet_loss
from plotting.fbnet_plots import plot_probabilities

LossName = Literal["fbnet", "additive", "ccel1", "ccel2"]
LatencyUnit = Literal["s", "ms", "us"]
EnergyUnit = Literal["J", "mJ", "uJ"]
PER_MS = {"s": 1e-3, "ms": 1.0, "us": 1e3}
PER_MJ = {"J": 1e-3, "mJ": 1.0, "uJ": 1e3}
# the papers' hyper-parameters: FBNet1 (Wu et al. as run by Ozawa et al.), FBNet3 (HANNA), S1/S2
DEFAULTS: dict[str, dict[str, float]] = {
    "fbnet": {"alpha": 0.5, "beta": 0.6},
    "additive": {"alpha": 0.5, "beta": 0.5, "gamma": 1.5, "delta": 0.5},
    "ccel1": {"beta": 0.5},
    "ccel2": {"beta": 0.5},
}


def gumbel_temperature(
    epoch: int, search_epochs: int, initial: float = 5.0, decay: float = 0.956, reference_epochs: int = 90
) -> float:
    """``initial · decay^(epoch · reference_epochs / search_epochs)``: FBNet's schedule over its
    ``reference_epochs`` stretched or squeezed onto ``search_epochs`` (warm-up epochs count as 0)."""
    return initial * decay ** (max(0, epoch) * reference_epochs / max(1, search_epochs))


class FBNetSearch(L.LightningModule):
    """Supernet search: weights on the weight split, architecture logits on the held-out split.

    Args:
        width: channel multiplier of the search space (1.0 = the paper's).
        stages: ``[channels, repeats, first stride]`` per stage; ``None`` = the layout's 22 layers
            (see :mod:`models.fbnet`). Smaller spaces are for tests and demos.
        layout: ``table1`` (the paper's Table 1: strides down to 2×2, 1×1 conv 320, dropout 0.2, fc on the
            flattened 2×2×320 map) or ``cifar_mobilenetv2`` (CIFAR MobileNetV2 strides, pooled head).
        num_classes: classes of the dataset.
        image_size: side of the input images (the latency table is measured at these shapes).
        loss: ``fbnet`` (CE·α·log(LAT^β)), ``additive`` (CE + α·LAT^β + γ·E^δ), ``ccel1``, ``ccel2``
            (the paper's methods 1 and 2); see :mod:`models.fbnet_losses`.
        goal: goal accuracy of ``ccel1``/``ccel2`` (the paper's 1.0, 0.8, 0.65, 0.5, 0.35).
        alpha: α (``None``: the paper's value for the loss: fbnet 0.5, additive 0.5).
        beta: β (``None``: fbnet 0.6, additive 0.5, ccel 0.5).
        gamma: γ of ``additive`` (``None``: 1.5).
        delta: δ of ``additive`` (``None``: 0.5).
        margin: ``ccel1`` compares the accuracy with ``goal − margin`` (the paper's 0.1).
        latency_term: ``log_of_power`` (``log(LAT ** β)``, the authors' code and FBNet's port) or
            ``power_of_log`` (``(log LAT) ** β``); for the energy term alike. Not used by ``additive``.
        weight_loss: ``total`` (the configured loss trains the weights too, Algorithms 1–2) or ``ce``.
        export: ``argmax`` (the authors' port) or ``best_of_samples`` (ours): which architecture
            ``architecture.txt`` holds at the end of fit.
        latency_unit: unit of latency inside the loss (``s``, ``ms``, ``us``).
        energy_unit: unit of energy inside the loss (``J``, ``mJ``, ``uJ``).
        costs: where the latency and energy tables come from (energy file or proxy, latency cache,
            measuring threads and repeats): :class:`models.fbnet_costs.CostSettings`.
        latency_file: a latency table to use instead of measuring on this host (the latency cache's
            JSON format, checked against the space's shapes), e.g. the demo's shipped
            ``configs/fbnet/demo_latency_table.json``, so a run is reproducible on any host; ``None``
            (default): measure (or read this host's cache).
        warmup_epochs: epochs that train the weights only (theta fixed at uniform).
        initial_temperature: Gumbel-softmax temperature at the first search epoch.
        temperature_decay: factor per reference epoch.
        reference_epochs: the epoch count the decay is given for (FBNet: 90); the decay is rescaled
            to this run's search epochs.
        weight_lr: SGD learning rate of the weights (cosine-annealed over the run's epochs, logged as
            ``train/lr``).
        weight_momentum: SGD momentum.
        weight_decay: SGD weight decay.
        arch_lr: Adam learning rate of theta.
        arch_weight_decay: Adam weight decay of theta.
        export_samples: architectures drawn from ``softmax(theta)`` at the end; the best on the
            validation set is written to ``architecture_sampled.txt`` (0: argmax only).
        export_val_batches: validation batches per sampled architecture (``None``: all).
        plot_every_n_epochs: heat map of the probabilities every this many epochs (0: never).
    """

    def __init__(
        self,
        width: float = 1.0,
        stages: list[list[int]] | None = None,
        layout: Layout = "table1",
        num_classes: int = 10,
        image_size: int = 32,
        loss: LossName = "ccel1",
        goal: float = 0.65,
        alpha: float | None = None,
        beta: float | None = None,
        gamma: float | None = None,
        delta: float | None = None,
        margin: float = 0.1,
        latency_term: LatencyTerm = "log_of_power",
        weight_loss: Literal["total", "ce"] = "total",
        export: Literal["argmax", "best_of_samples"] = "argmax",
        latency_unit: LatencyUnit = "us",
        energy_unit: EnergyUnit = "uJ",
        costs: CostSettings | None = None,
        latency_file: str | None = None,
        warmup_epochs: int = 2,
        initial_temperature: float = 5.0,
        temperature_decay: float = 0.956,
        reference_epochs: int = 90,
        weight_lr: float = 0.1,
        weight_momentum: float = 0.9,
        weight_decay: float = 1e-4,
        arch_lr: float = 0.01,
        arch_weight_decay: float = 5e-4,
        export_samples: int = 8,
        export_val_batches: int | None = None,
        plot_every_n_epochs: int = 1,
    ) -> None:
        super().__init__()
        self.costs = costs_from(costs)
        self.save_hyperparameters(ignore=["costs"])
        self.hparams["costs"] = asdict(self.costs)  # a plain dict: checkpoints stay loadable with weights_only
        if loss not in DEFAULTS:
            raise ValueError(f"loss must be one of {list(DEFAULTS)}, got {loss!r}")
        if loss in ("ccel1", "ccel2") and not (margin if loss == "ccel1" else 0) < goal <= 1:
            raise ValueError(f"goal must be in ({margin if loss == 'ccel1' else 0}, 1] for {loss}, got {goal}")
        if layout not in LAYOUTS or latency_term not in LATENCY_TERMS:
            raise ValueError(f"layout must be one of {list(LAYOUTS)} and latency_term one of {list(LATENCY_TERMS)}")
        if weight_loss not in ("total", "ce") or export not in ("argmax", "best_of_samples"):
            raise ValueError("weight_loss must be 'total' or 'ce', export 'argmax' or 'best_of_samples'")
        if export == "best_of_samples" and export_samples < 1:
            raise ValueError("export: best_of_samples needs export_samples >= 1")
        if warmup_epochs < 0 or initial_temperature <= 0 or not 0 < temperature_decay <= 1:
            raise ValueError("need warmup_epochs >= 0, initial_temperature > 0 and 0 < temperature_decay <= 1")
        given = {"alpha": alpha, "beta": beta, "gamma": gamma, "delta": delta}
        self.coefficients = {k: v if given[k] is None else given[k] for k, v in DEFAULTS[loss].items()}
        unused = [k for k, v in given.items() if v is not None and k not in DEFAULTS[loss]]
        if unused:
            raise ValueError(f"loss {loss!r} has no {', '.join(unused)} (it uses {', '.join(DEFAULTS[loss])})")
        self.automatic_optimization = False
        self.space = cifar10_space(
            width=width, stages=stages, image_size=image_size, num_classes=num_classes, layout=layout
        )
        self.supernet = FBNetSupernet(self.space)
        shape = (self.space.num_layers, len(CANDIDATE_NAMES))
        # per-(layer, candidate) costs, ms and mJ per image; filled in setup, saved in checkpoints
        self.register_buffer("latency_table_ms", torch.zeros(shape))
        self.register_buffer("energy_table_mj", torch.zeros(shape))
        self.register_buffer("fixed_costs", torch.zeros(2))  # (ms, mJ) of stem + head
        self.cost_table: CostTable | None = None
        self.val_acc = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_loss = MeanMetric()

    # ------------------------------------------------------------------------------ costs, setup

    def setup(self, stage: str) -> None:
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1 and stage == "fit":
            if not getattr(trainer.strategy, "_ddp_kwargs", {}).get("find_unused_parameters", False):
                raise ValueError(
                    "FBNetSearch under DDP needs strategy: ddp_find_unused_parameters_true (each of its two "
                    "backward passes leaves the other split's parameters without gradient)"
                )
        if self.cost_table is not None:
            return
        if bool(self.latency_table_ms.any()):  # loaded with the weights (load_from_checkpoint): the run's own table
            self.cost_table = self._table_from_state(self.state_dict(), "checkpoint")
            return
        table = cost_table_on_rank_zero(self.space, self.costs, self._trainer, self.hparams.latency_file)
        self.set_cost_table(table)

    @staticmethod
    def _table_from_state(state: dict[str, Any], energy_source: str) -> CostTable:
        """The cost table a checkpoint's buffers hold (never re-measured)."""
        return CostTable(
            state["latency_table_ms"].double(), state["energy_table_mj"].double(),
            float(state["fixed_costs"][0]), float(state["fixed_costs"][1]),
            energy_source, "checkpoint",
        )  # fmt: skip

    def set_cost_table(self, table: CostTable) -> None:
        """Install ``table`` (checked against the loss units: see the module docstring)."""
        if table.latency_ms.shape != self.latency_table_ms.shape:
            raise ValueError(f"cost table {tuple(table.latency_ms.shape)} != {tuple(self.latency_table_ms.shape)}")
        self.cost_table = table
        self.latency_table_ms.copy_(table.latency_ms.float())
        self.energy_table_mj.copy_(table.energy_mj.float())
        self.fixed_costs.copy_(torch.tensor([table.fixed_latency_ms, table.fixed_energy_mj]))
        hp = self.hparams
        if hp.loss != "additive":
            cheapest = {
                "latency": (table.fixed_latency_ms + float(table.latency_ms.min(1).values.sum()))
                * PER_MS[hp.latency_unit],
                "energy": (table.fixed_energy_mj + float(table.energy_mj.min(1).values.sum())) * PER_MJ[hp.energy_unit],
            }
            if hp.loss == "fbnet":
                cheapest.pop("energy")
            for name, value in cheapest.items():
                if value <= 1.0:
                    unit = hp.latency_unit if name == "latency" else hp.energy_unit
                    raise ValueError(
                        f"the cheapest network's {name} is {value:.3g} {unit}: log({name}) would be <= 0 for it; "
                        f"choose a smaller {name}_unit (us / uJ)"
                    )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        if self.cost_table is not None and "latency_table_ms" in state:
            # resume with the checkpoint's table, not a re-measured one
            self.cost_table = self._table_from_state(state, self.cost_table.energy_source)

    # ----------------------------------------------------------------------------------- schedule

    @property
    def search_epoch(self) -> int:
        """Epochs of architecture training done before the current one (negative during warm-up)."""
        return self.current_epoch - self.hparams.warmup_epochs

    def temperature(self, epoch: int | None = None) -> float:
        """Gumbel-softmax temperature at search epoch ``epoch`` (default: the current one)."""
        hp = self.hparams
        epoch = self.search_epoch if epoch is None else epoch
        max_epochs = self._trainer.max_epochs if self._trainer is not None else None
        search_epochs = (max_epochs or hp.reference_epochs + hp.warmup_epochs) - hp.warmup_epochs
        return gumbel_temperature(
            epoch, search_epochs, hp.initial_temperature, hp.temperature_decay, hp.reference_epochs
        )

    # --------------------------------------------------------------------------------------- costs

    def expected_costs(self, weights: Tensor) -> tuple[Tensor, Tensor]:
        """(ms, mJ) per sample of mixing weights ``(B, L, 9)`` (or ``(L, 9)``): fixed + Σ w · table."""
        lat = (weights * self.latency_table_ms).sum(dim=(-2, -1)) + self.fixed_costs[0]
        energy = (weights * self.energy_table_mj).sum(dim=(-2, -1)) + self.fixed_costs[1]
        return lat, energy

    def architecture_loss(self, ce: Tensor, acc: float, lat_ms: Tensor, energy_mj: Tensor) -> dict[str, Tensor]:
        """The configured loss on per-sample CE and costs (converted to the loss units)."""
        hp, k = self.hparams, self.coefficients
        lat, energy = lat_ms * PER_MS[hp.latency_unit], energy_mj * PER_MJ[hp.energy_unit]
        form = hp.latency_term
        if hp.loss == "fbnet":
            return fbnet_loss(ce, lat, k["alpha"], k["beta"], form)
        if hp.loss == "additive":
            return additive_loss(ce, lat, energy, k["alpha"], k["beta"], k["gamma"], k["delta"])
        if hp.loss == "ccel1":
            return ccel1_loss(ce, acc, lat, energy, hp.goal, k["beta"], hp.margin, form)
        return ccel2_loss(ce, acc, lat, energy, hp.goal, k["beta"], form)

    # ------------------------------------------------------------------------------------- steps

    def _global_accuracy(self, logits: Tensor, labels: Tensor) -> float:
        counts = torch.stack([(logits.argmax(1) == labels).sum(), torch.tensor(labels.numel(), device=labels.device)])
        if self._trainer is not None and self.trainer.world_size > 1:
            counts = self.trainer.strategy.reduce(counts.float(), reduce_op="sum")
        return float(counts[0] / counts[1])

    def weight_step(self, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Forward + backward of the weights' loss with theta detached (``weight_loss``: the configured
        TotalLoss with the sampled costs as constants, or plain CE); returns its parts, detached."""
        weights = self.supernet.sample_weights(images.shape[0], self.temperature(), self.supernet.theta.detach())
        logits = self.supernet(images, weights)
        ce = F.cross_entropy(logits, labels, reduction="none")
        if self.hparams.weight_loss == "ce":
            parts = {"loss": ce.mean()}
        else:
            lat, energy = self.expected_costs(weights)
            parts = self.architecture_loss(ce, self._global_accuracy(logits.detach(), labels), lat, energy)
        self.manual_backward(parts["loss"])
        return {"ce": ce.mean().detach(), "weight_loss": parts["loss"].detach()}

    def arch_step(self, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Forward + backward of the architecture loss (weights switched off by the caller)."""
        weights = self.supernet.sample_weights(images.shape[0], self.temperature())
        logits = self.supernet(images, weights)
        ce = F.cross_entropy(logits, labels, reduction="none")
        acc = self._global_accuracy(logits.detach(), labels)
        lat, energy = self.expected_costs(weights)
        parts = self.architecture_loss(ce, acc, lat, energy)
        self.manual_backward(parts["loss"])
        return {**{k: v.detach() for k, v in parts.items()}, "acc": torch.tensor(acc), "arch_ce": ce.mean().detach(),
                "latency_ms": lat.mean().detach(), "energy_mj": energy.mean().detach()}  # fmt: skip

    @staticmethod
    def _split_batch(batch: Any) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        if not isinstance(batch, dict) or set(batch) != {"weights", "arch"}:
            raise ValueError(
                "FBNetSearch trains on {'weights': (x, y), 'arch': (x, y)} batches: use the CIFAR-10 DataModule "
                "with split: search"
            )
        return batch["weights"], batch["arch"]

    def training_step(self, batch: Any, batch_idx: int) -> None:
        (wx, wy), (ax, ay) = self._split_batch(batch)
        w_opt, a_opt = self.optimizers()
        lr = self.weight_lr()
        for group in w_opt.param_groups:
            group["lr"] = lr
        # gradients are cleared (set to None) before and after each step, so what an optimiser sees
        # at its step came from its own split only
        w_opt.zero_grad()
        weight_parts = self.weight_step(wx, wy)
        w_opt.step()
        w_opt.zero_grad()
        log = {"sync_dist": True, "batch_size": wx.shape[0]}
        self.log("train/ce", weight_parts["ce"], prog_bar=True, **log)
        self.log("train/weight_loss", weight_parts["weight_loss"], **log)
        self.log("train/temperature", self.temperature(), **log)
        self.log("train/lr", lr, **log)
        if self.search_epoch < 0:
            return
        self.toggle_optimizer(a_opt)
        a_opt.zero_grad()
        parts = self.arch_step(ax, ay)
        a_opt.step()
        a_opt.zero_grad()
        self.untoggle_optimizer(a_opt)
        log["batch_size"] = ax.shape[0]
        self.log("train/loss", parts["loss"], prog_bar=True, **log)
        for key in ("arch_ce", "acc", "ccel", "lat_term", "energy_term"):
            if key in parts:
                self.log(f"train/{key}", parts[key], **log)
        self.log("train/expected_latency_ms", parts["latency_ms"], **log)
        self.log("train/expected_energy_mj", parts["energy_mj"], **log)

    def weight_lr(self) -> float:
        """Cosine annealing of ``weight_lr`` over the run's epochs, a function of the epoch alone (no
        scheduler state, so a resumed run continues with the same rate)."""
        epochs = max(1, self.trainer.max_epochs or 1)
        return self.hparams.weight_lr * 0.5 * (1 + math.cos(math.pi * self.current_epoch / epochs))

    def on_train_epoch_end(self) -> None:
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self._write_epoch_outputs()

    # -------------------------------------------------------------------------------- evaluation

    def probabilities(self) -> Tensor:
        return torch.softmax(self.supernet.theta.detach().float(), dim=-1)

    def sync_batchnorm_statistics(self) -> None:
        """Under DDP, rank 0's BatchNorm running statistics on every rank (those its checkpoints hold).

        With manual optimisation Lightning's DDP wrapper never broadcasts buffers after the first step
        (its forward leaves ``require_forward_param_sync`` off), so each rank's statistics follow its
        own batches; evaluated as they are, each rank would score its share of the validation set with
        other statistics than the checkpoint's."""
        if self._trainer is not None and self.trainer.world_size > 1:
            for buffer in self.supernet.buffers():
                torch.distributed.broadcast(buffer, src=0)

    def on_validation_start(self) -> None:
        self.sync_batchnorm_statistics()

    def _evaluate(self, batch: Any, stage: str) -> None:
        images, labels = batch
        weights = one_hot(argmax_architecture(self.supernet.theta)).to(images)
        logits = self.supernet(images, weights)
        metric = self.val_acc if stage == "val" else self.test_acc
        metric(logits, labels)
        self.log(f"{stage}/acc_top1", metric, prog_bar=stage == "val", batch_size=images.shape[0])
        if stage == "val":
            self.val_loss(F.cross_entropy(logits, labels, reduction="none"))  # per image, not per batch
            self.log("val/loss", self.val_loss, batch_size=images.shape[0])

    def _log_costs(self, stage: str) -> None:
        lat, energy = self.expected_costs(one_hot(argmax_architecture(self.supernet.theta)).to(self.fixed_costs))
        e_lat, e_energy = self.expected_costs(self.probabilities().to(self.fixed_costs))
        self.log_dict({f"{stage}/latency_ms": lat, f"{stage}/energy_mj": energy,
                       f"{stage}/expected_latency_ms": e_lat, f"{stage}/expected_energy_mj": e_energy})  # fmt: skip

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_costs("val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_costs("test")

    # -------------------------------------------------------------------------------- run outputs

    @property
    def run_dir(self) -> Path:
        return Path(self.trainer.default_root_dir)

    def _architecture_comment(self, architecture: list[str], what: str) -> str:
        assert self.cost_table is not None
        lat, energy = self.cost_table.architecture_cost(architecture)
        return (f"{what}; table latency {lat:.4f} ms, energy {energy:.4f} mJ per image "
                f"(latency: {self.cost_table.latency_source}; energy: {self.cost_table.energy_source})")  # fmt: skip

    def _write_epoch_outputs(self) -> None:
        epoch = self.current_epoch
        architecture = argmax_architecture(self.supernet.theta)
        comment = self._architecture_comment(architecture, f"argmax of theta after epoch {epoch}")
        write_architecture(self.run_dir / "architecture.txt", self.space, architecture, comment)
        write_architecture(self.run_dir / "architectures" / f"epoch_{epoch:03d}.txt", self.space, architecture, comment)
        every = self.hparams.plot_every_n_epochs
        if every and (epoch + 1) % every == 0:
            title = f"epoch {epoch}, temperature {self.temperature():.3f}"
            png = plot_probabilities(self.probabilities().cpu().numpy(), self.run_dir / "plots" /
                                     f"probabilities_epoch_{epoch:03d}.png", title)  # fmt: skip
            for logger in self.loggers:
                if isinstance(logger, WandbLogger):
                    logger.log_image("search/probabilities", [str(png)], step=self.global_step)
                    logger.log_text("search/architecture", columns=["epoch", "architecture"],
                                    data=[[epoch, " ".join(architecture)]])  # fmt: skip

    @torch.no_grad()
    def accuracy_of(self, architecture: list[str], loader: Any, max_batches: int | None = None) -> float:
        """Accuracy of one architecture through the supernet's shared weights (all-reduced under DDP)."""
        was_training = self.training
        self.eval()
        weights = one_hot(architecture).to(self.fixed_costs)
        counts = torch.zeros(2, device=self.fixed_costs.device)
        for i, (images, labels) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            images, labels = images.to(self.fixed_costs.device), labels.to(self.fixed_costs.device)
            counts += torch.tensor([(self.supernet(images, weights).argmax(1) == labels).sum(), labels.numel()],
                                   device=counts.device)  # fmt: skip
        self.train(was_training)
        if self.trainer.world_size > 1:
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
        return float(counts[0] / counts[1]) if counts[1] > 0 else math.nan

    def export(self) -> dict[str, Any]:
        """Argmax and best-of-``export_samples`` architectures with their validation accuracy and costs."""
        assert self.cost_table is not None
        self.sync_batchnorm_statistics()
        hp = self.hparams
        loader = self.trainer.val_dataloaders
        argmax = argmax_architecture(self.supernet.theta)
        generator = torch.Generator().manual_seed(self.current_epoch)  # the same draws on every rank
        candidates = {"argmax": argmax}
        for i, arch in enumerate(sample_architectures(self.supernet.theta, hp.export_samples, generator)):
            candidates[f"sample_{i}"] = arch
        rows = []
        for name, arch in candidates.items():
            acc = self.accuracy_of(arch, loader, hp.export_val_batches) if loader is not None else math.nan
            lat, energy = self.cost_table.architecture_cost(arch)
            rows.append({"name": name, "architecture": arch, "val_acc": acc, "latency_ms": lat, "energy_mj": energy})
        sampled = [r for r in rows if r["name"] != "argmax"] or rows
        best = min(sampled, key=lambda r: (-(r["val_acc"] if not math.isnan(r["val_acc"]) else -1), r["latency_ms"]))
        return {"argmax": rows[0], "best_sampled": best, "candidates": rows}

    def on_fit_end(self) -> None:
        if self.cost_table is None:
            return
        result = self.export()
        if not self.trainer.is_global_zero:
            return
        best, argmax = result["best_sampled"], result["argmax"]
        sampled_comment = (f"{best['name']}, best of {len(result['candidates']) - 1} samples (ours, not the paper's): "
                           f"val acc {best['val_acc']:.4f} (supernet weights)")  # fmt: skip
        argmax_comment = f"argmax of theta at the end of the search: val acc {argmax['val_acc']:.4f} (supernet weights)"
        files = {"architecture_argmax.txt": (argmax["architecture"], argmax_comment)}
        if len(result["candidates"]) > 1:
            files["architecture_sampled.txt"] = (best["architecture"], sampled_comment)
        exported = "best_sampled" if self.hparams.export == "best_of_samples" else "argmax"
        files["architecture.txt"] = (result[exported]["architecture"],
                                     f"exported ({self.hparams.export}): " + (sampled_comment if exported ==
                                                                              "best_sampled" else argmax_comment))  # fmt: skip
        for name, (arch, comment) in files.items():
            write_architecture(self.run_dir / name, self.space, arch, self._architecture_comment(arch, comment))
        (self.run_dir / "cost_table.json").write_text(json.dumps(self.cost_table.to_json(), indent=1))
        summary = {"loss": self.hparams.loss, "goal": self.hparams.goal, "coefficients": self.coefficients,
                   "latency_term": self.hparams.latency_term, "weight_loss": self.hparams.weight_loss,
                   "layout": self.hparams.layout, "export": self.hparams.export, "exported": exported, **result,
                   "probabilities": self.probabilities().tolist()}  # fmt: skip
        (self.run_dir / "export.json").write_text(json.dumps(summary, indent=1))

    # -------------------------------------------------------------------------------- optimisers

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp = self.hparams
        weights = torch.optim.SGD(self.supernet.weight_parameters(), lr=hp.weight_lr, momentum=hp.weight_momentum,
                                  weight_decay=hp.weight_decay)  # fmt: skip
        arch = torch.optim.Adam(self.supernet.arch_parameters(), lr=hp.arch_lr, weight_decay=hp.arch_weight_decay)
        return [weights, arch]
