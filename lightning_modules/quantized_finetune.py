"""Training of a classifier and quantisation-aware fine-tuning of its B-DCNN form.

``convert: false`` trains the plain float network (the demo's first step: a small CNN trained for a
minute, whose checkpoint the bit search reads). ``convert: true`` decomposes its layers
(:func:`models.bdcnn.convert_to_bdcnn`) with the per-layer Q chosen by the bit search (``bits_from``: the
search's ``search.json`` and the ``allowed_drop`` whose choice to take, or ``bits`` given directly) and
fine-tunes it: gradients pass straight through the quantisation sub-layers (STE), the ±1 bases stay
fixed, the real-valued coefficients train when ``train_coefficients`` is set, and every other parameter
(biases, BatchNorm, layers left float) trains — the future work named by the bit-search paper.

The chosen bits are part of every checkpoint (``bdcnn_bits``), so a resumed or evaluated run uses the bits
it was trained with even if ``search.json`` changed since.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.bdcnn_weights import load_classifier_weights
from lightning_modules.checkpoint_init import InitReport, ParentInit
from lightning_modules.classification_steps import log_classification_eval, top_k_accuracies
from models.bdcnn import LayerSelection, convert_to_bdcnn, decomposed_layers, selected_layers, set_bits
from models.bdcnn_networks import Arch, build_classifier
from models.binary_decomposition import Method


def bits_from_search(path: str | Path, allowed_drop: float, reading: str | None = None) -> dict[str, int]:
    """The per-layer Q that the bit search chose for ``allowed_drop`` (its ``search.json``), in ``reading``
    (``layer_drops`` or ``measured_pairs``; default: the search's first reading, its ``searched`` rows)."""
    try:
        summary = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read the bit search's results ({err})") from err
    if reading is None:
        searched = summary["searched"]
    elif reading in summary.get("readings", {}):
        searched = summary["readings"][reading]
    else:
        raise ValueError(f"{path} has no reading {reading!r}; it has {sorted(summary.get('readings', {}))}")
    rows = {float(r["allowed_drop"]): r for r in searched}
    if float(allowed_drop) not in rows:
        raise ValueError(f"{path} has no search for allowed_drop={allowed_drop}; it has {sorted(rows)}")
    row = rows[float(allowed_drop)]
    if not row["feasible"]:
        raise ValueError(f"{path}: the search found no admissible bits for allowed_drop={allowed_drop}")
    return dict(zip(summary["layers"], row["bits"], strict=True))


class QuantizedFinetune(L.LightningModule):
    """A classifier trained float, or its B-DCNN form fine-tuned with straight-through quantisation.

    Logged: ``train/loss``, ``val/loss``, ``val/acc_top1``, ``val/acc_top5`` (micro-averaged), same under
    ``test/``.

    Args:
        arch: network (:func:`models.bdcnn_networks.build_classifier`).
        num_classes: classifier outputs.
        pretrained: start from torchvision's published weights (downloaded on first use).
        width: channel width of ``demo_cnn``/``toy3``.
        init_from: float classifier checkpoint (a ``convert: false`` run of this module, or a bare state
            dict of the network) to start from; weights only, read once at the start of a fresh fit
            (:class:`~lightning_modules.checkpoint_init.ParentInit`), then decomposed; a resumed run or an
            evaluated checkpoint never reads it.
        convert: decompose and quantise (fine-tuning); ``false`` trains the float network.
        layers: layers to decompose (as the bit search: ``conv``, ``linear``, ``all`` or names).
        bases: k per output channel (``bases_per_layer`` overrides per name).
        bases_per_layer: k per layer name.
        decomposition: ``exhaustive`` or ``greedy``.
        decomposition_iterations: cap on the ALS rounds (exhaustive; rows stop at their fixed point).
        decomposition_restarts: random restarts (exhaustive).
        bits: Q for every decomposed layer, or per name; ignored when ``bits_from`` is given.
        bits_from: ``search.json`` of a bit search; with ``allowed_drop`` it gives the per-layer Q.
        allowed_drop: which D of ``bits_from`` to take.
        bits_reading: which reading's choice to take (``layer_drops``: S predicted from A, the paper's;
            ``measured_pairs``); default: the search's first reading.
        train_coefficients: train the decomposition's real coefficients too (bases stay ±1).
        optimizer: ``adamw`` or ``sgd`` (momentum 0.9, Nesterov).
        lr: learning rate (cosine decay over ``trainer.estimated_stepping_batches``).
        weight_decay: weight decay.
        label_smoothing: cross-entropy label smoothing.
    """

    def __init__(
        self,
        arch: Arch = "demo_cnn",
        num_classes: int = 10,
        pretrained: bool = False,
        width: int = 16,
        init_from: str | None = None,
        convert: bool = True,
        layers: LayerSelection | list[str] = "conv",
        bases: int = 6,
        bases_per_layer: dict[str, int] | None = None,
        decomposition: Method = "exhaustive",
        decomposition_iterations: int = 500,
        decomposition_restarts: int = 2,
        bits: int | dict[str, int] | None = None,
        bits_from: str | None = None,
        allowed_drop: float | None = None,
        bits_reading: Literal["layer_drops", "measured_pairs"] | None = None,
        train_coefficients: bool = False,
        optimizer: Literal["adamw", "sgd"] = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if (bits_from is None) != (allowed_drop is None):
            raise ValueError("bits_from and allowed_drop go together (which D of the search to take)")
        if not convert and (bits is not None or bits_from is not None or train_coefficients):
            raise ValueError("bits, bits_from and train_coefficients need convert: true")
        network = build_classifier(arch, num_classes, pretrained, width)
        self.model = network
        if convert:
            names = selected_layers(network, layers)
            chosen = bits_from_search(bits_from, allowed_drop, bits_reading) if bits_from else bits
            if isinstance(chosen, dict):
                missing = sorted(set(names) - set(chosen))
                if missing:
                    raise ValueError(f"no bits for decomposed layers {missing}")
            # with a parent checkpoint the decomposition is redone from its weights at the start of the fit
            # (ParentInit); until then a cheap greedy one of the initial weights gives the layers their shapes
            self.model = self._decompose(network, chosen, "greedy" if init_from else decomposition)
        self.parent_init = ParentInit(self, init_from, QuantizedFinetune.load_parent)
        self.acc_top1, self.acc_top5 = top_k_accuracies(num_classes)

    def _decompose(self, network: nn.Module, bits: int | dict | None, method: Method) -> nn.Module:
        hp = self.hparams
        names = selected_layers(network, hp.layers)
        per_layer = {name: (hp.bases_per_layer or {}).get(name, hp.bases) for name in names}
        model = convert_to_bdcnn(
            network,
            bases=per_layer,
            bits=bits,
            layers=names,
            method=method,
            iterations=hp.decomposition_iterations,
            restarts=hp.decomposition_restarts,
        )
        for layer in decomposed_layers(model).values():
            layer.coefficients.requires_grad_(hp.train_coefficients)
        return model

    def load_parent(self, path: str) -> InitReport:
        """Start from a float classifier checkpoint: load it, then (``convert``) decompose its weights."""
        hp = self.hparams
        network = build_classifier(hp.arch, hp.num_classes, False, hp.width)
        report = load_classifier_weights(network, path)
        source = self._decompose(network, self.layer_bits(), hp.decomposition) if hp.convert else network
        self.model.load_state_dict(source.state_dict())
        return report

    def configure_callbacks(self) -> list[L.Callback]:
        return [self.parent_init]

    def layer_bits(self) -> dict[str, int | None]:
        """Q of every decomposed layer."""
        return {name: layer.bits for name, layer in decomposed_layers(self.model).items()}

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images, labels = batch[0], batch[1]
        loss = F.cross_entropy(self.model(images), labels, label_smoothing=self.hparams.label_smoothing)
        self.log("train/loss", loss, prog_bar=True, batch_size=images.shape[0])
        return loss

    def _evaluate(self, batch: Any, stage: str) -> None:
        images, labels = batch[0], batch[1]
        log_classification_eval(self, self.model(images), labels, stage)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        """``{"probs": softmax (B, num_classes), "labels": arg-max class (B,)}``."""
        probs = self.model(batch[0] if isinstance(batch, (list, tuple)) else batch).softmax(dim=1)
        return {"probs": probs, "labels": probs.argmax(dim=1)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["bdcnn_bits"] = self.layer_bits()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("bdcnn_bits", {})
        if set(saved) != set(self.layer_bits()):
            raise ValueError(
                f"the checkpoint's decomposed layers {sorted(saved)} differ from this model's {sorted(self.layer_bits())}"
            )
        set_bits(self.model, saved)

    def configure_optimizers(self) -> dict:
        params = [p for p in self.parameters() if p.requires_grad]
        hp = self.hparams
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=hp.lr, momentum=0.9, nesterov=True, weight_decay=hp.weight_decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
