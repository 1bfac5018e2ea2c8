"""Drawing a graph to PNG and SVG files."""

from __future__ import annotations

import random
import sys

import pytest
import torch
from torch import nn

from ghn.errors import ConfigError, MissingDependencyError
from ghn.graph import build_graph
from ghn.graph import draw as draw_module
from ghn.graph.draw import Layout, layered_layout

pytest.importorskip("matplotlib")


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(x)))


@pytest.fixture(scope="module")
def graph():
    """16 residual blocks of three nodes each, plus input and output: 50 nodes with skip connections."""
    graph = build_graph(nn.Sequential(*[Residual() for _ in range(16)]), torch.randn(1, 8))
    assert graph.num_nodes == 50
    return graph


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_draw_writes_a_non_empty_file(graph, tmp_path, suffix):
    path = tmp_path / "nested" / f"graph{suffix}"
    graph.draw(path)
    data = path.read_bytes()
    assert len(data) > 1000
    assert data.startswith(b"\x89PNG") if suffix == ".png" else b"<svg" in data[:1000]


def test_draw_accepts_a_title_and_a_string_path(graph, tmp_path):
    path = tmp_path / "titled.svg"
    graph.draw(str(path), title="my title")
    assert b"my title" in path.read_bytes()


@pytest.mark.parametrize("name", ["graph.jpg", "graph", "graph.png.txt"])
def test_draw_rejects_other_suffixes(graph, tmp_path, name):
    with pytest.raises(ConfigError, match=r"use a '\.png' or '\.svg' file name"):
        graph.draw(tmp_path / name)
    assert not (tmp_path / name).exists()


class DownsamplingBlock(nn.Module):
    """A ResNet basic block that halves the resolution: a 1x1-conv shortcut beside a two-conv main branch."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False), nn.BatchNorm2d(out_channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class IdentityBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = (
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))


@pytest.fixture(scope="module")
def resnet_graph():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        IdentityBlock(8),
        DownsamplingBlock(8, 16),
        DownsamplingBlock(16, 32),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    return build_graph(model, torch.randn(1, 3, 16, 16))


def _segments(graph, layout: Layout) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """The straight pieces drawn for the graph's edges, bend points (dummy nodes) included."""
    segments = []
    for u, v in graph.to_networkx().edges:
        route = layout.route(u, v)
        segments.extend(zip(route, route[1:], strict=False))
    return segments


def _count_crossings(segments) -> int:
    """Pairs of pieces between the same two layers whose end points come in opposite x orders.

    Each piece is ((x_top, x_bottom), (y_top, y_bottom)); pieces sharing an end point do not cross.
    """
    count = 0
    for i, (xs, ys) in enumerate(segments):
        for other_xs, other_ys in segments[i + 1 :]:
            if ys == other_ys and (xs[0] - other_xs[0]) * (xs[1] - other_xs[1]) < 0:
                count += 1
    return count


def _normalized(segments):
    """((x_top, x_bottom), (y_top, y_bottom)) per piece, the form `_count_crossings` compares."""
    return [((top[0], bottom[0]), (top[1], bottom[1])) for top, bottom in segments]


def test_crossing_counter_counts_a_crossed_pair_and_ignores_shared_ends():
    crossed = [((0.0, 1.0), (0.0, -1.0)), ((1.0, 0.0), (0.0, -1.0))]
    fork = [((0.0, 0.0), (0.0, -1.0)), ((0.0, 1.0), (0.0, -1.0))]
    apart = [((0.0, 1.0), (0.0, -1.0)), ((1.0, 0.0), (-1.0, -2.0))]  # different layers never cross
    assert _count_crossings(crossed) == 1
    assert _count_crossings(fork) == 0
    assert _count_crossings(apart) == 0


def test_layered_layout_of_a_downsampling_resnet_reads_top_to_bottom(resnet_graph):
    layout = layered_layout(resnet_graph, use_graphviz=False)
    assert set(layout.positions) == set(resnet_graph.to_networkx().nodes)
    for u, v in resnet_graph.to_networkx().edges:
        ys = [y for _, y in layout.route(u, v)]
        assert all(a - b == 1 for a, b in zip(ys, ys[1:], strict=False)), (
            f"edge {u}->{v} does not step down one layer at a time"
        )


def test_layered_layout_of_a_downsampling_resnet_has_no_crossings(resnet_graph):
    layout = layered_layout(resnet_graph, use_graphviz=False)
    assert any(layout.bends.values()), "the shortcuts should be long edges with bend points"
    assert _count_crossings(_normalized(_segments(resnet_graph, layout))) == 0


def test_swapping_the_shortcut_and_main_branch_is_counted_as_crossings(resnet_graph):
    layout = layered_layout(resnet_graph, use_graphviz=False)
    nxg = resnet_graph.to_networkx()
    fork = next(n for n in nxg.nodes if nxg.out_degree(n) == 2 and nxg.nodes[n]["op"] == "add")
    left, right = sorted(nxg.successors(fork), key=lambda n: layout.positions[n][0])
    positions = dict(layout.positions)
    positions[left], positions[right] = layout.positions[right], layout.positions[left]
    swapped = Layout(positions=positions, bends=layout.bends)
    assert _count_crossings(_normalized(_segments(resnet_graph, swapped))) > 0


def test_layered_layout_of_a_chain_is_a_vertical_line():
    graph = build_graph(
        nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2)), torch.randn(1, 4)
    )
    layout = layered_layout(graph, use_graphviz=False)
    xs = {x for x, _ in layout.positions.values()}
    ys = sorted((y for _, y in layout.positions.values()), reverse=True)
    assert len(xs) == 1
    assert ys == [-float(i) for i in range(graph.num_nodes)]
    assert layout.bends == {}


def test_layered_layout_falls_back_to_networkx_without_graphviz(resnet_graph, monkeypatch):
    """With pydot and pygraphviz unimportable (as if absent even where installed), the default is the networkx layout."""
    monkeypatch.setitem(sys.modules, "pydot", None)
    monkeypatch.setitem(sys.modules, "pygraphviz", None)
    assert layered_layout(resnet_graph) == layered_layout(resnet_graph, use_graphviz=False)
    with pytest.raises(MissingDependencyError, match=r"pass use_graphviz=False"):
        layered_layout(resnet_graph, use_graphviz=True)


def test_layered_layout_uses_graphviz_when_available(resnet_graph, monkeypatch):
    """Graphviz points become layout units with the first rank on top; use_graphviz=False still forces networkx."""

    def fake_dot(nxg, prog):
        assert prog == "dot"
        return {node: (72.0 * (node % 2), 720.0 - 36.0 * node) for node in nxg.nodes}

    monkeypatch.setattr(draw_module, "_graphviz_layout_fn", lambda: fake_dot)
    layout = layered_layout(resnet_graph)
    assert layout.bends == {}
    assert layout.positions[0] == (0.0, 0.0) and layout.positions[1] == (1.0, -1.0)
    assert layered_layout(resnet_graph, use_graphviz=False).bends != {}


def test_draw_renders_the_layered_layout(resnet_graph, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pydot", None)
    monkeypatch.setitem(sys.modules, "pygraphviz", None)
    path = tmp_path / "resnet.png"
    resnet_graph.draw(path)
    assert path.read_bytes().startswith(b"\x89PNG")


def test_barycenter_sweeps_undo_a_shuffled_start(resnet_graph, monkeypatch):
    """The crossings go away by the sweeps, not by the depth-first start order happening to be right."""
    split = draw_module._split_long_edges

    def shuffled_split(nxg, layer):
        proper, layers = split(nxg, layer)
        rng = random.Random(0)
        return proper, [rng.sample(nodes, len(nodes)) for nodes in layers]

    monkeypatch.setattr(draw_module, "_split_long_edges", shuffled_split)
    layout = layered_layout(resnet_graph, use_graphviz=False)
    assert _count_crossings(_normalized(_segments(resnet_graph, layout))) == 0
