"""Graphormer encoder: pre-LN transformer layers over the nodes of each graph, with attention biased by
shortest-path distances in both edge directions (Ying et al., 2021; GHN-3, Knyazev et al., 2023).

Shape letters: N nodes in the batch, G graphs, M largest graph, D hidden, H heads, P node pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ghn.nn.config import EncoderConfig

__all__ = ["GraphormerEncoder", "EncoderLayer"]


class EncoderLayer(nn.Module):
    """One pre-LN transformer layer with an additive attention bias.

    Shapes:
        x: (G, M, D); bias: (G, H, M, M) with -inf on padded keys -> (G, M, D)
    """

    def __init__(self, hidden_dim: int, num_heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(hidden_dim)
        self.qkv = nn.Linear(hidden_dim, 3 * hidden_dim)
        self.proj = nn.Linear(hidden_dim, hidden_dim)
        self.norm2 = nn.LayerNorm(hidden_dim)
        hidden = int(hidden_dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden_dim)
        )

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        G, M, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(G, M, 3, self.num_heads, D // self.num_heads).unbind(2)
        attn = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),  # (G, H, M, D/H)
            attn_mask=bias, dropout_p=self.dropout if self.training else 0.0,
        )
        x = x + self.proj(attn.transpose(1, 2).reshape(G, M, D))
        return x + self.mlp(self.norm2(x))


class GraphormerEncoder(nn.Module):
    """Node embeddings in, contextual node embeddings out, for a PyG batch of graphs of any sizes.

    Graphs are padded only to the largest graph of the batch, and padded rows never reach the output.

    Shapes:
        x: (N, D); data: the PyG `Batch` (or `Data`) with pair_index (2, P), spd_forward (P,), spd_backward (P,)
        output: (N, D)
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        buckets = config.max_distance + 2  # 0..max_distance, then one bucket for far and unreachable pairs
        self.spd_forward = nn.Embedding(buckets, config.num_heads)
        self.spd_backward = nn.Embedding(buckets, config.num_heads)
        self.layers = nn.ModuleList(
            EncoderLayer(config.hidden_dim, config.num_heads, config.mlp_ratio, config.dropout)
            for _ in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(config.hidden_dim)

    def attention_bias(self, data, batch: Tensor, num_graphs: int, max_nodes: int, mask: Tensor) -> Tensor:
        """(G, H, M, M) bias from distance embeddings; padded keys get -inf."""
        far = self.config.max_distance + 1
        src, dst = data.pair_index
        ptr = torch.zeros(num_graphs + 1, dtype=torch.long, device=batch.device)
        ptr[1:] = torch.bincount(batch, minlength=num_graphs).cumsum(0)
        graph = batch[src]
        values = self.spd_forward(data.spd_forward.long().clamp(max=far)) + self.spd_backward(
            data.spd_backward.long().clamp(max=far)
        )  # (P, H)
        bias = torch.zeros(num_graphs, max_nodes, max_nodes, self.config.num_heads, device=values.device, dtype=values.dtype)
        bias = bias.index_put((graph, src - ptr[graph], dst - ptr[graph]), values)
        bias = bias.permute(0, 3, 1, 2)
        return bias.masked_fill(~mask[:, None, None, :], float("-inf"))

    def forward(self, x: Tensor, data) -> Tensor:
        from torch_geometric.utils import to_dense_batch  # PyG imports slowly; keep `import ghn` fast

        batch = data.batch if getattr(data, "batch", None) is not None else x.new_zeros(x.size(0), dtype=torch.long)
        dense, mask = to_dense_batch(x, batch)  # (G, M, D), (G, M)
        bias = self.attention_bias(data, batch, dense.size(0), dense.size(1), mask)
        for layer in self.layers:
            dense = layer(dense, bias)
        return self.norm(dense[mask])  # (N, D) in the batch's node order
