"""Predicted weights at the model's own init spectrum: the GHN chooses directions, the model's init the scale.

A low-rank prediction W (rank r, from the decoder's factors) becomes

    W' = s * polar(W) + (I - P_U) A (I - P_V)

with A the model's own init of the tensor, polar(W) = U V^T its nearest partial isometry (every one of its r
directions at singular value 1), s the RMS of A's top r singular values and P_U, P_V the projections onto W's
column and row spaces. So W' has (about) A's spectrum and Frobenius norm: its r strongest directions are the GHN's,
all equally strong (or, for the roles a GHN lists in `free_spectrum_roles`, mixed with the strengths the GHN gave
them, `free_spectrum_share` of the way), and A fills the directions the prediction leaves out. Fine-tuning from it
goes like fine-tuning from the own init (scale, rank and diversity are the init's), from a start the GHN chose
(issue 11 in benchmarks/RESULTS.md: predictions with a GHN-made spectrum trained slower than the default init).
A table the decoder holds as one row (a ViT's (1, N, d) position embedding) gets the same rule on its N x d matrix
when asked (`GHNConfig.table_spectrum`, `table_at_own_spectrum`); otherwise it is one centered vector.

Everything is differentiable in the factors (a thin QR of each factor and a Newton-Schulz polar of the small
core), so a GHN is trained with the same map `ghn.predict` applies; the own init takes no gradient.

Shape letters: T tensors of one shape, m rows, n columns (the rest of the dims), R the decoder's rank.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from ghn.nn.decoder import LowRank, orthogonalize

__all__ = [
    "at_own_spectrum", "at_own_spectrum_", "gaussian_top_rms", "is_table", "own_top_rms", "polar",
    "table_at_own_spectrum",
]

_EXACT_SVD_MAX = 1024  # above this min(m, n), the top singular values of the own init come from a randomized SVD
_PROBE_MIN = 256  # above this min(m, n), an own init that looks i.i.d. gets its Marchenko-Pastur top-r RMS


def polar(x: Tensor, steps: int = 4) -> Tensor:
    """The nearest partial isometry of each (a, b) matrix of `x` (T, a, b): U V^T of its SVD, every singular value
    pushed to 1 (the quintic Newton-Schulz of `orthogonalize`, then cubic steps that settle them at 1)."""
    flip = x.shape[1] < x.shape[2]
    y = x.transpose(1, 2) if flip else x  # (T, big, small): `orthogonalize` wants the rank last
    (y,) = orthogonalize([y])
    for _ in range(steps):
        y = 1.5 * y - 0.5 * y @ (y.transpose(1, 2) @ y)
    return y.transpose(1, 2) if flip else y


def own_top_rms(own: Tensor, rank: int) -> Tensor:
    """(T,) RMS of the `rank` largest singular values of each (m, n) matrix of `own` (T, m, n); no gradient.

    Small matrices get exact singular values. Above `_PROBE_MIN` rows and columns, a matrix whose top spectrum looks
    like an i.i.d. init's (`_looks_iid`: every default init, unlike an orthogonal, trained or low-rank one) gets the
    Marchenko-Pastur value at its measured RMS, within 0.3% of the exact one for Gaussian, uniform and truncated
    normal inits and 10-20x faster (GPT-2's 768 x 3072: 0.02-0.05 s against 0.4-0.5 s); the rest an SVD.
    """
    with torch.no_grad():
        own = own.float()
        T, m, n = own.shape
        rank = min(rank, m, n)
        top = torch.empty(T, device=own.device)
        todo = torch.ones(T, dtype=torch.bool, device=own.device)
        if min(m, n) > _PROBE_MIN:
            rms = torch.linalg.vector_norm(own, dim=(1, 2)) / math.sqrt(m * n)  # no copy of a large matrix
            marchenko_pastur = rms * _unit_gaussian_top_rms(m, n, rank)
            todo = ~_looks_iid(own, rank, marchenko_pastur)
            top[~todo] = marchenko_pastur[~todo]
        if todo.any():  # no copy of the matrices when all of them need the SVD
            top[todo] = _svd_top_rms(own if bool(todo.all()) else own[todo], rank)
        return top


def _looks_iid(own: Tensor, rank: int, marchenko_pastur: Tensor) -> Tensor:
    """(T,) bool: the top-`rank` RMS of one subspace iteration (a lower bound of the exact one) is within
    [0.78, 1.01] of `marchenko_pastur`. Measured at rank 32 on 300 x 600 to 1600 x 6400 matrices
    (benchmarks/RESULTS.md): i.i.d. inits 0.87-0.91, orthogonal ones 0.52-0.69, a rank-8 spike on a Gaussian 1.4-2.9."""
    probe = _subspace_top_rms(own, rank, iterations=1)
    ratio = probe / marchenko_pastur.clamp_min(torch.finfo(own.dtype).tiny)
    return (ratio >= 0.78) & (ratio <= 1.01)


def _svd_top_rms(own: Tensor, rank: int) -> Tensor:
    """(T,) top-`rank` RMS from an exact SVD up to `_EXACT_SVD_MAX`, a randomized one of that rank above."""
    if min(own.shape[1:]) <= _EXACT_SVD_MAX:
        top = torch.linalg.svdvals(own)[:, :rank]
        return top.pow(2).mean(1).sqrt()
    return _subspace_top_rms(own, rank, iterations=4)  # GPT-2 Large: 0.07 s for each 1280 x 5120 matrix


def _subspace_top_rms(own: Tensor, rank: int, iterations: int) -> Tensor:
    """(T,) top-`rank` RMS of a randomized SVD (subspace iteration on rank + 8 columns, as `torch.svd_lowrank`),
    from a fixed seed, so a prediction does not depend on, or move, the global random state."""
    T, m, n = own.shape
    generator = torch.Generator(device=own.device).manual_seed(0)
    sketch = torch.randn(T, n, min(rank + 8, m, n), generator=generator, device=own.device, dtype=own.dtype)
    basis = torch.linalg.qr(own @ sketch).Q  # (T, m, q)
    for _ in range(iterations):
        basis = torch.linalg.qr(own @ torch.linalg.qr(own.transpose(1, 2) @ basis).Q).Q
    top = torch.linalg.svdvals(basis.transpose(1, 2) @ own)[:, :rank]  # (T, q, n) -> (T, rank)
    return top.pow(2).mean(1).sqrt()


def gaussian_top_rms(m: int, n: int, rank: int, std: float) -> float:
    """Expected RMS of the `rank` largest singular values of an (m, n) matrix of i.i.d. entries of `std`, from the
    Marchenko-Pastur law: what `own_top_rms` gives for a fresh random init, without drawing and decomposing it."""
    return std * _unit_gaussian_top_rms(m, n, rank)


@functools.lru_cache(maxsize=4096)
def _unit_gaussian_top_rms(m: int, n: int, rank: int) -> float:
    """`gaussian_top_rms` at std 1 (cached: training asks for the same few shapes every step)."""
    small, big = min(m, n), max(m, n)
    rank = min(rank, small)
    ratio = small / big
    lo, hi = (1 - math.sqrt(ratio)) ** 2, (1 + math.sqrt(ratio)) ** 2
    x = torch.linspace(lo, hi, 4097, dtype=torch.float64)[1:-1]  # eigenvalues of A A^T / big
    density = ((hi - x) * (x - lo)).clamp_min(0).sqrt() / x
    tail = density.flip(0).cumsum(0) / density.sum()  # mass above each x, largest first
    upper = tail <= rank / small
    upper[0] = True
    mean_top = float((x.flip(0) * density.flip(0))[upper].sum() / density.flip(0)[upper].sum())
    return math.sqrt(big * mean_top)


def _basis(factor: Tensor) -> tuple[Tensor | None, Tensor]:
    """(Q, C) with factor = Q @ C and Q an orthonormal basis of its column space, for a (T, d, k) factor; Q is
    None (the identity) when d <= k, where the columns span the whole space and C is the factor itself."""
    if factor.shape[1] <= factor.shape[2]:
        return None, factor
    return torch.linalg.qr(factor)  # (T, d, k), (T, k, k)


def _directions(prediction: LowRank, free: float = 0.0) -> tuple[Tensor | None, Tensor, Tensor | None]:
    """(Q_rows, core, Q_cols) with Q_rows @ core @ Q_cols^T = polar(W) for W = rows @ cols^T of each tensor (a None
    basis is the identity); with `free` f > 0, the core is (1 - f) polar(W) + f W', W' being W scaled to the
    Frobenius norm of polar(W) (its own relative spectrum): at f = 1 the GHN's relative strengths, below it every
    direction keeps at least (1 - f) of the flat value. The prediction's scale and shift (`ghn.nn.normalize`) do
    not matter. A one-row W (a position embedding, a class token) is centered first, as normalization centers it:
    its one direction is all of it."""
    cols = prediction.cols
    if prediction.rows.shape[1] == 1 and cols.shape[1] > 1:
        cols = cols - cols.mean(1, keepdim=True)
    q_rows, c_rows = _basis(prediction.rows)  # W = Q_rows (C_rows C_cols^T) Q_cols^T
    q_cols, c_cols = _basis(cols)
    core = c_rows @ c_cols.transpose(1, 2)  # (T, k_rows, k_cols)
    if free == 0:
        return q_rows, polar(core), q_cols
    norm = core.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
    relative = core * (math.sqrt(min(core.shape[1:])) / norm)
    return q_rows, relative if free == 1 else (1 - free) * polar(core) + free * relative, q_cols


def is_table(prediction: LowRank) -> bool:
    """Whether `prediction` is a table held as one row: a (1, N, ..., d) parameter such as a ViT's position
    embedding, whose decoder rows are (T, 1, R) though the tensor is an N x d matrix of N positions."""
    shape = prediction.shape
    return prediction.rows.shape[1] == 1 and len(shape) >= 3 and shape[-1] > 1 and math.prod(shape[1:-1]) > 1


def table_at_own_spectrum(prediction: LowRank, own: Tensor, *, free: float = 0.0) -> Tensor:
    """(T, *shape): each table of `prediction` (`is_table`) as the (N, d) matrix W it is, with the rule of
    `at_own_spectrum`: `s * P + (I - P P^T) A (I - P^T P)`, P = polar(W) (W's k directions at 1: a table is
    predicted with k below N), s the RMS of the own init A's top k singular values, A in the directions W leaves
    out. So the table has A's spectrum and its positions are apart; held as one row, a predicted table had rank
    2-4 with its positions near-copies, and ViTs fine-tuned behind their own init (issue 11). `free` mixes in W's
    relative strengths as `_directions` does. Differentiable in the prediction; no gradient flows into A."""
    T, d = len(prediction), prediction.shape[-1]
    w = prediction.materialize().reshape(T, -1, d)
    a = own.detach().to(dtype=w.dtype, device=w.device).reshape(T, -1, d)
    isometry = polar(w)  # (T, N, d); its Gram projects onto W's row space, P P^T onto its column space
    ranks = isometry.detach().flatten(1).pow(2).sum(1).round().clamp_min(1).long()
    top = torch.stack([own_top_rms(a[t : t + 1], int(k))[0] for t, k in enumerate(ranks.tolist())])
    core = isometry
    if free:
        norm = w.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
        core = (1 - free) * isometry + free * w * (ranks.to(w).sqrt()[:, None, None] / norm)
    rest = a - isometry @ (isometry.transpose(1, 2) @ a)
    rest = rest - (rest @ isometry.transpose(1, 2)) @ isometry
    return (core * top.to(w)[:, None, None] + rest).view(T, *prediction.shape)


def at_own_spectrum(
    prediction: LowRank, own: Tensor, top_rms: Tensor | None = None, *, free: float = 0.0, tables: bool = False
) -> Tensor:
    """(T, *shape): each tensor of `prediction` as `s * polar(W) + (I - P_U) A (I - P_V)` (see the module doc),
    with A the matching tensor of `own` (T, *shape), the model's own init, and s `top_rms` (T,) (default
    `own_top_rms` of A). With `free` f > 0, W's r directions keep f of their relative weights (`_directions`: at
    f = 1, W scaled to the norm of s * polar(W)) instead of all being s. With `tables`, a table held as one row
    goes through `table_at_own_spectrum`. Differentiable in the prediction; no gradient flows into A.
    """
    if tables and is_table(prediction):
        return table_at_own_spectrum(prediction, own, free=free)
    q_rows, core, q_cols = _directions(prediction, free)
    T, m, n = len(prediction), prediction.rows.shape[1], prediction.cols.shape[1]
    a = own.detach().to(dtype=core.dtype, device=core.device).reshape(T, m, n)
    if top_rms is None:
        top_rms = own_top_rms(a, min(core.shape[1:]))
    main = core * top_rms.to(core)[:, None, None]
    main = main if q_rows is None else q_rows @ main
    main = main if q_cols is None else main @ q_cols.transpose(1, 2)  # (T, m, n)
    if q_rows is not None and q_cols is not None:  # W leaves directions out on both sides: A fills them
        rest = a - q_rows @ (q_rows.transpose(1, 2) @ a)
        main = main + rest - (rest @ q_cols) @ q_cols.transpose(1, 2)
    return main.view(T, *prediction.shape)


@torch.no_grad()
def at_own_spectrum_(
    target: Tensor, prediction: LowRank, *, own_std: float | None = None, free: float = 0.0, tables: bool = False
) -> Tensor:
    """`at_own_spectrum` of a one-tensor `prediction`, written in place into `target`, which holds the own init A on
    entry; with `own_std`, A is first drawn there as i.i.d. Gaussian of that std (a model on meta) and s comes from
    `gaussian_top_rms`. No other tensor of the target's size is made (so GPT-2's largest matrices cost little
    memory), except a float32 copy for a target of another dtype or layout."""
    if target.dtype not in (torch.float32, torch.float64) or not target.is_contiguous():
        work = target.detach().float().contiguous()
        target.copy_(at_own_spectrum_(work, prediction, own_std=own_std, free=free, tables=tables))
        return target
    m = prediction.rows.shape[1]
    a = target.view(m, -1)
    if own_std is not None:
        a.normal_(0.0, own_std)
    if tables and is_table(prediction):
        return target.copy_(table_at_own_spectrum(prediction, target[None], free=free)[0])
    q_rows, core, q_cols = _directions(prediction, free)
    rank = min(core.shape[1:])
    if own_std is not None:
        top_rms = gaussian_top_rms(m, a.shape[1], rank, own_std)
    else:
        top_rms = float(own_top_rms(a[None], rank)[0])
    like = {"dtype": a.dtype, "device": a.device}
    core = (core[0] * top_rms).to(**like)
    q_rows = None if q_rows is None else q_rows[0].to(**like)
    q_cols = None if q_cols is None else q_cols[0].to(**like)
    if q_rows is None or q_cols is None:  # W spans one side whole: nothing of A is left
        main = core if q_rows is None else q_rows @ core
        a.copy_(main if q_cols is None else main @ q_cols.t())
        return target
    # A <- A - Q_r (Q_r^T A) - (A Q_c) Q_c^T + Q_r (Q_r^T A Q_c + core) Q_c^T as one (m, 2R) x (2R, n) update:
    # A += [Q_r, A Q_c] @ [(Q_r^T A Q_c + core) Q_c^T - Q_r^T A; -Q_c^T], with only (2R, n) and (m, 2R) temporaries
    left = q_rows.t() @ a  # (R, n)
    right = a @ q_cols  # (m, R)
    top = torch.addmm(left, (left @ q_cols + core), q_cols.t(), beta=-1.0)  # (R, n)
    a.addmm_(torch.cat([q_rows, right], 1), torch.cat([top, -q_cols.t()], 0))
    return target
