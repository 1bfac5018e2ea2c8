"""Role-based normalization: every predicted tensor is put at the scale a sound init gives a parameter of its role.

The rules, in one place (switch them off with `GHNConfig(normalize=False)`):

| role                 | predicted value                                                                      |
|----------------------|--------------------------------------------------------------------------------------|
| weight               | standardized, std = gain / sqrt(fan_in); gain from the activation after the layer     |
|                      | (or after the norm that directly follows it)                                         |
|                      | (sqrt(2) for ReLU-like, 5/3 tanh, else 1); divided by sqrt(#residual adds) when the   |
|                      | layer's result goes straight into a residual add (GPT-2's depth scaling)              |
| classifier           | standardized, std = g / sqrt(fan_in), g a learned scalar of the GHN starting at 0.1  |
| embedding, position  | standardized, std = 0.02 (GPT-2, BERT, ViT and Llama all use this)                   |
| bias                 | tanh-bounded to +-1 / sqrt(fan_in) of the layer (zero stays reachable)               |
| norm_scale           | 1 + tanh(raw): around 1, in (0, 2)                                                   |
| norm_shift           | 0.5 * tanh(raw): around 0                                                            |
| other                | 2+ dims like weight, fewer like bias                                                 |

Fan-in follows the layout the op reads the tensor in (HF Conv1D stores (in, out)), see `ParamInfo.fan_in`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ghn.graph import ComputationGraph, ParamInfo
from ghn.nn.decoder import LowRank

__all__ = ["ParamScale", "param_scales", "normalize_params", "reference_std", "EMBEDDING_STD"]

EMBEDDING_STD = 0.02
_GAINS = {
    "relu": math.sqrt(2.0),
    "relu6": math.sqrt(2.0),
    "leaky_relu": math.sqrt(2.0),
    "elu": math.sqrt(2.0),
    "gelu": math.sqrt(2.0),
    "gelu_approx": math.sqrt(2.0),
    "silu": math.sqrt(2.0),
    "mish": math.sqrt(2.0),
    "hardswish": math.sqrt(2.0),
    "tanh": 5.0 / 3.0,
}
_STANDARDIZED = ("weight", "classifier", "embedding", "position_embedding")


@dataclass(frozen=True)
class ParamScale:
    """What the normalization of one parameter needs to know about its place in the graph."""

    gain: float = 1.0
    depth_scale: float = 1.0
    layer_fan_in: int = 1


def param_scales(graph: ComputationGraph) -> dict[str, ParamScale]:
    """Gain, residual depth scale and layer fan-in for every owned parameter of `graph`."""
    adds = {i for i, node in enumerate(graph.nodes) if node.op == "add"}
    feeds_add = {src for src, dst in graph.edges if dst in adds}
    num_residual = len({dst for src, dst in graph.edges if dst in adds and graph.nodes[src].op in ("linear", "conv")})
    depth_scale = 1.0 / math.sqrt(num_residual) if num_residual else 1.0
    children: dict[int, list[int]] = {}
    for src, dst in graph.edges:
        children.setdefault(src, []).append(dst)
    scales = {}
    for index, node in enumerate(graph.nodes):
        infos = [graph.params[name] for name in node.params]
        weight = next((p for p in infos if p.role in ("weight", "classifier") and len(p.shape) >= 2), None)
        layer_fan_in = weight.fan_in if weight is not None else 1
        for info in infos:
            residual = index in feeds_add and node.op in ("linear", "conv") and info.role == "weight"
            scales[info.name] = ParamScale(
                gain=_GAINS.get(_activation_after(graph, index, children) or "", 1.0),
                depth_scale=depth_scale if residual else 1.0,
                layer_fan_in=layer_fan_in,
            )
    return scales


def _activation_after(graph: ComputationGraph, index: int, children: dict[int, list[int]]) -> str | None:
    """The activation applied to a layer's result: its own, or that of a norm that is its only consumer
    (conv -> BatchNorm -> ReLU gets ReLU's gain, as Kaiming init assumes)."""
    node = graph.nodes[index]
    if node.activation or len(children.get(index, [])) != 1:
        return node.activation
    child = graph.nodes[children[index][0]]
    return child.activation if child.op.endswith("_norm") else None


def reference_std(info: ParamInfo, scale: ParamScale, *, classifier_gain: float = 1.0) -> float | None:
    """Std the rules above give a weight-like parameter (classifier heads times the GHN's `classifier_gain`); None
    for roles that are bounded instead."""
    role = info.role
    if role == "other":
        role = "weight" if len(info.shape) >= 2 else "bias"
    if role == "weight":
        return scale.gain * scale.depth_scale / math.sqrt(max(info.fan_in, 1))
    if role == "classifier":
        return classifier_gain / math.sqrt(max(info.fan_in, 1))
    if role in ("embedding", "position_embedding"):
        return EMBEDDING_STD
    return None


def normalize_params(
    raw: Tensor | LowRank,
    infos: list[ParamInfo],
    scales: list[ParamScale],
    *,
    classifier_gain: Tensor | None = None,
) -> Tensor | LowRank:
    """Map the decoder's raw output for a group of same-shape parameters to the scale each role asks for (see the
    table above).

    Low-rank outputs stay factored: their means and variances come from the factors, and the standardization is
    folded into the factors' scale and shift. `classifier_gain` (a learned scalar of the GHN) multiplies the std of
    classifier heads: starting small, predicted networks begin uncertain rather than confidently wrong, which keeps
    GHN training away from the collapse where every input gets the same logits.

    Shapes: raw (T, *shape) or a `LowRank` of T tensors; infos and scales have length T.
    """
    stds = [reference_std(info, scale) for info, scale in zip(infos, scales)]
    device = raw.rows.device if isinstance(raw, LowRank) else raw.device
    dtype = raw.rows.dtype if isinstance(raw, LowRank) else raw.dtype
    multiplier = torch.ones(len(infos), dtype=dtype, device=device)
    if classifier_gain is not None:
        is_head = torch.tensor([info.role == "classifier" for info in infos], device=device)
        multiplier = torch.where(is_head, classifier_gain.to(dtype), multiplier)
    if isinstance(raw, LowRank):
        if all(std is not None for std in stds):  # standardization folds into the factors
            target = torch.tensor(stds, dtype=raw.rows.dtype, device=device) * multiplier
            mean, var = raw.moments()
            gain = target / var.add(1e-12).sqrt()
            return LowRank(raw.rows, raw.cols, raw.shape, scale=gain, shift=-mean * gain)
        # A 2+ dim bias or norm parameter (`x + p` with p of shape (1, D)) is bounded elementwise, which no
        # factor scale can express: such groups are small, so make the tensors and apply the rules below.
        raw = raw.materialize()
    flat = raw.reshape(raw.shape[0], -1)  # (T, numel)
    out = torch.empty_like(flat)
    for kind, members in _by_rule(infos, stds).items():
        index = torch.tensor(members, device=device)
        values = flat[index]
        if kind == "std":
            target = torch.tensor([stds[i] for i in members], dtype=flat.dtype, device=device)[:, None]
            target = target * multiplier[index][:, None]
            if values.shape[1] < 2:
                values = values.tanh() * target
            else:
                centered = values - values.mean(1, keepdim=True)
                values = centered * (target / centered.pow(2).mean(1, keepdim=True).add(1e-12).sqrt())
        elif kind == "norm_scale":
            values = 1.0 + values.tanh()
        elif kind == "norm_shift":
            values = 0.5 * values.tanh()
        else:  # bias-like: bounded by the layer's fan-in
            bound = torch.tensor([scales[i].layer_fan_in for i in members], dtype=flat.dtype, device=device)
            values = values.tanh() / bound.clamp_min(1).sqrt()[:, None]
        out = out.index_copy(0, index, values)
    return out.view_as(raw)


def _by_rule(infos: list[ParamInfo], stds: list[float | None]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, (info, std) in enumerate(zip(infos, stds)):
        kind = "std" if std is not None else info.role if info.role in ("norm_scale", "norm_shift") else "bias"
        groups.setdefault(kind, []).append(i)
    return groups
