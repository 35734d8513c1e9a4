"""The resumable bit-search driver: validation passes → checked tables → Algorithm 1 per D → report.

:func:`run_search` runs, through ``trainer.validate`` on a :class:`~lightning_modules.bit_search.BitSearch`:

1. the reference pass (float and decomposed-unquantised accuracy; R is one of them);
2. for the ``layer_drops`` reading, A: each layer alone quantised at each q (``tables/A.json``);
3. for the ``measured_pairs`` reading, the pair tables T^1..T^I (``tables/T{i}_{layer}.json``);
4. Algorithm 1 (:mod:`models.bit_allocation`) per reading and per D, then one pass measuring every chosen
   configuration and every uniform Q; the cost model, per-layer kernel times and the whole network's time
   per image (bit-serial and float, :func:`models.bdcnn_timing.network_ms_per_image`: Figure 3's speed axis).

Every file is saved as soon as it is measured and checked when read back (:mod:`.bit_search_tables`), so an
interrupted search continues with ``resume=True`` and recomputes only what is missing.

Outputs in ``out_dir``: ``state.json``, ``tables/``, ``search.json`` (reference accuracies, counts, per
reading and D the choice with predicted and measured accuracy, GBOPs, ms; uniform-Q points),
``bit_search_table.{md,csv}``, ``figure3.png`` (:mod:`lightning_modules.bit_search_report`); and W&B.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lightning_modules.bit_search import BitSearch
from lightning_modules.bit_search_report import log_wandb, write_report
from lightning_modules.bit_search_tables import (
    SearchStateError,
    fingerprint_id,
    read_json,
    read_state,
    read_table,
    search_fingerprint,
    table_entries,
    write_json,
)
from models.bdcnn import decomposed_layers, set_bits
from models.bdcnn_layer_timing import cpu_copy
from models.bit_allocation import PairKey, pareto_front, predicted_accuracy, select_bits, tables_from_layer_drops

NetworkTimer = Callable[..., dict]
DEFAULT_DROPS = [1.0, 2.0, 4.0, 6.0, 8.0, 10.0]


def find_network_timer() -> NetworkTimer | None:
    """:func:`models.bdcnn_timing.network_ms_per_image` where it exists, else ``None`` (no speed axis)."""
    try:
        from models.bdcnn_timing import network_ms_per_image
    except ImportError:
        return None
    return network_ms_per_image


def _validate(trainer: L.Trainer, search: BitSearch, data: Any, task: dict) -> dict:
    search.task = task
    if isinstance(data, L.LightningDataModule):
        trainer.validate(search, datamodule=data, verbose=False)
    else:
        trainer.validate(search, dataloaders=data, verbose=False)
    return search.result


def _write_once(trainer: L.Trainer, path: Path, data: Any) -> None:
    """Write on global rank 0 only (every rank measured the same reduced counts), then wait until it is on disk
    so that every rank reads back the same file."""
    if trainer.is_global_zero:
        write_json(path, data)
    trainer.strategy.barrier("bit_search_write")


def table_file(out: Path, i: int, name: str) -> Path:
    """Where pair table T^{i+1} of layer ``name`` is saved."""
    return out / "tables" / f"T{i + 1}_{name.replace('.', '_')}.json"


def drops_file(out: Path) -> Path:
    """Where A (each layer alone quantised) is saved."""
    return out / "tables" / "A.json"


def _counts(result: dict, entries: int, naive_per_entry: int, started: float) -> dict:
    return {
        "entries": entries,
        "layer_forwards": result["layer_forwards"],
        "naive_layer_forwards": entries * naive_per_entry * result["batches"],
        "batches": result["batches"],
        "seconds": time.perf_counter() - started,
    }


class _Interrupted(Exception):
    """``stop_after_tables`` reached (tests of interruption)."""


class _Tables:
    """Measures, saves and reads back (checked) the tables of one search directory."""

    def __init__(self, search: BitSearch, data: Any, trainer: L.Trainer, out: Path, state: dict, stop_after) -> None:
        self.search, self.data, self.trainer, self.out = search, data, trainer, out
        self.fingerprint = fingerprint_id(state["fingerprint"])
        self.images = state["reference"]["images"]
        self.counts: dict[str, dict] = {}
        self.stop_after, self.measured = stop_after, 0

    def _measure(self, path: Path, task: dict, rows: list, row_field: str, layer: str | None) -> None:
        if self.stop_after is not None and self.measured >= self.stop_after:
            raise _Interrupted
        search = self.search
        started = time.perf_counter()
        result = _validate(self.trainer, search, self.data, task)
        if result["total"] != self.images:
            raise SearchStateError(
                f"{self.out / 'state.json'}: the reference pass had {self.images} images, this pass {result['total']}"
            )
        entries = table_entries(result["correct"], result["total"], rows, search.bit_range, row_field)
        counts = _counts(result, len(entries), search.runner.layers_per_forward, started)
        _write_once(
            self.trainer, path, {"fingerprint": self.fingerprint, "layer": layer, "entries": entries, "counts": counts}
        )
        self.measured += 1

    def _read(self, path: Path, name: str, expected: set, key_fields: tuple[str, str]) -> dict:
        table = read_table(path, self.fingerprint, self.images, expected, key_fields)
        counts = read_json(path).get("counts")
        if not isinstance(counts, dict):
            raise SearchStateError(f"{path}: no counts")
        self.counts[name] = counts
        return table

    def layer_accuracy(self) -> list[dict[int, float]]:
        """A as accuracies: per layer, ``{q: accuracy with that layer alone quantised}``."""
        path, names, bits = drops_file(self.out), self.search.layer_names, self.search.bit_range
        if not path.is_file():
            self._measure(path, {"mode": "drops"}, names, "layer", None)
        table = self._read(path, "A", {(n, q) for n in names for q in bits}, ("layer", "q"))
        return [{q: table[(n, q)] for q in bits} for n in names]

    def pair_table(self, i: int) -> dict[PairKey, float]:
        """T^{i+1}, measured pairs."""
        name, bits = self.search.layer_names[i], self.search.bit_range
        path = table_file(self.out, i, name)
        prev_bits: list = [None] if i == 0 else list(bits)
        if not path.is_file():
            self._measure(path, {"mode": "table", "layer": i}, prev_bits, "q_prev", name)
        return self._read(path, f"T{i + 1}", {(qp, q) for qp in prev_bits for q in bits}, ("q_prev", "q"))


def _open_state(search: BitSearch, data: Any, out: Path, resume: bool) -> dict:
    state_file = out / "state.json"
    fingerprint = search_fingerprint(search, data)
    if state_file.is_file():
        if not resume:
            raise SearchStateError(
                f"{out} already holds a search; pass --resume true to continue it, or use another run id"
            )
        return read_state(state_file, fingerprint)
    if resume:
        raise SearchStateError(f"nothing to resume: {state_file} does not exist")
    return {"fingerprint": fingerprint}


def run_search(
    search: BitSearch,
    datamodule: L.LightningDataModule | Any,
    trainer: L.Trainer,
    out_dir: str | Path,
    resume: bool = False,
    stop_after_tables: int | None = None,
    network_timer: NetworkTimer | bool | None = True,
) -> dict[str, Any]:
    """Algorithm 1 with the D sweep, in every reading; writes and returns ``search.json``'s content.

    Args:
        search: the module (its model decomposed).
        datamodule: a DataModule whose ``val_dataloader`` is the validation subset, or a DataLoader.
        trainer: runs the validation passes (devices, precision, progress bar).
        out_dir: where tables and results are written.
        resume: continue from the files saved in ``out_dir`` (an error when there are none, or when any of
            them is unreadable, incomplete or belongs to another search); without it an existing search in
            ``out_dir`` is an error.
        stop_after_tables: stop once this many tables were measured by this call (tests of interruption).
        network_timer: the whole-network timer (``True``: :func:`find_network_timer`; ``None``/``False``: none).
    """
    out = Path(out_dir)
    state = _open_state(search, datamodule, out, resume)
    if "reference" not in state:
        result = _validate(trainer, search, datamodule, {"mode": "configs", "configs": ["float", None]})
        total = result["total"]
        acc = (100.0 * result["correct"].double() / total).tolist()
        state["reference"] = {"float": acc[0], "decomposed": acc[1], "images": total}
        _write_once(trainer, out / "state.json", state)
    reference = state["reference"][search.hparams.reference]
    store = _Tables(search, datamodule, trainer, out, state, stop_after_tables)
    layer_acc: list[dict[int, float]] | None = None
    tables: dict[str, list[dict[PairKey, float]]] = {}
    try:
        for reading in search.readings:
            if reading == "layer_drops":
                layer_acc = store.layer_accuracy()
                tables[reading] = tables_from_layer_drops(layer_acc, reference)
            else:
                tables[reading] = [store.pair_table(i) for i in range(len(search.layer_names))]
    except _Interrupted:
        return state
    timer = find_network_timer() if network_timer is True else (network_timer or None)
    return _finish(search, datamodule, trainer, out, state, tables, store.counts, reference, timer, layer_acc)


def _total_counts(counts: dict[str, dict]) -> dict:
    keys = ("entries", "layer_forwards", "naive_layer_forwards", "batches")
    return {k: sum(int(c.get(k, 0)) for c in counts.values()) for k in keys} | {"per_table": counts}


def network_ms(
    search: BitSearch, configs: list[tuple[int, ...]], timer: NetworkTimer
) -> tuple[dict[tuple[int, ...], float], list[float]]:
    """Whole-network bit-serial ms per image for each configuration, and the float network's ms of each call."""
    hp = search.hparams
    float_model, model = cpu_copy(search.float_model), cpu_copy(search.model)
    example = torch.rand(1, 3, hp.cost_image_size, hp.cost_image_size)
    bitserial, floats = {}, []
    for config in configs:
        set_bits(model, search.config_bits(list(config)))
        times = timer(float_model, model, example, repeats=hp.ms_repeats, threads=hp.ms_threads)
        bitserial[config] = float(times["bitserial_ms"])
        floats.append(float(times["float_ms"]))
    return bitserial, floats


def _finish(search, data, trainer, out: Path, state: dict, tables, counts, reference: float, timer, layer_acc) -> dict:
    hp, names = search.hparams, search.layer_names
    drops = list(hp.allowed_drops or DEFAULT_DROPS)
    uniform = list(hp.uniform_bits or range(hp.min_bits, hp.max_bits + 1))
    choices = {r: {d: select_bits(tables[r], reference, d, hp.walk) for d in drops} for r in search.readings}
    configs = [tuple(c) for per in choices.values() for c in per.values() if c is not None]
    configs += [tuple([q] * len(names)) for q in uniform]
    configs = list(dict.fromkeys(configs))
    result = _validate(trainer, search, data, {"mode": "configs", "configs": [list(c) for c in configs]})
    measured = {c: 100.0 * int(result["correct"][j]) / result["total"] for j, c in enumerate(configs)}
    costs = search.layer_costs()
    needed: dict[str, set[int]] = {n: set() for n in names}
    for c in configs:
        for n, q in zip(names, c, strict=True):
            needed[n].add(q)
    ms = search.layer_ms(needed) if hp.measure_ms else {}
    net_ms, float_runs = network_ms(search, configs, timer) if hp.network_ms and timer else ({}, [])

    def describe(config: tuple[int, ...], reading_tables) -> dict:
        layers = []
        for i, (n, q) in enumerate(zip(names, config, strict=True)):
            key = (None, q) if i == 0 else (config[i - 1], q)
            layers.append(
                {
                    "layer": n,
                    "k": costs[n][q]["k"],
                    "bits": q,
                    "table_accuracy": reading_tables[i].get(key) if reading_tables else None,
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
            "network_ms": net_ms.get(config),
            "layers": layers,
        }

    by_reading = {}
    for reading in search.readings:
        rows = []
        for d, c in choices[reading].items():
            row = {"allowed_drop": d, "target_accuracy": reference - d, "feasible": c is not None, "reading": reading}
            if c is not None:
                predicted = predicted_accuracy(tables[reading], c)
                row |= describe(tuple(c), tables[reading]) | {"predicted_accuracy": predicted}
                if layer_acc is not None:  # every layer's drop from A added up over the whole network
                    row["predicted_additive"] = reference - sum(reference - layer_acc[i][q] for i, q in enumerate(c))
            rows.append(row)
        by_reading[reading] = rows
    primary = search.readings[0]
    uniform_rows = [
        describe(tuple([q] * len(names)), tables.get("measured_pairs")) | {"uniform_bits": q} for q in uniform
    ]
    found = [r for r in by_reading[primary] if r["feasible"]]
    points = [(r["gbops"], r["accuracy"]) for r in found + uniform_rows]
    float_ms = [ms.get(n, {}).get(0) for n in names]
    summary = {
        "metric": f"acc_top{search.top_k}",
        "reference": state["reference"],
        "reference_used": hp.reference,
        "R": reference,
        "images": state["reference"]["images"],
        "layers": names,
        "counts": _total_counts(counts),
        "float_layers_ms": sum(float_ms) if float_ms and None not in float_ms else None,
        "float_network_ms": statistics.median(float_runs) if float_runs else None,
        "network_timer": None if timer is None else f"{timer.__module__}.{timer.__name__}",
        "float_gmacs": sum(costs[n][hp.min_bits]["float_macs"] for n in names) / 1e9,
        "decomposition": {n: decomposed_layers(search.model)[n].decomposition_report for n in names},
        "reading": primary,
        "searched": by_reading[primary],
        "readings": by_reading,
        "uniform": uniform_rows,
        "pareto": pareto_front(points),
        "settings": {k: hp[k] for k in ("walk", "context", "reference", "allowed_drops", "uniform_bits")}
        | {"readings": list(search.readings)},
    }
    _write_once(trainer, out / "search.json", summary)
    if trainer.is_global_zero:
        write_report(summary, out)
        log_wandb(trainer, summary, out)
    return summary
