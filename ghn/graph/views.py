"""Views of a `ComputationGraph`: a networkx DiGraph, and the PyG `Data` a GHN encodes.

Shape letters: N nodes, E edges, P node pairs (N * N).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ghn.graph.ops import OPS, role_id

if TYPE_CHECKING:
    import networkx as nx
    from torch_geometric.data import Data

    from ghn.graph.graph import ComputationGraph

__all__ = ["to_networkx", "to_pyg", "shortest_paths", "longest_path_depth", "MAX_DISTANCE"]

#: Distances are stored as uint8; unreachable pairs get this value.
MAX_DISTANCE = 255


def to_networkx(graph: ComputationGraph) -> nx.DiGraph:
    """A `networkx.DiGraph` whose nodes carry op, op_id, module, module_type, params, shared, activation."""
    import networkx as nx

    out = nx.DiGraph()
    for index, node in enumerate(graph.nodes):
        out.add_node(
            index,
            op=node.op,
            op_id=node.op_id,
            module=node.module,
            module_type=node.module_type,
            params=list(node.params),
            shared=list(node.shared),
            activation=node.activation,
            shape=_primary(graph, index).logical_shape if node.params else (0, 0, 0, 0),
        )
    out.add_edges_from(graph.edges)
    return out


def shortest_paths(num_nodes: int, edges: list[tuple[int, int]]) -> np.ndarray:
    """(N, N) hop distances along edge direction, capped at `MAX_DISTANCE` (also meaning unreachable).

    Unweighted BFS from every node in compiled code (scipy), which keeps GPT-2-size graphs well under a second.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import shortest_path

    if not edges:
        dist = np.full((num_nodes, num_nodes), np.inf)
        np.fill_diagonal(dist, 0)
    else:
        src, dst = np.array(edges, dtype=np.int64).T
        adjacency = csr_matrix((np.ones(len(src)), (src, dst)), shape=(num_nodes, num_nodes))
        dist = shortest_path(adjacency, method="D", directed=True, unweighted=True)
    return np.minimum(np.nan_to_num(dist, posinf=MAX_DISTANCE), MAX_DISTANCE).astype(np.uint8)


def longest_path_depth(num_nodes: int, edges: list[tuple[int, int]]) -> np.ndarray:
    """(N,) number of edges on the longest path from any source to each node (nodes are in execution order, so
    every edge goes from a lower to a higher index and one pass in edge-target order suffices)."""
    depth = np.zeros(num_nodes, dtype=np.int64)
    for src, dst in sorted(edges, key=lambda edge: edge[1]):
        depth[dst] = max(depth[dst], depth[src] + 1)
    return depth


def to_pyg(graph: ComputationGraph) -> Data:
    """The PyG `Data` a GHN reads.

    Fields:
        op (N,): op ids; activation (N,): activation op id + 1 (0 for none); role (N,): role id of the node's
        first parameter + 1 (0 for none); shape (N, 4): logical (out, in, k1, k2) of that parameter;
        edge_index (2, E); pair_index (2, P) with spd_forward (P,) and spd_backward (P,): hop distances from the
        first node of the pair to the second along and against edge direction (uint8, 255 = unreachable);
        in_degree (N,), out_degree (N,); depth (N,): longest path from a source node, so the 36 blocks of a
        deep stack are told apart even where shortest paths are capped or short-cut by skip connections.
    """
    from torch_geometric.data import Data

    n = graph.num_nodes
    op = torch.tensor([node.op_id for node in graph.nodes], dtype=torch.long)
    activation = torch.tensor(
        [OPS.get(node.activation).id + 1 if node.activation else 0 for node in graph.nodes], dtype=torch.long
    )
    role = torch.zeros(n, dtype=torch.long)
    shape = torch.zeros(n, 4, dtype=torch.long)
    for index, node in enumerate(graph.nodes):
        if node.params:
            info = _primary(graph, index)
            role[index] = role_id(info.role) + 1
            shape[index] = torch.tensor(info.logical_shape)
    edge_index = torch.tensor(graph.edges, dtype=torch.long).t().reshape(2, -1)
    dist = shortest_paths(n, graph.edges)
    rows, cols = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return Data(
        op=op,
        activation=activation,
        role=role,
        shape=shape,
        edge_index=edge_index,
        pair_index=torch.from_numpy(np.stack([rows.ravel(), cols.ravel()])).long(),
        spd_forward=torch.from_numpy(dist.ravel().copy()),
        spd_backward=torch.from_numpy(dist.T.ravel().copy()),
        in_degree=torch.bincount(edge_index[1], minlength=n),
        out_degree=torch.bincount(edge_index[0], minlength=n),
        depth=torch.from_numpy(longest_path_depth(n, graph.edges)),
        num_nodes=n,
    )


def _primary(graph: ComputationGraph, index: int):
    """The node's main parameter: its weight-like one if any, else its first."""
    infos = [graph.params[name] for name in graph.nodes[index].params]
    return next((p for p in infos if p.role in ("weight", "classifier", "embedding")), infos[0])
