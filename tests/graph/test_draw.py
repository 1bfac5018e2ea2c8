"""Drawing a graph to PNG and SVG files."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ghn.errors import ConfigError
from ghn.graph import build_graph

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
