"""`ComputationGraph`: the nodes, edges and parameters of one traced model, and its coverage report.

Shape letters: N nodes, E edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ghn.graph import views
from ghn.graph.draw import draw as draw_graph
from ghn.graph.ops import OPS

if TYPE_CHECKING:
    import networkx as nx
    from torch_geometric.data import Data

__all__ = ["ComputationGraph", "Node", "ParamInfo", "Coverage"]


@dataclass
class ParamInfo:
    """A parameter tensor as the graph sees it.

    Attributes:
        name: the model's `named_parameters()` name (the first one when the tensor is tied).
        shape: the true shape.
        role: one of `ghn.graph.ops.ROLES`.
        layout: 'out_in', 'in_out' (stored transposed, like HF Conv1D) or 'vector'.
        node: index of the node that owns it, or None when no node does.
        uses: indices of every node that reads it (the owner first).
        aliases: other names of the same tensor (tied weights such as GPT-2's `lm_head.weight`).
        trainable: `requires_grad` of the tensor.
        reason: why no node owns it, when none does.
        init_mean, init_std: the model's own init of the tensor (measured, or from `ghn.graph.init_stats`'s
            rules on meta); None when unknown.
        num_blocks: equal blocks stacked along dim 0 that are separate output groups (the gates of a GRU or
            LSTM, a fused q/k/v projection), from the op's `ParamSlot`.
    """

    name: str
    shape: tuple[int, ...]
    role: str = "other"
    layout: str = "vector"
    node: int | None = None
    uses: list[int] = field(default_factory=list)
    aliases: tuple[str, ...] = ()
    trainable: bool = True
    reason: str | None = None
    init_mean: float | None = None
    init_std: float | None = None
    num_blocks: int = 1

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def fan_in(self) -> int:
        """Inputs feeding one output unit, for the layout the op reads the tensor in."""
        return self.fan_in_out[0]

    @property
    def fan_out(self) -> int:
        return self.fan_in_out[1]

    @property
    def fan_in_out(self) -> tuple[int, int]:
        shape = self.shape
        if len(shape) < 2:
            size = shape[0] if shape else 1
            return size, size
        if self.layout == "vector":
            return shape[-1], shape[-1]
        receptive = math.prod(shape[2:])
        rows, cols = shape[0] * receptive, shape[1] * receptive
        return (rows, cols) if self.layout == "in_out" else (cols, rows)

    @property
    def logical_shape(self) -> tuple[int, int, int, int]:
        """(out, in, k1, k2) whatever the storage layout, zero-padded: what a GHN embeds as the node's shape."""
        shape = list(self.shape)
        if self.layout == "in_out" and len(shape) >= 2:
            shape[0], shape[1] = shape[1], shape[0]
        if len(shape) > 4:  # 3-D convs: fold the extra kernel dims into the last one
            shape = shape[:3] + [math.prod(shape[3:])]
        return tuple(shape + [0] * (4 - len(shape)))  # type: ignore[return-value]


@dataclass
class Node:
    """One operation of the graph.

    Attributes:
        op: the op name (a key of `ghn.graph.OPS`).
        module: path of the innermost module that ran it ('' for the model itself).
        module_type: class name of that module.
        params: names of the parameters this node owns, in the op's argument order.
        shared: names of parameters it reads but another node owns (tied weights, a module called twice).
        activation: the activation op applied to its output, if one follows it.
    """

    op: str
    module: str = ""
    module_type: str = ""
    params: list[str] = field(default_factory=list)
    shared: list[str] = field(default_factory=list)
    activation: str | None = None

    @property
    def op_id(self) -> int:
        return OPS.get(self.op).id


@dataclass(frozen=True)
class Coverage:
    """Which trainable parameters a graph's nodes own: everything a GHN can predict."""

    num_owned: int
    num_total: int
    num_owned_tensors: int
    num_total_tensors: int
    missing: dict[str, str]

    @property
    def fraction(self) -> float:
        return self.num_owned / self.num_total if self.num_total else 1.0

    @property
    def is_complete(self) -> bool:
        return not self.missing

    def __str__(self) -> str:
        text = (
            f"{self.num_owned:,}/{self.num_total:,} parameters ({100 * self.fraction:.2f}%) in "
            f"{self.num_owned_tensors}/{self.num_total_tensors} tensors"
        )
        if self.missing:
            text += "; not owned: " + ", ".join(f"{name!r} ({why})" for name, why in self.missing.items())
        return text


@dataclass
class ComputationGraph:
    """A model's computation graph: nodes in execution order, directed edges, and every parameter.

    Build one with `ghn.build_graph(model)`. Views: `to_networkx()`, `to_pyg()`, `draw(path)`.
    """

    nodes: list[Node]
    edges: list[tuple[int, int]]
    params: dict[str, ParamInfo]
    model_type: str = ""
    inputs: str = field(default="", compare=False)
    """The example inputs it was traced with: where they came from and their shapes."""
    input_shapes: tuple[tuple[int, ...], ...] = field(default=(), compare=False)
    """Shapes of the tensors among those inputs, in order."""
    _pyg_cache: Any = field(default=None, repr=False, compare=False)

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    @property
    def num_params(self) -> int:
        """Trainable parameters (tied tensors counted once)."""
        return sum(p.numel for p in self.params.values() if p.trainable)

    def owned_params(self) -> list[ParamInfo]:
        """Parameters a node owns, in node order: exactly what a GHN predicts."""
        return [self.params[name] for node in self.nodes for name in node.params]

    def coverage(self) -> Coverage:
        trainable = [p for p in self.params.values() if p.trainable]
        owned = [p for p in trainable if p.node is not None]
        return Coverage(
            num_owned=sum(p.numel for p in owned),
            num_total=sum(p.numel for p in trainable),
            num_owned_tensors=len(owned),
            num_total_tensors=len(trainable),
            missing={p.name: p.reason or "not owned" for p in trainable if p.node is None},
        )

    def op_histogram(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.nodes:
            counts[node.op] = counts.get(node.op, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def to_networkx(self) -> nx.DiGraph:
        """A `networkx.DiGraph` with every node attribute (op, module, params, activation, ...)."""
        return views.to_networkx(self)

    def to_pyg(self) -> Data:
        """A `torch_geometric.data.Data` for a GHN; computed once and cached (see `ghn.graph.views.to_pyg`)."""
        if self._pyg_cache is None:
            self._pyg_cache = views.to_pyg(self)
        return self._pyg_cache

    def draw(self, path: str, **kwargs: Any) -> None:
        """Draw the graph to a PNG or SVG file (by the file's suffix)."""
        draw_graph(self, path, **kwargs)

    def __repr__(self) -> str:
        return (
            f"ComputationGraph(model={self.model_type!r}, num_nodes={self.num_nodes}, num_edges={self.num_edges}, "
            f"num_params={self.num_params:,})"
        )
