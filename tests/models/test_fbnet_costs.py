"""FBNet cost tables: measured latency and its cache, energy files (our table format, HANNA's), the proxy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models import fbnet_costs
from models.fbnet import cifar10_space
from models.fbnet_blocks import CANDIDATE_NAMES, build_block
from models.fbnet_costs import (
    CostSettings,
    CostTable,
    build_cost_table,
    host_key,
    proxy_energy_mj,
    read_energy_table,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SPACE = cifar10_space(width=0.25, stages=[[8, 1, 1], [16, 1, 2]])  # stem 4; layers 4→2 at 32², 2→4 stride 2


def test_latency_is_measured_at_each_layer_shape_then_read_from_the_cache(tmp_path, monkeypatch):
    shapes = []
    real = fbnet_costs.measure_side_by_side

    def spy(models, example, warmup, repeats):
        shapes.append(tuple(example.shape))
        return real(models, example, warmup, repeats)

    monkeypatch.setattr(fbnet_costs, "measure_side_by_side", spy)
    settings = CostSettings(cache_dir=str(tmp_path), warmup=0, repeats=2, progress=False)
    table = build_cost_table(SPACE, settings)
    assert shapes == [(1, 4, 32, 32), (1, 2, 32, 32), (1, 3, 32, 32), (1, 4, 16, 16)]  # layers, stem, head
    assert table.latency_ms.shape == (2, 9) and (table.latency_ms > 0).all() and table.fixed_latency_ms > 0
    (cached,) = tmp_path.glob("*.json")
    assert host_key() in cached.name and f"_t1_{SPACE.signature()}" in cached.name

    def fail(*args, **kwargs):
        raise AssertionError("measured again although a cached table exists")

    monkeypatch.setattr(fbnet_costs, "measure_side_by_side", fail)
    again = build_cost_table(SPACE, settings)
    torch.testing.assert_close(again.latency_ms, table.latency_ms)
    assert again.latency_source == str(cached)
    # another shape is another table
    other = cifar10_space(width=0.5, stages=[[8, 1, 1], [16, 1, 2]])
    assert fbnet_costs.latency_cache_path(tmp_path, other, 1) != cached


def test_proxy_energy_of_a_projection_by_hand():
    # 1×1 conv 8→16, stride 2, on 8×16×16: MACs 8·16·8·8 = 8192; elements in 2048 + out 1024 + weights 128
    block = build_block("skip", 8, 16, 2)
    energy = proxy_energy_mj(block, torch.rand(1, 8, 16, 16))
    assert energy == pytest.approx((4.6 * 8192 + 160 * 4 * (2048 + 1024 + 128)) * 1e-9)
    assert proxy_energy_mj(build_block("skip", 8, 8, 1), torch.rand(1, 8, 16, 16)) == 0.0


def test_energy_table_format_maps_columns_by_name(tmp_path):
    header = list(reversed(CANDIDATE_NAMES))
    rows = [[float(10 * layer + j) for j in range(9)] for layer in range(2)]
    path = tmp_path / "energy.txt"
    path.write_text("# mJ per image\n" + " ".join(header) + "\n" + "\n".join(", ".join(map(str, r)) for r in rows))
    table = read_energy_table(path, 2)
    assert table[0, CANDIDATE_NAMES.index("skip")] == 0.0  # first column of the file
    assert table[1, CANDIDATE_NAMES.index("k3_e1")] == 18.0  # last column
    with pytest.raises(ValueError, match="2 layer lines, the search space has 22"):
        read_energy_table(path, 22)


def test_hanna_format_fills_missing_skip_with_the_mean_and_scales(tmp_path):
    path = tmp_path / "rpi_energy.txt"
    path.write_text("1 2 3 4 5 6 7 8 0.2\n1 2 3 4 5 6 7 8\n1 2 3 4 5 6 7 8 0.4\n")
    table = read_energy_table(path, 3, format="hanna", file_scale=1000.0)
    assert table[:, 8].tolist() == pytest.approx([200.0, 300.0, 400.0])
    assert table[1, :8].tolist() == [1000.0 * k for k in range(1, 9)]


def test_energy_file_goes_into_the_table_and_the_source_says_so(tmp_path):
    path = tmp_path / "e.txt"
    path.write_text(" ".join(CANDIDATE_NAMES) + "\n" + "1 1 1 1 1 1 1 1 0\n" * 2)
    settings = CostSettings(energy_file=str(path), cache_dir=str(tmp_path), warmup=0, repeats=1, progress=False)
    table = build_cost_table(SPACE, settings)
    assert table.energy_mj.sum() == 16.0 and "table file" in table.energy_source
    proxy = build_cost_table(SPACE, CostSettings(cache_dir=str(tmp_path), warmup=0, repeats=1, progress=False))
    assert "proxy" in proxy.energy_source and (proxy.energy_mj[:, :8] > 0).all() and proxy.fixed_energy_mj > 0


def test_cost_table_rejects_negative_or_non_finite_costs():
    good = torch.ones(2, 9)
    with pytest.raises(ValueError, match="latency"):
        CostTable(-good, good, 1.0, 1.0, "", "")
    with pytest.raises(ValueError, match="energy"):
        CostTable(good, good * float("nan"), 1.0, 1.0, "", "")


def test_building_a_table_leaves_the_global_rng_alone(tmp_path):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    build_cost_table(SPACE, CostSettings(cache_dir=str(tmp_path), warmup=0, repeats=1, progress=False))
    torch.testing.assert_close(torch.rand(3), expected)


def _demo_space():
    import yaml

    init = yaml.safe_load(Path("configs/fbnet/demo_search.yaml").read_text())["model"]["init_args"]
    return cifar10_space(width=init["width"], stages=init["stages"]), init["latency_file"]


def test_the_shipped_demo_latency_table_is_used_as_it_is_without_measuring(monkeypatch):
    import json

    space, path = _demo_space()

    def fail(*args, **kwargs):
        raise AssertionError("measured although a latency file is given")

    monkeypatch.setattr(fbnet_costs, "measure_side_by_side", fail)
    table = build_cost_table(space, CostSettings(cache_dir=None, progress=False), latency_file=path)
    shipped = json.loads(Path(path).read_text())
    assert table.latency_ms.tolist() == shipped["latency_ms"] and table.fixed_latency_ms == shipped["fixed_latency_ms"]
    assert path in table.latency_source


def test_a_latency_file_of_other_shapes_or_broken_is_refused_naming_it(tmp_path):
    space, path = _demo_space()
    with pytest.raises(ValueError, match="demo_latency_table.json: measured for search space"):
        fbnet_costs.read_latency_file(path, SPACE)
    broken = tmp_path / "t.json"
    broken.write_text(Path(path).read_text()[:200])
    with pytest.raises(ValueError, match="t.json: not a latency table"):
        fbnet_costs.read_latency_file(broken, space)
    negative = tmp_path / "n.json"
    negative.write_text(Path(path).read_text().replace("0.1", "-0.1", 1))
    with pytest.raises(ValueError, match="n.json: latencies must be finite"):
        fbnet_costs.read_latency_file(negative, space)
    with pytest.raises(FileNotFoundError, match="latency_file: null"):
        fbnet_costs.read_latency_file(tmp_path / "absent.json", space)
