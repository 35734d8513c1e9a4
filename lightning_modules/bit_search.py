"""Quantisation-bit search for B-DCNN (Algorithm 1 of "B-DCNN の量子化ビット数の自動最適化").

Given a trained CNN, its layers are binary-decomposed (:mod:`models.bdcnn`) and, for every searched layer i
in execution order, a table T^i over neighbouring pairs (q_{i−1}, q_i) of the expected accuracy
S = SA(i, q_{i−1}, q_i) is measured on a validation subset; entries with R − S < D are admissible; a
walk from the last layer back to the first picks the smallest q_i (Algorithm 1).

Our reading of what the paper leaves open (alternatives are flags):

- **SA(i, q_{i−1}, q_i)** is the measured top-k accuracy of the whole network when layer i−1's
  quantisation sub-layer has q_{i−1} bits, layer i's has q_i and every other decomposed layer is *not
  quantised* (``context="unquantized"``: "前後の層の Q 値を固定した時の精度の変化", the change when only
  the neighbouring pair is quantised). ``context="max_bits"`` keeps the others at ``max_bits`` instead.
  T^1 has no q_0: it is one row over q_1 (the input image is quantised by layer 1's sub-layer).
- **R** ("量子化前の精度") is the accuracy of the decomposed network with every quantisation sub-layer off
  (``reference="decomposed"``), so D budgets the quantisation alone; ``reference="float"`` measures D from
  the original network instead. Both accuracies are always reported. D is in percentage points.
- **Tables** hold every pair's S; admissibility is applied per D, so one set of tables serves the whole
  sweep over D (Algorithm 1 stacks only the admissible entries: the same walk).
- **The backward walk** (``walk="chain"``): the chosen pairs must be entries of the tables. With
  F_1 = {q_1 admissible in T^1} and F_i = {q_i : ∃ q_{i−1} ∈ F_{i−1}, (q_{i−1}, q_i) admissible in T^i},
  a_I = min F_I, then a_{i−1} = min{q ∈ F_{i−1} : (q, a_i) admissible in T^i}: the smallest q per layer
  from the last layer back, each consistent with the pair already chosen (figure 2's flow).
  ``walk="independent"`` takes, per layer, the smallest q_i that has any admissible entry in T^i,
  ignoring q_{i−1} (the literal ``argmin_{q_i} T^i``). No admissible path: the D is reported infeasible.

Costs: prefix activations are cached (:class:`models.prefix_cache.SegmentRunner`): for table i and each
batch the network runs once up to layer i−1, then once per q_{i−1} up to layer i, then once per
(q_{i−1}, q_i) from layer i to the end. ``layer_forwards`` counts the decomposed-layer calls executed,
against ``naive_layer_forwards`` = entries × (decomposed layers per forward) × batches.

Run it (the search is a validate-driven loop: ``trainer.validate`` once per table, so GPUs, DDP and
progress bars come from the Trainer)::

    splitcv search --config configs/trainer/cpu.yaml --config configs/bit_search/demo.yaml
    ... --run.id ID --resume true     # continue an interrupted search from its saved tables

Outputs in ``<run dir>/search/``: ``tables/T{i}_{layer}.json``, ``search.json`` (reference accuracies,
counts, per-D choice with predicted and measured accuracy, BOPs, ms; uniform-Q points),
``bit_search_table.{md,csv}`` (layer, k, Q, accuracy, BOPs, measured ms), ``pareto.png``; and W&B.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor, nn

from lightning_modules.bit_search_report import log_wandb, print_summary, write_report
from lightning_modules.checkpoint_init import InitReport, init_weights_from
from models.bdcnn import (
    BinaryDecomposedConv2d,
    LayerSelection,
    convert_to_bdcnn,
    decomposed_layers,
    input_shapes,
    layer_cost,
    selected_layers,
    set_bits,
)
from models.bdcnn_networks import Arch, build_classifier
from models.binary_decomposition import Method
from models.prefix_cache import SegmentRunner

Walk = Literal["chain", "independent"]
Context = Literal["unquantized", "max_bits"]
Reference = Literal["decomposed", "float"]
PairKey = tuple[int | None, int]


# ------------------------------------------------------------------------------------ Algorithm 1
def select_bits(
    tables: Sequence[Mapping[PairKey, float]], reference: float, allowed_drop: float, walk: Walk = "chain"
) -> list[int] | None:
    """Algorithm 1's backward walk over the tables (see the module docstring); ``None`` when infeasible.

    Args:
        tables: T^1..T^I, each ``{(q_prev, q): S}`` (``q_prev`` is ``None`` in T^1).
        reference: R, the accuracy before quantisation (same unit as S).
        allowed_drop: D; an entry is admissible when R − S < D.
        walk: ``chain`` or ``independent``.
    """
    if walk not in ("chain", "independent"):
        raise ValueError(f"walk must be 'chain' or 'independent', got {walk!r}")
    admissible = [{key for key, s in t.items() if reference - s < allowed_drop} for t in tables]
    if walk == "independent":
        choice = [min((q for _, q in ok), default=None) for ok in admissible]
        return None if any(q is None for q in choice) else choice  # type: ignore[return-value]
    feasible = [{q for _, q in admissible[0]}]
    for ok in admissible[1:]:
        feasible.append({q for qp, q in ok if qp in feasible[-1]})
    if not feasible[-1]:
        return None
    choice = [0] * len(tables)
    choice[-1] = min(feasible[-1])
    for i in range(len(tables) - 1, 0, -1):
        choice[i - 1] = min(qp for qp, q in admissible[i] if q == choice[i] and qp in feasible[i - 1])
    return choice


def predicted_accuracy(tables: Sequence[Mapping[PairKey, float]], choice: Sequence[int]) -> float:
    """The lowest table entry along the chosen pairs (the paper's 提案手法*, expected accuracy)."""
    values = [tables[0][(None, choice[0])]]
    values += [tables[i].get((choice[i - 1], choice[i]), math.nan) for i in range(1, len(tables))]
    return min(values)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (cost, accuracy) not dominated by another (lower-or-equal cost and higher-or-
    equal accuracy, one strictly), sorted by cost."""
    front = []
    for i, (c, a) in enumerate(points):
        dominated = any((c2 <= c and a2 >= a) and (c2 < c or a2 > a) for c2, a2 in points)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


# ------------------------------------------------------------------------------------ module
class BitSearch(L.LightningModule):
    """A B-DCNN whose validation pass measures either whole configurations or one table of Algorithm 1.

    ``splitcv search`` (= ``python -m lightning_modules.bit_search``) (:func:`run_search`) drives it: it sets :attr:`task` and
    calls ``trainer.validate``; results land in :attr:`result`. Nothing is trained here.

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
        decomposition: ``exhaustive`` (ALS with exact sign search) or ``greedy``.
        decomposition_iterations: ALS rounds (exhaustive).
        decomposition_restarts: random restarts per layer (exhaustive).
        min_bits: smallest Q tried (the paper: 2).
        max_bits: largest Q tried (the paper's Q: 8).
        allowed_drops: the sweep over D, accuracy drops in percentage points.
        top_k: accuracy measured as top-k (micro-averaged); the paper: top-5.
        reference: R from the ``decomposed`` network without quantisation, or from the ``float`` network.
        context: other layers ``unquantized`` while a pair is measured, or at ``max_bits``.
        walk: ``chain`` (consistent pairs) or ``independent`` backward walk.
        uniform_bits: uniform-Q reference points evaluated beside the search (the paper: Q = 3, 4).
        measure_ms: time each layer's bit-serial kernel (CPU, batch 1) at every Q that is reported.
        ms_repeats: timed runs per layer and Q (median).
        ms_threads: CPU threads of both the kernel (numba) and the float layer (torch) while timing.
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
        decomposition_iterations: int = 10,
        decomposition_restarts: int = 2,
        min_bits: int = 2,
        max_bits: int = 8,
        allowed_drops: list[float] | None = None,
        top_k: int = 5,
        reference: Reference = "decomposed",
        context: Context = "unquantized",
        walk: Walk = "chain",
        uniform_bits: list[int] | None = None,
        measure_ms: bool = True,
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
        mode = self.task["mode"]
        if mode == "configs":
            shape: tuple[int, ...] = (len(self.task["configs"]),)
        elif mode == "table":
            shape = (1 if self.task["layer"] == 0 else len(self.bit_range), len(self.bit_range))
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
        shapes = input_shapes(_cpu_copy(self.model), torch.rand(1, 3, size, size))
        layers = decomposed_layers(self.model)
        return {n: {q: layer_cost(layers[n], shapes[n], q) for q in self.bit_range} for n in self.layer_names}

    def layer_ms(self, bits_needed: Mapping[str, set[int]]) -> dict[str, dict[int, float]]:
        """Median ms of each layer's bit-serial kernel (CPU, batch 1) at the Q values asked for, and of the
        float layer (key 0) on the same input; depthwise/grouped layers are skipped (no kernel)."""
        size = self.hparams.cost_image_size
        model = _cpu_copy(self.model)
        captured: dict[str, Tensor] = {}
        layers = decomposed_layers(model)

        def record(name: str):
            def hook(module: nn.Module, args: tuple) -> None:
                captured.setdefault(name, args[0].detach())

            return hook

        hooks = [layers[n].register_forward_pre_hook(record(n)) for n in self.layer_names]
        set_bits(model, None)
        with torch.no_grad():
            model(torch.rand(1, 3, size, size))
        for h in hooks:
            h.remove()
        float_layers = dict(self.float_model.named_modules())
        with _cpu_threads(self.hparams.ms_threads):
            return self._time_layers(layers, captured, float_layers, bits_needed)

    def _time_layers(self, layers, captured, float_layers, bits_needed) -> dict[str, dict[int, float]]:
        from models.bitserial import BitSerialLayer  # numba is imported only when timing

        out: dict[str, dict[int, float]] = {}
        for name in self.layer_names:
            layer, x = layers[name], captured[name]
            if isinstance(layer, BinaryDecomposedConv2d) and layer.groups != 1:
                continue
            source = _cpu_copy(float_layers[name])
            with torch.no_grad():
                source(x)  # warm up
            times = {0: _median_ms(lambda s=source, x=x: s(x), self.hparams.ms_repeats)}
            for q in sorted(bits_needed.get(name, ())):
                layer.bits = q
                kernel = BitSerialLayer(layer)
                kernel(x)  # compile / warm up
                times[q] = _median_ms(lambda k=kernel, x=x: k(x), self.hparams.ms_repeats)
            out[name] = times
        return out


@contextlib.contextmanager
def _cpu_threads(threads: int):
    """Run torch and numba with ``threads`` CPU threads (restored afterwards)."""
    import numba

    saved = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        numba.set_num_threads(saved[1])


def _cpu_copy(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module).cpu().eval()


def _median_ms(fn, repeats: int) -> float:
    times = []
    with torch.no_grad():
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def load_classifier_weights(network: nn.Module, path: str) -> InitReport:
    """Load a classifier's weights: a ``QuantizedFinetune`` checkpoint of a float run (``model.*`` keys) or a
    bare state dict of the network; any other key is an error naming it."""
    from lightning_modules.checkpoint_init import load_state_dict_from_checkpoint

    keys = load_state_dict_from_checkpoint(path)
    prefix = "model." if any(k.startswith("model.") for k in keys) else ""
    return init_weights_from(network, path, key_map={prefix: ""})


# ------------------------------------------------------------------------------------ driver
TABLE_KEYS = (
    "arch", "num_classes", "pretrained", "width", "init_from", "layers", "bases", "bases_per_layer",
    "decomposition", "decomposition_iterations", "decomposition_restarts", "min_bits", "max_bits", "top_k",
    "context",
)  # fmt: skip


class SearchStateError(RuntimeError):
    """A search directory does not match the request (resume of nothing, or of another search)."""


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def _validate(trainer: L.Trainer, search: BitSearch, data: Any, task: dict) -> dict:
    search.task = task
    if isinstance(data, L.LightningDataModule):
        trainer.validate(search, datamodule=data, verbose=False)
    else:
        trainer.validate(search, dataloaders=data, verbose=False)
    return search.result


def _table_file(out: Path, i: int, name: str) -> Path:
    return out / "tables" / f"T{i + 1}_{name.replace('.', '_')}.json"


def run_search(
    search: BitSearch,
    datamodule: L.LightningDataModule,
    trainer: L.Trainer,
    out_dir: str | Path,
    resume: bool = False,
    stop_after_tables: int | None = None,
) -> dict[str, Any]:
    """Algorithm 1 with the D sweep; writes and returns ``search.json``'s content (see the module docstring).

    Args:
        search: the module (its model decomposed).
        datamodule: a DataModule whose ``val_dataloader`` is the validation subset, or a DataLoader.
        trainer: runs the validation passes (devices, precision, progress bar).
        out_dir: where tables and results are written.
        resume: continue from the tables saved in ``out_dir`` (an error when there are none or they belong
            to another search); without it an existing search in ``out_dir`` is an error.
        stop_after_tables: stop once this many tables exist (tests of interruption).
    """
    out = Path(out_dir)
    state_file = out / "state.json"
    hp = search.hparams
    fingerprint = {key: hp[key] for key in TABLE_KEYS} | {"layer_names": search.layer_names}
    fingerprint = json.loads(json.dumps(fingerprint, default=str))
    if state_file.is_file():
        if not resume:
            raise SearchStateError(
                f"{out} already holds a search; pass --resume true to continue it, or use another run id"
            )
        state = json.loads(state_file.read_text())
        differ = sorted(k for k in fingerprint if state["fingerprint"].get(k) != fingerprint[k])
        if differ:
            raise SearchStateError(f"{out} holds a search with other settings ({', '.join(differ)}); not resuming")
    elif resume:
        raise SearchStateError(f"nothing to resume: {state_file} does not exist")
    else:
        state = {"fingerprint": fingerprint}
    counts = state.setdefault("counts", {"entries": 0, "layer_forwards": 0, "naive_layer_forwards": 0, "batches": 0})

    if "reference" not in state:
        result = _validate(trainer, search, datamodule, {"mode": "configs", "configs": ["float", None]})
        total = result["total"]
        acc = (100.0 * result["correct"].double() / total).tolist()
        state["reference"] = {"float": acc[0], "decomposed": acc[1], "images": total}
        _write_json(state_file, state)
    reference = state["reference"][hp.reference]
    images = state["reference"]["images"]

    tables: list[dict[PairKey, float]] = []
    for i, name in enumerate(search.layer_names):
        path = _table_file(out, i, name)
        if path.is_file():
            saved = json.loads(path.read_text())
            tables.append({(e["q_prev"], e["q"]): e["accuracy"] for e in saved["entries"]})
            continue
        if stop_after_tables is not None and i >= stop_after_tables:
            return state
        started = time.perf_counter()
        result = _validate(trainer, search, datamodule, {"mode": "table", "layer": i})
        prev_bits = [None] if i == 0 else search.bit_range
        entries = [
            {
                "q_prev": qp,
                "q": q,
                "correct": int(result["correct"][a, b]),
                "total": result["total"],
                "accuracy": 100.0 * int(result["correct"][a, b]) / result["total"],
            }
            for a, qp in enumerate(prev_bits)
            for b, q in enumerate(search.bit_range)
        ]
        batches = result["batches"]
        layer_counts = {
            "entries": len(entries),
            "layer_forwards": result["layer_forwards"],
            "naive_layer_forwards": len(entries) * search.runner.layers_per_forward * batches,
            "batches": batches,
            "seconds": time.perf_counter() - started,
        }
        _write_json(path, {"layer": name, "index": i + 1, "entries": entries, "counts": layer_counts})
        for key in ("entries", "layer_forwards", "naive_layer_forwards", "batches"):
            counts[key] += layer_counts[key]
        _write_json(state_file, state)
        tables.append({(e["q_prev"], e["q"]): e["accuracy"] for e in entries})
    return _finish(search, datamodule, trainer, out, state, tables, reference, images)


def _finish(search, datamodule, trainer, out: Path, state: dict, tables, reference: float, images: int) -> dict:
    hp = search.hparams
    drops = list(hp.allowed_drops or [1, 2, 4, 6, 8, 10])
    uniform = list(hp.uniform_bits or range(hp.min_bits, hp.max_bits + 1))
    choices = {d: select_bits(tables, reference, d, hp.walk) for d in drops}
    configs = [tuple(c) for c in dict.fromkeys(tuple(c) for c in choices.values() if c is not None)]
    configs += [tuple([q] * len(search.layer_names)) for q in uniform]
    configs = list(dict.fromkeys(configs))
    result = _validate(trainer, search, datamodule, {"mode": "configs", "configs": [list(c) for c in configs]})
    measured = {c: 100.0 * int(result["correct"][j]) / result["total"] for j, c in enumerate(configs)}
    costs = search.layer_costs()
    needed: dict[str, set[int]] = {n: set() for n in search.layer_names}
    for c in configs:
        for n, q in zip(search.layer_names, c, strict=True):
            needed[n].add(q)
    ms = search.layer_ms(needed) if hp.measure_ms else {}

    def describe(config: tuple[int, ...]) -> dict:
        layers = []
        for i, (n, q) in enumerate(zip(search.layer_names, config, strict=True)):
            key = (None, q) if i == 0 else (config[i - 1], q)
            layers.append(
                {
                    "layer": n,
                    "k": costs[n][q]["k"],
                    "bits": q,
                    "table_accuracy": tables[i].get(key),
                    "bops": costs[n][q]["bops"],
                    "word_ops": costs[n][q]["word_ops"],
                    "ms": ms.get(n, {}).get(q),
                    "float_ms": ms.get(n, {}).get(0),
                }
            )
        timed = [lay["ms"] for lay in layers]
        return {
            "bits": list(config),
            "accuracy": measured[config],
            "gbops": sum(lay["bops"] for lay in layers) / 1e9,
            "ms": sum(timed) if timed and None not in timed else None,
            "layers": layers,
        }

    searched = []
    for d, c in choices.items():
        row = {"allowed_drop": d, "target_accuracy": reference - d, "feasible": c is not None}
        if c is not None:
            row |= describe(tuple(c)) | {"predicted_accuracy": predicted_accuracy(tables, c)}
        searched.append(row)
    uniform_rows = [describe(tuple([q] * len(search.layer_names))) | {"uniform_bits": q} for q in uniform]
    points = [(r["gbops"], r["accuracy"]) for r in searched if r["feasible"]] + [
        (r["gbops"], r["accuracy"]) for r in uniform_rows
    ]
    float_ms = [ms.get(n, {}).get(0) for n in search.layer_names]
    summary = {
        "metric": f"acc_top{search.top_k}",
        "reference": state["reference"],
        "reference_used": hp.reference,
        "R": reference,
        "images": images,
        "layers": search.layer_names,
        "counts": state["counts"],
        "float_layers_ms": sum(float_ms) if float_ms and None not in float_ms else None,
        "float_gmacs": sum(costs[n][hp.min_bits]["float_macs"] for n in search.layer_names) / 1e9,
        "searched": searched,
        "uniform": uniform_rows,
        "pareto": pareto_front(points),
        "settings": {k: hp[k] for k in ("walk", "context", "reference", "allowed_drops", "uniform_bits")},
    }
    _write_json(out / "search.json", summary)
    write_report(summary, out)
    log_wandb(trainer, summary, out)
    return summary


# ------------------------------------------------------------------------------------ command line
def build_parser():
    from jsonargparse import ActionConfigFile
    from lightning.pytorch.cli import LightningArgumentParser

    from cli.run_directory import RunConfig

    parser = LightningArgumentParser(
        prog="splitcv search",
        description="Algorithm 1 (B-DCNN quantisation-bit search) over a validation subset, with a sweep over D.",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="config files (compose; later ones win)")
    parser.add_argument("--seed_everything", type=int | bool, default=0)
    parser.add_argument("--resume", type=bool, default=False, help="continue the search saved in the run directory")
    parser.add_class_arguments(RunConfig, "run")
    parser.add_lightning_class_args(BitSearch, "model", subclass_mode=True)
    parser.add_lightning_class_args(L.LightningDataModule, "data", subclass_mode=True)
    parser.add_lightning_class_args(L.Trainer, "trainer")
    return parser


def search_run_dir(run, resume: bool) -> Path:
    """``<root>/<name>/<id>``; with ``resume`` and no id, the newest run of that name holding a search."""
    from datetime import datetime

    from cli.run_directory import slurm_run_id

    experiment = Path(run.root) / (run.name or "bit_search")
    run_id = run.id or slurm_run_id()
    if run_id is None and resume:
        found = sorted(experiment.glob("*/search/state.json"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise SearchStateError(f"nothing to resume under {experiment} (no */search/state.json)")
        return found[-1].parent.parent
    return experiment / (run_id or datetime.now().strftime("%Y%m%d-%H%M%S"))


def main(args: list[str] | None = None) -> dict:
    """``splitcv search --config ...``: parse, build, search, report."""
    from lightning.pytorch.callbacks import RichProgressBar
    from lightning.pytorch.loggers import WandbLogger

    from cli.run_directory import RunConfig
    from cli.wandb_run import wandb_logger_args

    parser = build_parser()
    cfg = parser.parse_args(args)
    run = RunConfig(**cfg.run.as_dict())
    run_dir = search_run_dir(run, cfg.resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"[splitcv] bit search run directory: {run_dir}", file=sys.stderr)
    if cfg.seed_everything is not False:
        L.seed_everything(cfg.seed_everything if cfg.seed_everything is not True else None)
    logger_cfg = cfg.trainer.get("logger")
    if logger_cfg not in (None, False, True) and str(getattr(logger_cfg, "class_path", "")).endswith("WandbLogger"):
        name = f"{run_dir.parent.name}/{run_dir.name}"
        logger_cfg.init_args = logger_cfg.get("init_args") or {}
        for key, value in wandb_logger_args(run_dir, name, run.group or run_dir.parent.name, run.tags).items():
            logger_cfg.init_args[key] = value
    init = parser.instantiate(cfg)
    trainer_kwargs = dict(init.trainer)
    trainer_kwargs["logger"] = (
        trainer_kwargs.get("logger") if not isinstance(trainer_kwargs.get("logger"), bool) else False
    )
    callbacks = list(trainer_kwargs.pop("callbacks", None) or [])
    if trainer_kwargs.get("enable_progress_bar") is not False and not any(
        "ProgressBar" in type(c).__name__ for c in callbacks
    ):
        callbacks.append(RichProgressBar())
    trainer_kwargs.update(default_root_dir=str(run_dir), callbacks=callbacks, enable_checkpointing=False)
    trainer = L.Trainer(**trainer_kwargs)
    if isinstance(trainer.logger, WandbLogger):
        trainer.logger.log_hyperparams(cfg.as_dict())
    parser.save(cfg, run_dir / "search_config.yaml", overwrite=True, skip_validation=True)
    summary = run_search(init.model, init.data, trainer, run_dir / "search", resume=cfg.resume)
    print_summary(summary, run_dir / "search")
    return summary


if __name__ == "__main__":
    from lightning_modules.bit_search import main as _package_main  # the importable BitSearch, not __main__'s

    _package_main()
