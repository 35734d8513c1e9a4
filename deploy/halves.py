"""The edge and server halves of each split method as plain ``nn.Module``s with flat tensor inputs and
outputs, ready for ONNX export. Built from the trained modules' existing parts (nothing is copied or
re-implemented): recurrent steps take and return their states explicitly, so the runtime drives the
iterations and every graph has dynamic batch and image size.

States are flat lists: an LSTM cell contributes ``(h, c)``, a GRU cell ``h``; the encoder's three cells
come first, in order, then the decoder's four. At the first iteration every state is zeros, which
gives exactly what the PyTorch modules compute when they start from ``None`` (the hidden convolutions
have no bias, so a zero state adds exact zeros), and the reconstruction starts at zeros (``0 + d₁ = d₁``).
"""

from __future__ import annotations

from torch import Tensor, nn

from models.rnn_codec import Binarizer, RNNDecoder, RNNEncoder

STATES_PER_CELL = {"lstm": 2, "gru": 1}


def flatten_states(states: list) -> list[Tensor]:
    """Cell states (``(h, c)`` tuples or tensors) → one flat list."""
    flat: list[Tensor] = []
    for state in states:
        flat.extend(state if isinstance(state, tuple) else (state,))
    return flat


def unflatten_states(flat: tuple[Tensor, ...] | list[Tensor], cell: str, cells: int) -> list:
    """Inverse of :func:`flatten_states` for ``cells`` cells of type ``cell``."""
    per = STATES_PER_CELL[cell]
    if len(flat) != per * cells:
        raise ValueError(f"expected {per * cells} state tensors for {cells} {cell} cells, got {len(flat)}")
    if per == 1:
        return list(flat)
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), per)]


ENCODER_CELLS, DECODER_CELLS = 3, 4


def state_names(prefix: str, cell: str, cells: int) -> list[str]:
    """ONNX names of a flat state list, e.g. ``enc1_h, enc1_c, enc2_h, …``."""
    parts = ("h", "c") if cell == "lstm" else ("h",)
    return [f"{prefix}{i + 1}_{p}" for i in range(cells) for p in parts]


class ClosedLoopEdgeStep(nn.Module):
    """One iteration of the recurrent codec's encoding (edge): residual → encoder → binarizer → ±1 codes,
    and the decoder step the residual loop needs. Inputs ``target`` (padded image − 0.5), ``recon``
    (reconstruction so far, zeros at the first iteration), encoder then decoder states; outputs
    ``codes``, the new ``recon`` and the new states."""

    def __init__(self, encoder: RNNEncoder, binarizer: Binarizer, decoder: RNNDecoder, cell: str, additive: bool):
        super().__init__()
        self.encoder, self.binarizer, self.decoder = encoder, binarizer, decoder
        self.cell, self.additive = cell, additive
        self.n_enc = STATES_PER_CELL[cell] * ENCODER_CELLS

    def forward(self, target: Tensor, recon: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        enc = unflatten_states(states[: self.n_enc], self.cell, ENCODER_CELLS)
        dec = unflatten_states(states[self.n_enc :], self.cell, DECODER_CELLS)
        features, enc = self.encoder(target - recon, enc)
        codes = self.binarizer(features)
        out, dec = self.decoder(codes, dec)
        recon = recon + out if self.additive else out
        return (codes, recon, *flatten_states(enc), *flatten_states(dec))


class OpenLoopEdgeStep(nn.Module):
    """One iteration of decoder-removed coding (edge): the same centred image every iteration → encoder →
    binarizer → ±1 codes; inputs ``centred`` and the encoder states, outputs ``codes`` and new states."""

    def __init__(self, encoder: RNNEncoder, binarizer: Binarizer, cell: str):
        super().__init__()
        self.encoder, self.binarizer, self.cell = encoder, binarizer, cell

    def forward(self, centred: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        features, enc = self.encoder(centred, unflatten_states(states, self.cell, ENCODER_CELLS))
        return (self.binarizer(features), *flatten_states(enc))


class DecoderStep(nn.Module):
    """One iteration of the recurrent decoder (server): ``codes``, ``recon`` (zeros at first) and the
    decoder states → the new ``recon`` and states."""

    def __init__(self, decoder: RNNDecoder, cell: str, additive: bool):
        super().__init__()
        self.decoder, self.cell, self.additive = decoder, cell, additive

    def forward(self, codes: Tensor, recon: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        out, dec = self.decoder(codes, unflatten_states(states, self.cell, DECODER_CELLS))
        recon = recon + out if self.additive else out
        return (recon, *flatten_states(dec))


class CodesHead(nn.Module):
    """Server of recognition on codes with the decoder removed: codes (T, B, bits, h, w) → logits
    (:meth:`models.code_classifier.CodeRecognitionNet.classify_codes`)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, codes: Tensor) -> Tensor:
        return self.net.classify_codes(codes)


class FeatureEdge(nn.Module):
    """Shared-trunk edge: images in [0, 1] → ImageNet normalisation → frozen front → features."""

    def __init__(self, normalize: nn.Module, edge: nn.Module):
        super().__init__()
        self.normalize, self.edge = normalize, edge

    def forward(self, images: Tensor) -> Tensor:
        return self.edge(self.normalize(images))


class DetectionEdge(nn.Module):
    """Shared-trunk edge of the SSD224: what the SSD's transform does (normalise, then resize to the
    fixed ``size`` with bilinear interpolation, as ``GeneralizedRCNNTransform``), then the frozen front."""

    def __init__(self, mean: list[float], std: list[float], size: int, edge: nn.Module):
        super().__init__()
        import torch

        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.size, self.edge = size, edge

    def forward(self, images: Tensor) -> Tensor:
        import torch.nn.functional as F

        x = (images - self.mean) / self.std
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.edge(x)


class DetectionHead(nn.Module):
    """Shared-trunk server of the SSD224: sent features → SSD's sources (L2-normalised split map, the
    server's fc7, the extra layers) → SSD head: ``bbox_regression`` (B, N, 4) and ``cls_logits`` (B, N, K)
    (anchor decoding and NMS run in the runtime: :func:`deploy.runtime.ssd_detections`)."""

    def __init__(self, ssd: nn.Module):
        super().__init__()
        self.trunk, self.extra, self.head = ssd.backbone.trunk, ssd.backbone.extra, ssd.head

    def forward(self, sent: Tensor) -> tuple[Tensor, Tensor]:
        maps = [self.trunk.l2norm(sent), self.trunk.server(sent)]
        for block in self.extra:
            maps.append(block(maps[-1]))
        out = self.head(maps)
        return out["bbox_regression"], out["cls_logits"]


class SSDNetwork(nn.Module):
    """A whole torchvision SSD on images in [0, 1] up to its raw outputs: its transform (normalise, resize
    to the fixed ``size``), backbone and head → ``bbox_regression`` and ``cls_logits`` (anchors and NMS run
    in the runtime). The server of decoded-image recognition with a detector."""

    def __init__(self, ssd: nn.Module, size: int):
        super().__init__()
        self.edge = DetectionEdge(ssd.transform.image_mean, ssd.transform.image_std, size, ssd.backbone)
        self.head = ssd.head

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        out = self.head(list(self.edge(images).values()))
        return out["bbox_regression"], out["cls_logits"]
