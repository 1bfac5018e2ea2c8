"""Decoders from a parameter's embedding to the parameter tensor.

- `LowRankDecoder` (LoGAH, Zhou et al., 2024, with per-index factors): W = A @ B^T where every row of A and of B is
  generated from the embedding and an encoding of its index, so any width is predicted in full, without tiling,
  at a cost of (rows + cols) * r per tensor.
- `BlockDecoder` (GHN-2/3, Knyazev et al., 2021/2023): one fixed (C, C, s, s) block per parameter, sliced and
  tiled to the tensor's shape; kept to compare against.

Shape letters: D hidden, R rank, F index features, C block channels, s block kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ghn.nn.config import DecoderConfig
from ghn.nn.features import IndexEncoding
from ghn.registry import Registry

__all__ = ["DECODERS", "LowRank", "LowRankDecoder", "BlockDecoder", "logical_view"]

DECODERS: Registry[type[nn.Module]] = Registry("decoder")


def logical_view(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(out, in, k1, k2) that a tensor of `shape` is generated as; extra kernel dims fold into k2."""
    if len(shape) == 0:
        return 1, 1, 1, 1
    if len(shape) == 1:
        return shape[0], 1, 1, 1
    out, inp, *kernel = shape
    k1 = kernel[0] if kernel else 1
    k2 = math.prod(kernel[1:]) if len(kernel) > 1 else 1
    return out, inp, k1, k2


@dataclass
class LowRank:
    """A tensor kept as factors: `scale * rows @ cols.T + shift`, viewed as `shape`.

    Moments come from the factors in O((m + n) R^2), so normalization never touches the full tensor, and the
    tensor is made by one matrix product, optionally straight into a parameter's storage (`out=`).

    Shapes: rows (m, R), cols (n, R), m * n == prod(shape)
    """

    rows: Tensor
    cols: Tensor
    shape: tuple[int, ...]
    scale: Tensor | float = 1.0
    shift: Tensor | float = 0.0

    def moments(self) -> tuple[Tensor, Tensor]:
        """Mean and variance of the entries of rows @ cols.T (before scale and shift)."""
        count = self.rows.shape[0] * self.cols.shape[0]
        mean = self.rows.sum(0) @ self.cols.sum(0) / count
        second = ((self.rows.t() @ self.rows) * (self.cols.t() @ self.cols)).sum() / count
        return mean, (second - mean * mean).clamp_min(0.0)

    def materialize(self, out: Tensor | None = None) -> Tensor:
        """The tensor, made by one matrix product; the shift rides along as one more rank, so writing into `out`
        is the only pass over the full tensor."""
        rows, cols = self.rows * self.scale, self.cols
        if not (isinstance(self.shift, float) and self.shift == 0.0):
            shift = torch.as_tensor(self.shift, dtype=rows.dtype, device=rows.device).expand(rows.shape[0], 1)
            rows = torch.cat([rows, shift], dim=1)
            cols = torch.cat([cols, cols.new_ones(cols.shape[0], 1)], dim=1)
        if out is not None:
            return torch.mm(rows, cols.t(), out=out.view(rows.shape[0], -1)).view(self.shape)
        return torch.mm(rows, cols.t()).view(self.shape)


class LowRankDecoder(nn.Module):
    """Parameter embedding -> tensor of any shape as a product of per-index low-rank factors.

    The first stored dimension indexes rows and the rest (with kernel positions) columns, so the product is the
    tensor in its storage layout with no copy. Each factor row is an index encoding times an (F, R) map generated
    from the embedding: one map for the output side and one for the input side, so channel i of one layer's
    output and of the next layer's input share a code. 1-D tensors use a rank-one readout plus an offset.

    Shapes:
        embedding: (D,); shape: the stored shape; `transposed` when it is stored (in, out, ...) like HF Conv1D
        output: `LowRank` for 2+ dims, else a tensor of `shape`
    """

    def __init__(self, hidden_dim: int, config: DecoderConfig) -> None:
        super().__init__()
        self.rank = config.rank
        self.index_dim = max(config.num_index_features, config.rank)
        self.index = IndexEncoding(config.num_index_features, self.index_dim)
        self.to_out = nn.Linear(hidden_dim, self.index_dim * self.rank)
        self.to_in = nn.Linear(hidden_dim, self.index_dim * self.rank)
        self.to_vector = nn.Linear(hidden_dim, self.index_dim + 1)

    def forward(
        self, embedding: Tensor, shape: tuple[int, ...], transposed: bool = False, cache: dict | None = None
    ) -> LowRank | Tensor:
        if len(shape) <= 1:
            readout = self.to_vector(embedding)  # (F + 1,)
            n = shape[0] if shape else 1
            return (self._index(n, (), cache) @ readout[:-1] + readout[-1]).reshape(shape)
        first, second, kernel = shape[0], shape[1], tuple(shape[2:])
        out_map = self.to_out(embedding).view(self.index_dim, self.rank)
        in_map = self.to_in(embedding).view(self.index_dim, self.rank)
        row_map, col_map = (in_map, out_map) if transposed else (out_map, in_map)
        rows = self._index(first, (), cache) @ row_map  # (first, R)
        cols = self._index(second, kernel, cache) @ col_map / math.sqrt(self.rank)  # (second * prod(kernel), R)
        return LowRank(rows, cols, tuple(shape))

    def _index(self, n: int, kernel: tuple[int, ...], cache: dict | None) -> Tensor:
        """Index features, shared by every tensor of one prediction with the same (n, kernel)."""
        if cache is None:
            return self.index(n, kernel)
        key = ("index", n, kernel)
        if key not in cache:
            cache[key] = self.index(n, kernel)
        return cache[key]

    def extra_repr(self) -> str:
        return f"rank={self.rank}, index_dim={self.index_dim}"


class BlockDecoder(nn.Module):
    """Parameter embedding -> one (C, C, s, s) block, tiled over channels and cropped or tiled over the kernel.

    Wide tensors are exact copies of the block (the limitation LoGAH removes); kept for comparisons.

    Shapes:
        embedding: (D,); shape: any tuple -> tensor of exactly that shape
    """

    def __init__(self, hidden_dim: int, config: DecoderConfig) -> None:
        super().__init__()
        self.channels, self.kernel = config.block_channels, config.block_kernel
        self.to_block = nn.Sequential(
            nn.Linear(hidden_dim, 2 * hidden_dim),
            nn.GELU(),
            nn.Linear(2 * hidden_dim, self.channels * self.channels * self.kernel * self.kernel),
        )
        self.to_vector = nn.Linear(hidden_dim, self.channels)

    def forward(
        self, embedding: Tensor, shape: tuple[int, ...], transposed: bool = False, cache: dict | None = None
    ) -> Tensor:
        if transposed:  # generate the logical (out, in, ...) tensor, then view it in storage order
            logical = (shape[1], shape[0], *shape[2:])
            return self.forward(embedding, logical, False, cache).transpose(0, 1)
        out, inp, k1, k2 = logical_view(tuple(shape))
        if len(shape) <= 1:
            return _tile(self.to_vector(embedding), out).reshape(shape)
        C, s = self.channels, self.kernel
        block = self.to_block(embedding).view(C, C, s, s)
        block = block[:, :, s // 2, s // 2, None, None] if k1 == k2 == 1 else block
        rows = _tile(torch.arange(C, device=block.device), out)
        cols = _tile(torch.arange(C, device=block.device), inp)
        kr = _kernel_index(block.shape[2], k1, block.device)
        kc = _kernel_index(block.shape[3], k2, block.device)
        weight = block[rows][:, cols][:, :, kr][:, :, :, kc]  # (out, in, k1, k2)
        return weight.reshape(shape)

    def extra_repr(self) -> str:
        return f"block=({self.channels}, {self.channels}, {self.kernel}, {self.kernel})"


def _tile(values: Tensor, n: int) -> Tensor:
    return values.repeat(math.ceil(n / values.shape[0]))[:n]


def _kernel_index(size: int, k: int, device: torch.device) -> Tensor:
    """Indices into a kernel axis of `size` for a target of `k`: a centered crop when smaller, tiled when larger."""
    if k <= size:
        start = (size - k) // 2
        return torch.arange(start, start + k, device=device)
    return torch.arange(k, device=device) % size


DECODERS.register("low_rank", LowRankDecoder)
DECODERS.register("block", BlockDecoder)
