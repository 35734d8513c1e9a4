"""Latency and energy tables of an FBNet search space: one number per (layer, candidate), plus the
fixed stem and head.

Latency (``latency_ms``): measured on this host for every (layer, candidate) at the exact input shape
that layer sees in the network (batch 1, ``torch.set_num_threads(threads)``, warm-up, median of
``repeats``; the nine candidates of a layer are timed interleaved by
:func:`models.latency.measure_side_by_side`), with a progress bar. Cached as JSON in ``cache_dir``
under a name built from the host name, the torch version, the thread count and the space's shape
signature, so a table is never reused for other shapes, another machine or another torch.

Energy (``energy_mj``, millijoules per image), from one of:

- a **table file** (``format="table"``): ``#`` comments, then a header line naming the nine
  candidates (any order; :data:`models.fbnet_blocks.CANDIDATE_NAMES`), then one line per searchable
  layer of nine numbers separated by spaces, tabs or commas, in **millijoules per image**, e.g.::

      # energy per image on a Raspberry Pi 3B [mJ]
      k3_e1 k3_e1_g2 k3_e3 k3_e6 k5_e1 k5_e1_g2 k5_e3 k5_e6 skip
      0.674 0.032 0.501 0.996 0.338 0.040 1.099 1.009 0
      ...                                                         (22 lines)

- the **HANNA format** (``format="hanna"``; Vineeth et al., arXiv 1906.07214, their
  ``rpi_power.txt`` / ``rpi_energy.txt``): no header, one line per layer of 8 or 9 space-separated
  numbers in FBNet's candidate order (the order of ``CANDIDATE_NAMES``); a line of 8 lacks the skip,
  which is filled, as their loader does, with the mean skip value of the 9-value lines. Their numbers
  are joules; ``file_scale`` converts them to millijoules per image (default 1000: J → mJ);
- the **proxy** (no file): ``pj_per_mac · MACs + pj_per_byte · bytes moved`` per candidate, MACs from
  :func:`models.mac_count.macs_by_module`, bytes = 4 × (weights + input + output elements of every
  convolution and linear layer), i.e. fp32 tensors each read or written once from DRAM. Coefficients
  (Horowitz, ISSCC 2014, 45 nm): 4.6 pJ per fp32 multiply–add (3.7 + 0.9), 160 pJ per byte of DRAM
  traffic (640 pJ per 32-bit word). It is a stand-in, stated as such in ``energy_source``; it is never
  silently zero (a skip that is an identity costs 0, the fixed stem/head never do).

The fixed parts (stem, head: 1×1 conv, dropout, flatten or pool, classifier) are measured the same way and added to every
architecture's total, so a total is never zero and its log is defined.
"""

from __future__ import annotations

import json
import platform
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from models.fbnet import SearchSpace, architecture_indices, build_head, build_stem
from models.fbnet_blocks import CANDIDATE_NAMES, SKIP, build_block
from models.latency import measure_side_by_side
from models.mac_count import macs_by_module

PJ_PER_MAC = 4.6
PJ_PER_BYTE = 160.0
EnergyFormat = Literal["table", "hanna"]


@dataclass
class CostTable:
    """Per-(layer, candidate) costs of a search space and the fixed parts' costs.

    ``latency_ms`` and ``energy_mj`` are ``(L, 9)`` float64 tensors; ``fixed_*`` the stem + head.
    """

    latency_ms: Tensor
    energy_mj: Tensor
    fixed_latency_ms: float
    fixed_energy_mj: float
    energy_source: str
    latency_source: str

    def __post_init__(self) -> None:
        self.latency_ms = torch.as_tensor(self.latency_ms, dtype=torch.float64)
        self.energy_mj = torch.as_tensor(self.energy_mj, dtype=torch.float64)
        if self.latency_ms.shape != self.energy_mj.shape or self.latency_ms.shape[-1] != len(CANDIDATE_NAMES):
            raise ValueError(f"latency {tuple(self.latency_ms.shape)} and energy {tuple(self.energy_mj.shape)} "
                             f"must both be (L, {len(CANDIDATE_NAMES)})")  # fmt: skip
        for name, t in (("latency", self.latency_ms), ("energy", self.energy_mj)):
            if not torch.isfinite(t).all() or (t < 0).any():
                raise ValueError(f"{name} table has negative or non-finite entries")

    def architecture_cost(self, architecture: list[str]) -> tuple[float, float]:
        """(latency ms, energy mJ) of one architecture: fixed parts + the chosen entries of each layer."""
        idx = torch.tensor(architecture_indices(architecture))
        rows = torch.arange(len(idx))
        return (
            self.fixed_latency_ms + float(self.latency_ms[rows, idx].sum()),
            self.fixed_energy_mj + float(self.energy_mj[rows, idx].sum()),
        )

    def to_json(self) -> dict:
        return {
            "candidates": list(CANDIDATE_NAMES),
            "latency_ms": self.latency_ms.tolist(),
            "energy_mj": self.energy_mj.tolist(),
            "fixed_latency_ms": self.fixed_latency_ms,
            "fixed_energy_mj": self.fixed_energy_mj,
            "energy_source": self.energy_source,
            "latency_source": self.latency_source,
        }

    @classmethod
    def from_json(cls, data: dict) -> CostTable:
        if data.get("candidates") != list(CANDIDATE_NAMES):
            raise ValueError(f"cost table candidates {data.get('candidates')} differ from {list(CANDIDATE_NAMES)}")
        keys = ("latency_ms", "energy_mj", "fixed_latency_ms", "fixed_energy_mj", "energy_source", "latency_source")
        return cls(**{k: data[k] for k in keys})


# ----------------------------------------------------------------------------------------- latency


def _stem_and_head(space: SearchSpace) -> tuple[nn.Module, nn.Module]:
    """The network's own stem and head modules (:func:`models.fbnet.build_head`: flattened or pooled)."""
    return build_stem(space), build_head(space)


def _head_input(space: SearchSpace) -> Tensor:
    side = space.head_input_size
    return torch.randn(1, space.layers[-1].c_out, side, side)


def host_key() -> str:
    """``<host name>_torch<version>``, file-name safe."""
    return re.sub(r"[^A-Za-z0-9.+-]", "-", f"{platform.node() or 'host'}_torch{torch.__version__}")


def latency_cache_path(cache_dir: str | Path, space: SearchSpace, threads: int) -> Path:
    return Path(cache_dir) / f"fbnet_latency_{host_key()}_t{threads}_{space.signature()}.json"


def measure_latency_ms(
    space: SearchSpace, threads: int = 1, warmup: int = 5, repeats: int = 20, progress: bool = True
) -> tuple[Tensor, float]:
    """Median batch-1 ms of every (layer, candidate) at that layer's input shape, and of stem + head."""
    # imported here, not at module import: rich.progress evaluates an Optional[Union[float, int]], and
    # typing's cache then hands that (float-first) object to Lightning's Optional[Union[int, float]]
    # annotations, so jsonargparse would read --trainer.limit_train_batches 1 as 1.0 (all batches)
    from rich.progress import Progress

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    table = torch.zeros(space.num_layers, len(CANDIDATE_NAMES), dtype=torch.float64)
    try:
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task("FBNet latency table", total=space.num_layers + 1)
            for i, spec in enumerate(space.layers):
                ops = {n: build_block(n, spec.c_in, spec.c_out, spec.stride) for n in CANDIDATE_NAMES}
                example = torch.randn(1, spec.c_in, spec.input_size, spec.input_size)
                times = measure_side_by_side(ops, example, warmup, repeats)
                table[i] = torch.tensor([statistics.median(times[n]) for n in CANDIDATE_NAMES])
                bar.advance(task)
            stem, head = _stem_and_head(space)
            stem_ms = statistics.median(
                measure_side_by_side({"stem": stem}, torch.randn(1, 3, space.image_size, space.image_size),
                                     warmup, repeats)["stem"]
            )  # fmt: skip
            head_ms = statistics.median(
                measure_side_by_side({"head": head}, _head_input(space), warmup, repeats)["head"]
            )
            bar.advance(task)
    finally:
        torch.set_num_threads(previous)
    return table, stem_ms + head_ms


def read_latency_file(path: str | Path, space: SearchSpace) -> tuple[Tensor, float, str]:
    """(table ms, fixed ms, source) from a latency table file (the cache's JSON format, e.g. a table
    shipped with a config), checked against ``space`` before use: the space's shape signature, the
    candidate names, an ``(L, 9)`` table of finite non-negative numbers. Errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"latency table {path} not found (set latency_file: null to measure on this host)")
    try:
        data = json.loads(path.read_text())
        table = torch.tensor(data["latency_ms"], dtype=torch.float64)
        fixed = float(data["fixed_latency_ms"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a latency table ({type(err).__name__}: {err})") from None
    if data.get("space") != space.signature():
        raise ValueError(f"{path}: measured for search space {data.get('space')}, this run's is {space.signature()} "
                         "(other shapes: measure with latency_file: null)")  # fmt: skip
    if data.get("candidates") != list(CANDIDATE_NAMES) or table.shape != (space.num_layers, len(CANDIDATE_NAMES)):
        raise ValueError(f"{path}: needs the candidates {list(CANDIDATE_NAMES)} and a ({space.num_layers}, 9) table")
    if not torch.isfinite(table).all() or (table < 0).any() or not fixed >= 0:
        raise ValueError(f"{path}: latencies must be finite and >= 0")
    host = data.get("host", "?")
    return (
        table,
        fixed,
        f"file {path} (measured on {host}, torch {data.get('torch', '?')}, {data.get('threads')} thread(s))",
    )


def load_or_measure_latency(
    space: SearchSpace,
    cache_dir: str | Path | None,
    threads: int = 1,
    warmup: int = 5,
    repeats: int = 20,
    progress: bool = True,
) -> tuple[Tensor, float, str]:
    """(table ms, fixed ms, source) from the cache file when there is one for this host, torch, thread
    count and space; measured (and cached when ``cache_dir`` is set) otherwise."""
    path = latency_cache_path(cache_dir, space, threads) if cache_dir is not None else None
    if path is not None and path.is_file():
        data = json.loads(path.read_text())
        return torch.tensor(data["latency_ms"], dtype=torch.float64), float(data["fixed_latency_ms"]), str(path)
    table, fixed = measure_latency_ms(space, threads, warmup, repeats, progress)
    source = f"measured on {host_key()}, {threads} thread(s), median of {repeats}"
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"host": platform.node(), "torch": torch.__version__, "threads": threads, "warmup": warmup,
                  "repeats": repeats, "space": space.signature(), "candidates": list(CANDIDATE_NAMES),
                  "latency_ms": table.tolist(), "fixed_latency_ms": fixed}  # fmt: skip
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(path)
        source = str(path)
    return table, fixed, source


# ------------------------------------------------------------------------------------------ energy


def _parse_numbers(line: str) -> list[float]:
    return [float(v) for v in re.split(r"[\s,]+", line.strip()) if v]


def read_energy_table(
    path: str | Path, num_layers: int, format: EnergyFormat = "table", file_scale: float = 1.0
) -> Tensor:
    """``(num_layers, 9)`` energies in mJ from a file in one of the two formats of the module docstring.

    ``file_scale`` multiplies every number (e.g. 1000 for a file in joules).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"energy table {path} not found")
    lines = [ln.split("#", 1)[0] for ln in path.read_text().splitlines()]
    lines = [ln for ln in lines if ln.strip()]
    if format == "table":
        header, rows = re.split(r"[\s,]+", lines[0].strip()), lines[1:]
        if sorted(header) != sorted(CANDIDATE_NAMES):
            raise ValueError(f"{path}: the header must name the nine candidates {list(CANDIDATE_NAMES)}, got {header}")
        order = [header.index(n) for n in CANDIDATE_NAMES]
        values = [[_parse_numbers(r)[j] for j in order] if len(_parse_numbers(r)) == 9 else None for r in rows]
        if any(v is None for v in values):
            raise ValueError(f"{path}: every layer line needs 9 numbers")
        table = torch.tensor(values, dtype=torch.float64)
    elif format == "hanna":
        rows = [_parse_numbers(r) for r in lines]
        if any(len(r) not in (8, 9) for r in rows):
            raise ValueError(f"{path}: HANNA format has 8 or 9 numbers per line")
        full = [r[8] for r in rows if len(r) == 9]
        if len(full) < len(rows) and not full:
            raise ValueError(f"{path}: no line has a skip value to fill the 8-value lines with")
        fill = sum(full) / len(full) if full else 0.0
        table = torch.tensor([r if len(r) == 9 else [*r, fill] for r in rows], dtype=torch.float64)
    else:
        raise ValueError(f"energy format must be 'table' or 'hanna', got {format!r}")
    if table.shape[0] != num_layers:
        raise ValueError(f"{path}: {table.shape[0]} layer lines, the search space has {num_layers} layers")
    if (table < 0).any() or not torch.isfinite(table).all():
        raise ValueError(f"{path}: energies must be finite and >= 0")
    return table * file_scale


def _traffic_elements(module: nn.Module, example: Tensor) -> int:
    """Weights + input + output elements of every conv/linear in one forward of ``example``."""
    total = 0

    def hook(m: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        total += inputs[0].numel() + output.numel() + sum(p.numel() for p in m.parameters(recurse=False))

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    try:
        with torch.inference_mode():
            module.eval()(example)
    finally:
        for h in handles:
            h.remove()
    return total


def proxy_energy_mj(
    module: nn.Module, example: Tensor, pj_per_mac: float = PJ_PER_MAC, pj_per_byte: float = PJ_PER_BYTE
) -> float:
    """The documented energy proxy of one forward of ``module`` on ``example``, in mJ."""
    macs = macs_by_module(module, lambda: module(example))[""]
    return (pj_per_mac * macs + pj_per_byte * 4 * _traffic_elements(module, example)) * 1e-9


def proxy_energy_table(
    space: SearchSpace, pj_per_mac: float = PJ_PER_MAC, pj_per_byte: float = PJ_PER_BYTE
) -> tuple[Tensor, float]:
    """Proxy energies ``(L, 9)`` in mJ at each layer's input shape, and the stem + head's."""
    table = torch.zeros(space.num_layers, len(CANDIDATE_NAMES), dtype=torch.float64)
    for i, s in enumerate(space.layers):
        example = torch.randn(1, s.c_in, s.input_size, s.input_size)
        for j, name in enumerate(CANDIDATE_NAMES):
            table[i, j] = proxy_energy_mj(
                build_block(name, s.c_in, s.c_out, s.stride), example, pj_per_mac, pj_per_byte
            )
    stem, head = _stem_and_head(space)
    fixed = proxy_energy_mj(stem, torch.randn(1, 3, space.image_size, space.image_size), pj_per_mac, pj_per_byte)
    fixed += proxy_energy_mj(head, _head_input(space), pj_per_mac, pj_per_byte)
    return table, fixed


@dataclass
class CostSettings:
    """Where the cost table comes from (the ``costs:`` argument of ``FBNetSearch`` and ``FBNetChild``).

    Args:
        energy_file: per-(layer, candidate) energy table; ``None``: the MAC/bytes proxy.
        energy_format: ``table`` (header of candidate names, mJ per image) or ``hanna`` (HANNA's
            published ``rpi_*.txt`` layout, no header).
        energy_file_scale: multiplies the file's numbers into mJ per image (1000 for joules).
        fixed_energy_mj: energy of stem + head with an energy file (``None``: the proxy's).
        pj_per_mac: proxy energy per multiply–accumulate [pJ].
        pj_per_byte: proxy energy per byte moved [pJ].
        cache_dir: folder of cached latency tables (keyed by host, torch, threads, shapes); ``None``:
            measure every time.
        threads: ``torch.set_num_threads`` while measuring latency.
        warmup: untimed batch-1 runs per candidate.
        repeats: timed batch-1 runs per candidate (the median is kept).
        progress: show a progress bar while measuring.
    """

    energy_file: str | None = None
    energy_format: EnergyFormat = "table"
    energy_file_scale: float = 1.0
    fixed_energy_mj: float | None = None
    pj_per_mac: float = PJ_PER_MAC
    pj_per_byte: float = PJ_PER_BYTE
    cache_dir: str | None = "runs/fbnet_latency_tables"
    threads: int = 1
    warmup: int = 5
    repeats: int = 20
    progress: bool = True


def build_cost_table(
    space: SearchSpace, settings: CostSettings | None = None, latency_file: str | None = None
) -> CostTable:
    """Latency measured (or read from the cache, or from ``latency_file``: :func:`read_latency_file`) and
    energy from the energy file or the proxy.

    With an energy file, the fixed parts' energy is ``fixed_energy_mj`` when given, else the proxy's
    (a file covers the searchable layers only).
    """
    s = settings or CostSettings()
    # the random examples and block initialisations must not move the run's global RNG: whether the
    # latency was cached or measured would otherwise change the training that follows
    with torch.random.fork_rng(devices=[]):
        if latency_file:
            latency, fixed_latency, latency_source = read_latency_file(latency_file, space)
        else:
            latency, fixed_latency, latency_source = load_or_measure_latency(
                space, s.cache_dir, s.threads, s.warmup, s.repeats, s.progress
            )
        proxy_table, proxy_fixed = proxy_energy_table(space, s.pj_per_mac, s.pj_per_byte)
    if s.energy_file:
        energy = read_energy_table(s.energy_file, space.num_layers, s.energy_format, s.energy_file_scale)
        source = f"{s.energy_format} file {s.energy_file} (x{s.energy_file_scale:g})"
    else:
        energy = proxy_table
        source = f"proxy: {s.pj_per_mac:g} pJ/MAC + {s.pj_per_byte:g} pJ/byte moved"
    fixed_energy = proxy_fixed if s.fixed_energy_mj is None else s.fixed_energy_mj
    return CostTable(latency, energy, fixed_latency, fixed_energy, source, latency_source)


def costs_from(costs: CostSettings | dict | None) -> CostSettings:
    """``CostSettings`` from itself, its dict (as stored in a checkpoint's hyper-parameters) or ``None``."""
    if isinstance(costs, CostSettings):
        return costs
    return CostSettings(**(dict(costs) if costs else {}))


def cost_table_on_rank_zero(
    space: SearchSpace, settings: CostSettings, trainer: Any = None, latency_file: str | None = None
) -> CostTable:
    """Build the table on global rank 0 and broadcast it (one measurement per run). ``trainer`` is any
    object with ``is_global_zero``, ``world_size`` and ``strategy.broadcast`` (a Lightning Trainer), or
    ``None`` (one process)."""
    data = None
    if trainer is None or trainer.is_global_zero:
        data = build_cost_table(space, settings, latency_file).to_json()
    if trainer is not None and trainer.world_size > 1:
        data = trainer.strategy.broadcast(data, src=0)
    return CostTable.from_json(data)


__all__ = [
    "CostSettings",
    "CostTable",
    "SKIP",
    "build_cost_table",
    "cost_table_on_rank_zero",
    "costs_from",
    "read_energy_table",
    "proxy_energy_table",
    "measure_latency_ms",
]
