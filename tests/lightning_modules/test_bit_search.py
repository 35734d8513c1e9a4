"""Algorithm 1: known optima on synthetic oracles, cached tables equal to naive evaluation, the walk against an
exhaustive search over every Q vector of a 3-layer CNN, evaluation counts, resume."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_modules.bit_search import BitSearch, SearchStateError, pareto_front, run_search, select_bits
from models.bdcnn import decomposed_layers, input_shapes, layer_cost, set_bits

pytestmark = pytest.mark.usefixtures("one_thread")

BITS = range(2, 9)
REPO = Path(__file__).resolve().parents[2]


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
    # brute force: among the vectors whose every pair is admissible, the smallest q_I, then q_{I−1}, ...
    for d in (0.3, 1.2, 2.5, 4.0, 7.0):
        ok = [
            q
            for q in itertools.product(BITS, repeat=3)
            if 100 - tables[0][(None, q[0])] < d and all(100 - tables[i][(q[i - 1], q[i])] < d for i in (1, 2))
        ]
        assert select_bits(tables, 100.0, d) == list(min(ok, key=lambda q: q[::-1]))


def test_bottleneck_oracle_recovers_the_true_optimum():
    """When the network's true drop is its worst layer's, pairs see it exactly: the search must return, for every
    layer, the fewest bits whose drop is below D (the true optimum)."""
    tables = oracle_tables(DROPS, max)
    for d in (0.15, 0.6, 1.2, 2.5, 5.0):
        truth = [min(q for q in BITS if drop[q] < d) for drop in DROPS]
        assert select_bits(tables, 100.0, d) == truth


def test_chain_and_independent_walks_differ_where_pairs_conflict():
    t1 = {(None, 2): 99.0, (None, 3): 99.0}
    t2 = {(2, 2): 90.0, (3, 2): 99.0, (2, 3): 99.0, (3, 3): 99.0}
    tables = [{k: v for k, v in t1.items()}, t2]
    # chain: q2 = 2 needs q1 = 3; independent ignores q1 and takes the smallest of each table
    assert select_bits(tables, 100.0, 2.0, walk="chain") == [3, 2]
    assert select_bits(tables, 100.0, 2.0, walk="independent") == [2, 2]


def test_pareto_front():
    points = [(1.0, 50.0), (2.0, 60.0), (2.0, 55.0), (3.0, 58.0), (0.5, 40.0)]
    assert pareto_front(points) == [4, 0, 1]


# ------------------------------------------------------------------------------------ toy CNN
@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    search = BitSearch(
        arch="toy3", num_classes=4, width=4, layers="all", bases=2, decomposition="greedy", min_bits=2, max_bits=4,
        allowed_drops=[2.0, 5.0, 10.0, 30.0], top_k=1, uniform_bits=[2, 3, 4], measure_ms=False, cost_image_size=12,
    )  # fmt: skip
    images = torch.rand(48, 3, 12, 12)
    with torch.no_grad():  # labels: the float network's own classes, so R is high and quantisation lowers it
        labels = search.float_model(images).argmax(1)
    loader = DataLoader(TensorDataset(images, labels), batch_size=16)
    return search, loader, images, labels


def _trainer(tmp_path):
    return L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=tmp_path,
    )  # fmt: skip


def _accuracy(search, images, labels, bits):
    set_bits(search.model, search.config_bits(bits))
    with torch.no_grad():
        return 100.0 * (search.model(images).argmax(1) == labels).float().mean().item()


def test_toy_cnn_tables_walk_counts_and_exhaustive(toy, tmp_path):
    search, loader, images, labels = toy
    summary = run_search(search, loader, _trainer(tmp_path), tmp_path / "search")
    names = search.layer_names
    assert names == ["net.0", "net.3", "net.7"]
    tables = []
    for i, name in enumerate(names):
        saved = json.loads((tmp_path / "search" / "tables" / f"T{i + 1}_{name.replace('.', '_')}.json").read_text())
        tables.append({(e["q_prev"], e["q"]): e["accuracy"] for e in saved["entries"]})
    # every cached table entry equals a naive evaluation of the whole network with only that pair quantised
    for i in range(3):
        for (qp, q), s in tables[i].items():
            bits = [None] * 3
            bits[i] = q
            if i:
                bits[i - 1] = qp
            assert s == pytest.approx(_accuracy(search, images, labels, bits))
    r = summary["R"]
    assert r == pytest.approx(_accuracy(search, images, labels, None))
    # the walk against an exhaustive search over all 27 Q vectors (pairs admissible, fewest bits from the last layer)
    vectors = list(itertools.product(range(2, 5), repeat=3))
    for row in summary["searched"]:
        d = row["allowed_drop"]
        ok = [
            v for v in vectors
            if r - tables[0][(None, v[0])] < d and all(r - tables[i][(v[i - 1], v[i])] < d for i in (1, 2))
        ]  # fmt: skip
        expected = min(ok, key=lambda v: v[::-1]) if ok else None
        assert (row["bits"] if row["feasible"] else None) == (list(expected) if expected else None)
        if row["feasible"]:
            # its measured accuracy is the true accuracy of that vector
            assert row["accuracy"] == pytest.approx(_accuracy(search, images, labels, row["bits"]))
    # true exhaustive optimum (fewest BOPs with a true drop < D) never costs more than the search's feasible choice
    shapes = input_shapes(search.model, images[:1])
    layers = decomposed_layers(search.model)
    bops = {v: sum(layer_cost(layers[n], shapes[n], q)["bops"] for n, q in zip(names, v, strict=True)) for v in vectors}
    true_acc = {v: _accuracy(search, images, labels, list(v)) for v in vectors}
    for row in summary["searched"]:
        feasible = [v for v in vectors if r - true_acc[v] < row["allowed_drop"]]
        if row["feasible"] and r - row["accuracy"] < row["allowed_drop"]:
            assert min(bops[v] for v in feasible) <= row["gbops"] * 1e9
    # counts, derived by hand for 3 layers, 3 bit values, 3 batches: per batch T1 3·3 = 9 layer calls,
    # T2 3·1 + 9·2 = 21, T3 1 + 3·1 + 9·1 = 13 (43); naive (3 + 9 + 9) entries × 3 layers = 63
    counts = summary["counts"]
    assert counts["entries"] == 21 and counts["batches"] == 9
    assert counts["layer_forwards"] == 3 * 43 and counts["naive_layer_forwards"] == 3 * 63
    out = tmp_path / "search"
    assert (out / "pareto.png").stat().st_size > 0 and "| config | layer | k | Q |" in (
        out / "bit_search_table.md"
    ).read_text()


def test_resume_continues_from_saved_tables(toy, tmp_path):
    search, loader, _, _ = toy
    trainer = _trainer(tmp_path)
    out = tmp_path / "search"
    with pytest.raises(SearchStateError, match="nothing to resume"):
        run_search(search, loader, trainer, out, resume=True)
    run_search(search, loader, trainer, out, stop_after_tables=1)  # "interrupted" after T1
    first = out / "tables" / "T1_net_0.json"
    assert first.is_file() and not (out / "tables" / "T2_net_3.json").exists()
    stamp = first.stat().st_mtime_ns
    with pytest.raises(SearchStateError, match="already holds a search"):
        run_search(search, loader, trainer, out)
    resumed = run_search(search, loader, trainer, out, resume=True)
    assert first.stat().st_mtime_ns == stamp  # T1 was read, not recomputed
    fresh = run_search(search, loader, trainer, tmp_path / "fresh")
    assert resumed["searched"] == fresh["searched"] and resumed["counts"] == fresh["counts"]
    other = BitSearch(arch="toy3", num_classes=4, width=4, layers="all", bases=3, decomposition="greedy",
                      min_bits=2, max_bits=4, top_k=1, measure_ms=False)  # fmt: skip
    with pytest.raises(SearchStateError, match="bases"):
        run_search(other, loader, trainer, out, resume=True)


@pytest.mark.slow
def test_command_line_on_the_imagenet_fixture(tmp_path, monkeypatch):
    from datamodules.fixtures import write_imagenet
    from lightning_modules.bit_search import main

    root = write_imagenet(tmp_path / "imagenet", train_per_wnid=1, val_per_wnid=2)
    monkeypatch.chdir(tmp_path)
    args = [
        "--config", str(REPO / "configs/trainer/cpu.yaml"), "--config", str(REPO / "configs/bit_search/demo.yaml"),
        "--model.init_args.arch", "toy3", "--model.init_args.width", "4", "--model.init_args.init_from", "null",
        "--model.init_args.bases", "1", "--model.init_args.decomposition", "greedy", "--model.init_args.max_bits", "3",
        "--model.init_args.allowed_drops", "[5.0, 50.0]", "--model.init_args.uniform_bits", "[2, 3]",
        "--model.init_args.ms_repeats", "1", "--model.init_args.cost_image_size", "16",
        "--data.init_args.root", str(root), "--data.init_args.class_list", str(root / "class_list.txt"),
        "--data.init_args.image_size", "16", "--trainer.enable_progress_bar", "false", "--run.id", "cli",
    ]  # fmt: skip
    summary = main(args)
    out = tmp_path / "runs" / "bit_search_demo" / "cli" / "search"
    assert json.loads((out / "search.json").read_text())["searched"] == summary["searched"]
    assert summary["images"] == 20 and len(summary["uniform"]) == 2
    assert all(r["ms"] is not None for r in summary["uniform"])  # the bit-serial kernel timed every layer
    with pytest.raises(SearchStateError, match="already holds a search"):
        main(args)
    resumed = main([*args, "--resume", "true"])  # all tables read back: the same choices and accuracies
    assert [(r["bits"], r["accuracy"]) for r in resumed["searched"]] == [
        (r["bits"], r["accuracy"]) for r in summary["searched"]
    ]


def test_fitting_a_search_is_refused_with_the_command_to_run(toy, tmp_path):
    search, loader, _, _ = toy
    with pytest.raises(RuntimeError, match="splitcv search"):
        _trainer(tmp_path).fit(search, loader)
