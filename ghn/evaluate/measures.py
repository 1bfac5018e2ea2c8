"""What an evaluation measures: the task metrics of each kind, steps-to-target and the diversity of parameters.

Shape letters: K tensors of one shape, P numbers per tensor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "BEHIND_SE",
    "MetricSpec",
    "METRICS",
    "add_bits_per_byte",
    "filter_similarity",
    "is_better",
    "is_clearly_behind",
    "parameter_diversity",
    "steps_to_target",
]

_MAX_ROWS = 256  # rows of a tensor compared by `filter_similarity` (the first ones), so a 50257-row embedding is cheap


@dataclass(frozen=True)
class MetricSpec:
    """One reported metric: its key in the scores, its table label, the factor it is shown with and its direction."""

    key: str
    label: str
    scale: float = 1.0
    higher_is_better: bool = False


#: Metrics of each task kind, the first one being the primary metric (the one steps-to-target is measured on).
#: Accuracy is stored as a fraction and shown in percent; loss is the mean cross-entropy in nats (per token for
#: text); bits per byte (loss / ln 2) is reported for byte-level text only.
METRICS: Mapping[str, tuple[MetricSpec, ...]] = {
    "image": (MetricSpec("acc", "acc (%)", 100.0, True), MetricSpec("loss", "loss")),
    "text": (MetricSpec("loss", "loss"), MetricSpec("ppl", "ppl"), MetricSpec("bpb", "bits/byte")),
}


def add_bits_per_byte(scores: dict[str, float]) -> dict[str, float]:
    """`scores` with 'bpb' = loss / ln 2 added: bits per byte of a byte-level language model."""
    return {**scores, "bpb": scores["loss"] / math.log(2)}


def is_better(value: float, target: float, metric: MetricSpec) -> bool:
    """`value` is at least as good as `target` (False for NaN)."""
    return value >= target if metric.higher_is_better else value <= target


BEHIND_SE = 2.0
"""A paired gap counts as behind when its mean is below zero by more than this many standard errors: with 16 seeds a
true tie is counted behind about 3% of the time (one-sided t, 15 degrees of freedom), with 8 seeds about 4%."""


def is_clearly_behind(gap: float, stderr: float) -> bool:
    """A paired gap (`EvalResult.paired_gap`: mean, standard error; positive is better) shows the init worse than
    its reference beyond seed noise: more than `BEHIND_SE` standard errors below zero, or diverged (NaN). With one
    seed there is no error estimate, and any loss counts."""
    if math.isnan(gap):
        return True
    if math.isnan(stderr):
        return gap < 0
    return gap < -BEHIND_SE * stderr


def steps_to_target(grid: Sequence[int], values: Sequence[float], target: float, metric: MetricSpec) -> int | None:
    """The first step count of `grid` whose value reaches `target`; None if none does.

    Example: grid (0, 20, 40), accuracies (0.1, 0.5, 0.7), target 0.45 -> 20.
    """
    for step, value in zip(grid, values):
        if is_better(value, target, metric):
            return step
    return None


def parameter_diversity(params: Sequence[Mapping[str, Tensor]]) -> float | None:
    """Mean absolute cosine distance between same-shape parameter tensors of different architectures.

    Every tensor of 2+ dimensions of every architecture is flattened; for each pair of tensors that have the same
    shape and belong to different architectures, the distance is 1 - |cos(a, b)|; the result is the mean over all
    such pairs (each pair counted once, pairs of all shapes pooled). 0 means every such tensor equals the others up
    to scale and sign (copied or tiled parameters); independent random tensors score close to 1. This is the
    diversity measure of LoGAH (Zhou et al., 2024, https://arxiv.org/abs/2405.16287).

    Args:
        params: one {name: tensor} per architecture.

    Returns:
        The mean distance, or None when no two architectures share a tensor shape.
    """
    by_shape: dict[tuple[int, ...], list[tuple[int, Tensor]]] = {}
    for index, named in enumerate(params):
        for tensor in named.values():
            if tensor.dim() >= 2:
                by_shape.setdefault(tuple(tensor.shape), []).append((index, tensor))
    total, count = 0.0, 0
    for members in by_shape.values():
        owners = torch.tensor([index for index, _ in members])  # (K,)
        if len(set(owners.tolist())) < 2:
            continue
        vectors = torch.stack([t.detach().flatten().double().cpu() for _, t in members])  # (K, P)
        vectors = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)
        cosine = (vectors @ vectors.T).abs()  # (K, K)
        pairs = torch.triu(owners[:, None] != owners[None, :], diagonal=1)  # different architectures, once each
        total += float((1.0 - cosine)[pairs].sum())
        count += int(pairs.sum())
    return total / count if count else None


def filter_similarity(params: Sequence[Mapping[str, Tensor]]) -> float | None:
    """Mean absolute cosine similarity between the rows (output units) of each weight tensor: the collapse inside a
    tensor that `parameter_diversity`, which compares architectures, cannot see.

    Every tensor of 2+ dimensions and 2+ rows is viewed as (rows, the rest) in its stored layout (its first
    `_MAX_ROWS` rows); its score is the mean of |cos(row i, row j)| over i != j; the result is the mean over all
    such tensors of all architectures. Independent random rows of length P score about sqrt(2 / (pi * P)); copied
    or rank-1 rows score 1, and such units stay alike while they train, so fine-tuning is slow.

    Args:
        params: one {name: tensor} per architecture.

    Returns:
        The mean similarity, or None when no tensor has two rows.
    """
    scores = []
    for named in params:
        for tensor in named.values():
            if tensor.dim() < 2 or tensor.shape[0] < 2:
                continue
            rows = tensor.detach()[:_MAX_ROWS].flatten(1).double().cpu()  # (K, P)
            rows = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
            cosine = (rows @ rows.T).abs()  # (K, K)
            num = rows.shape[0]
            scores.append(float((cosine.sum() - cosine.diagonal().sum()) / (num * (num - 1))))
    return sum(scores) / len(scores) if scores else None
