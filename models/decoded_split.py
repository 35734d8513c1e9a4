"""Recognition on decoded images as a split model: edge = the recurrent encoder, server = decoder + recogniser.

The edge codes each image for ``iterations`` k (closed loop: :meth:`RNNCodec.forward`) and sends the ±1
codes; the server reconstructs the image from them and runs the recogniser (a classifier on images in
[0, 1], or an SSD). The accounting (:class:`models.split_model.SplitView`) follows the recurrent
compressor papers and ``models.code_classifier``: the edge's parameters and MACs are those of the encoder
and the binarizer; the decoder counts once, on the server — although with k > 1 the edge also runs it to
form the residuals (its time, :meth:`SplitView.ms_per_image`, does include that).

With a classical codec, or with original images, nothing learned runs on the edge: :func:`image_split`
gives a split whose edge is empty (0 parameters, 0 MACs) and whose server is the recogniser.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from models.rnn_codec import RNNCodec
from models.split_model import Part, SplitView


class DecodedImageSplit(nn.Module):
    """Images in [0, 1] → codec (k iterations) → decoded image clamped to [0, 1] → recogniser.

    Built on demand around a LightningModule's own codec and recogniser (not stored in it: that would
    register every weight twice).
    """

    def __init__(self, codec: RNNCodec, iterations: int, recogniser: nn.Module) -> None:
        super().__init__()
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        self.codec, self.iterations, self.recogniser = codec, iterations, recogniser

    def encode(self, images: Tensor) -> Tensor:
        """Edge: the ±1 codes (T, B, bits, h, w) of ``images``."""
        return self.codec(images, self.iterations)["codes"]

    def recognise_codes(self, codes: Tensor) -> Any:
        """Server: reconstruct from ``codes`` and recognise."""
        return self.recogniser(self.codec.reconstruct(codes)[-1].clamp(0, 1))

    def forward(self, images: Tensor) -> Any:
        return self.recogniser(self.codec(images, self.iterations)["x_hat"].clamp(0, 1))

    def split_model(self) -> SplitView:
        return SplitView(self, Part([self.codec.encoder, self.codec.binarizer], self.encode), self.recognise_codes)


class _Server(nn.Module):
    def __init__(self, recogniser: nn.Module) -> None:
        super().__init__()
        self.recogniser = recogniser

    def forward(self, images: Tensor) -> Any:
        return self.recogniser(images)


def image_split(recogniser: nn.Module) -> SplitView:
    """The split of a recogniser fed with images sent by a non-learned codec: empty edge, whole server."""
    network = _Server(recogniser)
    return SplitView(network, Part([], lambda images: images, timed=False), network)
