"""QuantizedFinetune: float pre-training, quantisation-aware fine-tuning with the search's bits (STE), exact resume
with the bits the checkpoint carries."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_modules.quantized_finetune import QuantizedFinetune, bits_from_search
from models.bdcnn import decomposed_layers

pytestmark = pytest.mark.usefixtures("one_thread")

NET = {"arch": "toy3", "num_classes": 4, "width": 4}


def _loader():
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(24, 3, 12, 12, generator=g), torch.randint(0, 4, (24,), generator=g))
    return DataLoader(data, batch_size=8)


def _trainer(tmp_path, **kwargs):
    return L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=tmp_path, deterministic=True, **kwargs,
    )  # fmt: skip


def _search_json(path, bits, pairs=None):
    searched = [{"allowed_drop": 5.0, "feasible": True, "bits": bits}]
    readings = {
        "layer_drops": searched,
        "measured_pairs": [{"allowed_drop": 5.0, "feasible": True, "bits": pairs or bits}],
    }
    summary = {"layers": ["net.0", "net.3"], "searched": searched, "readings": readings}
    path.write_text(json.dumps(summary))
    return str(path)


@pytest.fixture(scope="module")
def float_ckpt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("float")
    L.seed_everything(0)
    module = QuantizedFinetune(**NET, convert=False, lr=0.01)
    trainer = _trainer(tmp, max_epochs=2)
    trainer.fit(module, _loader(), _loader())
    path = tmp / "float.ckpt"
    trainer.save_checkpoint(path)
    return str(path), module


def test_bits_from_search_and_errors(tmp_path):
    path = _search_json(tmp_path / "search.json", [3, 2], pairs=[4, 2])
    assert bits_from_search(path, 5.0) == {"net.0": 3, "net.3": 2}
    assert bits_from_search(path, 5.0, "measured_pairs") == {"net.0": 4, "net.3": 2}
    with pytest.raises(ValueError, match="has no reading 'pairs'"):
        bits_from_search(path, 5.0, "pairs")
    with pytest.raises(ValueError, match="no search for allowed_drop=7"):
        bits_from_search(path, 7.0)
    with pytest.raises(ValueError, match="go together"):
        QuantizedFinetune(**NET, bits_from=path)
    with pytest.raises(ValueError, match="need convert: true"):
        QuantizedFinetune(**NET, convert=False, bits=3)


def test_finetune_trains_through_the_quantisers(float_ckpt, tmp_path):
    path, float_module = float_ckpt
    bits = _search_json(tmp_path / "search.json", [3, 2])
    L.seed_everything(0)
    module = QuantizedFinetune(**NET, init_from=path, bases=2, decomposition="greedy", bits_from=bits,
                               allowed_drop=5.0, train_coefficients=True, lr=0.01)  # fmt: skip
    assert module.layer_bits() == {"net.0": 3, "net.3": 2}
    report = module.parent_init.apply(module)  # what the start of a fresh fit does: load, then decompose
    assert len(report.loaded) == 6 and not report.missing  # toy3: two convolutions and a linear layer
    assert module.layer_bits() == {"net.0": 3, "net.3": 2}
    layers = decomposed_layers(module.model)
    before = {n: (m.bases.clone(), m.coefficients.detach().clone(), m.bias.detach().clone()) for n, m in layers.items()}
    # the decomposition starts from the trained float weights: k = 2 greedy gets within 60 % of them
    source = float_module.model.net[0].weight.detach().reshape(4, -1)
    assert (layers["net.0"].weight_rows() - source).norm() < 0.6 * source.norm()
    _trainer(tmp_path, max_steps=3).fit(module, _loader())
    for name, m in layers.items():
        bases, coefficients, bias = before[name]
        assert torch.equal(m.bases, bases)  # the ±1 bases stay fixed
        assert not torch.equal(m.coefficients, coefficients)  # trained through the quantisers (STE)
        assert not torch.equal(m.bias, bias)
    frozen = QuantizedFinetune(**NET, init_from=path, bases=2, decomposition="greedy", bits=3)
    assert not any(m.coefficients.requires_grad for m in decomposed_layers(frozen.model).values())


class _StopAfterFirstEpoch(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def test_resume_continues_exactly_with_the_checkpoint_bits(float_ckpt, tmp_path):
    import shutil

    path = str(shutil.copy(float_ckpt[0], tmp_path / "parent.ckpt"))
    bits = tmp_path / "search.json"

    def make():
        return QuantizedFinetune(**NET, init_from=path, bases=2, decomposition="greedy", bits_from=str(bits),
                                 allowed_drop=5.0, train_coefficients=True, lr=0.01)  # fmt: skip

    _search_json(bits, [3, 2])
    L.seed_everything(0)
    straight = make()
    _trainer(tmp_path / "a", max_epochs=2).fit(straight, _loader())
    L.seed_everything(0)
    first = make()
    trainer = _trainer(tmp_path / "b", max_epochs=2, callbacks=[_StopAfterFirstEpoch()])
    trainer.fit(first, _loader())
    ckpt = tmp_path / "b" / "interrupted.ckpt"
    trainer.save_checkpoint(ckpt)
    _search_json(bits, [8, 8])  # the search was re-run since: the resumed run keeps its own bits
    (tmp_path / "parent.ckpt").unlink()  # and a resumed run never reads its parent
    resumed = make()
    assert resumed.layer_bits() == {"net.0": 8, "net.3": 8}
    _trainer(tmp_path / "b", max_epochs=2).fit(resumed, _loader(), ckpt_path=str(ckpt))
    assert resumed.layer_bits() == {"net.0": 3, "net.3": 2}
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
