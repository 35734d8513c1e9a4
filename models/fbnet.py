"""FBNet on CIFAR-10 (Ozawa et al., Table 1): the search space, the supernet and the child network.

Network: 3×3 conv 16 (stride 1) + BN + ReLU → 22 searchable layers (TBS), each one of the nine
blocks of :mod:`models.fbnet_blocks` → 1×1 conv 320 + BN + ReLU → global average pool → fc 10.

Strides (the paper's Table 1 contradicts itself: its stride column and its input-shape column imply
different resolutions, and either reading leaves 2×2 or 4×4 maps after only 5–9 layers). We use the
CIFAR MobileNetV2 convention, so the resolution halves three times, never below 4×4:

=====  ========  =======  ==========================  ============
stage  channels  repeats  strides                     input side
=====  ========  =======  ==========================  ============
1      24        1        1                           32
2      32        4        2, 1, 1, 1                  32 → 16
3      64        4        2, 1, 1, 1                  16 → 8
4      96        4        1, 1, 1, 1                  8
5      160       4        2, 1, 1, 1                  8 → 4
6      320       4        1, 1, 1, 1                  4
7      320       1        1                           4
=====  ========  =======  ==========================  ============

Head width. The table writes "1×1 conv, c = 320" and then an fc input of 1280 (MobileNetV2's). We
use c = 320: with 1280 the head alone (320·1280 + 1280·10 weights ≈ 0.42 M) would exceed the 0.19 M
parameters the paper reports for its smallest networks (S1-L35, S2-L35).

Supernet: every layer computes all nine candidates and mixes them with **per-sample** Gumbel-softmax
weights ``(B, L, 9)`` (``F.gumbel_softmax`` on the architecture logits ``theta`` expanded over the
batch, so each image draws its own architecture). Candidates whose weight is zero for the whole batch
(one-hot weights) are not computed.

Architecture file (:func:`write_architecture` / :func:`read_architecture`), one readable line per
layer, ``#`` comments::

    space image=32 stem=16 head=320 classes=10
    layer 0 k3_e6 c_in=16 c_out=24 stride=1 input=32
    layer 1 skip c_in=24 c_out=32 stride=2 input=32
    ...
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.fbnet_blocks import CANDIDATE_NAMES, build_block, conv_bn

# (channels, repeats, stride of the first layer) per stage: the table above
CIFAR10_STAGES: tuple[tuple[int, int, int], ...] = (
    (24, 1, 1),
    (32, 4, 2),
    (64, 4, 2),
    (96, 4, 1),
    (160, 4, 2),
    (320, 4, 1),
    (320, 1, 1),
)


@dataclass(frozen=True)
class LayerSpec:
    """One searchable layer: channels in/out, stride, and the side of its (square) input."""

    c_in: int
    c_out: int
    stride: int
    input_size: int


@dataclass(frozen=True)
class SearchSpace:
    """The fixed stem/head and the searchable layers of a network."""

    image_size: int
    stem_channels: int
    head_channels: int
    num_classes: int
    layers: tuple[LayerSpec, ...]

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def signature(self) -> str:
        """Short hash of the shapes (cost tables are keyed by it)."""
        text = json.dumps([asdict(self), list(CANDIDATE_NAMES)], sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


def scale_channels(channels: int, width: float) -> int:
    """``channels · width`` rounded to an even number ≥ 2 (the group-2 blocks need even counts)."""
    return max(2, int(round(channels * width / 2)) * 2)


def cifar10_space(
    width: float = 1.0,
    stages: Sequence[Sequence[int]] | None = None,
    image_size: int = 32,
    num_classes: int = 10,
    stem_channels: int = 16,
    head_channels: int = 320,
) -> SearchSpace:
    """The search space of the module docstring; ``stages`` (``[channels, repeats, first stride]`` per
    stage) and ``width`` (channel multiplier, also of stem and head) shrink it for tests and demos."""
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    stages = CIFAR10_STAGES if stages is None else stages
    for stage in stages:
        if len(stage) != 3 or stage[0] < 1 or stage[1] < 1 or stage[2] not in (1, 2):
            raise ValueError(f"each stage is [channels >= 1, repeats >= 1, stride 1|2], got {list(stage)}")
    c_in, size, layers = scale_channels(stem_channels, width), image_size, []
    for channels, repeats, stride in stages:
        c_out = scale_channels(channels, width)
        for i in range(repeats):
            s = stride if i == 0 else 1
            layers.append(LayerSpec(c_in, c_out, s, size))
            c_in, size = c_out, (size + s - 1) // s
    if not layers:
        raise ValueError("the search space needs at least one searchable layer")
    return SearchSpace(
        image_size,
        scale_channels(stem_channels, width),
        scale_channels(head_channels, width),
        num_classes,
        tuple(layers),
    )


class _Trunk(nn.Module):
    """Stem, a list of layers, head: shared by the supernet and the child."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space
        self.stem = conv_bn(3, space.stem_channels, 3)
        self.head = conv_bn(space.layers[-1].c_out, space.head_channels, 1)
        self.classifier = nn.Linear(space.head_channels, space.num_classes)

    def classify(self, features: Tensor) -> Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.head(features), 1), 1))


class MixedLayer(nn.Module):
    """The nine candidates of one layer, mixed per sample: ``Σ_c w[b, c] · op_c(x)[b]``."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.ops = nn.ModuleList(build_block(name, spec.c_in, spec.c_out, spec.stride) for name in CANDIDATE_NAMES)

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        active = (weights != 0).any(dim=0)
        out = None
        for c, op in enumerate(self.ops):
            if active[c]:
                y = weights[:, c].view(-1, 1, 1, 1) * op(x)
                out = y if out is None else out + y
        assert out is not None, "every mixing weight is zero"
        return out


class FBNetSupernet(_Trunk):
    """Stem → 22 :class:`MixedLayer` → head; architecture logits ``theta`` (L, 9), zero-initialised
    (uniform), kept apart from the weights (:meth:`weight_parameters`, :meth:`arch_parameters`)."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__(space)
        self.layers = nn.ModuleList(MixedLayer(spec) for spec in space.layers)
        self.theta = nn.Parameter(torch.zeros(space.num_layers, len(CANDIDATE_NAMES)))

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name != "theta"]

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.theta]

    def sample_weights(self, batch_size: int, temperature: float, theta: Tensor | None = None) -> Tensor:
        """Per-sample Gumbel-softmax weights ``(batch_size, L, 9)``: an independent draw per image."""
        theta = self.theta if theta is None else theta
        return F.gumbel_softmax(theta.unsqueeze(0).expand(batch_size, -1, -1), tau=temperature, dim=-1)

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        """Logits for images ``x`` (B, 3, H, W) under mixing weights ``(B, L, 9)`` (or ``(L, 9)`` for all)."""
        if weights.dim() == 2:
            weights = weights.unsqueeze(0).expand(x.shape[0], -1, -1)
        if weights.shape != (x.shape[0], self.space.num_layers, len(CANDIDATE_NAMES)):
            raise ValueError(f"weights must be (B, {self.space.num_layers}, 9), got {tuple(weights.shape)}")
        x = self.stem(x)
        for layer, w in zip(self.layers, weights.unbind(1), strict=True):
            x = layer(x, w)
        return self.classify(x)


class FBNetChildNet(_Trunk):
    """The network of one architecture: stem → the chosen block per layer → head."""

    def __init__(self, space: SearchSpace, architecture: Sequence[str]) -> None:
        super().__init__(space)
        if len(architecture) != space.num_layers:
            raise ValueError(f"the architecture has {len(architecture)} layers, the space {space.num_layers}")
        self.architecture = list(architecture)
        self.layers = nn.Sequential(
            *(build_block(name, s.c_in, s.c_out, s.stride) for name, s in zip(architecture, space.layers, strict=True))
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(self.layers(self.stem(x)))


# ---------------------------------------------------------------------------------- architectures


def architecture_indices(architecture: Sequence[str]) -> list[int]:
    """Candidate indices of block names (an unknown name is an error naming it)."""
    unknown = [name for name in architecture if name not in CANDIDATE_NAMES]
    if unknown:
        raise ValueError(f"unknown block(s) {unknown}; choose from {', '.join(CANDIDATE_NAMES)}")
    return [CANDIDATE_NAMES.index(name) for name in architecture]


def one_hot(architecture: Sequence[str]) -> Tensor:
    """``(L, 9)`` one-hot mixing weights of an architecture."""
    return F.one_hot(torch.tensor(architecture_indices(architecture)), len(CANDIDATE_NAMES)).float()


def argmax_architecture(theta: Tensor) -> list[str]:
    """The most probable block of every layer (argmax over candidate *indices* of ``theta`` (L, 9))."""
    return [CANDIDATE_NAMES[i] for i in theta.detach().argmax(dim=-1).tolist()]


def sample_architectures(theta: Tensor, count: int, generator: torch.Generator | None = None) -> list[list[str]]:
    """``count`` architectures drawn from the categorical distributions ``softmax(theta)`` per layer."""
    if count <= 0:
        return []
    probs = torch.softmax(theta.detach().float().cpu(), dim=-1)
    draws = torch.multinomial(probs, count, replacement=True, generator=generator).T  # (count, L)
    return [[CANDIDATE_NAMES[i] for i in row] for row in draws.tolist()]


def write_architecture(path: str | Path, space: SearchSpace, architecture: Sequence[str], comment: str = "") -> Path:
    """Write the architecture file format of the module docstring."""
    architecture_indices(architecture)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# FBNet child architecture (models/fbnet.py): one line per searchable layer"]
    lines += [f"# {line}" for line in comment.splitlines()]
    lines.append(
        f"space image={space.image_size} stem={space.stem_channels} head={space.head_channels} "
        f"classes={space.num_classes}"
    )
    for i, (name, s) in enumerate(zip(architecture, space.layers, strict=True)):
        lines.append(
            f"layer {i:<2d} {name:<9s} c_in={s.c_in:<4d} c_out={s.c_out:<4d} stride={s.stride} input={s.input_size}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def _key_values(fields: list[str], where: str) -> dict[str, int]:
    try:
        return {key: int(value) for key, value in (f.split("=", 1) for f in fields)}
    except ValueError as err:
        raise ValueError(f"{where}: expected key=integer fields, got {' '.join(fields)!r}") from err


def read_architecture(path: str | Path) -> tuple[SearchSpace, list[str]]:
    """The search space and block names of an architecture file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"architecture file {path} not found (FBNetSearch writes <run>/architecture.txt)")
    space_fields: dict[str, int] | None = None
    layers: list[LayerSpec] = []
    names: list[str] = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].split()
        where = f"{path}:{number}"
        if not line:
            continue
        if line[0] == "space":
            space_fields = _key_values(line[1:], where)
        elif line[0] == "layer" and len(line) >= 3:
            if int(line[1]) != len(layers):
                raise ValueError(f"{where}: layer {line[1]} out of order (expected {len(layers)})")
            kv = _key_values(line[3:], where)
            layers.append(LayerSpec(kv["c_in"], kv["c_out"], kv["stride"], kv["input"]))
            names.append(line[2])
        else:
            raise ValueError(f"{where}: expected 'space ...' or 'layer N BLOCK ...', got {raw!r}")
    if space_fields is None or not layers:
        raise ValueError(f"{path}: needs a 'space' line and at least one 'layer' line")
    architecture_indices(names)
    space = SearchSpace(
        space_fields["image"], space_fields["stem"], space_fields["head"], space_fields["classes"], tuple(layers)
    )
    return space, names
