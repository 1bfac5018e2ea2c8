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
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ghn.nn.config import DecoderConfig
from ghn.nn.features import IndexEncoding
from ghn.registry import Registry

__all__ = ["DECODERS", "Decoder", "LowRank", "LowRankDecoder", "BlockDecoder", "logical_view", "orthogonalize"]

DECODERS: Registry[type[Decoder]] = Registry("decoder")
_SOFTPLUS_ONE = math.log(math.e - 1.0)  # softplus(_SOFTPLUS_ONE) == 1
_SPECTRUM_FLOOR = 1e-3  # see `orthogonalize`


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
    """T tensors of one shape kept as factors: `scale * rows @ cols.T + shift`, each viewed as `shape`.

    Moments come from the factors in O((m + n) R^2), so normalization never touches the full tensors, and a tensor
    is made by one matrix product, optionally straight into a parameter's storage (`out=`).

    Shapes: rows (T, m, R), cols (T, n, R), scale and shift (T,) or scalars; m * n == prod(shape)
    """

    rows: Tensor
    cols: Tensor
    shape: tuple[int, ...]
    scale: Tensor | float = 1.0
    shift: Tensor | float = 0.0

    def __len__(self) -> int:
        return self.rows.shape[0]

    def __getitem__(self, index: int) -> LowRank:
        """The `index`-th tensor of the group, still factored."""
        pick = lambda v: v[index : index + 1] if isinstance(v, Tensor) and v.dim() > 0 else v  # noqa: E731
        return LowRank(pick(self.rows), pick(self.cols), self.shape, pick(self.scale), pick(self.shift))

    def moments(self) -> tuple[Tensor, Tensor]:
        """(T,) mean and variance of the entries of each rows @ cols.T (before scale and shift)."""
        count = self.rows.shape[1] * self.cols.shape[1]
        mean = (self.rows.sum(1) * self.cols.sum(1)).sum(-1) / count
        gram = (self.rows.transpose(1, 2) @ self.rows) * (self.cols.transpose(1, 2) @ self.cols)
        return mean, (gram.sum((1, 2)) / count - mean * mean).clamp_min(0.0)

    def materialize(self, out: Tensor | None = None) -> Tensor:
        """(T, *shape), or one tensor of `shape` written into `out` when T == 1. The shift rides along as one
        more rank, so the product is the only pass over the full tensor."""
        T = len(self)
        scale = torch.as_tensor(self.scale, dtype=self.rows.dtype, device=self.rows.device).reshape(-1, 1, 1)
        rows, cols = self.rows * scale, self.cols
        if not (isinstance(self.shift, float) and self.shift == 0.0):
            shift = torch.as_tensor(self.shift, dtype=rows.dtype, device=rows.device).reshape(-1, 1, 1)
            rows = torch.cat([rows, shift.expand(T, rows.shape[1], 1)], dim=2)
            cols = torch.cat([cols, cols.new_ones(T, cols.shape[1], 1)], dim=2)
        if out is not None:
            if T != 1:
                raise ValueError(f"materialize(out=...) writes one tensor, but this group holds {T}.")
            if out.is_contiguous() and out.dtype == rows.dtype and out.device == rows.device:
                torch.mm(rows[0], cols[0].t(), out=out.view(rows.shape[1], -1))
                return out
            # channels_last, another dtype or device: the product cannot be written straight into that storage
            return out.copy_(torch.mm(rows[0], cols[0].t()).view(self.shape))
        return torch.bmm(rows, cols.transpose(1, 2)).view(T, *self.shape)


def orthogonalize(factors: Sequence[Tensor], steps: int = 5) -> list[Tensor]:
    """Push every singular value of each (m, R) factor towards 1 with a quintic Newton-Schulz iteration.

    The iteration maps X to X @ q(X^T X) (or q(X X^T) @ X when m < R, so a Gram never has a null space whose
    rounding noise it would blow up), so it runs on Grams of at most (R, R), whatever m is: every factor of a
    prediction goes through one batched pass of small matmuls (differentiable), then is multiplied once by its
    accumulated polynomial. The column space, which carries the code an index shares with the neighbouring layer,
    is kept; only the spectrum is flattened. Without it, trained factors drift to a few dominant directions and
    predicted layers become nearly rank one (output units copies of each other).

    Shapes: [(T_i, m_i, R)] -> [(T_i, m_i, R)]
    """
    if not factors:
        return []
    a, b, c = 3.4445, -4.7750, 2.0315  # coefficients that lift small singular values fast (Jordan et al., Muon)
    R = factors[0].shape[-1]
    # The small side runs in float64 (mps lacks it), for the same reason as the floor below.
    wide = torch.float32 if factors[0].device.type == "mps" else torch.float64
    grams = []
    with torch.autocast(factors[0].device.type, enabled=False):
        for f in factors:
            m = f.shape[1]
            gram = f.transpose(1, 2) @ f if m >= R else f @ f.transpose(1, 2)  # (T, min(m, R), same)
            grams.append(nn.functional.pad(gram.to(wide), (0, R - gram.shape[-1], 0, R - gram.shape[-1])))
    gram = torch.cat(grams)  # (S, R, R); a zero-padded block stays zero-padded through the polynomial
    sq_norms = gram.diagonal(dim1=1, dim2=2).sum(-1)[:, None, None] + 1e-12  # ||X||_F^2
    eye = torch.eye(R, dtype=gram.dtype, device=gram.device).expand_as(gram)
    # A floor under the spectrum (the normalized Gram has trace 1): directions far below it are rounding noise,
    # lifted at most ~30x rather than ~500x, so a tensor's values do not depend on what it was batched with.
    gram = gram / sq_norms + _SPECTRUM_FLOOR * eye
    poly = None
    for _ in range(steps):
        q = a * eye + b * gram + c * gram @ gram  # X <- X q(G), so G <- q G q
        poly = q if poly is None else poly @ q
        gram = q @ gram @ q
    polys = (poly / sq_norms.sqrt()).split([f.shape[0] for f in factors])
    out = []
    for f, p in zip(factors, polys):
        m = f.shape[1]
        out.append(f @ p.to(f.dtype) if m >= R else p[:, :m, :m].to(f.dtype) @ f)
    return out


class Decoder(nn.Module):
    """Base of the decoders: `decode` turns every group of same-shape parameters of a prediction into tensors at
    once; a decoder that gains nothing from seeing all groups together implements only `forward` (one group)."""

    def decode(
        self, embeddings: Tensor, groups: Sequence[tuple[tuple[int, ...], bool, Tensor]], cache: dict | None = None
    ) -> list[LowRank | Tensor]:
        """One prediction per group (shape, transposed, rows of `embeddings` it holds)."""
        return [self(embeddings[index], shape, transposed, cache) for shape, transposed, index in groups]


class LowRankDecoder(Decoder):
    """Parameter embeddings -> tensors of any shape as products of per-index low-rank factors.

    The first stored dimension indexes rows and the rest (with kernel positions) columns, so the product is the
    tensor in its storage layout with no copy. Each factor row is an index encoding times an (F, R) map generated
    from the embedding: one map for the output side and one for the input side, so channel i of one layer's
    output and of the next layer's input share a code. Both factors are orthogonalized (`orthogonalize`) and a
    spectrum of R values generated from the embedding sets the weight of each rank, so a predicted tensor has as
    many distinct directions as its rank allows, and the GHN decides how much each one counts.
    1-D tensors use a rank-one readout plus an offset. All groups of a prediction are decoded together.

    Shapes:
        embeddings: (T, D); shape: the stored shape; `transposed` when stored (in, out, ...) like HF Conv1D
        output: `LowRank` of T tensors for 2+ dims, else a (T, *shape) tensor
    """

    def __init__(self, hidden_dim: int, config: DecoderConfig) -> None:
        super().__init__()
        self.rank = config.rank
        self.index_dim = max(config.num_index_features, config.rank)
        self.index = IndexEncoding(config.num_index_features, self.index_dim)
        self.to_out = nn.Linear(hidden_dim, self.index_dim * self.rank)
        self.to_in = nn.Linear(hidden_dim, self.index_dim * self.rank)
        self.to_spectrum = nn.Linear(hidden_dim, self.rank)
        nn.init.zeros_(self.to_spectrum.weight)  # a flat spectrum to start with: every rank counts the same
        nn.init.zeros_(self.to_spectrum.bias)
        self.to_vector = nn.Linear(hidden_dim, self.index_dim + 1)
        with torch.no_grad():  # 1-D tensors (biases, norms) start near their init: raw values ~0.1, far from tanh's bounds
            self.to_vector.weight.mul_(0.1 / math.sqrt(self.index_dim))
            self.to_vector.bias.zero_()

    def forward(
        self, embeddings: Tensor, shape: tuple[int, ...], transposed: bool = False, cache: dict | None = None
    ) -> LowRank | Tensor:
        index = torch.arange(embeddings.shape[0], device=embeddings.device)
        return self.decode(embeddings, [(tuple(shape), transposed, index)], cache)[0]

    def decode(
        self, embeddings: Tensor, groups: Sequence[tuple[tuple[int, ...], bool, Tensor]], cache: dict | None = None
    ) -> list[LowRank | Tensor]:
        R, F = self.rank, self.index_dim
        out: list[LowRank | Tensor | None] = [None] * len(groups)
        vectors = [g for g, (shape, _, _) in enumerate(groups) if len(shape) <= 1]
        if vectors:
            readout = self.to_vector(embeddings)  # (J, F + 1)
            for g in vectors:
                shape, _, index = groups[g]
                n = shape[0] if shape else 1
                values = readout[index, :-1] @ self._index(n, (), cache).t() + readout[index, -1:]  # (T, n)
                out[g] = values.reshape(len(index), *shape)
        matrices = [g for g, (shape, _, _) in enumerate(groups) if len(shape) >= 2]
        if not matrices:
            return out
        out_maps = self.to_out(embeddings).view(-1, F, R)  # every map of the prediction in one product
        in_maps = self.to_in(embeddings).view(-1, F, R)
        spectra = torch.nn.functional.softplus(self.to_spectrum(embeddings) + _SOFTPLUS_ONE)  # (J, R), 1 at init
        factors = []
        for g in matrices:
            shape, transposed, index = groups[g]
            row_maps, col_maps = (in_maps, out_maps) if transposed else (out_maps, in_maps)
            factors.append(self._index(shape[0], (), cache) @ row_maps[index])  # (T, first, R)
            factors.append(self._index(shape[1], tuple(shape[2:]), cache) @ col_maps[index])  # (T, second * k, R)
        factors = orthogonalize(factors)
        for k, g in enumerate(matrices):
            shape, _, index = groups[g]
            out[g] = LowRank(factors[2 * k] * spectra[index][:, None, :], factors[2 * k + 1], tuple(shape))
        return out

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


class BlockDecoder(Decoder):
    """Parameter embeddings -> one (C, C, s, s) block each, tiled over channels and cropped or tiled over the
    kernel (GHN-2/3). Wide tensors are exact copies of the block, the limitation LoGAH removes; kept to compare.

    Shapes:
        embeddings: (T, D); shape: the stored shape -> (T, *shape)
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
        self, embeddings: Tensor, shape: tuple[int, ...], transposed: bool = False, cache: dict | None = None
    ) -> Tensor:
        T = embeddings.shape[0]
        if transposed:  # generate the logical (out, in, ...) tensors, then view them in storage order
            logical = (shape[1], shape[0], *shape[2:])
            return self.forward(embeddings, logical, False, cache).transpose(1, 2)
        out, inp, k1, k2 = logical_view(tuple(shape))
        if len(shape) <= 1:
            return _tile(self.to_vector(embeddings), out).reshape(T, *shape)
        C, s = self.channels, self.kernel
        block = self.to_block(embeddings).view(T, C, C, s, s)
        block = block[:, :, :, s // 2, s // 2, None, None] if k1 == k2 == 1 else block
        rows = _tile(torch.arange(C, device=block.device), out)
        cols = _tile(torch.arange(C, device=block.device), inp)
        kr = _kernel_index(block.shape[3], k1, block.device)
        kc = _kernel_index(block.shape[4], k2, block.device)
        weight = block[:, rows][:, :, cols][:, :, :, kr][:, :, :, :, kc]  # (T, out, in, k1, k2)
        return weight.reshape(T, *shape)

    def extra_repr(self) -> str:
        return f"block=({self.channels}, {self.channels}, {self.kernel}, {self.kernel})"


def _tile(values: Tensor, n: int) -> Tensor:
    """Repeat along the last dimension to length n."""
    reps = math.ceil(n / values.shape[-1])
    return values.repeat(*([1] * (values.dim() - 1)), reps)[..., :n]


def _kernel_index(size: int, k: int, device: torch.device) -> Tensor:
    """Indices into a kernel axis of `size` for a target of `k`: a centered crop when smaller, tiled when larger."""
    if k <= size:
        start = (size - k) // 2
        return torch.arange(start, start + k, device=device)
    return torch.arange(k, device=device) % size


DECODERS.register("low_rank", LowRankDecoder)
DECODERS.register("block", BlockDecoder)
