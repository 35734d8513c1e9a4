"""Fine-tuning initialisation: copy weights out of another run's checkpoint.

This is what ``init_from`` / ``init_compressor_from`` model arguments use. It is *not* resuming: only
weights are read (``torch.load(weights_only=True)``, safe on untrusted files), keys are mapped from the
source's module names to the target's, and every key that does not line up is reported by name.

:class:`ParentInit` applies such an initialisation once, when a run starts fresh, never in a constructor:
a resumed run, ``test --ckpt_path`` and ``load_from_checkpoint`` take the weights from the run's own
checkpoint and never read the parent file again (it may have been moved or deleted); the parent's path
and what was loaded stay in the run's checkpoints under ``checkpoint["parent"]`` as provenance. Usage::

    class MyTask(L.LightningModule):
        def __init__(self, ..., init_from: str | None = None):
            ...
            self.parent_init = ParentInit(self, init_from, partial(init_weights_from, key_map={"net.": "net."}))

        def configure_callbacks(self):
            return [self.parent_init]
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"  # torch.save before 1.6


class CheckpointMismatchError(RuntimeError):
    """The checkpoint does not fit the model: the message names the missing and unexpected keys."""


@dataclass
class InitReport:
    """What :func:`init_weights_from` did: keys loaded, and keys left out on either side."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: counts, then the modules (first two name parts) of what was left out or unused."""

        def modules(keys: Sequence[str]) -> str:
            parts = sorted({".".join(k.split(".")[:2]) for k in keys})
            return f" ({', '.join(parts[:6])}{', …' if len(parts) > 6 else ''})" if parts else ""

        return (
            f"initialised {len(self.loaded)} tensors from {self.source}; "
            f"{len(self.missing)} left at their initial values{modules(self.missing)}, "
            f"{len(self.unexpected)} unused{modules(self.unexpected)}"
        )


def _is_torch_file(path: Path) -> bool:
    """Whether ``path`` is a ``torch.save`` file: a zip archive holding ``data.pkl``, or the legacy format."""
    with open(path, "rb") as handle:
        if handle.read(len(LEGACY_TORCH_MAGIC)) == LEGACY_TORCH_MAGIC:
            return True
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name == "data.pkl" or name.endswith("/data.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def load_state_dict_from_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The ``state_dict`` of a Lightning checkpoint (or a bare state dict), loaded with ``weights_only``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointMismatchError: the file is not a ``torch.save`` file (or is truncated), stores Python
            objects a weights-only load refuses, or holds no state dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not _is_torch_file(path):
        raise CheckpointMismatchError(
            f"{path} is not a PyTorch checkpoint (not a torch.save file; truncated, or another kind of file?). "
            "Give a Lightning .ckpt of the method, or a file written by torch.save(model.state_dict(), ...)."
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors vary by torch version; PyTorch's own text is about its defaults
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f" (e.g. {refused.group(1)})" if refused else ""
        raise CheckpointMismatchError(
            f"{path} stores Python objects that a weights-only load refuses{what}, so it is not a checkpoint "
            "written by this project. If you trust it, load it yourself and re-save only its weights: "
            "torch.save(model.state_dict(), 'weights.pt')."
        ) from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointMismatchError(f"{path} holds no state_dict of tensors")
    return dict(state)


def _short(keys: Sequence[str], limit: int = 20) -> str:
    keys = sorted(keys)
    more = f" … and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def init_weights_from(
    target: nn.Module,
    path: str | Path,
    key_map: Mapping[str, str],
    allow_missing: Sequence[str] = (),
    allow_unexpected: Sequence[str] = (),
) -> InitReport:
    """Load the weights of ``path`` into ``target``.

    Args:
        target: the module to initialise (its ``state_dict`` keys are the target names).
        path: a Lightning checkpoint or a bare state dict.
        key_map: source-key prefix → target-key prefix, e.g. ``{"codec.": "compressor."}``. Source
            keys under no listed prefix are *unexpected*.
        allow_missing: target-key prefixes that may stay at their initial values (e.g. a new head).
        allow_unexpected: source-key prefixes that may be dropped (e.g. ``"codec.decoder."`` when the
            decoder is removed).

    Raises:
        CheckpointMismatchError: a key outside the allowed prefixes is missing or unexpected, or a
            tensor's shape differs; the message names them all.
    """
    source = load_state_dict_from_checkpoint(path)
    target_state = target.state_dict()
    report = InitReport(source=str(path))
    mapped: dict[str, Tensor] = {}
    for key, value in source.items():
        for src_prefix, dst_prefix in key_map.items():
            if key.startswith(src_prefix):
                mapped[dst_prefix + key[len(src_prefix) :]] = value
                break
        else:
            report.unexpected.append(key)
    shape_errors = []
    for key, value in mapped.items():
        if key not in target_state:
            report.unexpected.append(key)
        elif target_state[key].shape != value.shape:
            shape_errors.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(target_state[key].shape)}")
        else:
            report.loaded.append(key)
    report.missing = [k for k in target_state if k not in mapped]
    bad_missing = [k for k in report.missing if not k.startswith(tuple(allow_missing))]
    bad_unexpected = [k for k in report.unexpected if not k.startswith(tuple(allow_unexpected))]
    if bad_missing or bad_unexpected or shape_errors:
        lines = [f"checkpoint {path} does not fit {type(target).__name__}:"]
        if bad_missing:
            lines.append(f"  missing keys ({len(bad_missing)}): {_short(bad_missing)}")
        if bad_unexpected:
            lines.append(f"  unexpected keys ({len(bad_unexpected)}): {_short(bad_unexpected)}")
        if shape_errors:
            lines.append(f"  shape mismatches: {_short(shape_errors)}")
        lines.append("  (is it a checkpoint of another method, or of a model with another width?)")
        raise CheckpointMismatchError("\n".join(lines))
    with torch.no_grad():
        for key in report.loaded:
            target_state[key].copy_(mapped[key])
    rank_zero_info(report.summary())
    return report


class ParentInit(Callback):
    """Weights copied from a parent checkpoint once, at the start of a fresh run (``init_from``-style arguments).

    Construct it in the module's ``__init__`` (it reads nothing then) and return it from
    ``configure_callbacks``. At the start of ``fit`` (or of ``validate``/``test``/``predict`` when no
    checkpoint was given) it calls ``load(module, path)`` unless the module's weights have already been
    loaded from a checkpoint: by the Trainer (``--ckpt_path``, SLURM requeue) or ``load_from_checkpoint``.
    So resuming a fine-tuned run or evaluating its checkpoint never needs the parent file.

    Every checkpoint of the run records ``checkpoint["parent"] = {"path", "summary"}`` (carried over
    when the run resumes), the provenance of its first weights.

    Args:
        module: the module whose weights are initialised (a load of its ``state_dict`` marks it done).
        path: the parent checkpoint, or ``None`` (nothing to do).
        load: ``load(module, path) -> InitReport``, e.g. ``functools.partial(init_weights_from,
            key_map=...)`` or an unbound method ``MyTask.load_compressor``.
    """

    def __init__(self, module: nn.Module, path: str | None, load: Callable[[Any, str], InitReport]) -> None:
        self.path = str(path) if path else None
        self.load = load
        self.report: InitReport | None = None
        self.provenance: dict[str, str] | None = None
        self.done = self.path is None
        module.register_load_state_dict_pre_hook(self._weights_loaded)

    def _weights_loaded(self, *args: Any, **kwargs: Any) -> None:
        self.done = True

    def apply(self, module: Any) -> InitReport | None:
        """Load the parent's weights into ``module`` now, unless done already; the report (or ``None``)."""
        if not self.done:
            self.report = self.load(module, self.path)
            self.provenance = {"path": str(Path(self.path).resolve()), "summary": self.report.summary()}
            self.done = True
        return self.report

    def _start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.apply(pl_module)

    on_fit_start = on_validation_start = on_test_start = on_predict_start = _start

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if self.provenance is not None:
            checkpoint["parent"] = dict(self.provenance)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.done = True
        self.provenance = checkpoint.get("parent", self.provenance)
