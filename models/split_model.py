"""The split-model contract: what runs on the edge, what runs on the server, and what each side costs.

Every recognition method splits one network in two (``docs/design.md``): an **edge** part (on the device,
up to what is sent), the wire, and a **server** part. :class:`SplitModel` is that contract as a type;
:class:`SplitView` is its one implementation of the accounting, used by every method:

- ``parameter_counts()`` → ``{"edge", "server", "total"}``: the parameters of the edge modules, of the
  rest of the network (server = total − edge), and of the whole network; shared parameters count once.
- ``mac_counts(x)`` → ``{"edge", "server", "total"}``: multiply–accumulates of one forward pass on ``x``
  (:mod:`models.mac_count`), the edge's being those spent inside the edge modules (a recurrent module
  called k times sums over its calls), the server's the rest.
- ``ms_per_image(x)`` → ``{"edge", "server"}``: median milliseconds of each side on a batch-1 ``x``
  (:mod:`models.latency`), the server on what the edge produced; ``None`` where a side cannot run alone.

The wire is not part of either side: a codec is not a network, and its bytes are measured by
:mod:`coding.wire`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from models.latency import measure_ms_per_image
from models.mac_count import macs_by_module


@runtime_checkable
class SplitModel(Protocol):
    """A network cut in two: ``edge`` and ``server`` modules and what they cost."""

    @property
    def edge(self) -> nn.Module: ...

    @property
    def server(self) -> nn.Module: ...

    def parameter_counts(self) -> dict[str, int]: ...

    def mac_counts(self, x: Tensor) -> dict[str, int]: ...


class Part(nn.Module):
    """One side of a split: the modules deployed there (their parameters) and what that side computes.

    Args:
        modules: the modules whose parameters live on this side.
        run: what this side computes, ``run(input) -> output`` (``None``: it cannot run on its own, so it
            is not timed).
        timed: whether its time is reported (``False``: e.g. the pass-through edge of a classical codec,
            whose encoder is not a network; the server behind it is still timed).
    """

    def __init__(
        self, modules: Sequence[nn.Module], run: Callable[[Any], Any] | None = None, timed: bool = True
    ) -> None:
        super().__init__()
        self.deployed = nn.ModuleList(modules)
        self._run = run
        self.timed = timed

    @property
    def runnable(self) -> bool:
        return self._run is not None

    def forward(self, x: Any) -> Any:
        if self._run is None:
            raise RuntimeError("this side of the split does not run on its own")
        return self._run(x)


def _unique_parameter_count(modules: Sequence[nn.Module]) -> int:
    seen: dict[int, int] = {}
    for module in modules:
        for p in module.parameters():
            seen[id(p)] = p.numel()
    return sum(seen.values())


class SplitView:
    """:class:`SplitModel` over any network, given which of its submodules run on the edge.

    Args:
        network: the whole network (every parameter of it is counted; MACs are named relative to it).
        edge: the edge side: its modules (submodules of ``network``) and, to time it, what it computes
            from the input.
        server: the server side's computation from the edge's output, to time it (``None``: not timed).
            Its parameters are all of ``network``'s that are not the edge's.
        run: one forward pass of the whole network on an input (default ``network(x)``), for MACs.
    """

    def __init__(
        self,
        network: nn.Module,
        edge: Part,
        server: Callable[[Any], Any] | None = None,
        run: Callable[[Any], Any] | None = None,
    ) -> None:
        names = {id(m): name for name, m in network.named_modules()}
        missing = [type(m).__name__ for m in edge.deployed if id(m) not in names]
        if missing:
            raise ValueError(f"edge modules {missing} are not submodules of {type(network).__name__}")
        edge_ids = {id(m) for m in edge.deployed}
        self.network = network
        self._edge = edge
        self._edge_names = [names[id(m)] for m in edge.deployed]
        self._server = Part(_complement(network, edge_ids), server)
        self._run = run if run is not None else network

    @property
    def edge(self) -> Part:
        return self._edge

    @property
    def server(self) -> Part:
        return self._server

    def parameter_counts(self) -> dict[str, int]:
        """Parameters ``{"edge", "server", "total"}`` (server = total − edge)."""
        total = _unique_parameter_count([self.network])
        edge = _unique_parameter_count(list(self._edge.deployed))
        return {"edge": edge, "server": total - edge, "total": total}

    def mac_counts(self, x: Any) -> dict[str, int]:
        """Multiply–accumulates of one forward pass on ``x``: ``{"edge", "server", "total"}``."""
        per_module = macs_by_module(self.network, lambda: self._run(x))
        edge = sum(per_module.get(name, 0) for name in self._edge_names)
        return {"edge": edge, "server": per_module[""] - edge, "total": per_module[""]}

    def ms_per_image(self, x: Tensor, warmup: int = 2, repeats: int = 10) -> dict[str, float | None]:
        """Median ms of the edge on the batch-1 ``x`` and of the server on the edge's output (each side in
        ``eval()``; every module's train/eval mode is restored afterwards)."""
        out: dict[str, float | None] = {"edge": None, "server": None}
        if not self._edge.runnable:
            return out
        modes = {m: m.training for m in self.network.modules()}
        try:
            if self._edge.timed:
                out["edge"] = measure_ms_per_image(self._edge, x, warmup, repeats)
            if self._server.runnable:
                with torch.inference_mode():
                    sent = self._edge.eval()(x)
                server = Part(list(self._server.deployed), lambda _: self._server(sent))
                out["server"] = measure_ms_per_image(server, x, warmup, repeats)
        finally:
            for module, mode in modes.items():
                module.training = mode
        return out


def _complement(network: nn.Module, edge_ids: set[int]) -> list[nn.Module]:
    """The largest submodules of ``network`` that hold no edge module (what the server deploys)."""

    def holds_edge(module: nn.Module) -> bool:
        return any(id(m) in edge_ids for m in module.modules())

    out: list[nn.Module] = []
    for child in network.children():
        if id(child) in edge_ids:
            continue
        if holds_edge(child):
            out.extend(_complement(child, edge_ids))
        else:
            out.append(child)
    return out
