"""Adapter from the compressor's binary codes to the input of a cut ResNet-18 trunk.

The paper (Shibata, Ohara, Yamauchi) adds "a convolution layer that samples the spatial information of
the compressed features" so that the codes can enter ResNet-18 after its first stages, but gives no
layer table. Our choice, which reproduces the *differences* between the paper's parameter counts
exactly:

    codes (k·bits × H/16) → upsample ×r → conv 3×3 (k·bits → C, no bias) → BN → ReLU
                          → ``blocks`` × ResNet BasicBlock(C)                            → C × H·r/16

with ``(C, r)`` = (64, 4) for a trunk starting at layer2, (128, 2) at layer3, (256, 1) at layer4.
With the default ``"nearest"`` up-sampling (parameter-free) and one block the adapter has
``9·k·bits·C + 2C + 18C² + 4C`` parameters: for k = 1, bits = 32 that is 92,544 / 332,544 /
1,254,912. The paper's rows differ by 240,000 (layer1 → layer2 removed) and 922,368 (layer2 → layer3
removed) once the removed ResNet stages are added back — exactly 332,544 − 92,544 and
1,254,912 − 332,544. (Other designs, e.g. a depth-to-space convolution alone, do not fit those
differences; ``upsample="depth_to_space"`` is offered for comparison: a 3×3 convolution to
``C·r²`` channels at the code resolution followed by a pixel shuffle.)
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

Upsample = Literal["nearest", "bilinear", "depth_to_space"]


class CodeAdapter(nn.Module):
    """±1 codes of k iterations (k·bits channels at H/16) → the trunk's input (``out_channels`` at H/16·``scale``).

    Args:
        in_channels: code channels, ``iterations × bits`` (32 per iteration by default).
        out_channels: channels the trunk expects (64, 128 or 256 for ResNet-18's layer2/3/4).
        scale: spatial up-sampling factor (4, 2 or 1 from the codes' H/16 to H/4, H/8, H/16).
        upsample: ``"nearest"`` or ``"bilinear"`` (interpolate, then a 3×3 convolution), or
            ``"depth_to_space"`` (3×3 convolution to ``out_channels·scale²`` at the code resolution,
            then a pixel shuffle).
        blocks: ResNet BasicBlocks (``out_channels`` wide) after the first convolution; 0 for none.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scale: int,
        upsample: Upsample = "nearest",
        blocks: int = 1,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channels must be positive, got in={in_channels}, out={out_channels}")
        if scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        if upsample not in ("nearest", "bilinear", "depth_to_space"):
            raise ValueError(f"upsample must be 'nearest', 'bilinear' or 'depth_to_space', got {upsample!r}")
        if blocks < 0:
            raise ValueError(f"blocks must be >= 0, got {blocks}")
        self.in_channels, self.out_channels, self.scale, self.upsample = in_channels, out_channels, scale, upsample
        conv_out = out_channels * scale**2 if upsample == "depth_to_space" else out_channels
        self.conv = nn.Conv2d(in_channels, conv_out, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.blocks = nn.Sequential(*(BasicBlock(out_channels, out_channels) for _ in range(blocks)))

    def forward(self, codes: Tensor) -> Tensor:
        if codes.ndim != 4 or codes.shape[1] != self.in_channels:
            raise ValueError(f"CodeAdapter expects codes (B, {self.in_channels}, h, w), got {tuple(codes.shape)}")
        x = codes
        if self.upsample == "depth_to_space":
            x = self.conv(x)
            if self.scale > 1:
                x = F.pixel_shuffle(x, self.scale)
        else:
            if self.scale > 1:
                kwargs = {"align_corners": False} if self.upsample == "bilinear" else {}
                x = F.interpolate(x, scale_factor=self.scale, mode=self.upsample, **kwargs)
            x = self.conv(x)
        return self.blocks(self.relu(self.bn(x)))


def code_adapter_parameter_count(
    in_channels: int, out_channels: int, scale: int, upsample: Upsample = "nearest", blocks: int = 1
) -> int:
    """Parameters of :class:`CodeAdapter` from its formula alone (no module is built)."""
    c = out_channels
    conv = 9 * in_channels * c * (scale**2 if upsample == "depth_to_space" else 1)
    return conv + 2 * c + blocks * (18 * c * c + 4 * c)
