"""Algorithm 1 of "B-DCNN の量子化ビット数の自動最適化" as pure functions (no torch, no Lightning).

The search (:mod:`lightning_modules.bit_search`) measures accuracies; everything that turns them into a
choice of per-layer Q lives here, so it can be checked against brute force on small problems.

Tables: T^1..T^I, each ``{(q_prev, q): S}`` over neighbouring pairs (``q_prev`` is ``None`` in T^1: the
first layer has no predecessor), S = SA(i, q_{i−1}, q_i) the expected accuracy of the network in the
same unit as R (percent). Two readings of SA (see :func:`tables_from_layer_drops`):

- ``layer_drops`` (**the paper's**, default): Algorithm 1 *requires* A, "各層の精度低下率" (each layer's
  accuracy drop), and calls S "i 層の予想精度" (the *predicted* accuracy of layer i); so A is measured
  once per (layer, q) with that layer alone quantised, A_i(q) = R − acc(layer i at q), and S is
  predicted from it: S = R − A_{i−1}(q_{i−1}) − A_i(q_i) (T^1: S = R − A_1(q_1)). I·Q evaluations.
- ``measured_pairs``: S measured directly with layers i−1 and i quantised at (q_{i−1}, q_i) and the
  others not (I·Q² evaluations; what splitcv did first).

Admissibility: R − S < D. The walks (``walk``):

- ``chain`` (default): the chosen pairs must be admissible entries. With F_1 = {q_1 admissible in T^1}
  and F_i = {q_i : ∃ q_{i−1} ∈ F_{i−1}, (q_{i−1}, q_i) admissible in T^i}, a_I = min F_I, then
  a_{i−1} = min{q ∈ F_{i−1} : (q, a_i) admissible in T^i} — Algorithm 1's backward loop "for i = I to 1",
  the smallest Q per layer from the last layer back, each consistent with the pair already chosen.
- ``independent``: per layer the smallest q_i with any admissible entry in T^i, ignoring q_{i−1} (the
  literal ``argmin_{q_i} T^i``); the chosen pairs need not be admissible.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Literal

Walk = Literal["chain", "independent"]
Reading = Literal["layer_drops", "measured_pairs"]
READINGS: tuple[Reading, ...] = ("layer_drops", "measured_pairs")
PairKey = tuple[int | None, int]
Table = Mapping[PairKey, float]


def tables_from_layer_drops(
    layer_accuracy: Sequence[Mapping[int, float]], reference: float
) -> list[dict[PairKey, float]]:
    """T^1..T^I predicted from A (the ``layer_drops`` reading, see the module docstring).

    Args:
        layer_accuracy: per layer i, ``{q: accuracy with layer i alone quantised at q}``.
        reference: R (the accuracy before quantisation), same unit.
    """
    drops = [{q: reference - acc for q, acc in layer.items()} for layer in layer_accuracy]
    if not drops:
        return []
    tables: list[dict[PairKey, float]] = [{(None, q): reference - a for q, a in drops[0].items()}]
    for previous, current in itertools.pairwise(drops):
        tables.append({(qp, q): reference - ap - a for qp, ap in previous.items() for q, a in current.items()})
    return tables


def select_bits(
    tables: Sequence[Table], reference: float, allowed_drop: float, walk: Walk = "chain"
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


def predicted_accuracy(tables: Sequence[Table], choice: Sequence[int]) -> float:
    """The paper's 提案手法* for a choice: the lowest table entry S along its pairs (NaN where a pair has none)."""
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
