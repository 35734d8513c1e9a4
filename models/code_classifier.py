"""Image recognition from the recurrent compressor's codes, with or without the decoder.

Reproduces the pipelines compared by Shibata, Ohara and Yamauchi, "画像の圧縮復元認識フレームワークの
軽量化と高速化" (ImageNet-100, ResNet-18, Toderici et al. 2017 recurrent compressor):

* ``"conventional"`` — compressor → decoder → ResNet-18 (their earlier end-to-end method): the real
  closed-loop residual coding of :meth:`RNNCodec.forward` for ``iterations`` steps, the last
  reconstruction clamped to [0, 1], ImageNet mean/std normalisation, the whole ResNet-18.
* ``"from_layer2"`` / ``"from_layer3"`` / ``"from_layer4"`` — decoder removed: encoder → binarizer →
  :class:`~models.code_adapter.CodeAdapter` → ResNet-18 starting at that stage
  (:class:`~models.resnet_trunk.ResNetTrunk`). The paper's "提案手法 (layer1)", "(layer2)", "(layer3)"
  (named there by the last stage removed).

Decoder-removed coding with ``iterations`` = k > 1 is *open loop*: residual coding needs the decoder's
reconstruction, which these pipelines no longer have, so the encoder sees the same centred image at
every iteration and only its recurrent state makes each iteration's ``bits`` new channels differ; the k
iterations' codes are concatenated on channels (k·bits at H/16). For k = 1 this is exactly the first
iteration of the closed-loop codec, so a compressor trained for reconstruction fits unchanged.

Edge / server split (what is deployed where): the edge runs ``codec.encoder`` + ``codec.binarizer``
(:meth:`CodeRecognitionNet.encode`) and sends the ±1 codes; the server runs the rest
(:meth:`CodeRecognitionNet.classify_codes`): decoder + ResNet-18, or adapter + trunk. (With k > 1 the
conventional edge also needs the decoder to form residuals; the accounting follows the paper and
counts the decoder once, on the server.)

Inputs are images in [0, 1] (B, 3, H, W), *not* mean/std normalised; sides that are not multiples of 16
are padded by edge replication inside the codec. The state-dict names of the codec parts are those of
:class:`~models.rnn_codec.RNNCodec` under ``codec.`` (``codec.encoder.*``, ``codec.binarizer.*``,
``codec.decoder.*``), so an ``RNNCompressor`` checkpoint maps onto them one to one.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.models import ResNet18_Weights

from models.code_adapter import CodeAdapter, Upsample
from models.resnet_trunk import TRUNK_INPUT, ResNetTrunk, resnet18_classifier
from models.rnn_codec import (
    STRIDE,
    Binarizer,
    CellType,
    Reconstruction,
    RNNCodec,
    RNNEncoder,
    pad_to_multiple,
)
from models.split_model import Part, SplitView

Variant = Literal["conventional", "from_layer2", "from_layer3", "from_layer4"]
VARIANTS: tuple[str, ...] = ("conventional", "from_layer2", "from_layer3", "from_layer4")
VARIANT_START: dict[str, str] = {"from_layer2": "layer2", "from_layer3": "layer3", "from_layer4": "layer4"}
PAPER_NAMES: dict[str, str] = {
    "conventional": "従来手法",
    "from_layer2": "提案手法 (layer1)",
    "from_layer3": "提案手法 (layer2)",
    "from_layer4": "提案手法 (layer3)",
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNormalize(nn.Module):
    """(x − mean) / std per channel, with ImageNet statistics by default (buffers kept out of the state dict)."""

    def __init__(self, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class CodeEncoder(nn.Module):
    """The edge half of :class:`RNNCodec`: encoder + binarizer, run *open loop* for k iterations.

    Args:
        cell: recurrent unit, ``"lstm"`` or ``"gru"``.
        width: channel multiplier of the codec's layer table.
        bits: binary channels per 16×16 block and iteration.
    """

    def __init__(self, cell: CellType = "lstm", width: float = 1.0, bits: int = 32) -> None:
        super().__init__()
        self.bits = bits
        self.encoder = RNNEncoder(cell, width)
        self.binarizer = Binarizer(self.encoder.out_channels, bits)

    def forward(self, x: Tensor, iterations: int) -> Tensor:
        """±1 codes (T, B, bits, ⌈H/16⌉, ⌈W/16⌉) of images ``x`` in [0, 1]; straight-through in training."""
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        centred = pad_to_multiple(x) - 0.5
        states, codes = None, []
        for _ in range(iterations):
            features, states = self.encoder(centred, states)
            codes.append(self.binarizer(features))
        return torch.stack(codes)


class CodeRecognitionNet(nn.Module):
    """Compressor codes → class logits; one of the four pipelines of the paper (see the module docstring).

    Args:
        variant: ``"conventional"`` (decode, then the whole ResNet-18) or ``"from_layer2"`` /
            ``"from_layer3"`` / ``"from_layer4"`` (decoder removed; adapter into the cut trunk).
        num_classes: output classes (100 for ImageNet-100).
        iterations: k, coding iterations sent (k·bits/256 bits per pixel).
        codec_cell: recurrent unit of the compressor, ``"lstm"`` or ``"gru"``.
        codec_width: channel multiplier of the compressor (must match the checkpoint it is
            initialised from).
        bits: binary channels per iteration (32: 0.125 bpp per iteration).
        reconstruction: residual update of the conventional decoder, ``"additive"`` or ``"one_shot"``.
        adapter_upsample: up-sampling of :class:`CodeAdapter` (decoder-removed variants).
        adapter_blocks: BasicBlocks in the adapter (decoder-removed variants).
        trunk_weights: torchvision weights for ResNet-18 (``None``: random initialisation).
    """

    def __init__(
        self,
        variant: Variant = "from_layer2",
        num_classes: int = 100,
        iterations: int = 1,
        codec_cell: CellType = "lstm",
        codec_width: float = 0.5,
        bits: int = 32,
        reconstruction: Reconstruction = "additive",
        adapter_upsample: Upsample = "nearest",
        adapter_blocks: int = 1,
        trunk_weights: ResNet18_Weights | None = None,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        self.variant, self.iterations, self.bits = variant, iterations, bits
        self.normalize = ImageNormalize()
        if variant == "conventional":
            self.codec = RNNCodec(codec_cell, codec_width, bits, reconstruction)
            self.classifier = resnet18_classifier(num_classes, trunk_weights)
        else:
            self.codec = CodeEncoder(codec_cell, codec_width, bits)
            channels, stride = TRUNK_INPUT[VARIANT_START[variant]]
            self.adapter = CodeAdapter(iterations * bits, channels, STRIDE // stride, adapter_upsample, adapter_blocks)
            self.trunk = ResNetTrunk(VARIANT_START[variant], num_classes, trunk_weights)

    @property
    def has_decoder(self) -> bool:
        return self.variant == "conventional"

    def edge_modules(self) -> list[nn.Module]:
        """What runs on the device: the encoder and the binarizer."""
        return [self.codec.encoder, self.codec.binarizer]

    def server_modules(self) -> list[nn.Module]:
        """What runs on the server: decoder + ResNet-18, or adapter + cut trunk."""
        if self.has_decoder:
            return [self.codec.decoder, self.classifier]
        return [self.adapter, self.trunk]

    def split_model(self) -> SplitView:
        """The edge/server accounting (:mod:`models.split_model`): edge = encoder + binarizer, sending
        :meth:`encode`'s codes; server = the rest, :meth:`classify_codes`."""
        return SplitView(self, Part(self.edge_modules(), self.encode), self.classify_codes)

    def parameter_counts(self) -> dict[str, int]:
        """Parameters of what is deployed: ``{"edge", "server", "total"}`` (the paper's table counts the total)."""
        return self.split_model().parameter_counts()

    def mac_counts(self, images: Tensor) -> dict[str, int]:
        """Multiply–accumulates of one forward pass on ``images``: ``{"edge", "server", "total"}``
        (:mod:`models.mac_count`; the edge is the encoder + binarizer, k iterations)."""
        return self.split_model().mac_counts(images)

    def encode(self, images: Tensor) -> Tensor:
        """Edge: ±1 codes (T, B, bits, ⌈H/16⌉, ⌈W/16⌉) — closed loop (conventional) or open loop."""
        if self.has_decoder:
            return self.codec(images, self.iterations)["codes"]
        return self.codec(images, self.iterations)

    def classify_codes(self, codes: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """Server: logits from received codes (T, B, bits, h, w); ``size`` crops the decoded image."""
        if self.has_decoder:
            x_hat = self.codec.reconstruct(codes, size)[-1]
            return self.classifier(self.normalize(x_hat.clamp(0, 1)))
        t, b = codes.shape[:2]
        return self.trunk(self.adapter(codes.transpose(0, 1).reshape(b, t * codes.shape[2], *codes.shape[-2:])))

    def forward_with_codes(self, images: Tensor) -> dict[str, Tensor]:
        """One pass for training: ``logits``, ``codes`` (T, B, bits, h, w) and, conventional only,
        ``x_hats`` (T, B, 3, H, W), the reconstruction after each iteration."""
        if self.has_decoder:
            out = self.codec(images, self.iterations)
            logits = self.classifier(self.normalize(out["x_hat"].clamp(0, 1)))
            return {"logits": logits, "codes": out["codes"], "x_hats": out["x_hats"]}
        codes = self.codec(images, self.iterations)
        return {"logits": self.classify_codes(codes), "codes": codes}

    def forward(self, images: Tensor) -> Tensor:
        """Images in [0, 1] (B, 3, H, W) → logits (B, num_classes): the whole edge + server pipeline."""
        return self.forward_with_codes(images)["logits"]
