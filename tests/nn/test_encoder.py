"""Graphormer encoder: a batch of graphs of very different sizes encodes exactly as each graph alone (padding and
other graphs never leak in), and attention is biased by shortest-path distances in both edge directions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch_geometric.data import Batch, Data

from ghn.graph import build_graph, shortest_paths
from ghn.nn import GHN, DecoderConfig, EncoderConfig, GHNConfig, GraphormerEncoder


class DeepMLP(nn.Module):
    """`depth` linear layers with GELUs and a residual every other layer: a graph of a few hundred nodes.

    Shapes:
        input: (B, 16)
        output: (B, 4)
    """

    def __init__(self, depth: int = 80) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(16, 16) for _ in range(depth))
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = x + torch.nn.functional.gelu(layer(x)) if index % 2 else layer(x)
        return self.head(x)


@pytest.fixture(scope="module")
def ghn() -> GHN:
    torch.manual_seed(0)
    config = GHNConfig(
        encoder=EncoderConfig(hidden_dim=16, num_heads=2, num_layers=2),
        decoder=DecoderConfig(rank=4, num_index_features=16),
    )
    return GHN(config).eval()


@pytest.fixture(scope="module")
def graphs() -> list:
    tiny = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 5))
    return [
        build_graph(tiny, torch.zeros(1, 16)),
        build_graph(DeepMLP(), torch.zeros(1, 16)),
        build_graph(cnn, torch.zeros(1, 3, 8, 8)),
    ]


def test_graph_sizes_differ_widely(graphs) -> None:
    sizes = [g.num_nodes for g in graphs]
    assert max(sizes) >= 20 * min(sizes)


@torch.no_grad()
def test_batched_encoding_equals_encoding_each_graph_alone(ghn: GHN, graphs) -> None:
    together = ghn.encode(graphs)
    assert [t.shape for t in together] == [(g.num_nodes, 16) for g in graphs]
    for graph, batched in zip(graphs, together):
        torch.testing.assert_close(batched, ghn.encode([graph])[0])


@torch.no_grad()
def test_encoding_does_not_depend_on_batch_order(ghn: GHN, graphs) -> None:
    forward = ghn.encode(graphs)
    backward = ghn.encode(graphs[::-1])[::-1]
    for a, b in zip(forward, backward):
        torch.testing.assert_close(a, b)


@torch.no_grad()
def test_other_graphs_and_padding_never_leak(ghn: GHN, graphs) -> None:
    """Changing every feature of the big graph leaves the small graphs' outputs as they were."""
    batch = Batch.from_data_list([g.to_pyg() for g in graphs])
    x = ghn.embed(batch)
    before = ghn.encoder(x, batch)
    big = batch.batch == 1
    x_changed = x.clone()
    x_changed[big] = torch.randn_like(x_changed[big]) * 100
    after = ghn.encoder(x_changed, batch)
    torch.testing.assert_close(after[~big], before[~big])
    assert not torch.allclose(after[big], before[big])
    assert torch.isfinite(before).all()


def _chain_data(num_nodes: int) -> Data:
    """A path 0 -> 1 -> ... -> n-1 with the fields `GraphormerEncoder.attention_bias` reads."""
    edges = [(i, i + 1) for i in range(num_nodes - 1)]
    dist = shortest_paths(num_nodes, edges)
    rows, cols = np.meshgrid(np.arange(num_nodes), np.arange(num_nodes), indexing="ij")
    return Data(
        pair_index=torch.from_numpy(np.stack([rows.ravel(), cols.ravel()])).long(),
        spd_forward=torch.from_numpy(dist.ravel().copy()),
        spd_backward=torch.from_numpy(dist.T.ravel().copy()),
        num_nodes=num_nodes,
    )


def test_shortest_paths_follow_edge_direction() -> None:
    dist = shortest_paths(4, [(0, 1), (1, 2), (2, 3)])
    assert dist[0].tolist() == [0, 1, 2, 3]
    assert dist[3].tolist() == [255, 255, 255, 0]  # unreachable against the edges


@torch.no_grad()
def test_attention_bias_comes_from_shortest_paths_in_both_directions() -> None:
    max_distance, heads = 2, 2
    encoder = GraphormerEncoder(EncoderConfig(hidden_dim=4, num_heads=heads, num_layers=1, max_distance=max_distance))
    buckets = max_distance + 2
    forward = torch.arange(buckets, dtype=torch.float32)[:, None] * 10 + torch.arange(heads)  # (buckets, H)
    backward = torch.arange(buckets, dtype=torch.float32)[:, None] * 1000
    encoder.spd_forward.weight.copy_(forward)
    encoder.spd_backward.weight.copy_(backward)
    batch = Batch.from_data_list([_chain_data(5), _chain_data(2)])
    mask = torch.tensor([[True] * 5, [True] * 2 + [False] * 3])  # (G, M): real nodes
    bias = encoder.attention_bias(batch, batch.batch, 2, 5, mask)  # (G, H, M, M)
    assert bias.shape == (2, heads, 5, 5)
    far = max_distance + 1  # distances above max_distance and unreachable pairs share one bucket
    for i in range(5):
        for j in range(5):
            d_forward = j - i if j >= i else 255
            d_backward = i - j if i >= j else 255
            expected = forward[min(d_forward, far)] + backward[min(d_backward, far)]
            torch.testing.assert_close(bias[0, :, i, j], expected)
    # the second graph: its own distances, and padded keys masked out for every query
    torch.testing.assert_close(bias[1, :, 0, 1], forward[1] + backward[far])
    torch.testing.assert_close(bias[1, :, 1, 0], forward[far] + backward[1])
    assert torch.isneginf(bias[1, :, :, 2:]).all()
    assert torch.isfinite(bias[1, :, :, :2]).all() and torch.isfinite(bias[0]).all()


@torch.no_grad()
def test_edge_direction_changes_the_encoding(ghn: GHN) -> None:
    """Same nodes, reversed edges: the distance bias makes the encoder see a different graph."""
    graph = build_graph(nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)), torch.zeros(1, 16))
    data = graph.to_pyg()
    reversed_data = data.clone()
    reversed_data.spd_forward, reversed_data.spd_backward = data.spd_backward, data.spd_forward
    x = ghn.embed(data)
    assert not torch.allclose(ghn.encoder(x, data), ghn.encoder(x, reversed_data))
