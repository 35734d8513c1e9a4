"""Figure 3 (accuracy against measured ms per image and against GBOPs) and its labels; the speed axis is the
whole network timed with each configuration's bits."""

from __future__ import annotations

import itertools

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_modules.bit_search import BitSearch
from lightning_modules.bit_search_driver import run_search
from lightning_modules.bit_search_report import figure3
from models.bdcnn import decomposed_layers

pytestmark = pytest.mark.usefixtures("one_thread")


def _row(d, bits, acc, predicted, reading):
    return {"allowed_drop": d, "feasible": True, "bits": bits, "accuracy": acc, "predicted_accuracy": predicted,
            "gbops": sum(bits) / 10, "network_ms": 1 + sum(bits) / 10, "reading": reading}  # fmt: skip


def crowded_summary():
    """Many points close together: several D with one choice, both readings choosing near-identical vectors."""
    readings = {
        "layer_drops": [_row(d, [4, 3, 2 + (d > 5)], 80 - d / 3, 81 - d / 2, "layer_drops") for d in range(1, 10)],
        "measured_pairs": [_row(d, [4, 3 + (d > 3), 2], 80.2 - d / 3, 81 - d / 3, "measured_pairs") for d in range(1, 10)],
    }  # fmt: skip
    uniform = [{"uniform_bits": q, "bits": [q] * 3, "accuracy": 70 + 2 * q, "gbops": 0.3 * q, "network_ms": 1 + 0.3 * q}
               for q in range(2, 9)]  # fmt: skip
    return {"metric": "acc_top5", "R": 82.0, "reference": {"float": 83.0, "decomposed": 82.0}, "readings": readings,
            "searched": readings["layer_drops"], "uniform": uniform, "float_network_ms": 3.5}  # fmt: skip


def test_figure3_labels_do_not_overlap_and_the_speed_panel_plots_network_ms():
    summary = crowded_summary()
    fig = figure3(summary)
    renderer = fig.canvas.get_renderer()
    speed, ops = fig.axes[:2]
    for ax in (speed, ops):
        labels = [t for t in ax.texts if t.get_gid() == "point-label"]
        distinct = {tuple(r["bits"]) for rows in summary["readings"].values() for r in rows}
        assert len(labels) == len(distinct) + len(summary["uniform"])  # one label per point, none lost
        boxes = [t.get_window_extent(renderer) for t in labels]
        for a, b in itertools.combinations(boxes, 2):
            assert not a.overlaps(b), (a, b)
    lines = {line.get_label(): line for line in speed.get_lines()}
    assert list(lines["uniform Q"].get_xdata()) == [r["network_ms"] for r in summary["uniform"]]
    assert list(lines["float network"].get_xdata()) == [3.5]
    assert list(lines["uniform Q"].get_xdata()) != list(
        {line.get_label(): line for line in ops.get_lines()}["uniform Q"].get_xdata()
    )


def test_the_speed_axis_times_each_configuration_with_its_bits(tmp_path):
    """The timer receives the decomposed network with the configuration's bits set (here it returns Σ bits as its
    'time', so a wrong or stale configuration shows), and the float network's time is reported beside it."""
    torch.manual_seed(0)
    search = BitSearch(arch="toy3", num_classes=4, width=4, layers="all", bases=1, decomposition="greedy",
                       min_bits=2, max_bits=3, allowed_drops=[5.0, 50.0], top_k=1, uniform_bits=[2, 3],
                       measure_ms=True, ms_repeats=1, cost_image_size=12)  # fmt: skip
    calls = []

    def timer(float_model, model, example, *, repeats, threads):
        bits = [layer.bits for layer in decomposed_layers(model).values()]
        calls.append((bits, tuple(example.shape), repeats, threads))
        return {"float_ms": 7.0, "bitserial_ms": float(sum(bits))}

    g = torch.Generator().manual_seed(0)
    data = DataLoader(TensorDataset(torch.rand(16, 3, 12, 12, generator=g), torch.randint(0, 4, (16,), generator=g)))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, default_root_dir=tmp_path)  # fmt: skip
    summary = run_search(search, data, trainer, tmp_path / "search", network_timer=timer)
    rows = [r for rs in summary["readings"].values() for r in rs if r["feasible"]] + summary["uniform"]
    assert all(r["network_ms"] == sum(r["bits"]) for r in rows)
    assert summary["float_network_ms"] == 7.0
    assert {c[1:] for c in calls} == {((1, 3, 12, 12), 1, 1)}
    assert [r["network_ms"] for r in summary["uniform"]] == [6.0, 9.0]  # Q = 2, 3 on three layers


def test_the_real_network_timer_when_the_fast_kernel_is_present(tmp_path):
    """With branch perf's kernel (models/bitserial.kernel_threads) the search times the whole network for real."""
    from models import bitserial

    if not hasattr(bitserial, "kernel_threads"):
        pytest.skip("models/bdcnn_timing.py needs branch perf's models/bitserial.py (kernel_threads)")
    torch.manual_seed(0)
    search = BitSearch(arch="toy3", num_classes=4, width=4, layers="all", bases=1, decomposition="greedy",
                       min_bits=2, max_bits=3, allowed_drops=[50.0], top_k=1, uniform_bits=[2, 3], readings=["layer_drops"],
                       measure_ms=True, ms_repeats=1, cost_image_size=12)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    data = DataLoader(TensorDataset(torch.rand(8, 3, 12, 12, generator=g), torch.randint(0, 4, (8,), generator=g)))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, default_root_dir=tmp_path)  # fmt: skip
    summary = run_search(search, data, trainer, tmp_path / "search")
    assert summary["network_timer"] == "models.bdcnn_timing.network_ms_per_image"
    assert summary["float_network_ms"] > 0 and all(r["network_ms"] > 0 for r in summary["uniform"])
