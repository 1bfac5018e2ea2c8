"""Views of a graph: the networkx DiGraph and the PyG `Data` a GHN reads, with its shortest-path distances."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch
from torch import nn

from ghn.graph import MAX_DISTANCE, OPS, ROLES, build_graph, shortest_paths

torch_geometric = pytest.importorskip("torch_geometric")


@pytest.fixture
def graph(tiny_cnn):
    """input -> stem -> bn(+relu) -> conv -> add(bn, conv) -> mean -> head -> output: a skip connection included."""
    return build_graph(tiny_cnn)


def test_to_networkx_carries_every_node_attribute(graph):
    nxg = graph.to_networkx()
    assert isinstance(nxg, nx.DiGraph)
    assert list(nxg.nodes) == list(range(graph.num_nodes))
    assert sorted(nxg.edges) == sorted(graph.edges)
    for index, node in enumerate(graph.nodes):
        data = nxg.nodes[index]
        assert set(data) == {"op", "op_id", "module", "module_type", "params", "shared", "activation", "shape"}
        assert (data["op"], data["op_id"], data["module"], data["module_type"]) == (
            node.op, OPS.get(node.op).id, node.module, node.module_type,
        )  # fmt: skip
        assert (data["params"], data["shared"], data["activation"]) == (node.params, node.shared, node.activation)
    stem = next(i for i, node in enumerate(graph.nodes) if node.module == "stem")
    assert nxg.nodes[stem]["shape"] == (8, 3, 3, 3)
    assert nxg.nodes[0]["shape"] == (0, 0, 0, 0)
    assert nx.is_directed_acyclic_graph(nxg)


def test_to_pyg_fields_shapes_and_dtypes(graph):
    data = graph.to_pyg()
    n, e = graph.num_nodes, graph.num_edges
    expected = {
        "op": (n,), "activation": (n,), "role": (n,), "shape": (n, 4), "edge_index": (2, e), "pair_index": (2, n * n),
        "spd_forward": (n * n,), "spd_backward": (n * n,), "in_degree": (n,), "out_degree": (n,),
    }  # fmt: skip
    for key, shape in expected.items():
        assert tuple(data[key].shape) == shape, key
        assert data[key].dtype == (torch.uint8 if key.startswith("spd") else torch.long), key
    assert data.num_nodes == n
    assert data.op.tolist() == [node.op_id for node in graph.nodes]
    assert data.edge_index.t().tolist() == [list(edge) for edge in graph.edges]
    assert data.in_degree.tolist() == [sum(d == i for _, d in graph.edges) for i in range(n)]
    assert data.out_degree.tolist() == [sum(s == i for s, _ in graph.edges) for i in range(n)]


def test_to_pyg_encodes_activation_role_and_shape(graph):
    data = graph.to_pyg()
    bn = next(i for i, node in enumerate(graph.nodes) if node.module == "bn")
    head = next(i for i, node in enumerate(graph.nodes) if node.module == "head")
    assert data.activation[bn].item() == OPS.get("relu").id + 1
    assert data.activation[0].item() == 0 and data.role[0].item() == 0
    assert data.role[bn].item() == ROLES.index("norm_scale") + 1
    assert data.role[head].item() == ROLES.index("classifier") + 1
    assert data.shape[head].tolist() == [10, 8, 0, 0]
    assert data.shape[bn].tolist() == [8, 0, 0, 0]


def test_shortest_paths_match_networkx_in_both_directions(graph):
    data, nxg, n = graph.to_pyg(), graph.to_networkx(), graph.num_nodes
    forward = dict(nx.shortest_path_length(nxg))
    backward = dict(nx.shortest_path_length(nxg.reverse()))
    pairs = data.pair_index.t().tolist()
    assert pairs == [[i, j] for i in range(n) for j in range(n)]
    for (i, j), along, against in zip(pairs, data.spd_forward.tolist(), data.spd_backward.tolist()):
        assert along == forward[i].get(j, MAX_DISTANCE), (i, j)
        assert against == backward[i].get(j, MAX_DISTANCE), (i, j)
    assert 0 < (data.spd_forward == MAX_DISTANCE).sum() < n * n  # the graph is directed: some pairs cannot reach


def test_shortest_paths_cap_long_chains_and_handle_no_edges():
    chain = [(i, i + 1) for i in range(299)]
    dist = shortest_paths(300, chain)
    assert dist.dtype == np.uint8
    assert dist[0, 254] == 254 and dist[0, 299] == MAX_DISTANCE and dist[299, 0] == MAX_DISTANCE
    assert shortest_paths(3, []).tolist() == [[0, 255, 255], [255, 0, 255], [255, 255, 0]]


def test_batching_two_graphs_offsets_pair_and_edge_indices(graph, tiny_mlp):
    from torch_geometric.data import Batch

    first, second = graph.to_pyg(), build_graph(tiny_mlp).to_pyg()
    batch = Batch.from_data_list([first, second])
    n1, p1 = first.num_nodes, first.num_nodes**2
    assert batch.num_nodes == n1 + second.num_nodes
    assert torch.equal(batch.pair_index[:, :p1], first.pair_index)
    assert torch.equal(batch.pair_index[:, p1:], second.pair_index + n1)
    assert torch.equal(batch.edge_index[:, first.num_edges :], second.edge_index + n1)
    assert torch.equal(batch.spd_forward, torch.cat([first.spd_forward, second.spd_forward]))
    assert batch.batch.tolist() == [0] * n1 + [1] * second.num_nodes


def test_to_pyg_is_computed_once(graph):
    assert graph.to_pyg() is graph.to_pyg()


def test_to_pyg_op_ids_follow_the_vocabulary():
    graph = build_graph(nn.Sequential(nn.Linear(3, 3)), torch.randn(1, 3))
    assert graph.to_pyg().op.tolist() == [OPS.get("input").id, OPS.get("linear").id, OPS.get("output").id]
