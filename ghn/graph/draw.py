"""Draw a `ComputationGraph` to PNG or SVG: nodes in layers from top to bottom, colored by op kind.

Layout: Graphviz `dot` when it is installed, else a layered (Sugiyama) layout: Sugiyama, Tagawa and Toda, "Methods for
Visual Understanding of Hierarchical System Structures", IEEE Trans. SMC 1981, https://doi.org/10.1109/TSMC.1981.4308636.
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ghn._logging import get_logger
from ghn.errors import ConfigError, MissingDependencyError
from ghn.graph.ops import OPS

if TYPE_CHECKING:
    import networkx as nx

    from ghn.graph.graph import ComputationGraph

__all__ = ["Layout", "draw", "layered_layout"]

logger = get_logger(__name__)

_COLORS = {
    "input": "#9ecae1",
    "output": "#9ecae1",
    "layer": "#fdae6b",
    "merge": "#a1d99b",
    "node": "#dadaeb",
    "activation": "#fdd0a2",
}
_LABELS_UP_TO = 400  # past this many nodes labels only add ink
_NODE_SIZE = 900
_NUM_SWEEPS = 8  # barycenter ordering rarely improves after a few down-and-up sweeps
_NUM_PLACEMENT_SWEEPS = 2
# Pull on an x coordinate by the kind of edge, as Graphviz `dot` does: bend points of one long edge line up the most.
_WEIGHTS = {(False, False): 1.0, (False, True): 2.0, (True, False): 2.0, (True, True): 8.0}
_POINTS_PER_UNIT = 72.0  # Graphviz coordinates are in points; one layout unit is one inch


@dataclass(frozen=True)
class Layout:
    """Where `draw` puts each node, top to bottom: y falls by one per layer from the inputs to the output.

    Attributes:
        positions: Node id -> (x, y).
        bends: Edge (u, v) -> the points a long edge passes through, one per layer it crosses (empty for the Graphviz
            layout, whose long edges are drawn straight).
    """

    positions: dict[int, tuple[float, float]]
    bends: dict[tuple[int, int], tuple[tuple[float, float], ...]]

    def route(self, u: int, v: int) -> list[tuple[float, float]]:
        """The polyline drawn for edge (u, v): its end points with its bend points between."""
        return [self.positions[u], *self.bends.get((u, v), ()), self.positions[v]]


@dataclass(frozen=True)
class _Bend:
    """A dummy node: the `index`-th point on the long edge (u, v)."""

    u: int
    v: int
    index: int


def layered_layout(graph: ComputationGraph, *, use_graphviz: bool | None = None) -> Layout:
    """Positions that read top to bottom with few edge crossings (none for chains and ResNet-style blocks).

    Args:
        graph: The graph to lay out.
        use_graphviz: True: Graphviz `dot` (through 'pygraphviz', or 'pydot' and the `dot` binary); False: the
            networkx layered layout; None: Graphviz when installed, else networkx.

    Returns:
        A `Layout`, whose nodes are those of `graph.to_networkx()`.

    Raises:
        MissingDependencyError: `use_graphviz=True` and Graphviz is not installed.
    """
    nxg = graph.to_networkx()
    layout_fn = _graphviz_layout_fn() if use_graphviz is not False else None
    if use_graphviz and layout_fn is None:
        raise MissingDependencyError(
            "The Graphviz layout needs 'pygraphviz', or 'pydot' and the 'dot' binary, and neither works here. Install "
            "them with: pip install 'ghn[graphviz]' and your system's 'graphviz' package, or pass use_graphviz=False."
        )
    if layout_fn is not None:
        logger.debug("Laying out %d nodes with Graphviz dot.", nxg.number_of_nodes())
        return Layout(positions=_normalize_graphviz(layout_fn(nxg, prog="dot")), bends={})
    return _sugiyama_layout(nxg)


def _graphviz_layout_fn():
    """networkx's Graphviz layout function for whichever binding works here, or None."""
    import networkx as nx

    if _importable("pygraphviz"):
        return nx.nx_agraph.graphviz_layout
    if _importable("pydot") and shutil.which("dot"):
        return nx.nx_pydot.graphviz_layout
    return None


def _importable(module_name: str) -> bool:
    try:
        importlib.import_module(module_name)
    except ImportError:
        return False
    return True


def _normalize_graphviz(positions: dict[int, tuple[float, float]]) -> dict[int, tuple[float, float]]:
    """Graphviz points -> layout units, with ranks at y = 0, -1, -2, ... (Graphviz puts the first rank highest)."""
    levels = sorted({y for _, y in positions.values()}, reverse=True)
    rank = {y: i for i, y in enumerate(levels)}
    return {node: (x / _POINTS_PER_UNIT, -float(rank[y])) for node, (x, y) in positions.items()}


def _sugiyama_layout(nxg: nx.DiGraph) -> Layout:
    """Layers by longest path, dummy nodes on long edges, barycenter ordering, then x by least squares."""
    proper, layers = _split_long_edges(nxg, _assign_layers(nxg))
    layers = _order_layers(proper, layers)
    xs = _assign_x(proper, layers)
    ys = {node: -float(i) for i, layer in enumerate(layers) for node in layer}
    positions = {node: (xs[node], ys[node]) for node in nxg.nodes}
    bends: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for node in proper.nodes:
        if isinstance(node, _Bend):
            bends.setdefault((node.u, node.v), []).append((node.index, (xs[node], ys[node])))
    return Layout(positions=positions, bends={edge: tuple(p for _, p in sorted(pts)) for edge, pts in bends.items()})


def _assign_layers(nxg: nx.DiGraph) -> dict[Hashable, int]:
    """Longest path from the inputs; extra sources (constants, second inputs) then sit just above their first use."""
    import networkx as nx

    layer = {node: i for i, nodes in enumerate(nx.topological_generations(nxg)) for node in nodes}
    for node in nxg.nodes:
        if nxg.in_degree(node) == 0 and nxg.out_degree(node) > 0:
            layer[node] = min(layer[s] for s in nxg.successors(node)) - 1
    return layer


def _split_long_edges(nxg: nx.DiGraph, layer: dict[Hashable, int]) -> tuple[nx.DiGraph, list[list[Hashable]]]:
    """The graph with a `_Bend` on every layer a long edge crosses, so each edge joins adjacent layers.

    Returns:
        The new graph, and its nodes by layer in depth-first order (the start for the crossing reduction).
    """
    import networkx as nx

    proper = nx.DiGraph()
    proper.add_nodes_from(nxg.nodes)
    for u, v in nxg.edges:
        chain = [u, *(_Bend(u, v, k) for k in range(layer[v] - layer[u] - 1)), v]
        nx.add_path(proper, chain)
    for node in proper.nodes:
        if isinstance(node, _Bend):
            layer[node] = layer[node.u] + node.index + 1
    layers: list[list[Hashable]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    sources = [node for node in proper.nodes if proper.in_degree(node) == 0]
    seen = set()
    for source in sources:
        for node in nx.dfs_preorder_nodes(proper, source):
            if node not in seen:
                seen.add(node)
                layers[layer[node]].append(node)
    return proper, layers


def _order_layers(proper: nx.DiGraph, layers: list[list[Hashable]]) -> list[list[Hashable]]:
    """Barycenter sweeps down (by predecessors) and up (by successors); keeps the order with the fewest crossings."""
    best, best_crossings = [list(layer) for layer in layers], _count_crossings(proper, layers)
    for _ in range(_NUM_SWEEPS):
        if best_crossings == 0:
            break
        for i in range(1, len(layers)):
            layers[i] = _barycenter_sort(layers[i], layers[i - 1], proper.predecessors)
        for i in range(len(layers) - 2, -1, -1):
            layers[i] = _barycenter_sort(layers[i], layers[i + 1], proper.successors)
        crossings = _count_crossings(proper, layers)
        if crossings < best_crossings:
            best, best_crossings = [list(layer) for layer in layers], crossings
    logger.debug("Ordered %d layers with %d edge crossings.", len(best), best_crossings)
    return best


def _barycenter_sort(layer: list[Hashable], fixed: list[Hashable], neighbors) -> list[Hashable]:
    """`layer` sorted by the mean rank of each node's neighbors in `fixed`; a node without any keeps its rank."""
    rank = {node: i for i, node in enumerate(fixed)}

    def key(item: tuple[int, Hashable]) -> tuple[float, int]:
        i, node = item
        ranks = [rank[n] for n in neighbors(node) if n in rank]
        return (sum(ranks) / len(ranks) if ranks else float(i), i)

    return [node for _, node in sorted(enumerate(layer), key=key)]


def _count_crossings(proper: nx.DiGraph, layers: list[list[Hashable]]) -> int:
    """Pairs of edges between adjacent layers whose end points come in opposite orders."""
    total = 0
    for upper, lower in zip(layers, layers[1:], strict=False):
        rank = {node: i for i, node in enumerate(lower)}
        edges = sorted((i, rank[v]) for i, u in enumerate(upper) for v in proper.successors(u))
        total += _count_inversions([j for _, j in edges])
    return total


def _count_inversions(values: list[int]) -> int:
    """Pairs i < j with values[i] > values[j]."""
    import bisect

    seen: list[int] = []
    count = 0
    for value in values:
        count += len(seen) - bisect.bisect_right(seen, value)
        bisect.insort(seen, value)
    return count


def _assign_x(proper: nx.DiGraph, layers: list[list[Hashable]]) -> dict[Hashable, float]:
    """x near the weighted mean of each node's neighbors in the layer above (down sweeps) or below (up sweeps), one
    unit apart and in the given order within a layer; ending on a down sweep keeps chains straight under their parent.
    """
    x = {node: i - (len(layer) - 1) / 2 for layer in layers for i, node in enumerate(layer)}
    down = [(i, proper.predecessors) for i in range(1, len(layers))]
    up = [(i, proper.successors) for i in range(len(layers) - 2, -1, -1)]
    for i, neighbors in (down + up) * _NUM_PLACEMENT_SWEEPS + down:
        desired = [_pull(node, neighbors(node), x) for node in layers[i]]
        x.update(zip(layers[i], _closest_spaced(desired), strict=True))
    return x


def _pull(node: Hashable, neighbors: Iterable[Hashable], x: dict[Hashable, float]) -> float:
    """Weighted mean x of `neighbors`, or the node's own x if there are none."""
    neighbors = list(neighbors)
    if not neighbors:
        return x[node]
    weights = [_WEIGHTS[isinstance(node, _Bend), isinstance(n, _Bend)] for n in neighbors]
    return sum(w * x[n] for w, n in zip(weights, neighbors, strict=True)) / sum(weights)


def _closest_spaced(desired: list[float]) -> list[float]:
    """The least-squares closest x to `desired` with x[i + 1] >= x[i] + 1, by pool-adjacent-violators.

    Subtracting i turns the spacing into plain non-decreasing order, which is isotonic regression.
    """
    blocks: list[tuple[float, int]] = []  # (mean of the shifted values, how many)
    for i, value in enumerate(desired):
        blocks.append((value - i, 1))
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (mean_b, num_b), (mean_a, num_a) = blocks.pop(), blocks.pop()
            blocks.append(((mean_a * num_a + mean_b * num_b) / (num_a + num_b), num_a + num_b))
    shifted = [mean for mean, num in blocks for _ in range(num)]
    return [value + i for i, value in enumerate(shifted)]


def draw(graph: ComputationGraph, path: str | Path, *, title: str | None = None, dpi: int = 120) -> None:
    """Write the graph as an image; the format follows the suffix ('.png' or '.svg').

    Nodes are placed by `layered_layout`: Graphviz `dot` when installed, else the networkx layered layout.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import networkx as nx

    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg"):
        raise ConfigError(f"Cannot draw to {str(path)!r}: use a '.png' or '.svg' file name.")
    nxg = graph.to_networkx()
    layout = layered_layout(graph)
    xs, ys = zip(*layout.positions.values(), strict=True)
    fig_w, fig_h = min(4 + 1.6 * (max(xs) - min(xs) + 1), 60), min(2 + 0.55 * (max(ys) - min(ys) + 1), 400)
    fig, ax = plt.subplots(figsize=(fig_w, fig_h))
    _draw_edges(ax, nxg.edges, layout)
    colors = [_COLORS[OPS.get(data["op"]).kind] for _, data in nxg.nodes(data=True)]
    nx.draw_networkx_nodes(
        nxg, layout.positions, ax=ax, node_color=colors, node_size=_NODE_SIZE, edgecolors="#333333", linewidths=0.5
    )
    if graph.num_nodes <= _LABELS_UP_TO:
        labels = {k: _label(data) for k, data in nxg.nodes(data=True)}
        nx.draw_networkx_labels(nxg, layout.positions, labels=labels, ax=ax, font_size=7)
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)  # networkx pads for arrow patches far more than nodes need
    ax.set_ylim(min(ys) - 0.6, max(ys) + 0.6)
    ax.set_title(title or f"{graph.model_type}: {graph.num_nodes} nodes, {graph.num_edges} edges", fontsize=10)
    ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def _draw_edges(ax, edges: Iterable[tuple[int, int]], layout: Layout) -> None:
    """Each edge as a polyline through its bend points, with an arrow on its last piece; long edges dashed."""
    import networkx as nx

    pieces = nx.DiGraph()  # nodes: graph nodes and bend points (u, v, k), each piece joining adjacent layers
    positions: dict[Hashable, tuple[float, float]] = dict(layout.positions)
    for u, v in edges:
        bends = [(u, v, k) for k in range(len(layout.bends.get((u, v), ())))]
        positions.update(zip(bends, layout.bends.get((u, v), ()), strict=True))
        is_long = abs(layout.positions[u][1] - layout.positions[v][1]) > 1.5
        nx.add_path(pieces, [u, *bends, v], style="dashed" if is_long else "solid")
    nodelist = list(pieces.nodes)
    sizes = [_NODE_SIZE if node in layout.positions else 0 for node in nodelist]  # arrows stop at nodes, not bends
    common = dict(nodelist=nodelist, node_size=sizes, ax=ax, width=0.6, edge_color="#666666")
    for style in ("solid", "dashed"):
        for into_node in (True, False):
            edgelist = [
                (a, b)
                for a, b, data in pieces.edges(data=True)
                if data["style"] == style and (b in layout.positions) == into_node
            ]
            arrows = dict(arrows=True, arrowsize=8) if into_node else dict(arrows=False)
            nx.draw_networkx_edges(pieces, positions, edgelist=edgelist, style=style, **arrows, **common)


def _label(data: dict) -> str:
    label = data["op"]
    if data["activation"]:
        label += f"\n+{data['activation']}"
    shape = [s for s in data["shape"] if s]
    if shape:
        label += "\n" + "x".join(map(str, shape))
    return label
