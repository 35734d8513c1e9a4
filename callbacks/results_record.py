"""One results record per run and stage: ``<run directory>/results/{val,test}.json``, one schema for every method.

Written on rank 0 after every validation (not the sanity check) and test, from what the module logged
(``trainer.callback_metrics``) and what it says of itself through ``results_info(stage)`` (below). The
split costs come from the one accounting (:class:`models.split_model.SplitView`), so every method reports
them alike. ``benchmarks/split_report.py`` reads these files.

Schema (``"schema": "splitcv.results/1"``), every key always present (``null`` where it does not apply):

=====================  =======================================================================================
``stage``              ``val`` or ``test``
``method``             ``decoded_images``, ``codes``, ``shared_trunk``, ``rate_distortion`` (or the module's name)
``module``             the LightningModule's class
``dataset``            the DataModule's class, ``dataset_root`` its ``root`` when it has one
``setting``            a short label of the setting (``rnn k=2``, ``from_layer2 k=1``, ``hevc-qp35-…``)
``k``, ``codec``       iterations sent (recurrent codec) and the wire's codec
``bytes_per_image``    mean real bytes sent per image (headers and side information included)
``bpp``                8 · bytes / pixels of the images as given to the wire
``acc_top1`` …         ``acc_top1``, ``acc_top5`` (classification) or ``map50`` (detection), in [0, 1]
``params_*``           ``params_edge``, ``params_server``; ``gmacs_edge``, ``gmacs_server`` (one image at
                       ``input_size``; test only: counting runs a forward pass, not repeated every validation)
``ms_*``               ``ms_edge``, ``ms_server`` (each side alone, batch 1, median; test only, timed when
                       ``latency_repeats`` > 0) and ``ms_per_image`` (the whole pipeline, as the module
                       logged it, else edge + server)
``checkpoint``         the evaluated checkpoint (``null`` while fitting) and ``checkpoint_sha256``
``config``             the newest ``config*.yaml`` of the run directory (what LightningCLI saved)
``metrics``            every ``{stage}/…`` metric logged
=====================  =======================================================================================

What a module provides, ``results_info(stage) -> dict`` (all keys optional): ``method``, ``setting``, ``k``,
``codec``, ``split`` (a :class:`models.split_model.SplitModel`-like :class:`~models.split_model.SplitView`),
``input_size`` ((H, W) of one image at the network input; else the first evaluated batch's), ``details``
(a dict merged into the record, its keys never replacing the schema's).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from coding.checksums import file_sha256
from models import metric_names as mn

SCHEMA = "splitcv.results/1"
RESULTS_DIR = "results"
RECORD_KEYS: tuple[str, ...] = (
    "schema",
    "stage",
    "method",
    "module",
    "dataset",
    "dataset_root",
    "setting",
    "k",
    "codec",
    *mn.RATES,
    *mn.ACCURACIES,
    *mn.RECORD_COSTS,
    "input_size",
    "epoch",
    "global_step",
    "checkpoint",
    "checkpoint_sha256",
    "config",
    "metrics",
)


def _image_size(batch: Any) -> tuple[int, int] | None:
    """(H, W) of the first image of a batch: a tensor, ``(images, labels, …)``, or a list of images."""
    first = batch
    while isinstance(first, list | tuple) and first:
        first = first[0]
    if isinstance(first, torch.Tensor) and first.ndim >= 3:
        return int(first.shape[-2]), int(first.shape[-1])
    return None


def _newest_config(run_dir: Path) -> str | None:
    configs = sorted(run_dir.glob("config*.yaml"), key=lambda p: p.stat().st_mtime)
    return str(configs[-1]) if configs else None


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


def read_record(path: str | Path) -> dict[str, Any]:
    """A results record, checked: JSON, this schema, every key present.

    Raises:
        ValueError: not a record of this schema, naming the file.
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable results record ({err})") from err
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise ValueError(
            f"{path}: not a {SCHEMA} record (schema {record.get('schema') if isinstance(record, dict) else None!r})"
        )
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise ValueError(f"{path}: results record lacks {missing}")
    return record


def write_results(trainer: L.Trainer, stage: str, record: Callable[[], dict[str, Any]]) -> bool:
    """Write ``record()`` to ``<run dir>/results/<stage>.json`` atomically, on global rank 0 and not during the
    sanity check; returns whether it was written (``record`` is only called then)."""
    if trainer.sanity_checking or not trainer.is_global_zero:
        return False
    path = Path(trainer.default_root_dir) / RESULTS_DIR / f"{stage}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record(), indent=2, ensure_ascii=False))
    os.replace(tmp, path)
    return True


class ResultsRecord(Callback):
    """Write ``results/{stage}.json`` in the one schema (module docstring).

    Args:
        log_costs: also log ``test/params_{edge,server,total}``, ``test/gmacs_{edge,server,total}``,
            ``test/ms_edge``, ``test/ms_server`` and ``test/ms_per_image`` (for modules that do not log them
            themselves).
        latency_warmup: untimed batch-1 runs before each side is timed.
        latency_repeats: timed runs per side at test (their median); 0: no timing.
    """

    def __init__(self, log_costs: bool = False, latency_warmup: int = 2, latency_repeats: int = 10) -> None:
        if latency_warmup < 0 or latency_repeats < 0:
            raise ValueError(
                f"latency_warmup and latency_repeats must be >= 0, got {latency_warmup}, {latency_repeats}"
            )
        self.log_costs = log_costs
        self.latency_warmup, self.latency_repeats = latency_warmup, latency_repeats
        self._input_size: dict[str, tuple[int, int] | None] = {}
        self._costs: dict[tuple, dict[str, float | None]] = {}

    # ------------------------------------------------------------------------- what was evaluated
    def _see_batch(self, stage: str, batch: Any) -> None:
        if self._input_size.get(stage) is None:
            self._input_size[stage] = _image_size(batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._see_batch("val", batch)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._see_batch("test", batch)

    # --------------------------------------------------------------------------------- the costs
    def split_costs(self, pl_module: L.LightningModule, stage: str, info: dict[str, Any]) -> dict[str, float | None]:
        """Parameters (and at test GMACs and, timed, ms of each side) through the module's split model."""
        costs: dict[str, float | None] = dict.fromkeys(mn.SPLIT_COSTS)
        split = info.get("split")
        size = info.get("input_size") or self._input_size.get(stage)
        if split is None:
            return costs
        timed = stage == "test" and self.latency_repeats > 0 and size is not None
        key = (id(pl_module), tuple(size) if size else None, info.get("setting"), stage == "test", timed)
        if key in self._costs:
            return dict(self._costs[key])
        modes = {m: m.training for m in pl_module.modules()}
        try:
            pl_module.eval()
            params = split.parameter_counts()
            costs.update({f"params_{k}": int(v) for k, v in params.items()})
            if size is not None and stage == "test":  # a forward pass: not on every validation
                example = torch.rand(1, 3, *size, device=pl_module.device)
                costs.update({f"gmacs_{k}": v / 1e9 for k, v in split.mac_counts(example).items()})
                if timed:
                    ms = split.ms_per_image(example, self.latency_warmup, self.latency_repeats)
                    costs[mn.MS_EDGE], costs[mn.MS_SERVER] = ms["edge"], ms["server"]
                    if ms["server"] is not None:  # networks only (as every module's ms_per_image): no codec
                        costs[mn.MS_PER_IMAGE] = (ms["edge"] or 0.0) + ms["server"]
        finally:
            for module, mode in modes.items():
                module.training = mode
        self._costs[key] = dict(costs)
        return costs

    @staticmethod
    def _info(pl_module: L.LightningModule, stage: str) -> dict[str, Any]:
        results_info = getattr(pl_module, "results_info", None)
        return dict(results_info(stage)) if callable(results_info) else {}

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.log_costs:
            return
        costs = self.split_costs(pl_module, "test", self._info(pl_module, "test"))
        pl_module.log_dict({f"test/{k}": float(v) for k, v in costs.items() if v is not None}, sync_dist=True)

    # ------------------------------------------------------------------------------- the record
    def record(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> dict[str, Any]:
        """The record of the evaluation that just ended."""
        info = self._info(pl_module, stage)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(f"{stage}/")}

        def logged(name: str) -> float | None:
            return metrics.get(f"{stage}/{name}")

        costs = self.split_costs(pl_module, stage, info)
        size = info.get("input_size") or self._input_size.get(stage)
        bytes_per_image, bpp = logged(mn.BYTES_PER_IMAGE), logged(mn.BPP)
        if bpp is None and bytes_per_image is not None and size is not None:
            bpp = 8.0 * bytes_per_image / (size[0] * size[1])
        fitting = trainer.state.fn == TrainerFn.FITTING
        checkpoint = None if fitting or not trainer.ckpt_path else str(trainer.ckpt_path)
        datamodule = getattr(trainer, "datamodule", None)
        root = getattr(datamodule, "hparams", {}).get("root") if datamodule is not None else None
        record: dict[str, Any] = {
            "schema": SCHEMA,
            "stage": stage,
            "method": info.get("method", _snake(type(pl_module).__name__)),
            "module": type(pl_module).__name__,
            "dataset": type(datamodule).__name__ if datamodule is not None else None,
            "dataset_root": None if root is None else str(root),
            "setting": info.get("setting"),
            "k": info.get("k"),
            "codec": info.get("codec"),
            mn.BYTES_PER_IMAGE: bytes_per_image,
            mn.BPP: bpp,
            **{name: logged(name) for name in mn.ACCURACIES},
            mn.PARAMS_EDGE: costs[mn.PARAMS_EDGE],
            mn.PARAMS_SERVER: costs[mn.PARAMS_SERVER],
            mn.GMACS_EDGE: costs[mn.GMACS_EDGE],
            mn.GMACS_SERVER: costs[mn.GMACS_SERVER],
            mn.MS_EDGE: costs[mn.MS_EDGE],
            mn.MS_SERVER: costs[mn.MS_SERVER],
            mn.MS_PER_IMAGE: logged(mn.MS_PER_IMAGE) if logged(mn.MS_PER_IMAGE) is not None else costs[mn.MS_PER_IMAGE],
            "input_size": list(size) if size is not None else None,
            "epoch": pl_module.current_epoch,
            "global_step": pl_module.global_step,
            "checkpoint": checkpoint,
            "checkpoint_sha256": file_sha256(checkpoint) if checkpoint and Path(checkpoint).is_file() else None,
            "config": _newest_config(Path(trainer.default_root_dir)),
            "metrics": metrics,
        }
        details = info.get("details") or {}
        return {**{k: v for k, v in details.items() if k not in record}, **record}

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if write_results(trainer, stage, lambda: self.record(trainer, pl_module, stage)):
            self._input_size.pop(stage, None)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module, "val")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module, "test")
