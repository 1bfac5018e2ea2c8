"""Draw a `ComputationGraph` to PNG or SVG: nodes in topological layers from top to bottom, colored by op kind."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ghn.errors import ConfigError
from ghn.graph.ops import OPS

if TYPE_CHECKING:
    from ghn.graph.graph import ComputationGraph

__all__ = ["draw"]

_COLORS = {
    "input": "#9ecae1",
    "output": "#9ecae1",
    "layer": "#fdae6b",
    "merge": "#a1d99b",
    "node": "#dadaeb",
    "activation": "#fdd0a2",
}
_LABELS_UP_TO = 400  # past this many nodes labels only add ink


def draw(graph: ComputationGraph, path: str | Path, *, title: str | None = None, dpi: int = 120) -> None:
    """Write the graph as an image; the format follows the suffix ('.png' or '.svg')."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import networkx as nx

    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg"):
        raise ConfigError(f"Cannot draw to {str(path)!r}: use a '.png' or '.svg' file name.")
    nxg = graph.to_networkx()
    for layer, nodes in enumerate(nx.topological_generations(nxg)):
        for node in nodes:
            nxg.nodes[node]["layer"] = layer
    positions = nx.multipartite_layout(nxg, subset_key="layer", align="horizontal", scale=1.0)
    positions = {k: (x, -y) for k, (x, y) in positions.items()}  # inputs on top
    num_layers = max(nx.get_node_attributes(nxg, "layer").values()) + 1
    width = max(len(list(g)) for g in nx.topological_generations(nxg))
    fig_w, fig_h = min(4 + 1.6 * width, 60), min(2 + 0.55 * num_layers, 400)
    fig, ax = plt.subplots(figsize=(fig_w, fig_h))
    colors = [_COLORS[OPS.get(data["op"]).kind] for _, data in nxg.nodes(data=True)]
    layer = nx.get_node_attributes(nxg, "layer")
    near = [(u, v) for u, v in nxg.edges if layer[v] - layer[u] == 1]
    skips = [(u, v) for u, v in nxg.edges if layer[v] - layer[u] != 1]
    style = dict(ax=ax, arrows=True, arrowsize=8, width=0.6, edge_color="#666666", node_size=900)
    nx.draw_networkx_edges(nxg, positions, edgelist=near, **style)
    # Skip connections bend, so they do not hide behind the straight chain they bypass.
    nx.draw_networkx_edges(nxg, positions, edgelist=skips, connectionstyle="arc3,rad=0.35", style="dashed", **style)
    nx.draw_networkx_nodes(nxg, positions, ax=ax, node_color=colors, node_size=900, edgecolors="#333333", linewidths=0.5)
    if graph.num_nodes <= _LABELS_UP_TO:
        labels = {k: _label(data) for k, data in nxg.nodes(data=True)}
        nx.draw_networkx_labels(nxg, positions, labels=labels, ax=ax, font_size=7)
    ax.set_title(title or f"{graph.model_type}: {graph.num_nodes} nodes, {graph.num_edges} edges", fontsize=10)
    ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def _label(data: dict) -> str:
    label = data["op"]
    if data["activation"]:
        label += f"\n+{data['activation']}"
    shape = [s for s in data["shape"] if s]
    if shape:
        label += "\n" + "x".join(map(str, shape))
    return label
