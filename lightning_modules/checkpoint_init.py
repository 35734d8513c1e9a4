"""Fine-tuning initialisation: copy weights out of another run's checkpoint.

This is what ``init_from`` / ``init_compressor_from`` model arguments use. It is *not* resuming: only
weights are read (``torch.load(weights_only=True)``, safe on untrusted files), keys are mapped from the
source's module names to the target's, and every key that does not line up is reported by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn


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


def load_state_dict_from_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The ``state_dict`` of a Lightning checkpoint (or a bare state dict), loaded with ``weights_only``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors vary by torch version
        raise CheckpointMismatchError(f"{path} could not be read as a weights-only checkpoint: {err}") from err
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
