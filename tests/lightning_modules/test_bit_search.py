"""BitSearch on a 3-layer CNN: cached tables (A and pairs) equal naive evaluations of the whole network, the walk
against an exhaustive search over every Q vector, evaluation counts derived by hand, resume, the command line."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_modules.bit_search import BitSearch
from lightning_modules.bit_search_driver import run_search
from lightning_modules.bit_search_tables import SearchStateError
from models.bdcnn import set_bits

pytestmark = pytest.mark.usefixtures("one_thread")


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


def _read(path: Path, row: str = "q_prev") -> dict:
    return {(e[row], e["q"]): e["accuracy"] for e in json.loads(path.read_text())["entries"]}


def test_toy_cnn_tables_walk_counts_and_exhaustive(toy, tmp_path):
    search, loader, images, labels = toy
    summary = run_search(search, loader, _trainer(tmp_path), tmp_path / "search", network_timer=None)
    names = search.layer_names
    assert names == ["net.0", "net.3", "net.7"]
    out = tmp_path / "search" / "tables"
    pairs = [_read(out / f"T{i + 1}_{name.replace('.', '_')}.json") for i, name in enumerate(names)]
    drops = _read(out / "A.json", row="layer")
    r = summary["R"]
    assert r == pytest.approx(_accuracy(search, images, labels, None))
    # every cached entry equals a naive evaluation of the whole network with only that layer / pair quantised
    for i, name in enumerate(names):
        for q in (2, 3, 4):
            bits = [None] * 3
            bits[i] = q
            assert drops[(name, q)] == pytest.approx(_accuracy(search, images, labels, bits))
        for (qp, q), s in pairs[i].items():
            bits = [None] * 3
            bits[i] = q
            if i:
                bits[i - 1] = qp
            assert s == pytest.approx(_accuracy(search, images, labels, bits))
    # the layer_drops reading predicts S from A by hand: S = R − A_{i−1}(q_{i−1}) − A_i(q_i)
    predicted = [{(None, q): drops[(names[0], q)] for q in (2, 3, 4)}]
    for i in (1, 2):
        predicted.append(
            {(qp, q): drops[(names[i - 1], qp)] + drops[(names[i], q)] - r for qp in (2, 3, 4) for q in (2, 3, 4)}
        )
    # each reading's walk against an exhaustive search over all 27 Q vectors (pairs admissible, fewest bits from the
    # last layer), and its measured accuracy is the true accuracy of that vector
    vectors = list(itertools.product(range(2, 5), repeat=3))
    for reading, tables in (("layer_drops", predicted), ("measured_pairs", pairs)):
        for row in summary["readings"][reading]:
            d = row["allowed_drop"]
            ok = [
                v for v in vectors
                if r - tables[0][(None, v[0])] < d and all(r - tables[i][(v[i - 1], v[i])] < d for i in (1, 2))
            ]  # fmt: skip
            expected = min(ok, key=lambda v: v[::-1]) if ok else None
            assert (row["bits"] if row["feasible"] else None) == (list(expected) if expected else None)
            if row["feasible"]:
                assert row["accuracy"] == pytest.approx(_accuracy(search, images, labels, row["bits"]))
                path = [tables[0][(None, expected[0])]] + [tables[i][expected[i - 1 : i + 1]] for i in (1, 2)]
                assert row["predicted_accuracy"] == pytest.approx(min(path))
                additive = r - sum(r - drops[(names[i], q)] for i, q in enumerate(expected))
                assert row["predicted_additive"] == pytest.approx(additive)
    assert summary["searched"] == summary["readings"]["layer_drops"]  # the paper's reading is the default
    # uniform Q points: measured accuracy of that vector; BOPs by hand for toy3 (width 4, k = 2, 12×12 input):
    # conv 3→4 at 12² (D = 27), conv 4→8 at 6² (D = 36), linear 8→4 (D = 8): N·P·k·Q·D summed = 2Q·25,952
    for row in summary["uniform"]:
        q = row["uniform_bits"]
        assert row["accuracy"] == pytest.approx(_accuracy(search, images, labels, [q] * 3))
        assert round(row["gbops"] * 1e9) == 2 * q * (4 * 144 * 27 + 8 * 36 * 36 + 4 * 1 * 8) == 51_904 * q
    # counts, derived by hand for 3 layers, 3 bit values, 3 batches of 16. Per batch, decomposed-layer calls:
    # A: 3·3 from layer 1, 1 + 3·2 from layer 2, 1 + 3·1 from layer 3 = 20; T1 3·3 = 9; T2 3·1 + 9·2 = 21;
    # T3 1 + 3·1 + 9·1 = 13. Naive: (9 + 3 + 9 + 9) entries × 3 layers = 90.
    counts = summary["counts"]
    assert counts["entries"] == 9 + 3 + 9 + 9 and counts["batches"] == 4 * 3
    assert counts["layer_forwards"] == 3 * (20 + 9 + 21 + 13) and counts["naive_layer_forwards"] == 3 * 90
    out = tmp_path / "search"
    assert (out / "figure3.png").stat().st_size > 0 and "| config | layer | k | Q |" in (
        out / "bit_search_table.md"
    ).read_text()


def test_resume_continues_from_saved_tables(toy, tmp_path):
    search, loader, _, _ = toy
    trainer = _trainer(tmp_path)
    out = tmp_path / "search"
    with pytest.raises(SearchStateError, match="nothing to resume"):
        run_search(search, loader, trainer, out, resume=True)
    run_search(search, loader, trainer, out, stop_after_tables=2)  # "interrupted" after A and T1
    first = out / "tables" / "T1_net_0.json"
    assert (out / "tables" / "A.json").is_file() and first.is_file()
    assert not (out / "tables" / "T2_net_3.json").exists()
    stamp = first.stat().st_mtime_ns
    with pytest.raises(SearchStateError, match="already holds a search"):
        run_search(search, loader, trainer, out)
    resumed = run_search(search, loader, trainer, out, resume=True, network_timer=None)
    assert first.stat().st_mtime_ns == stamp  # T1 was read, not recomputed
    fresh = run_search(search, loader, trainer, tmp_path / "fresh", network_timer=None)
    assert resumed["readings"] == fresh["readings"]
    strip = lambda c: {k: v for k, v in c.items() if k != "per_table"}  # noqa: E731 (seconds differ)
    assert strip(resumed["counts"]) == strip(fresh["counts"])


def test_fitting_a_search_is_refused_with_the_command_to_run(toy, tmp_path):
    search, loader, _, _ = toy
    with pytest.raises(RuntimeError, match="splitcv search"):
        _trainer(tmp_path).fit(search, loader)
