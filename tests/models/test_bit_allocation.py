"""Algorithm 1 as pure functions: hand-derived optima, brute force over every Q vector on random tables, the A
reading's tables by hand, the Pareto front against its definition."""

from __future__ import annotations

import itertools
import random

import pytest

from models.bit_allocation import pareto_front, predicted_accuracy, select_bits, tables_from_layer_drops

BITS = range(2, 9)


def oracle_tables(drops, combine):
    """T^i from per-layer drops: S = 100 − combine(drop_{i−1}(q_{i−1}), drop_i(q_i))."""
    tables = [{(None, q): 100.0 - drops[0][q] for q in BITS}]
    for i in range(1, len(drops)):
        tables.append({(qp, q): 100.0 - combine(drops[i - 1][qp], drops[i][q]) for qp in BITS for q in BITS})
    return tables


DROPS = [
    {2: 6, 3: 4, 4: 2, 5: 1, 6: 0.5, 7: 0.2, 8: 0.1},
    {2: 3, 3: 1.5, 4: 0.5, 5: 0.2, 6: 0.1, 7: 0.1, 8: 0.0},
    {2: 1, 3: 0.5, 4: 0.2, 5: 0.1, 6: 0.0, 7: 0.0, 8: 0.0},
]


def test_additive_oracle_known_optimum():
    tables = oracle_tables(DROPS, lambda a, b: a + b)
    # D = 4: T^1 needs drop1 < 4 → q1 ≥ 4; T^3 with q3 = 2 needs drop2 < 3 → q2 ≥ 3, and q2 = 3 is reachable from
    # q1 = 4 (2 + 1.5 < 4); then q1 = min{q: drop1(q) + 1.5 < 4} = 4.
    assert select_bits(tables, 100.0, 4.0) == [4, 3, 2]
    # independent: T^2's column q2 = 2 has an admissible entry (q1 ≥ 6: drop 0.5 + 3 < 4), so it takes 2, although
    # the chosen pair (4, 2) is not admissible (2 + 3 ≥ 4): why the chain walk is the default
    assert select_bits(tables, 100.0, 4.0, walk="independent") == [4, 2, 2]
    # D = 1.2: T^1 admits q1 ≥ 5 (drop 1); q3 = 2 (drop 1) needs drop2 < 0.2 → q2 ≥ 6, reachable from q1 = 5
    # (1 + 0.1 < 1.2); then q1 = min{q ≥ 5: drop1(q) + 0.1 < 1.2} = 5. The walk favours the last layers.
    assert select_bits(tables, 100.0, 1.2) == [5, 6, 2]
    assert select_bits(tables, 100.0, 0.05) is None  # nothing admissible in T^1


def test_bottleneck_oracle_recovers_the_true_optimum():
    """When the network's true drop is its worst layer's, pairs see it exactly: the search must return, for every
    layer, the fewest bits whose drop is below D (the true optimum)."""
    tables = oracle_tables(DROPS, max)
    for d in (0.15, 0.6, 1.2, 2.5, 5.0):
        truth = [min(q for q in BITS if drop[q] < d) for drop in DROPS]
        assert select_bits(tables, 100.0, d) == truth


def _brute_chain(tables, r, d, bits):
    """Among all Q vectors whose every pair is admissible, the smallest q_I, then q_{I−1}, … (the backward walk's
    definition), by enumeration."""
    n = len(tables)
    ok = [
        v
        for v in itertools.product(bits, repeat=n)
        if r - tables[0][(None, v[0])] < d and all(r - tables[i][(v[i - 1], v[i])] < d for i in range(1, n))
    ]
    return list(min(ok, key=lambda v: v[::-1])) if ok else None


def test_chain_walk_equals_brute_force_on_random_tables():
    rng = random.Random(0)
    bits = range(2, 6)
    for _ in range(150):
        n = rng.randint(1, 4)
        tables = [{(None, q): rng.uniform(80, 100) for q in bits}]
        tables += [{(qp, q): rng.uniform(80, 100) for qp in bits for q in bits} for _ in range(n - 1)]
        d = rng.uniform(0.5, 15)
        assert select_bits(tables, 100.0, d) == _brute_chain(tables, 100.0, d, bits)
        independent = [min((q for (_, q), s in t.items() if 100 - s < d), default=None) for t in tables]
        expected = None if None in independent else independent
        assert select_bits(tables, 100.0, d, walk="independent") == expected


def test_tables_from_layer_drops_by_hand():
    # R = 90; layer 1 alone: 80 at q=2, 88 at q=3 (drops 10, 2); layer 2 alone: 85, 89 (drops 5, 1)
    tables = tables_from_layer_drops([{2: 80.0, 3: 88.0}, {2: 85.0, 3: 89.0}], 90.0)
    assert tables[0] == {(None, 2): 80.0, (None, 3): 88.0}
    assert tables[1] == {(2, 2): 75.0, (2, 3): 79.0, (3, 2): 83.0, (3, 3): 87.0}  # 90 − 10 − 5, 90 − 10 − 1, …
    # D = 8: T^1 admits q1 = 3 only; T^2 from q1 = 3: (3, 2) drop 7 < 8 → [3, 2]; predicted = min(88, 83)
    assert select_bits(tables, 90.0, 8.0) == [3, 2]
    assert predicted_accuracy(tables, [3, 2]) == 83.0
    assert tables_from_layer_drops([], 90.0) == []


def test_pareto_front_against_its_definition():
    assert pareto_front([(1.0, 50.0), (2.0, 60.0), (2.0, 55.0), (3.0, 58.0), (0.5, 40.0)]) == [4, 0, 1]
    rng = random.Random(1)
    for _ in range(50):
        points = [(rng.randint(0, 6) / 2, rng.randint(0, 6) * 10.0) for _ in range(rng.randint(1, 9))]
        front = set(pareto_front(points))
        for i, (c, a) in enumerate(points):
            better = [j for j, (c2, a2) in enumerate(points) if c2 <= c and a2 >= a and (c2, a2) != (c, a)]
            assert (i in front) == (not better)


def test_bad_walk_is_refused():
    with pytest.raises(ValueError, match="walk must be"):
        select_bits([{(None, 2): 1.0}], 1.0, 1.0, walk="greedy")  # type: ignore[arg-type]
