"""The B-DCNN bit search's LightningModule: validation passes that measure Algorithm 1's inputs.

Algorithm 1 ("B-DCNN の量子化ビット数の自動最適化") itself is pure (:mod:`models.bit_allocation`); the
resumable driver that runs the passes, checks and saves the tables and writes the report is
:mod:`lightning_modules.bit_search_driver`; the command line ``splitcv search`` is
:mod:`lightning_modules.bit_search_cli` (run through ``train.py``'s run directory, lock and clean-up).

**Which reading of SA is the default, and why.** Algorithm 1 *requires* A, "the accuracy drop rate of each
layer", and calls S = SA(i, q_{i−1}, q_i) "the predicted accuracy of layer i" (予想精度); the paper's
figure reports that prediction (提案手法*) about 2 pt away from the measured accuracy. So the default
reading (``readings[0] = "layer_drops"``) measures A once per (layer, q) with that layer alone quantised
(I·Q evaluations) and *predicts* S = R − A_{i−1}(q_{i−1}) − A_i(q_i). The other reading,
``measured_pairs``, measures every S with the pair quantised (I·Q² evaluations). By default both are run
and reported side by side (predicted and measured accuracy per D); the first listed gives ``searched``
(what ``QuantizedFinetune``'s ``bits_from`` reads).

Our reading of what else the paper leaves open (alternatives are arguments):

- While a layer (or pair) is measured every other decomposed layer is *not quantised*
  (``context="unquantized"``: "前後の層の Q 値を固定した時の精度の変化"); ``context="max_bits"`` keeps them
  at ``max_bits`` instead.
- **R** ("量子化前の精度") is the accuracy of the decomposed network with every quantisation sub-layer off
  (``reference="decomposed"``), so D budgets the quantisation alone; ``reference="float"`` measures D from
  the original network. Both are always reported. D is in percentage points.
- The backward walk is ``chain`` (consistent pairs) or ``independent``: :mod:`models.bit_allocation`.

Costs: prefix activations are cached (:class:`models.prefix_cache.SegmentRunner`). For A and each batch the
network runs once up to each layer, then once per q from that layer to the end. For the pair table T^i
and each batch it runs once up to layer i−1, once per q_{i−1} up to layer i, then once per
(q_{i−1}, q_i) from layer i to the end. ``layer_forwards`` counts the decomposed-layer calls executed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor

from lightning_modules.bdcnn_weights import load_classifier_weights
from models.bdcnn import (
    LayerSelection,
    convert_to_bdcnn,
    decomposed_layers,
    input_shapes,
    layer_cost,
    selected_layers,
    set_bits,
)
from models.bdcnn_layer_timing import cpu_copy, layer_ms
from models.bdcnn_networks import Arch, build_classifier
from models.binary_decomposition import Method
from models.bit_allocation import READINGS, Reading, Walk
from models.prefix_cache import SegmentRunner

Context = Literal["unquantized", "max_bits"]
Reference = Literal["decomposed", "float"]


class BitSearch(L.LightningModule):
    """A B-DCNN whose validation pass measures whole configurations, A, or one pair table of Algorithm 1.

    ``splitcv search`` drives it (:func:`lightning_modules.bit_search_driver.run_search`): it sets
    :attr:`task` and calls ``trainer.validate``; results land in :attr:`result`. Nothing is trained here.

    Args:
        arch: network to convert (:func:`models.bdcnn_networks.build_classifier`).
        num_classes: classifier outputs (1000 for the published torchvision weights).
        pretrained: torchvision's published ImageNet weights (downloaded on first use).
        width: channel width of the demo networks.
        init_from: checkpoint of a float ``QuantizedFinetune`` run (``convert: false``) or a bare state dict
            of the network; weights only.
        layers: layers to decompose and search: ``conv`` (the paper: AlexNet's conv1–conv5), ``linear``,
            ``all`` or a list of module names (``net.features.0`` …).
        bases: k, bases per output channel, for every layer without an entry in ``bases_per_layer``.
        bases_per_layer: k per layer name.
        decomposition: ``exhaustive`` (ALS with exact sign search, run to convergence) or ``greedy``.
        decomposition_iterations: cap on the ALS rounds (exhaustive); a layer that hits it is reported.
        decomposition_restarts: random restarts per layer (exhaustive).
        min_bits: smallest Q tried (the paper: 2).
        max_bits: largest Q tried (the paper's Q: 8).
        allowed_drops: the sweep over D, accuracy drops in percentage points.
        top_k: accuracy measured as top-k (micro-averaged); the paper: top-5.
        readings: how S = SA(i, q_{i−1}, q_i) is obtained, ``layer_drops`` (the paper's: predicted from A) and/or
            ``measured_pairs``; all listed are searched and reported, the first gives ``searched``.
        reference: R from the ``decomposed`` network without quantisation, or from the ``float`` network.
        context: other layers ``unquantized`` while a layer or pair is measured, or at ``max_bits``.
        walk: ``chain`` (consistent pairs) or ``independent`` backward walk.
        uniform_bits: uniform-Q reference points evaluated beside the search (the paper: Q = 3, 4).
        measure_ms: time, on the CPU with batch 1, each layer's bit-serial kernel (and its float layer) at
            every Q that is reported.
        network_ms: time the whole network, bit-serial and float, on the CPU with batch 1, for every reported
            configuration (Figure 3's speed axis; :func:`models.bdcnn_timing.network_ms_per_image`).
        ms_repeats: timed runs per measurement (median).
        ms_threads: CPU threads of the kernel (numba) and the float network (torch) while timing.
        cost_image_size: input side for the cost model and timings (224 for ImageNet).
    """

    def __init__(
        self,
        arch: Arch = "alexnet",
        num_classes: int = 1000,
        pretrained: bool = False,
        width: int = 16,
        init_from: str | None = None,
        layers: LayerSelection | list[str] = "conv",
        bases: int = 6,
        bases_per_layer: dict[str, int] | None = None,
        decomposition: Method = "exhaustive",
        decomposition_iterations: int = 500,
        decomposition_restarts: int = 2,
        min_bits: int = 2,
        max_bits: int = 8,
        allowed_drops: list[float] | None = None,
        top_k: int = 5,
        readings: list[Reading] | None = None,
        reference: Reference = "decomposed",
        context: Context = "unquantized",
        walk: Walk = "chain",
        uniform_bits: list[int] | None = None,
        measure_ms: bool = True,
        network_ms: bool = True,
        ms_repeats: int = 3,
        ms_threads: int = 1,
        cost_image_size: int = 224,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if not 1 <= min_bits <= max_bits <= 16:
            raise ValueError(f"need 1 <= min_bits <= max_bits <= 16, got {min_bits}, {max_bits}")
        if reference not in ("decomposed", "float") or context not in ("unquantized", "max_bits"):
            raise ValueError(
                f"reference must be decomposed|float and context unquantized|max_bits: {reference}, {context}"
            )
        if walk not in ("chain", "independent"):
            raise ValueError(f"walk must be 'chain' or 'independent', got {walk!r}")
        self.readings: list[Reading] = list(readings or READINGS)
        bad = [r for r in self.readings if r not in READINGS] or len(set(self.readings)) != len(self.readings)
        if bad or not self.readings:
            raise ValueError(f"readings must be distinct values of {list(READINGS)}, got {readings}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.float_model = build_classifier(arch, num_classes, pretrained, width)
        if init_from:
            load_classifier_weights(self.float_model, init_from)
        self.float_model.eval().requires_grad_(False)
        names = selected_layers(self.float_model, layers)
        per_layer = {name: (bases_per_layer or {}).get(name, bases) for name in names}
        unknown = set(bases_per_layer or {}) - set(names)
        if unknown:
            raise ValueError(f"bases_per_layer names layers that are not searched: {sorted(unknown)}")
        self.model = convert_to_bdcnn(
            self.float_model,
            bases=per_layer,
            layers=names,
            method=decomposition,
            iterations=decomposition_iterations,
            restarts=decomposition_restarts,
        ).requires_grad_(False)
        self.runner = SegmentRunner(self.model, names)
        self.layer_names: list[str] = self.runner.order
        self.bit_range = list(range(min_bits, max_bits + 1))
        self.top_k = min(top_k, num_classes)
        self.task: dict[str, Any] = {"mode": "configs", "configs": [None]}
        self.result: dict[str, Any] = {}
        self._counts: Tensor | None = None
        self._total = self._batches = 0

    # -------------------------------------------------------------------- configurations
    def _base_bits(self) -> int | None:
        return self.hparams.max_bits if self.hparams.context == "max_bits" else None

    def config_bits(self, choice: Sequence[int] | int | None) -> dict[str, int | None]:
        """Per-layer bits of a choice (a vector in search order, one Q for all, or ``None`` = off)."""
        if choice is None or isinstance(choice, int):
            return dict.fromkeys(self.layer_names, choice)
        if len(choice) != len(self.layer_names):
            raise ValueError(f"need {len(self.layer_names)} bit values, got {list(choice)}")
        return dict(zip(self.layer_names, choice, strict=True))

    def _correct(self, logits: Tensor, labels: Tensor) -> Tensor:
        top = logits.topk(self.top_k, dim=1).indices
        return (top == labels[:, None]).any(dim=1).sum()

    # -------------------------------------------------------------------- validation loop
    def on_validation_epoch_start(self) -> None:
        mode, q = self.task["mode"], len(self.bit_range)
        if mode == "configs":
            shape: tuple[int, ...] = (len(self.task["configs"]),)
        elif mode == "table":
            shape = (1 if self.task["layer"] == 0 else q, q)
        elif mode == "drops":
            shape = (len(self.layer_names), q)
        else:
            raise ValueError(f"unknown task mode {mode!r}")
        self._counts = torch.zeros(shape, dtype=torch.int64, device=self.device)
        self._total = self._batches = 0
        self.runner = SegmentRunner(self.model, self.layer_names)  # re-traced: buffers may have moved device

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, labels = batch[0], batch[1]
        assert self._counts is not None
        with torch.no_grad():
            if self.task["mode"] == "configs":
                for j, config in enumerate(self.task["configs"]):
                    self._counts[j] += self._correct(self._forward_config(images, config), labels)
            elif self.task["mode"] == "drops":
                self._drops_step(images, labels)
            else:
                self._table_step(images, labels, self.task["layer"])
        self._total += images.shape[0]
        self._batches += 1

    def _forward_config(self, images: Tensor, config: Any) -> Tensor:
        if config == "float":
            return self.float_model(images)
        set_bits(self.model, self.config_bits(config))
        self.runner.layer_calls += self.runner.layers_per_forward
        return self.model(images)

    def _drops_step(self, images: Tensor, labels: Tensor) -> None:
        """One batch of A: for each layer i, the prefix up to i once (others at the base), each q_i to the end."""
        base = self._base_bits()
        set_bits(self.model, base)
        runner = self.runner
        cut = runner.start(images)
        for i, name in enumerate(self.layer_names):
            cut = runner.run(cut, name)
            layer = self.model.get_submodule(name)
            for b, q in enumerate(self.bit_range):
                layer.bits = q
                self._counts[i, b] += self._correct(runner.run(cut), labels)
            layer.bits = base

    def _table_step(self, images: Tensor, labels: Tensor, i: int) -> None:
        """One batch of T^i: the prefix once, each q_{i−1} once, each pair from layer i to the end."""
        base = self._base_bits()
        set_bits(self.model, base)
        runner, names = self.runner, self.layer_names
        layer = self.model.get_submodule(names[i])
        start = runner.start(images)
        if i == 0:
            cut = runner.run(start, names[0])
            for b, q in enumerate(self.bit_range):
                layer.bits = q
                self._counts[0, b] += self._correct(runner.run(cut), labels)
        else:
            previous = self.model.get_submodule(names[i - 1])
            prefix = runner.run(start, names[i - 1])
            for a, qp in enumerate(self.bit_range):
                previous.bits = qp
                middle = runner.run(prefix, names[i])
                for b, q in enumerate(self.bit_range):
                    layer.bits = q
                    self._counts[a, b] += self._correct(runner.run(middle), labels)
                layer.bits = base
        set_bits(self.model, base)

    def on_validation_epoch_end(self) -> None:
        assert self._counts is not None
        counts = self.trainer.strategy.reduce(self._counts.clone(), reduce_op="sum")
        total = int(self.trainer.strategy.reduce(torch.tensor(self._total, device=self.device), reduce_op="sum"))
        calls = int(
            self.trainer.strategy.reduce(torch.tensor(self.runner.layer_calls, device=self.device), reduce_op="sum")
        )
        batches = int(self.trainer.strategy.reduce(torch.tensor(self._batches, device=self.device), reduce_op="sum"))
        self.result = {"correct": counts.cpu(), "total": total, "layer_forwards": calls, "batches": batches}

    def on_fit_start(self) -> None:
        raise RuntimeError(
            "BitSearch is not trained: run the search with `splitcv search --config "
            "configs/trainer/cpu.yaml --config <this config>`; fine-tune its choice with QuantizedFinetune"
        )

    def training_step(self, batch: Any, batch_idx: int) -> None:  # never reached: on_fit_start refuses
        raise RuntimeError("BitSearch is not trained")

    def configure_optimizers(self) -> None:  # nothing is trained
        return None

    # -------------------------------------------------------------------- costs
    def layer_costs(self) -> dict[str, dict[int, dict[str, int]]]:
        """Cost model of each searched layer at each Q of the range, for one ``cost_image_size`` image."""
        size = self.hparams.cost_image_size
        shapes = input_shapes(cpu_copy(self.model), torch.rand(1, 3, size, size))
        layers = decomposed_layers(self.model)
        return {n: {q: layer_cost(layers[n], shapes[n], q) for q in self.bit_range} for n in self.layer_names}

    def layer_ms(self, bits_needed: dict[str, set[int]]) -> dict[str, dict[int, float]]:
        """Per-layer bit-serial and float ms (:func:`models.bdcnn_layer_timing.layer_ms`) at ``cost_image_size``."""
        hp = self.hparams
        return layer_ms(
            self.float_model,
            self.model,
            self.layer_names,
            bits_needed,
            hp.cost_image_size,
            hp.ms_repeats,
            hp.ms_threads,
        )
