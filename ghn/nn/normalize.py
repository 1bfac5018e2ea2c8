"""Role-based normalization: every predicted tensor is put where the model's own init puts it, so the GHN chooses
directions and structure, not scales (a sharp, large-scale prediction wins at step 0 and then trains slowly).

The model's own init of each tensor, (mean, std), is `ParamInfo.init_mean/init_std`: measured from the model's
values when it has them, from its module types' init rules on `meta` (`ghn.graph.init_stats`). The rules, in one
place (switch them off with `GHNConfig(normalize=False)`):

| role                 | predicted value                                                                      |
|----------------------|--------------------------------------------------------------------------------------|
| weight, embedding,   | standardized to mean 0 and the model's own init std; when that is unknown:           |
| position, other 2+D  | gain / sqrt(fan_in) (gain from the activation after the layer or the norm right after |
|                      | it: sqrt(2) ReLU-like, 5/3 tanh, else 1; / sqrt(#residual adds) for layers feeding a  |
|                      | residual add), 0.02 for embeddings                                                   |
| classifier           | the same std times g, a learned gain of the GHN in (0.5, 1), starting at 0.75         |
| bias                 | own mean + bound * tanh(raw); bound sqrt(3) * own std (the range of PyTorch's uniform |
|                      | bias init), 0.1 / sqrt(fan_in) when the own init is a constant, 1 / sqrt(fan_in) when |
|                      | unknown                                                                              |
| norm_scale           | own mean (1) + 0.25 * tanh(raw): in (0.75, 1.25)                                     |
| norm_shift           | own mean (0) + 0.25 * tanh(raw)                                                      |
| other 0-1 D          | like bias                                                                            |

With `GHNConfig.signal_scale`, a network with no normalization anywhere (no `*_norm` op, no `F.normalize`) gets
each linear/conv weight (not the head) at the fan-in rule's std above when its own init is smaller, at most
`SIGNAL_GAIN_CAP` times its own: the whole prediction for that tensor (own-spectrum map and blend included) times
`ParamScale.signal_gain`. PyTorch's default init (std 1 / sqrt(3 fan_in), against ReLU's variance-keeping
sqrt(2 / fan_in)) divides the signal's spread by about 2.5 per ReLU layer, so a six-layer plain conv stack starts
with constant logits and no direction a GHN picks reaches the head (issue 11 in benchmarks/RESULTS.md); with a
norm, the scale does not matter to the forward pass and a longer weight only learns slower, so those keep their
own init's. A norm written out of primitive ops (mean, var, div) is not seen as one.

Bounds keep the values near the init; `deviation` (penalized in training, growing without limit at the bounds)
keeps them off the bounds.
Fan-in follows the layout the op reads the tensor in (HF Conv1D stores (in, out)), see `ParamInfo.fan_in`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ghn.graph import ComputationGraph, ParamInfo
from ghn.nn.decoder import LowRank

__all__ = [
    "ParamScale", "param_scales", "normalize_params", "reference_std", "deviation", "EMBEDDING_STD",
    "MIN_CENTERED_UNITS", "NORM_BOUND", "SIGNAL_GAIN_CAP",
]  # fmt: skip

EMBEDDING_STD = 0.02
NORM_BOUND = 0.25  # norm scales and shifts stay within this of their init
SIGNAL_GAIN_CAP = 3.0  # `signal_scale` puts a weight at most this many times its own init's std
MIN_CENTERED_UNITS = 4  # `center_units` leaves tensors with fewer output units (2 units would become mirror images)
_CONSTANT_BIAS_BOUND = 0.1  # times 1 / sqrt(fan_in): how far a bias whose own init is a constant may move
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
    signal_gain: float = 1.0  # what `GHNConfig.signal_scale` multiplies the prediction by (see the module docstring)


def param_scales(graph: ComputationGraph) -> dict[str, ParamScale]:
    """Gain, residual depth scale, layer fan-in and signal gain for every owned parameter of `graph`."""
    has_norm = any(node.op.endswith("_norm") or node.op == "normalize" for node in graph.nodes)
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
            scale = ParamScale(
                gain=_GAINS.get(_activation_after(graph, index, children) or "", 1.0),
                depth_scale=depth_scale if residual else 1.0,
                layer_fan_in=layer_fan_in,
            )
            if not has_norm and node.op in ("linear", "conv"):
                scale = replace(scale, signal_gain=_signal_gain(info, scale))
            scales[info.name] = scale
    return scales


def _signal_gain(info: ParamInfo, scale: ParamScale) -> float:
    """How far above its own init's std the fan-in rule puts a weight of a network without norms (1 for other roles
    and where the own init is unknown, which the fan-in rule already sets), at most `SIGNAL_GAIN_CAP`."""
    if info.role != "weight" or len(info.shape) < 2 or not info.init_std:
        return 1.0
    return min(SIGNAL_GAIN_CAP, max(1.0, _fan_in_std(info, scale) / info.init_std))


def _fan_in_std(info: ParamInfo, scale: ParamScale) -> float:
    """The fan-in rule's std of a weight: gain * residual depth scale / sqrt(fan_in) (Kaiming's, for ReLU)."""
    return scale.gain * scale.depth_scale / math.sqrt(max(info.fan_in, 1))


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
    if role not in ("weight", "classifier", "embedding", "position_embedding"):
        return None
    gain = classifier_gain if role == "classifier" else 1.0
    if info.init_std is not None:
        return gain * info.init_std
    if role == "weight":
        return _fan_in_std(info, scale)
    if role == "classifier":
        return gain / math.sqrt(max(info.fan_in, 1))
    return EMBEDDING_STD


def _center_and_bound(info: ParamInfo, scale: ParamScale) -> tuple[float, float]:
    """(center, bound) of a bounded parameter: its value is center + bound * tanh(raw)."""
    if info.role in ("norm_scale", "norm_shift"):
        default = 1.0 if info.role == "norm_scale" else 0.0
        return (default if info.init_mean is None else info.init_mean), NORM_BOUND
    fan_bound = 1.0 / math.sqrt(max(scale.layer_fan_in, 1))
    if info.init_std is None:
        return 0.0, fan_bound
    if info.init_std > 0:
        return info.init_mean or 0.0, math.sqrt(3.0) * info.init_std
    return info.init_mean or 0.0, _CONSTANT_BIAS_BOUND * fan_bound


_SATURATED = 1e-4  # 1 - t^2 floor: a value this close to its bound costs 1e4, and the gradient still pulls it back


def deviation(value: Tensor, info: ParamInfo, scale: ParamScale, *, reduce: str = "mean") -> Tensor:
    """Mean (or with reduce='max' the largest) of t^2 / (1 - t^2), t = (value - center) / bound, for a bounded
    parameter (bias, norm): 0 at the init, about t^2 near it, 1 at t = 0.71 and without limit at the bounds.

    Training adds it to the loss so the GHN keeps such values near the init. It equals sinh(raw)^2 of the decoder's
    output raw (value = center + bound * tanh(raw)), so its pull grows as fast as tanh flattens: a penalty on t^2
    alone has no gradient left once a value saturates at its bound, which is where a GHN trained on the loss of
    untrained networks parks the norm before a head (issue 11)."""
    center, bound = _center_and_bound(info, scale)
    squared = ((value - center) / bound).pow(2)
    cost = squared / (1.0 - squared).clamp_min(_SATURATED)
    return cost.amax() if reduce == "max" else cost.mean()


def normalize_params(
    raw: Tensor | LowRank,
    infos: list[ParamInfo],
    scales: list[ParamScale],
    *,
    classifier_gain: Tensor | None = None,
    center_units: bool = False,
) -> Tensor | LowRank:
    """Map the decoder's raw output for a group of same-shape parameters to the scale each role asks for (see the
    table above).

    Low-rank outputs stay factored: their means and variances come from the factors, and the standardization is
    folded into the factors' scale and shift. `classifier_gain` (a learned scalar of the GHN in (0.5, 1))
    multiplies the std of classifier heads, so predicted networks may begin less confident than the model's init.
    `center_units` (`GHNConfig.centered_units`) takes out of each weight the part its output units share (for
    `MIN_CENTERED_UNITS` or more units) and out of each bias its mean deviation from the init center, scaled so
    the bias stays within its bound.

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
            raw = _center_units_low_rank(raw, infos[0]) if center_units else raw
            target = torch.tensor(stds, dtype=raw.rows.dtype, device=device) * multiplier
            mean, var = raw.moments()
            gain = target / var.add(1e-12).sqrt()
            return LowRank(raw.rows, raw.cols, raw.shape, scale=gain, shift=-mean * gain)
        # A 2+ dim bias or norm parameter (`x + p` with p of shape (1, D)) is bounded elementwise, which no
        # factor scale can express: such groups are small, so make the tensors and apply the rules below.
        raw = raw.materialize()
    if center_units:
        raw = _center_units_dense(raw, infos, stds)
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
        else:  # bounded: center + bound * tanh(raw), see `_center_and_bound`
            pairs = [_center_and_bound(infos[i], scales[i]) for i in members]
            center = torch.tensor([c for c, _ in pairs], dtype=flat.dtype, device=device)[:, None]
            bound = torch.tensor([b for _, b in pairs], dtype=flat.dtype, device=device)[:, None]
            values = values.tanh()
            if center_units and values.shape[1] >= MIN_CENTERED_UNITS:
                is_bias = torch.tensor([infos[i].role == "bias" for i in members], device=device)[:, None]
                shared = values.mean(1, keepdim=True)  # |tanh - shared| < 1 + |shared|: the bound still holds
                values = torch.where(is_bias, (values - shared) / (1.0 + shared.abs()), values)
            values = center + bound * values
        out = out.index_copy(0, index, values)
    return out.view_as(raw)


def _out_dim(info: ParamInfo) -> int:
    """Dim of the output units in a stored 2+ D tensor: 1 for (in, out, ...) layouts (HF Conv1D), else 0."""
    return 1 if info.layout == "in_out" else 0


def _center_units_low_rank(raw: LowRank, info: ParamInfo) -> LowRank:
    """`raw` with the factor of the output side centered over the units: W minus the row all its units share."""
    if len(raw.shape) < 2 or raw.shape[_out_dim(info)] < MIN_CENTERED_UNITS:
        return raw
    # the decoder's rows follow stored dim 0, so the output units are the rows, or the cols of an (in, out) tensor
    if _out_dim(info) == 0:
        return replace(raw, rows=raw.rows - raw.rows.mean(1, keepdim=True))
    return replace(raw, cols=raw.cols - raw.cols.mean(1, keepdim=True))


def _center_units_dense(raw: Tensor, infos: list[ParamInfo], stds: list[float | None]) -> Tensor:
    """(T, *shape) with each standardized 2+ D tensor's mean over its output units taken out."""
    if raw.dim() < 3:
        return raw
    out = raw
    for dim in (0, 1):
        members = [
            i for i, (info, std) in enumerate(zip(infos, stds, strict=True)) if std is not None and _out_dim(info) == dim
        ]
        if members and raw.shape[1 + dim] >= MIN_CENTERED_UNITS:
            index = torch.tensor(members, device=raw.device)
            values = raw[index]
            out = out.index_copy(0, index, values - values.mean(1 + dim, keepdim=True))
    return out


def _by_rule(infos: list[ParamInfo], stds: list[float | None]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, std in enumerate(stds):
        groups.setdefault("std" if std is not None else "bounded", []).append(i)
    return groups
