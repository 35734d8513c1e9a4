"""The bit search's files on disk, checked on every read: a resumed search trusts nothing it wrote before.

``<out>/state.json`` holds the search's *fingerprint* and the reference accuracies; ``<out>/tables/`` one
file per measured table (``A.json``: each layer alone quantised; ``T{i}_{layer}.json``: pair table i).
Every file is written atomically (temporary file, then rename). On resume each file is read back and
refused, with its path in the error (:class:`SearchStateError`), when:

- it is not readable JSON of the expected form (a truncated write, another file);
- its fingerprint differs from the current search's — the fingerprint covers everything that changes a
  table entry: the search settings (Q range, top-k, context, layer names, network and decomposition
  arguments), a SHA-256 of the float network's weights (published or ``init_from``) and of the decomposed
  weights (so another decomposition or library version is caught), and the evaluation data (the
  DataModule's settings except loader-only ones, and a SHA-256 over the evaluation files' contents and
  labels — or over the tensors of a ``TensorDataset``);
- it is incomplete: every (q_prev, q) of the table must be present exactly once, with integer counts over
  the reference pass's number of images; accuracies are recomputed from the counts, never read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

MODEL_KEYS = (
    "arch", "num_classes", "pretrained", "width", "init_from", "layers", "bases", "bases_per_layer",
    "decomposition", "decomposition_iterations", "decomposition_restarts", "min_bits", "max_bits", "top_k",
    "context",
)  # fmt: skip
LOADER_ONLY_KEYS = ("batch_size", "num_workers", "pin_memory", "persistent_workers")


class SearchStateError(RuntimeError):
    """A search directory does not match the request (resume of nothing, of another search, or a bad file)."""


# ------------------------------------------------------------------------------------ fingerprint
def _sha256_tensors(tensors: Iterable[torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def weights_sha256(module: nn.Module) -> str:
    """SHA-256 over a module's state dict (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(_sha256_tensors([tensor]).encode())
    return digest.hexdigest()


def _evaluation_loader(data: Any) -> DataLoader:
    if isinstance(data, L.LightningDataModule):
        data.setup("validate")
        return data.val_dataloader()
    return data


def data_fingerprint(data: Any) -> dict[str, Any]:
    """What identifies the evaluation data (see the module docstring)."""
    out: dict[str, Any] = {"class": type(data).__name__}
    if isinstance(data, L.LightningDataModule):
        settings = {k: v for k, v in dict(getattr(data, "hparams", {})).items() if k not in LOADER_ONLY_KEYS}
        out["settings"] = json.loads(json.dumps(settings, default=str, sort_keys=True))
    dataset = getattr(_evaluation_loader(data), "dataset", None)
    out["items"] = len(dataset) if dataset is not None and hasattr(dataset, "__len__") else None
    digest = hashlib.sha256()
    if hasattr(dataset, "source_paths") and hasattr(dataset, "samples"):
        for sample in dataset.samples:
            digest.update(f"{sample.label}:".encode())
            digest.update(hashlib.sha256(Path(sample.path).read_bytes()).digest())
        out["content_sha256"] = digest.hexdigest()
    elif isinstance(dataset, TensorDataset):
        out["content_sha256"] = _sha256_tensors(dataset.tensors)
    return out


def search_fingerprint(search: Any, data: Any) -> dict[str, Any]:
    """The fingerprint of a :class:`~lightning_modules.bit_search.BitSearch` over ``data``."""
    hp = search.hparams
    fingerprint = {key: hp[key] for key in MODEL_KEYS} | {
        "layer_names": list(search.layer_names),
        "float_weights_sha256": weights_sha256(search.float_model),
        "decomposed_weights_sha256": weights_sha256(search.model),
        "data": data_fingerprint(data),
    }
    return json.loads(json.dumps(fingerprint, default=str))


def fingerprint_id(fingerprint: dict[str, Any]) -> str:
    """A short hash of a fingerprint, stored in every table file."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------ files
def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (temporary file in the same folder, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as handle:
        handle.write(json.dumps(data, indent=2, default=str))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """JSON from ``path``; any reading or parsing problem is a :class:`SearchStateError` naming the file."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SearchStateError(
            f"{path}: cannot read the search file ({type(err).__name__}: {err}); delete it to recompute it, "
            "or start another run"
        ) from err


def read_state(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """``state.json`` of a search being resumed, refused when it belongs to another search."""
    state = read_json(path)
    if not isinstance(state, dict) or not isinstance(state.get("fingerprint"), dict):
        raise SearchStateError(f"{path}: not a bit-search state file (no fingerprint)")
    saved = state["fingerprint"]
    differ = sorted(k for k in set(fingerprint) | set(saved) if saved.get(k) != fingerprint.get(k))
    if differ:
        raise SearchStateError(
            f"{path} holds a search with other settings ({', '.join(differ)}); not resuming. Use another run id, "
            "or resume with the settings, weights and data it was made with."
        )
    reference = state.get("reference")
    if reference is not None:
        ok = isinstance(reference, dict) and all(
            isinstance(reference.get(k), (int, float)) and math.isfinite(reference[k]) for k in ("float", "decomposed")
        )
        if not ok or not isinstance(reference.get("images"), int) or reference["images"] <= 0:
            raise SearchStateError(f"{path}: the reference accuracies are malformed: {reference}")
    return state


def table_entries(
    correct: torch.Tensor, total: int, rows: Sequence[Any], bits: Sequence[int], row_field: str = "q_prev"
) -> list[dict[str, Any]]:
    """The entries of a table file from a (len(rows), len(bits)) count matrix; ``rows`` are the values of
    ``row_field`` (``q_prev`` of a pair table, ``layer`` of A). ``accuracy`` is for readers; it is recomputed
    from the counts when the file is read back."""
    return [
        {
            row_field: r,
            "q": q,
            "correct": int(correct[a, b]),
            "total": total,
            "accuracy": 100.0 * int(correct[a, b]) / total,
        }
        for a, r in enumerate(rows)
        for b, q in enumerate(bits)
    ]


def read_table(
    path: Path, fingerprint: str, images: int, expected: set[tuple], key_fields: tuple[str, str] = ("q_prev", "q")
) -> dict[tuple, float]:
    """A saved table ``{key: accuracy %}``, checked: fingerprint, every expected key once, counts.

    Args:
        path: the table file.
        fingerprint: :func:`fingerprint_id` of the current search.
        images: images of the reference pass (every entry's ``total``).
        expected: the keys the table must hold, each exactly once.
        key_fields: the entry fields that make a key: ``(q_prev, q)`` for a pair table, ``(layer, q)`` for A.
    """
    saved = read_json(path)
    if not isinstance(saved, dict) or not isinstance(saved.get("entries"), list):
        raise SearchStateError(f"{path}: not a bit-search table (no entries)")
    if saved.get("fingerprint") != fingerprint:
        raise SearchStateError(
            f"{path} was measured by another search (fingerprint {saved.get('fingerprint')} ≠ {fingerprint}); "
            "delete it to recompute it"
        )
    table: dict[tuple, float] = {}
    for entry in saved["entries"]:
        try:
            key = tuple(entry[f] for f in key_fields)
            correct, total = entry["correct"], entry["total"]
        except (KeyError, TypeError) as err:
            raise SearchStateError(f"{path}: malformed entry {entry!r}") from err
        if key in table:
            raise SearchStateError(f"{path}: entry {key} appears twice")
        if not (isinstance(correct, int) and isinstance(total, int) and 0 <= correct <= total == images):
            raise SearchStateError(
                f"{path}: entry {key} has correct={correct!r}, total={total!r}; the reference pass had {images} images"
            )
        table[key] = 100.0 * correct / total
    if set(table) != expected:
        missing, extra = sorted(expected - set(table), key=str), sorted(set(table) - expected, key=str)
        raise SearchStateError(
            f"{path} is incomplete or foreign: {len(table)} of its {len(expected)} entries"
            + (f"; missing {missing}" if missing else "")
            + (f"; unexpected {extra}" if extra else "")
            + ". Delete it to recompute it."
        )
    return table
