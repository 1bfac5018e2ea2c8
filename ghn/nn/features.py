"""Input features of the GHN: node embeddings (op, activation, role, shape, degree) and index encodings.

Shape letters: N nodes, D hidden, F index features.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ghn.graph.ops import ROLES

__all__ = ["NodeEmbedding", "IndexEncoding", "fourier_log_features"]

_SHAPE_FREQUENCIES = 8
_DEPTH_FREQUENCIES = 8


def fourier_log_features(values: Tensor, num_frequencies: int = _SHAPE_FREQUENCIES) -> Tensor:
    """Encode non-negative integers of any size by sin/cos of log(1 + v) at geometric frequencies.

    There is no vocabulary of size buckets, so a 50257-row embedding and a 3-channel conv are encoded alike.

    Shapes: (..., K) -> (..., K * 2 * num_frequencies)
    """
    logs = torch.log1p(values.float()).unsqueeze(-1)  # (..., K, 1)
    freqs = 2.0 ** torch.arange(num_frequencies, device=values.device, dtype=torch.float32) / 4.0
    angles = logs * freqs  # (..., K, num_frequencies)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)


class NodeEmbedding(nn.Module):
    """Sum of op-type, activation, parameter-role, shape and degree embeddings of every node.

    Shapes:
        input: a PyG `Data`/`Batch` with op (N,), activation (N,), role (N,), shape (N, 4), in_degree (N,),
            out_degree (N,), depth (N,)
        output: (N, D)
    """

    def __init__(self, hidden_dim: int, num_op_embeddings: int, max_degree: int) -> None:
        super().__init__()
        self.num_op_embeddings = num_op_embeddings
        self.max_degree = max_degree
        self.op = nn.Embedding(num_op_embeddings, hidden_dim)
        self.activation = nn.Embedding(num_op_embeddings, hidden_dim)
        self.role = nn.Embedding(len(ROLES) + 1, hidden_dim)
        self.shape = nn.Sequential(
            nn.Linear(4 * 2 * _SHAPE_FREQUENCIES + 4, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim)
        )
        self.in_degree = nn.Embedding(max_degree + 1, hidden_dim)
        self.out_degree = nn.Embedding(max_degree + 1, hidden_dim)
        self.depth = nn.Linear(2 * _SHAPE_FREQUENCIES + 2 * _DEPTH_FREQUENCIES, hidden_dim)

    def _ids(self, ids: Tensor) -> Tensor:
        return ids.clamp(max=self.num_op_embeddings - 1)  # user ops (ids >= 1000) share the last row

    def forward(self, data) -> Tensor:
        shape = data.shape
        shape_features = torch.cat([fourier_log_features(shape), (shape > 0).float()], dim=-1)
        return (
            self.op(self._ids(data.op))
            + self.activation(self._ids(data.activation))
            + self.role(data.role)
            + self.shape(shape_features)
            + self.in_degree(data.in_degree.clamp(max=self.max_degree))
            + self.out_degree(data.out_degree.clamp(max=self.max_degree))
            + self.depth(self.depth_features(data))
        )

    @staticmethod
    def depth_features(data) -> Tensor:
        """(N, F) absolute depth (log-Fourier) and depth relative to the deepest node of the node's own graph."""
        depth = data.depth
        batch = data.batch if getattr(data, "batch", None) is not None else torch.zeros_like(depth)
        deepest = torch.zeros(int(batch.max()) + 1, dtype=depth.dtype, device=depth.device)
        deepest = deepest.scatter_reduce(0, batch, depth, reduce="amax")[batch].clamp_min(1)
        relative = (depth.float() / deepest.float()).unsqueeze(-1)
        freqs = torch.arange(1, _DEPTH_FREQUENCIES + 1, device=depth.device, dtype=torch.float32) * math.pi / 2
        angles = relative * freqs
        return torch.cat([fourier_log_features(depth.unsqueeze(-1)), angles.sin(), angles.cos()], dim=-1)


class IndexEncoding(nn.Module):
    """Features of index i of a tensor dimension of size n, for any n (no maximum width), optionally crossed with
    the positions of a kernel.

    Half are random Fourier features of the absolute index (fixed, seeded: distinct indices get nearly orthogonal
    codes, so no two generated rows coincide), a quarter encode the relative position (i + 0.5) / n, and a quarter
    the position inside the kernel (centered, per kernel dimension). A learned MLP maps them to `out_dim`.

    Shapes: n, kernel (k1, k2, ...) -> (n * prod(kernel), out_dim), row-major over (i, kernel position)
    """

    def __init__(self, num_features: int, out_dim: int, seed: int = 0) -> None:
        super().__init__()
        self.num_features = num_features
        # Drawn on the CPU (a CPU generator cannot fill tensors on another device), so the codes are the same
        # whatever device the GHN is built on, then moved to the default device (`with torch.device(...)`).
        generator = torch.Generator().manual_seed(seed)
        absolute = num_features // 2
        codes = torch.rand(2, absolute, generator=generator, device="cpu").to(torch.get_default_device())
        self.register_buffer("omega", codes[0] * math.pi, persistent=False)
        self.register_buffer("phase", codes[1] * 2 * math.pi, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(num_features, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def raw(self, n: int, kernel: tuple[int, ...] = ()) -> Tensor:
        """(n * prod(kernel), F) fixed features before the MLP."""
        device = self.omega.device
        quarter = self.num_features // 4
        index = torch.arange(n, device=device, dtype=torch.float32)
        absolute = torch.cos(index[:, None] * self.omega + self.phase) * math.sqrt(2.0)
        freqs = torch.arange(1, quarter // 2 + 1, device=device, dtype=torch.float32) * math.pi
        relative = ((index[:, None] + 0.5) / n) * freqs
        rows = torch.cat([absolute, relative.sin(), relative.cos()], dim=-1)  # (n, 3F/4)
        positions = _kernel_positions(kernel, device)  # (K, len(kernel))
        angles = positions[:, :, None] * freqs[: max(1, len(freqs) // max(1, positions.shape[1]))] / 2
        angles = angles.flatten(1)
        kernel_features = torch.cat([angles.sin(), angles.cos()], dim=-1)
        kernel_features = nn.functional.pad(kernel_features, (0, quarter - kernel_features.shape[1]))  # (K, F/4)
        k = kernel_features.shape[0]
        return torch.cat(
            [rows[:, None, :].expand(n, k, -1), kernel_features[None].expand(n, k, -1)], dim=-1
        ).reshape(n * k, self.num_features)

    def forward(self, n: int, kernel: tuple[int, ...] = ()) -> Tensor:
        return self.mlp(self.raw(n, kernel))


def _kernel_positions(kernel: tuple[int, ...], device: torch.device) -> Tensor:
    """(prod(kernel), len(kernel)) centered coordinates of every kernel position; one zero row when no kernel."""
    if not kernel:
        return torch.zeros(1, 1, device=device)
    axes = [torch.arange(k, device=device, dtype=torch.float32) - (k - 1) / 2 for k in kernel]
    return torch.cartesian_prod(*axes).reshape(-1, len(kernel))
