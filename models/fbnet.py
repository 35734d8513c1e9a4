"""FBNet on CIFAR-10 (Ozawa et al., Table 1): the search space, the supernet and the child network.

Network (layout ``table1``, the default): 3×3 conv 16 (stride 1) + BN + ReLU → 22 searchable layers
(TBS), each one of the nine blocks of :mod:`models.fbnet_blocks` → 1×1 conv 320 → dropout 0.2 → flatten
→ fc 10.

Table 1's Input Shape column is the resolution each stage works at after its first stride; read so, it
agrees with the stride column:

=====  ========  =======  ==========================  ====================
stage  channels  repeats  strides                     resolution (input →)
=====  ========  =======  ==========================  ====================
1      24        1        1                           32 → 32
2      32        4        2, 1, 1, 1                  32 → 16
3      64        4        2, 1, 1, 1                  16 → 8
4      96        4        2, 1, 1, 1                  8 → 4
5      160       4        1, 1, 1, 1                  4
6      320       4        2, 1, 1, 1                  4 → 2
7      320       1        1                           2
head   1×1 conv 320 at 2²; fc on the flattened 2×2×320 map = the table's "1² × 1280"; 10 classes
=====  ========  =======  ==========================  ====================

The head is the first author's public code's (``conv_k1`` = ``nn.Conv2d(c, 320, 1)`` with bias and no
BatchNorm/ReLU, ``nn.Dropout(0.2)``, flatten, ``nn.Linear(1280, 10)``); no global pooling. The all-skip
network then has 193,290 parameters (0.19 M, the paper's smallest networks S1-L35 and S2-L35).

Layout ``cifar_mobilenetv2`` (a named alternative, this module's reading before): the CIFAR
MobileNetV2 strides (1; 2; 2; 1; 2; 1; 1: the resolution halves three times, to 4×4) and a pooled head
(1×1 conv 320 + BN + ReLU → global average pool → fc 320 → 10, no dropout).

Supernet: every layer computes all nine candidates and mixes them with **per-sample** Gumbel-softmax
weights ``(B, L, 9)`` (``F.gumbel_softmax`` on the architecture logits ``theta`` expanded over the
batch, so each image draws its own architecture). Candidates whose weight is zero for the whole batch
(one-hot weights) are not computed.

Architecture file (:func:`write_architecture` / :func:`read_architecture`), one readable line per
layer, ``#`` comments::

    space image=32 stem=16 head=320 classes=10 pool=0 dropout=0.2
    layer 0 k3_e6 c_in=16 c_out=24 stride=1 input=32
    layer 1 skip c_in=24 c_out=32 stride=2 input=32
    ...

(``pool=1``: the pooled head; a file without ``pool``/``dropout`` predates them and is pooled without
dropout.) Every reader checks what it reads before any model is built (:func:`validate_space`): each
error names the file and the line.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.fbnet_blocks import CANDIDATE_NAMES, build_block, conv_bn

# (channels, repeats, stride of the first layer) per stage: Table 1 (the table above)
TABLE1_STAGES: tuple[tuple[int, int, int], ...] = (
    (24, 1, 1),
    (32, 4, 2),
    (64, 4, 2),
    (96, 4, 2),
    (160, 4, 1),
    (320, 4, 2),
    (320, 1, 1),
)
# the named alternative: CIFAR MobileNetV2 strides (never below 4×4), used with the pooled head
CIFAR_MOBILENETV2_STAGES: tuple[tuple[int, int, int], ...] = (
    (24, 1, 1),
    (32, 4, 2),
    (64, 4, 2),
    (96, 4, 1),
    (160, 4, 2),
    (320, 4, 1),
    (320, 1, 1),
)
Layout = Literal["table1", "cifar_mobilenetv2"]
# layout → (stages, pooled head, dropout before the fc)
LAYOUTS: dict[str, tuple[tuple[tuple[int, int, int], ...], bool, float]] = {
    "table1": (TABLE1_STAGES, False, 0.2),
    "cifar_mobilenetv2": (CIFAR_MOBILENETV2_STAGES, True, 0.0),
}
CIFAR10_STAGES = TABLE1_STAGES
# sizes beyond these are refused before anything is built (a typo like head=2000000000 would try to
# allocate tens of GB)
MAX_CHANNELS = 8192
MAX_IMAGE_SIZE = 4096
MAX_CLASSES = 100_000
MAX_PARAMETERS = 500_000_000


@dataclass(frozen=True)
class LayerSpec:
    """One searchable layer: channels in/out, stride, and the side of its (square) input."""

    c_in: int
    c_out: int
    stride: int
    input_size: int

    @property
    def output_size(self) -> int:
        return (self.input_size + self.stride - 1) // self.stride


@dataclass(frozen=True)
class SearchSpace:
    """The fixed stem/head and the searchable layers of a network.

    ``head_pool``: global average pooling before the fc (layout ``cifar_mobilenetv2``) or the map
    flattened into it (``table1``); ``dropout``: dropout probability before the fc.
    """

    image_size: int
    stem_channels: int
    head_channels: int
    num_classes: int
    layers: tuple[LayerSpec, ...]
    head_pool: bool = False
    dropout: float = 0.2

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def head_input_size(self) -> int:
        """Side of the map the head sees (the last layer's output)."""
        return self.layers[-1].output_size

    @property
    def fc_inputs(self) -> int:
        """Inputs of the fc: ``head`` (pooled) or ``head · side²`` (flattened; Table 1: 320·2·2 = 1280)."""
        return self.head_channels * (1 if self.head_pool else self.head_input_size**2)

    def signature(self) -> str:
        """Short hash of the shapes (cost tables are keyed by it)."""
        text = json.dumps([asdict(self), list(CANDIDATE_NAMES)], sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


def _estimated_parameters(space: SearchSpace) -> int:
    """An upper bound of the child's parameters (the k5_e6 block in every layer), for the size check."""
    total = (
        27 * space.stem_channels
        + space.head_channels * (space.layers[-1].c_out + 1)
        + space.fc_inputs * (space.num_classes + 1)
    )
    for s in space.layers:
        mid = 6 * s.c_in
        total += s.c_in * mid + 25 * mid + mid * s.c_out
    return total


def validate_space(space: SearchSpace, where: str = "search space") -> None:
    """Refuse a space that cannot be built or would not run, before any model exists: positive sizes
    within bounds, strides 1|2, even channel counts (group-2 blocks), each layer's input = the previous
    layer's output (channels and side), the first layer fed by the stem at the image size, and an
    estimated size under :data:`MAX_PARAMETERS`. ``where`` (e.g. ``file:line``) prefixes every error."""
    checks = [("image", space.image_size, MAX_IMAGE_SIZE), ("stem", space.stem_channels, MAX_CHANNELS),
              ("head", space.head_channels, MAX_CHANNELS), ("classes", space.num_classes, MAX_CLASSES)]  # fmt: skip
    for name, value, limit in checks:
        if not 1 <= value <= limit:
            raise ValueError(f"{where}: {name}={value} is outside [1, {limit}]")
    if not 0.0 <= space.dropout < 1.0:
        raise ValueError(f"{where}: dropout={space.dropout} is outside [0, 1)")
    if not space.layers:
        raise ValueError(f"{where}: the search space needs at least one searchable layer")
    c_prev, side_prev = space.stem_channels, space.image_size
    for i, s in enumerate(space.layers):
        for name, value in (("c_in", s.c_in), ("c_out", s.c_out)):
            if not 2 <= value <= MAX_CHANNELS or value % 2:
                raise ValueError(f"{where}: layer {i} {name}={value} must be even and in [2, {MAX_CHANNELS}] "
                                 "(the group-2 blocks split the channels in two)")  # fmt: skip
        if s.stride not in (1, 2):
            raise ValueError(f"{where}: layer {i} stride={s.stride} must be 1 or 2")
        if s.c_in != c_prev:
            feeder = "the stem" if i == 0 else f"layer {i - 1}"
            raise ValueError(f"{where}: layer {i} c_in={s.c_in} but {feeder} gives {c_prev} channels")
        if s.input_size != side_prev:
            feeder = "the image" if i == 0 else f"layer {i - 1}"
            raise ValueError(f"{where}: layer {i} input={s.input_size} but {feeder} gives {side_prev}×{side_prev}")
        c_prev, side_prev = s.c_out, s.output_size
    estimate = _estimated_parameters(space)
    if estimate > MAX_PARAMETERS:
        raise ValueError(f"{where}: the network would have up to {estimate:,} parameters (> {MAX_PARAMETERS:,}); "
                         "check the channel counts and sizes")  # fmt: skip


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
    layout: Layout = "table1",
) -> SearchSpace:
    """The search space of the module docstring (``layout``: ``table1`` or ``cifar_mobilenetv2``);
    ``stages`` (``[channels, repeats, first stride]`` per stage; ``None``: the layout's) and ``width``
    (channel multiplier, also of stem and head) shrink it for tests and demos."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    layout_stages, head_pool, dropout = LAYOUTS[layout]
    stages = layout_stages if stages is None else stages
    for stage in stages:
        if len(stage) != 3 or stage[0] < 1 or stage[1] < 1 or stage[2] not in (1, 2):
            raise ValueError(f"each stage is [channels >= 1, repeats >= 1, stride 1|2], got {list(stage)}")
    c_in, size, layers = scale_channels(stem_channels, width), image_size, []
    for channels, repeats, stride in stages:
        c_out = scale_channels(channels, width)
        for i in range(repeats):
            spec = LayerSpec(c_in, c_out, stride if i == 0 else 1, size)
            layers.append(spec)
            c_in, size = c_out, spec.output_size
    if not layers:
        raise ValueError("the search space needs at least one searchable layer")
    space = SearchSpace(
        image_size,
        scale_channels(stem_channels, width),
        scale_channels(head_channels, width),
        num_classes,
        tuple(layers),
        head_pool,
        dropout,
    )
    validate_space(space)
    return space


def build_stem(space: SearchSpace) -> nn.Sequential:
    """3×3 conv (stride 1) + BN + ReLU."""
    return conv_bn(3, space.stem_channels, 3)


def build_head(space: SearchSpace) -> nn.Sequential:
    """Everything after the last searchable layer, ending in the logits.

    Flattened (Table 1, the first author's code): ``Conv2d(c, head, 1)`` (bias, no BN/ReLU) → Dropout →
    Flatten → ``Linear(head · side², classes)``. Pooled (``cifar_mobilenetv2``): 1×1 conv + BN + ReLU →
    global average pool → Flatten → (Dropout) → ``Linear(head, classes)``.
    """
    c_last = space.layers[-1].c_out
    if space.head_pool:
        parts: list[nn.Module] = [conv_bn(c_last, space.head_channels, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if space.dropout > 0:
            parts.append(nn.Dropout(space.dropout))
    else:
        parts = [nn.Conv2d(c_last, space.head_channels, 1), nn.Dropout(space.dropout), nn.Flatten()]
    parts.append(nn.Linear(space.fc_inputs, space.num_classes))
    return nn.Sequential(*parts)


class _Trunk(nn.Module):
    """Stem, a list of layers, head: shared by the supernet and the child."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        validate_space(space)
        self.space = space
        self.stem = build_stem(space)
        self.head = build_head(space)

    def classify(self, features: Tensor) -> Tensor:
        return self.head(features)


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
        f"classes={space.num_classes} pool={int(space.head_pool)} dropout={space.dropout:g}"
    )
    for i, (name, s) in enumerate(zip(architecture, space.layers, strict=True)):
        lines.append(
            f"layer {i:<2d} {name:<9s} c_in={s.c_in:<4d} c_out={s.c_out:<4d} stride={s.stride} input={s.input_size}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


SPACE_KEYS = ("image", "stem", "head", "classes")
LAYER_KEYS = ("c_in", "c_out", "stride", "input")


def _key_values(
    fields: list[str], required: Sequence[str], where: str, floats: Sequence[str] = (), optional: Sequence[str] = ()
) -> dict:
    """``key=value`` fields: integers (``floats`` keys: numbers); every ``required`` key present, no other
    than ``required`` and ``optional``."""
    out: dict[str, float | int] = {}
    for field in fields:
        key, eq, value = field.partition("=")
        if not eq or not key:
            raise ValueError(f"{where}: expected key=value, got {field!r}")
        if key in out:
            raise ValueError(f"{where}: key {key!r} given twice")
        try:
            out[key] = float(value) if key in floats else int(value)
        except ValueError:
            kind = "a number" if key in floats else "an integer"
            raise ValueError(f"{where}: {key}={value!r} is not {kind}") from None
    missing = [k for k in required if k not in out]
    if missing:
        raise ValueError(f"{where}: missing key(s) {', '.join(missing)} (a line needs {' '.join(required)})")
    unknown = [k for k in out if k not in required and k not in optional]
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")
    return out


def _read_text(path: Path) -> str:
    """The file as UTF-8 text; a binary or undecodable file is an error naming the file and line."""
    data = path.read_bytes()
    bad = data.find(b"\0")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        bad = err.start if bad < 0 else min(bad, err.start)
    else:
        if bad < 0:
            return text
    line = data.count(b"\n", 0, bad) + 1
    raise ValueError(f"{path}:{line}: not an architecture file (binary or non-UTF-8 content at byte {bad})")


def read_architecture(path: str | Path) -> tuple[SearchSpace, list[str]]:
    """The search space and block names of an architecture file, validated (:func:`validate_space`)
    before anything is built; every error names the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"architecture file {path} not found (FBNetSearch writes <run>/architecture.txt)")
    space_fields: dict | None = None
    space_line = 0
    layers: list[LayerSpec] = []
    names: list[str] = []
    lines: list[int] = []
    for number, raw in enumerate(_read_text(path).splitlines(), 1):
        line = raw.split("#", 1)[0].split()
        where = f"{path}:{number}"
        if not line:
            continue
        if line[0] == "space":
            if space_fields is not None:
                raise ValueError(f"{where}: a second 'space' line (the first is line {space_line})")
            space_fields = _key_values(line[1:], SPACE_KEYS, where, ("dropout",), ("pool", "dropout"))
            space_line = number
        elif line[0] == "layer" and len(line) >= 3:
            try:
                index = int(line[1])
            except ValueError:
                raise ValueError(f"{where}: layer index {line[1]!r} is not an integer") from None
            if index != len(layers):
                raise ValueError(f"{where}: layer {line[1]} out of order (expected {len(layers)})")
            if line[2] not in CANDIDATE_NAMES:
                raise ValueError(f"{where}: unknown block {line[2]!r}; choose from {', '.join(CANDIDATE_NAMES)}")
            kv = _key_values(line[3:], LAYER_KEYS, where)
            layers.append(LayerSpec(kv["c_in"], kv["c_out"], kv["stride"], kv["input"]))
            names.append(line[2])
            lines.append(number)
        else:
            raise ValueError(f"{where}: expected 'space ...' or 'layer N BLOCK ...', got {raw.strip()!r}")
    if space_fields is None or not layers:
        raise ValueError(f"{path}: needs a 'space' line and at least one 'layer' line")
    pool = space_fields.get(
        "pool", 1 if "dropout" not in space_fields else 0
    )  # no pool/dropout: the older, pooled format
    if pool not in (0, 1):
        raise ValueError(f"{path}:{space_line}: pool={pool} must be 0 or 1")
    space = SearchSpace(
        space_fields["image"], space_fields["stem"], space_fields["head"], space_fields["classes"], tuple(layers),
        bool(pool), float(space_fields.get("dropout", 0.0)),
    )  # fmt: skip
    try:
        validate_space(space, f"{path}:{space_line}")
    except ValueError as err:
        # point at the layer line when the problem is a layer's
        message = str(err)
        if (m := re.search(r": layer (\d+) ", message)) is not None:
            message = message.replace(f"{path}:{space_line}", f"{path}:{lines[int(m[1])]}", 1)
        raise ValueError(message) from None
    return space, names
