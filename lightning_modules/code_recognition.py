"""Recognition on the recurrent compressor's codes, with the decoder removed or kept (ImageNet-100).

Reproduces Shibata, Ohara, Yamauchi, "画像の圧縮復元認識フレームワークの軽量化と高速化": a compressor
pre-trained for reconstruction (``RNNCompressor``) is fine-tuned end to end with a ResNet-18
recogniser, either through its decoder (``variant="conventional"``, their earlier method) or with the
decoder and the first ResNet stages removed, the codes entering the ResNet through an adapter
(``"from_layer2"`` / ``"from_layer3"`` / ``"from_layer4"`` = the paper's "提案手法 (layer1)" /
"(layer2)" / "(layer3)"). See :mod:`models.code_classifier` for the pipelines, the open-loop coding of
the decoder-removed variants for k > 1, and the edge/server split.

The paper's table (ImageNet-100, per image): conventional 42.8 ms, 20,293,224 parameters, 64.94 %;
from_layer2 23.8 ms, 14,867,364, 66.40 %; from_layer3 11.4 ms, 14,581,796, 65.14 %; from_layer4
9.0 ms, 13,404,452, 54.16 %. With ``codec_width=0.465`` (the default) and k = 1 our decoder-removed
variants have 14,921,048 / 14,635,480 / 13,458,136 parameters (+0.36 / +0.37 / +0.40 %) and the
conventional one 19,018,533 (−6.3 %: our decoder, Toderici's layer table, is 1.07× the encoder; the
paper's, by its own counts, 1.45×, so no single width fits all four rows).
"""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchvision.models import ResNet18_Weights

from callbacks.results_record import ResultsRecord
from coding.image_quality import psnr
from coding.rnn_bitstream import HEADER_SIZE, stream_bytes_per_image
from lightning_modules.checkpoint_init import InitReport, ParentInit, init_weights_from
from lightning_modules.classification_steps import log_classification_eval, top_k_accuracies
from lightning_modules.data_checks import check_class_count
from lightning_modules.schedules import warmup_cosine
from models.code_adapter import Upsample
from models.code_classifier import CodeRecognitionNet, Variant
from models.latency import measure_ms_per_image
from models.rnn_codec import CellType, Reconstruction


class CodeRecognition(L.LightningModule):
    """Compressor + recogniser trained end to end: cross-entropy, straight-through through the binarizer.

    Logged: ``train/loss`` (and ``train/ce``, ``train/reconstruction`` for the conventional variant),
    ``val/loss``, ``val/acc_top1``, ``val/acc_top5`` (plain top-k accuracy over all images: micro
    averaged, not a mean over classes), ``val/bytes_per_image`` (each image's own stream of its k
    iterations' codes, header included, from :func:`coding.rnn_bitstream.stream_bytes_per_image` as
    ``RNNCompressor`` logs it), ``val/bpp`` (those bytes × 8 / pixels), ``val/payload_bpp`` (header
    excluded), ``val/psnr`` (conventional), the same under
    ``test/``, and ``test/ms_per_image`` (batch 1, median, on the Trainer's device, at the test images'
    size) with ``test/params_edge``, ``test/params_server``, ``test/params_total`` and the
    multiply–accumulates of one image, ``test/gmacs_edge``, ``test/gmacs_server``, ``test/gmacs_total``.
    On a CPU shared with other jobs the absolute ms are unreliable (OpenMP threads stall each other);
    compare pipelines with
    ``benchmarks/code_recognition_table.py``, which times them interleaved in one run.

    Args:
        variant: ``conventional`` (encoder → binarizer → decoder, k iterations of closed-loop residual
            coding → whole ResNet-18) or ``from_layer2`` / ``from_layer3`` / ``from_layer4`` (decoder
            removed: encoder → binarizer → adapter → ResNet-18 from that stage on).
        num_classes: classes of the dataset (100 for ImageNet-100).
        iterations: k, coding iterations sent per image (k·bits/256 bpp). The paper's adapter sizes fit
            k = 1.
        codec_width: channel multiplier of the compressor; must equal the ``width`` of the
            ``RNNCompressor`` checkpoint in ``init_compressor_from``. 0.465 comes closest to the paper's
            parameter counts (see the module docstring).
        codec_cell: recurrent unit of the compressor, ``lstm`` or ``gru``.
        bits: binary channels per 16×16 block and iteration.
        codec_reconstruction: residual update of the conventional decoder, ``additive`` or ``one_shot``.
        adapter_upsample: up-sampling of the code adapter: ``nearest`` (default), ``bilinear`` or
            ``depth_to_space``.
        adapter_blocks: ResNet BasicBlocks in the code adapter (1 reproduces the paper's counts).
        init_compressor_from: ``RNNCompressor`` checkpoint whose encoder and binarizer (and decoder, for
            the conventional variant) initialise the compressor; its decoder is dropped where the variant
            has none. Weights only; any other mismatching key is an error naming it.
        freeze_encoder: keep the encoder and binarizer fixed (no gradient, ``eval()``: sign binarizer).
        freeze_decoder: keep the decoder fixed (conventional variant only).
        reconstruction_weight: weight of the reconstruction term Σ_t mean|x − x̂_t| added to the
            cross-entropy (conventional variant only; 0 disables it).
        pretrained_trunk: start ResNet-18 from torchvision's ``IMAGENET1K_V1`` weights (downloaded on
            first use); the ``fc`` is new whenever ``num_classes`` ≠ 1000.
        optimizer: ``adamw`` or ``sgd`` (Nesterov momentum).
        lr: peak learning rate; cosine decay to 0 over ``trainer.estimated_stepping_batches``.
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay.
        momentum: SGD momentum (ignored by AdamW).
        warmup_steps: linear learning-rate warm-up steps before the cosine decay.
        label_smoothing: cross-entropy label smoothing.
        latency_warmup: untimed batch-1 runs before ``test/ms_per_image``.
        latency_repeats: timed batch-1 runs for ``test/ms_per_image`` (its median); 0 skips the timing.
    """

    def __init__(
        self,
        variant: Variant = "from_layer2",
        num_classes: int = 100,
        iterations: int = 1,
        codec_width: float = 0.465,
        codec_cell: CellType = "lstm",
        bits: int = 32,
        codec_reconstruction: Reconstruction = "additive",
        adapter_upsample: Upsample = "nearest",
        adapter_blocks: int = 1,
        init_compressor_from: str | None = None,
        freeze_encoder: bool = False,
        freeze_decoder: bool = False,
        reconstruction_weight: float = 0.0,
        pretrained_trunk: bool = False,
        optimizer: Literal["adamw", "sgd"] = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        momentum: float = 0.9,
        warmup_steps: int = 0,
        label_smoothing: float = 0.0,
        latency_warmup: int = 5,
        latency_repeats: int = 30,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if variant != "conventional" and (freeze_decoder or reconstruction_weight):
            raise ValueError(f"freeze_decoder and reconstruction_weight need a decoder; variant {variant!r} has none")
        if reconstruction_weight < 0:
            raise ValueError(f"reconstruction_weight must be >= 0, got {reconstruction_weight}")
        self.model = CodeRecognitionNet(
            variant=variant,
            num_classes=num_classes,
            iterations=iterations,
            codec_cell=codec_cell,
            codec_width=codec_width,
            bits=bits,
            reconstruction=codec_reconstruction,
            adapter_upsample=adapter_upsample,
            adapter_blocks=adapter_blocks,
            trunk_weights=ResNet18_Weights.IMAGENET1K_V1 if pretrained_trunk else None,
        )
        self.acc_top1, self.acc_top5 = top_k_accuracies(num_classes)
        self.bytes_per_image = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self.pixels_per_image = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self.payload_bpp = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self.psnr = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        # loaded at the start of a fresh run, never on resume
        self.parent_init = ParentInit(self, init_compressor_from, CodeRecognition.load_compressor)
        self._frozen: list[nn.Module] = []
        if freeze_encoder:
            self._frozen += self.model.edge_modules()
        if freeze_decoder:
            self._frozen.append(self.model.codec.decoder)
        for module in self._frozen:
            module.requires_grad_(False)
            module.eval()
        self._test_size: tuple[int, int] | None = None

    # ----------------------------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        check_class_count(self.hparams.num_classes, self.trainer)

    def configure_callbacks(self) -> list:
        hp = self.hparams
        return [self.parent_init, ResultsRecord(latency_warmup=hp.latency_warmup, latency_repeats=hp.latency_repeats)]

    def results_info(self, stage: str) -> dict[str, Any]:
        """The setting and the split accounting, for :class:`callbacks.results_record.ResultsRecord`."""
        hp = self.hparams
        setting = f"{hp.variant} k={hp.iterations}"
        return {
            "method": "codes",
            "setting": setting,
            "k": hp.iterations,
            "codec": "rnn",
            "split": self.model.split_model(),
        }

    @property
    def init_report(self) -> InitReport | None:
        """What ``init_compressor_from`` loaded (``None`` until a fresh run has started)."""
        return self.parent_init.report

    def load_compressor(self, path: str) -> InitReport:
        """Copy an ``RNNCompressor`` checkpoint's codec into the model (decoder dropped where there is none)."""
        parts = ("codec.encoder.", "codec.binarizer.") + (("codec.decoder.",) if self.model.has_decoder else ())
        return init_weights_from(
            self.model,
            path,
            key_map={p: p for p in parts},
            allow_missing=("classifier.", "adapter.", "trunk."),
            allow_unexpected=() if self.model.has_decoder else ("codec.decoder.",),
        )

    def train(self, mode: bool = True) -> CodeRecognition:
        """Like ``nn.Module.train``, but frozen parts stay in ``eval()`` (BatchNorm statistics, sign binarizer)."""
        super().train(mode)
        for module in getattr(self, "_frozen", ()):
            module.eval()
        return self

    def parameter_counts(self) -> dict[str, int]:
        """Deployed parameters ``{"edge", "server", "total"}``; see :meth:`CodeRecognitionNet.parameter_counts`."""
        return self.model.parameter_counts()

    def ms_per_image(self, size: tuple[int, int] = (224, 224)) -> float:
        """Median ms of the whole pipeline on one random image of ``size``, on this module's device."""
        example = torch.rand(1, 3, *size, device=self.device)
        return measure_ms_per_image(self.model, example, self.hparams.latency_warmup, self.hparams.latency_repeats)

    # ------------------------------------------------------------------------------------ steps
    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    @staticmethod
    def _split(batch: Any) -> tuple[Tensor, Tensor | None]:
        if isinstance(batch, Tensor):
            return batch, None
        return batch[0], (batch[1] if len(batch) > 1 else None)

    def _reconstruction_loss(self, images: Tensor, x_hats: Tensor) -> Tensor:
        """Σ_t mean |x − x̂_t|, the compressor's own training loss (as ``RNNCompressor``)."""
        return (images.unsqueeze(0) - x_hats).abs().mean(dim=(1, 2, 3, 4)).sum()

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images, labels = self._split(batch)
        out = self.model.forward_with_codes(images)
        ce = F.cross_entropy(out["logits"], labels, label_smoothing=self.hparams.label_smoothing)
        loss = ce
        if self.hparams.reconstruction_weight > 0:
            rec = self._reconstruction_loss(images, out["x_hats"])
            loss = ce + self.hparams.reconstruction_weight * rec
            self.log("train/reconstruction", rec, batch_size=images.shape[0])
        self.log("train/ce", ce, batch_size=images.shape[0])
        self.log("train/loss", loss, prog_bar=True, batch_size=images.shape[0])
        return loss

    def _evaluate(self, batch: Any, stage: str) -> None:
        images, labels = self._split(batch)
        out = self.model.forward_with_codes(images)
        log_classification_eval(self, out["logits"], labels, stage)
        sizes = stream_bytes_per_image(out["codes"])[-1].to(images.device, torch.float32)  # each image's k-it. stream
        pixels = images.shape[-2] * images.shape[-1]
        self.bytes_per_image[stage].update(sizes)
        self.pixels_per_image[stage].update(torch.full_like(sizes, pixels))
        self.payload_bpp[stage].update((sizes - HEADER_SIZE) * 8 / pixels)
        if self.model.has_decoder:
            self.psnr[stage].update(psnr(out["x_hats"][-1], images))

    def _log_rate(self, stage: str) -> None:
        bytes_per_image = self.bytes_per_image[stage].compute()
        metrics = {
            f"{stage}/bytes_per_image": bytes_per_image,
            f"{stage}/bpp": bytes_per_image * 8 / self.pixels_per_image[stage].compute(),
            f"{stage}/payload_bpp": self.payload_bpp[stage].compute(),
        }
        if self.model.has_decoder:
            metrics[f"{stage}/psnr"] = self.psnr[stage].compute()
        self.log_dict(metrics)
        for metric in (self.bytes_per_image, self.pixels_per_image, self.payload_bpp, self.psnr):
            metric[stage].reset()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_rate("val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        if self._test_size is None:
            self._test_size = tuple(self._split(batch)[0].shape[-2:])
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_rate("test")
        counts = self.parameter_counts()
        metrics: dict[str, float] = {f"test/params_{k}": float(v) for k, v in counts.items()}
        if self._test_size is not None:
            example = torch.rand(1, 3, *self._test_size, device=self.device)
            macs = self.model.mac_counts(example)
            metrics.update({f"test/gmacs_{k}": v / 1e9 for k, v in macs.items()})
            if self.hparams.latency_repeats > 0:
                metrics["test/ms_per_image"] = self.ms_per_image(self._test_size)
        self.log_dict(metrics)
        self._test_size = None

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        """``{"probs": (B, num_classes) softmax, "labels": (B,) arg-max class}``."""
        images, _ = self._split(batch)
        probs = self.model(images).softmax(dim=1)
        return {"probs": probs, "labels": probs.argmax(dim=1)}

    # -------------------------------------------------------------------------------- optimiser
    def configure_optimizers(self) -> dict:
        params = [p for p in self.parameters() if p.requires_grad]
        hp = self.hparams
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(
                params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay, nesterov=True
            )
        else:
            optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        scheduler = warmup_cosine(optimizer, int(self.trainer.estimated_stepping_batches), hp.warmup_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
