"""Training the recurrent image compressor (Toderici et al., CVPR 2017) as a LightningModule."""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor
from torchmetrics import MeanMetric

from callbacks.rate_distortion import rate_distortion_rows
from callbacks.results_record import ResultsRecord
from coding.image_quality import ms_ssim, psnr
from coding.rnn_bitstream import compress, decompress, stream_bytes_per_image
from lightning_modules.checkpoint_init import ParentInit, init_weights_from
from models.decoded_split import DecodedImageSplit
from models.rnn_codec import RNNCodec


class RNNCompressor(L.LightningModule):
    """Recurrent residual image compressor.

    Training: random patches, loss = Σ_t mean |x - x̂_t| (the L1 norm of the residual after every
    iteration, summed over the ``iterations`` steps, as in the paper). Validation: whole images coded
    once with the eval (sign) binarizer; per iteration ``k`` it logs ``val/bpp_it{k}``, ``val/psnr_it{k}``
    and ``val/ms_ssim_it{k}`` (means over images), and at the last iteration ``val/bpp``, ``val/psnr``,
    ``val/ms_ssim``, ``val/bytes_per_image`` and ``val/compression_ratio`` (raw uint8 RGB bytes over
    stream bytes, summed over the images). Every rate is that of each image's own real stream of the
    first k iterations — what ``coding.rnn_bitstream.compress(codec, image, k)`` writes, header counted
    once per image — from :func:`coding.rnn_bitstream.stream_bytes_per_image` on the validation codes.

    Args:
        cell: recurrent unit, ``lstm`` or ``gru``.
        width: channel multiplier of the codec (1.0 = the paper's network).
        bits: binary channels per 16×16 block and iteration (32 → 0.125 bpp per iteration).
        reconstruction: ``additive`` (γ = 1) or ``one_shot`` (γ = 0).
        iterations: coding iterations T in training and evaluation (16 in the paper: 2 bpp).
        lr: Adam learning rate.
        lr_milestones: optimizer steps at which the learning rate is multiplied by ``lr_gamma``.
        lr_gamma: learning-rate decay factor at each milestone.
        init_from: fine-tune from this ``RNNCompressor`` checkpoint (weights only; a new run).
        skip_zero_state, compile_gates, small_map_gemm, channels_last, autocast_bf16: the codec's speed switches
            (:class:`models.rnn_codec.RNNCodec`; ``benchmarks/rnn_codec_throughput.py`` measures each).
    """

    def __init__(
        self,
        cell: Literal["lstm", "gru"] = "lstm",
        width: float = 1.0,
        bits: int = 32,
        reconstruction: Literal["additive", "one_shot"] = "additive",
        iterations: int = 16,
        lr: float = 5e-4,
        lr_milestones: list[int] | None = None,
        lr_gamma: float = 0.5,
        init_from: str | None = None,
        skip_zero_state: bool = False,
        compile_gates: bool = False,
        small_map_gemm: bool = False,
        channels_last: bool = False,
        autocast_bf16: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.codec = RNNCodec(
            cell=cell, width=width, bits=bits, reconstruction=reconstruction, skip_zero_state=skip_zero_state,
            compile_gates=compile_gates, small_map_gemm=small_map_gemm, channels_last=channels_last,
            autocast_bf16=autocast_bf16,
        )  # fmt: skip
        self.iterations = iterations
        self.val_psnr = torch.nn.ModuleList(MeanMetric() for _ in range(iterations))
        self.val_ms_ssim = torch.nn.ModuleList(MeanMetric() for _ in range(iterations))
        self.val_bpp = torch.nn.ModuleList(MeanMetric() for _ in range(iterations))
        self.val_bytes = MeanMetric()
        self.val_pixels = MeanMetric()
        self.parent_init = ParentInit(  # loaded at the start of a fresh run, never on resume
            self, init_from, partial(init_weights_from, key_map={"codec.": "codec."}, allow_missing=("val_",))
        )

    def configure_callbacks(self) -> list:
        return [self.parent_init, ResultsRecord(latency_warmup=1, latency_repeats=3)]  # full images: few timed runs

    def results_info(self, stage: str) -> dict[str, Any]:
        """The setting, the rate–distortion curve and the split accounting (edge: encoder + binarizer,
        server: decoder), for :class:`callbacks.results_record.ResultsRecord`."""
        curve = rate_distortion_rows(self.trainer.callback_metrics, stage, "rnn")
        split = DecodedImageSplit(self.codec, self.iterations, torch.nn.Identity()).split_model()
        return {
            "method": "rate_distortion",
            "setting": f"rnn T={self.iterations}",
            "k": self.iterations,
            "codec": "rnn",
            "split": split,
            "details": {"curve": curve},
        }

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.codec(x, self.iterations)

    def residual_l1(self, x: Tensor, x_hats: Tensor) -> Tensor:
        """Σ_t mean |x - x̂_t| over the iterations (the paper's training loss)."""
        return (x.unsqueeze(0) - x_hats).abs().mean(dim=(1, 2, 3, 4)).sum()

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        out = self.codec(batch, self.iterations)
        loss = self.residual_l1(batch, out["x_hats"])
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/l1_last", (batch - out["x_hat"]).abs().mean())
        return loss

    def _evaluate(self, batch: tuple[Tensor, list[str]], stage: str) -> dict[str, Tensor]:
        x, _ = batch
        out = self.codec(x, self.iterations)  # in eval: the sign codes that compress() would write
        sizes = stream_bytes_per_image(out["codes"]).to(x.device, torch.float32)  # (T, B), each image's own stream
        pixels = x.shape[-2] * x.shape[-1]
        for k in range(self.iterations):
            self.val_psnr[k].update(psnr(out["x_hats"][k], x))
            self.val_ms_ssim[k].update(ms_ssim(out["x_hats"][k], x))
            self.val_bpp[k].update(sizes[k] * 8 / pixels)
        self.val_bytes.update(sizes[-1])
        self.val_pixels.update(torch.full_like(sizes[-1], pixels))
        self.log(f"{stage}/loss", self.residual_l1(x, out["x_hats"]), batch_size=x.shape[0], sync_dist=True)
        return {"x": x, "x_hats": out["x_hats"]}

    def _log_epoch(self, stage: str) -> None:
        metrics: dict[str, Tensor | float] = {}
        for k in range(self.iterations):
            metrics[f"{stage}/bpp_it{k + 1}"] = self.val_bpp[k].compute()
            metrics[f"{stage}/psnr_it{k + 1}"] = self.val_psnr[k].compute()
            metrics[f"{stage}/ms_ssim_it{k + 1}"] = self.val_ms_ssim[k].compute()
        bytes_per_image, pixels = self.val_bytes.compute(), self.val_pixels.compute()
        metrics[f"{stage}/bytes_per_image"] = bytes_per_image
        metrics[f"{stage}/bpp"] = metrics[f"{stage}/bpp_it{self.iterations}"]
        metrics[f"{stage}/compression_ratio"] = pixels * 3 / bytes_per_image
        metrics[f"{stage}/psnr"] = metrics[f"{stage}/psnr_it{self.iterations}"]
        metrics[f"{stage}/ms_ssim"] = metrics[f"{stage}/ms_ssim_it{self.iterations}"]
        self.log_dict(metrics)
        for metric in (*self.val_psnr, *self.val_ms_ssim, *self.val_bpp, self.val_bytes, self.val_pixels):
            metric.reset()

    def validation_step(self, batch: tuple[Tensor, list[str]], batch_idx: int) -> dict[str, Tensor]:
        return self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def test_step(self, batch: tuple[Tensor, list[str]], batch_idx: int) -> dict[str, Tensor]:
        return self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def predict_step(self, batch: tuple[Tensor, list[str]], batch_idx: int) -> dict:
        """The real bitstream of the batch and its decoded reconstruction."""
        x, names = batch
        stream = compress(self.codec, x, self.iterations)
        return {"names": list(names), "bitstream": stream, "x_hat": decompress(self.codec, stream)}

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        if not self.hparams.lr_milestones:
            return optimizer
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=self.hparams.lr_milestones, gamma=self.hparams.lr_gamma
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
