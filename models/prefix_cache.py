"""Run a network from an intermediate point, reusing cached values (the bit search's prefix cache).

The network is traced with ``torch.fx`` (decomposed layers as leaves, so their ``bits`` can change between
runs). Its nodes run in topological order; a :class:`Cut` holds, after the first ``position`` nodes,
every value that a later node still needs (for a ResNet that includes the skip branch). Running from a
cut therefore gives exactly the full forward pass, while the nodes before the cut are not recomputed.
``layer_calls`` counts the decomposed-layer forwards actually executed (the search reports it against
re-running the whole network for every candidate).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import fx, nn

from models.bdcnn import BinaryDecomposedLayer


class _LeafTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, BinaryDecomposedLayer) or super().is_leaf_module(m, module_qualified_name)


@dataclass
class Cut:
    """Values live after the first ``position`` nodes."""

    position: int
    env: dict[fx.Node, Any]


class SegmentRunner:
    """Partial forward passes of ``model`` between the calls of its decomposed layers.

    Args:
        model: a network holding decomposed layers (it is traced, not copied: the runner calls its modules).
        layers: names of decomposed layers to cut at; each must be called exactly once per forward pass.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        graph = _LeafTracer().trace(model)
        self.module = fx.GraphModule(model, graph)
        self.nodes = list(graph.nodes)
        index = {node: i for i, node in enumerate(self.nodes)}
        self.decomposed = {n for n, m in model.named_modules() if isinstance(m, BinaryDecomposedLayer)}
        calls: dict[str, list[int]] = {}
        for i, node in enumerate(self.nodes):
            if node.op == "call_module" and node.target in self.decomposed:
                calls.setdefault(str(node.target), []).append(i)
        bad = {name: len(calls.get(name, [])) for name in layers if len(calls.get(name, [])) != 1}
        if bad:
            raise ValueError(f"each searched layer must be called exactly once per forward pass; calls: {bad}")
        self.position = {name: calls[name][0] for name in layers}
        self.order = sorted(layers, key=self.position.__getitem__)
        self.last_use = {node: max((index[u] for u in node.users), default=index[node]) for node in self.nodes}
        self.interpreter = fx.Interpreter(self.module)
        self.layer_calls = 0

    @property
    def layers_per_forward(self) -> int:
        """Decomposed-layer calls in one whole forward pass."""
        return sum(1 for n in self.nodes if n.op == "call_module" and n.target in self.decomposed)

    def start(self, *inputs: Any) -> Cut:
        placeholders = [n for n in self.nodes if n.op == "placeholder"]
        if len(placeholders) != len(inputs):
            raise ValueError(f"the network takes {len(placeholders)} inputs, got {len(inputs)}")
        return Cut(0, dict(zip(placeholders, inputs, strict=True)))

    def run(self, cut: Cut, stop: int | str | None = None) -> Any:
        """Run from ``cut`` up to node ``stop`` (exclusive; a layer name means its call). Returns the
        :class:`Cut` there, or the network's output when ``stop`` is ``None``."""
        stop_at = self.position[stop] if isinstance(stop, str) else stop
        env = dict(cut.env)
        end = len(self.nodes) if stop_at is None else stop_at
        if end < cut.position:
            raise ValueError(f"cannot run backwards from node {cut.position} to {end}")
        self.interpreter.env = env
        for i in range(cut.position, end):
            node = self.nodes[i]
            if node.op == "output":
                args, _ = self.interpreter.fetch_args_kwargs_from_env(node)
                return args[0]
            if node.op == "placeholder":
                continue  # given by start()
            env[node] = self.interpreter.run_node(node)
            if node.op == "call_module" and node.target in self.decomposed:
                self.layer_calls += 1
        live = {node: value for node, value in env.items() if self.last_use[node] >= end}
        return Cut(end, live)
