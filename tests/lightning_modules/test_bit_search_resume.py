"""Bit-search resume trusts nothing it wrote (issue 18.4): truncated, short, foreign and other-settings files are
each refused with the file named; loader-only settings do not matter."""

from __future__ import annotations

import json
import shutil

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_modules.bit_search import BitSearch
from lightning_modules.bit_search_driver import run_search
from lightning_modules.bit_search_tables import SearchStateError

pytestmark = pytest.mark.usefixtures("one_thread")

SEARCH = {
    "arch": "toy3", "num_classes": 4, "width": 4, "layers": "all", "bases": 1, "decomposition": "greedy",
    "min_bits": 2, "max_bits": 4, "allowed_drops": [5.0, 30.0], "top_k": 1, "uniform_bits": [2],
    "measure_ms": False, "cost_image_size": 12,
}  # fmt: skip


class TinyData(L.LightningDataModule):
    """32 random images; ``image_size`` and ``seed`` change the data, ``batch_size`` only the loader."""

    def __init__(self, image_size: int = 12, seed: int = 0, batch_size: int = 16) -> None:
        super().__init__()
        self.save_hyperparameters()

    def val_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(self.hparams.seed)
        size = self.hparams.image_size
        data = TensorDataset(torch.rand(32, 3, size, size, generator=g), torch.randint(0, 4, (32,), generator=g))
        return DataLoader(data, batch_size=self.hparams.batch_size)


def _trainer(tmp_path):
    return L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=tmp_path,
    )  # fmt: skip


def _search(**changes):
    torch.manual_seed(0)
    return BitSearch(**(SEARCH | changes))


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished search directory (A, T1..T3, state) and its summary."""
    tmp = tmp_path_factory.mktemp("done")
    summary = run_search(_search(), TinyData(), _trainer(tmp), tmp / "search", network_timer=None)
    return tmp / "search", summary


def _copy(done, tmp_path):
    out = tmp_path / "search"
    shutil.copytree(done[0], out)
    return out


def _resume(out, tmp_path, search=None, data=None):
    return run_search(search or _search(), data or TinyData(), _trainer(tmp_path), out, resume=True, network_timer=None)


def test_an_intact_search_resumes_to_the_same_result_even_with_another_batch_size(done, tmp_path):
    out = _copy(done, tmp_path)
    resumed = _resume(out, tmp_path, data=TinyData(batch_size=8))
    assert resumed["readings"] == done[1]["readings"]


@pytest.mark.parametrize("name", ["A.json", "T2_net_3.json"])
def test_a_truncated_table_is_refused_naming_it(done, tmp_path, name):
    out = _copy(done, tmp_path)
    path = out / "tables" / name
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(SearchStateError, match=rf"{path}: cannot read the search file \(JSONDecodeError"):
        _resume(out, tmp_path)


def test_a_truncated_state_file_is_refused_naming_it(done, tmp_path):
    out = _copy(done, tmp_path)
    (out / "state.json").write_text('{"fingerprint": {"arch": "to')
    with pytest.raises(SearchStateError, match=rf"{out / 'state.json'}: cannot read"):
        _resume(out, tmp_path)


@pytest.mark.parametrize("name, kept, total", [("T2_net_3.json", 3, 9), ("A.json", 3, 9), ("T1_net_0.json", 2, 3)])
def test_a_short_table_is_refused_naming_it(done, tmp_path, name, kept, total):
    out = _copy(done, tmp_path)
    path = out / "tables" / name
    saved = json.loads(path.read_text())
    saved["entries"] = saved["entries"][:kept]
    path.write_text(json.dumps(saved))
    with pytest.raises(SearchStateError, match=rf"{path} is incomplete or foreign: {kept} of its {total} entries"):
        _resume(out, tmp_path)


def test_forged_counts_and_duplicates_are_refused(done, tmp_path):
    out = _copy(done, tmp_path)
    path = out / "tables" / "T3_net_7.json"
    saved = json.loads(path.read_text())
    good = json.dumps(saved)
    saved["entries"][0]["total"] = 31  # not the reference pass's 32 images
    path.write_text(json.dumps(saved))
    with pytest.raises(SearchStateError, match=rf"{path}: entry \(2, 2\) has correct=\d+, total=31"):
        _resume(out, tmp_path)
    saved = json.loads(good)
    saved["entries"][1] = saved["entries"][0]
    path.write_text(json.dumps(saved))
    with pytest.raises(SearchStateError, match=rf"{path}: entry \(2, 2\) appears twice"):
        _resume(out, tmp_path)


def test_a_table_of_another_search_is_refused_naming_it(done, tmp_path):
    other = tmp_path / "other"
    run_search(_search(), TinyData(seed=1), _trainer(tmp_path), other, network_timer=None)
    out = _copy(done, tmp_path)
    shutil.copy(other / "tables" / "T2_net_3.json", out / "tables" / "T2_net_3.json")
    with pytest.raises(SearchStateError, match=rf"{out / 'tables' / 'T2_net_3.json'} was measured by another search"):
        _resume(out, tmp_path)


@pytest.mark.parametrize(
    "search, data, differs",
    [
        ({}, {"image_size": 16}, "data"),  # another image size
        ({}, {"seed": 3}, "data"),  # other evaluation images
        ({"bases": 2}, {}, "bases, decomposed_weights_sha256"),
        ({"top_k": 2}, {}, "top_k"),
    ],
)
def test_other_settings_are_refused_naming_the_state_file(done, tmp_path, search, data, differs):
    out = _copy(done, tmp_path)
    with pytest.raises(
        SearchStateError, match=rf"{out / 'state.json'} holds a search with other settings \({differs}\)"
    ):
        _resume(out, tmp_path, search=_search(**search), data=TinyData(**data))


def test_other_weights_are_refused(done, tmp_path):
    """Another set of float weights (another pretrained file or init_from) changes every table entry."""
    out = _copy(done, tmp_path)
    torch.manual_seed(1)
    search = BitSearch(**SEARCH)  # same settings, other initial weights
    with pytest.raises(SearchStateError, match=r"other settings \(decomposed_weights_sha256, float_weights_sha256\)"):
        _resume(out, tmp_path, search=search)


def test_other_images_behind_the_same_settings_are_refused(tmp_path):
    """A plain DataLoader has no settings: the evaluation tensors' SHA-256 tells the data apart."""
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(32, 3, 12, 12, generator=g), torch.randint(0, 4, (32,), generator=g)
    out = tmp_path / "search"
    run_search(_search(), DataLoader(TensorDataset(images, labels), batch_size=16), _trainer(tmp_path), out,
               stop_after_tables=0)  # fmt: skip
    images[0, 0, 0, 0] += 0.5  # one pixel of one image
    with pytest.raises(SearchStateError, match=r"other settings \(data\)"):
        _resume(out, tmp_path, data=DataLoader(TensorDataset(images, labels), batch_size=16))
