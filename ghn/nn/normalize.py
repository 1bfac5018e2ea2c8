"""Role-based normalization: every predicted tensor is put at the scale a sound init gives a parameter of its role.

The rules, in one place (switch them off with `GHNConfig(normalize=False)`):

| role                 | predicted value                                                                      |
|----------------------|--------------------------------------------------------------------------------------|
| weight               | standardized, std = gain / sqrt(fan_in); gain from the activation after the layer     |
|                      | (sqrt(2) for ReLU-like, 5/3 tanh, else 1); divided by sqrt(#residual adds) when the   |
|                      | layer's result goes straight into a residual add (GPT-2's depth scaling)              |
| classifier           | standardized, std = 1 / sqrt(fan_in)                                                 |
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

from torch import Tensor

from ghn.graph import ComputationGraph, ParamInfo
from ghn.nn.decoder import LowRank

__all__ = ["ParamScale", "param_scales", "normalize_param", "reference_std", "EMBEDDING_STD"]

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
    scales = {}
    for index, node in enumerate(graph.nodes):
        infos = [graph.params[name] for name in node.params]
        weight = next((p for p in infos if p.role in ("weight", "classifier") and len(p.shape) >= 2), None)
        layer_fan_in = weight.fan_in if weight is not None else 1
        for info in infos:
            residual = index in feeds_add and node.op in ("linear", "conv") and info.role == "weight"
            scales[info.name] = ParamScale(
                gain=_GAINS.get(node.activation or "", 1.0),
                depth_scale=depth_scale if residual else 1.0,
                layer_fan_in=layer_fan_in,
            )
    return scales


def reference_std(info: ParamInfo, scale: ParamScale) -> float | None:
    """Std the rules above give a weight-like parameter; None for roles that are bounded instead."""
    role = info.role
    if role == "other":
        role = "weight" if len(info.shape) >= 2 else "bias"
    if role == "weight":
        return scale.gain * scale.depth_scale / math.sqrt(max(info.fan_in, 1))
    if role == "classifier":
        return 1.0 / math.sqrt(max(info.fan_in, 1))
    if role in ("embedding", "position_embedding"):
        return EMBEDDING_STD
    return None


def normalize_param(raw: Tensor | LowRank, info: ParamInfo, scale: ParamScale) -> Tensor | LowRank:
    """Map the decoder's raw output for `info` to the scale its role asks for (see the table above).

    Low-rank outputs stay factored: their mean and variance come from the factors, and the standardization is
    folded into the factors' scale and shift.
    """
    std = reference_std(info, scale)
    if isinstance(raw, LowRank):
        if std is None:  # 2+ dim tensors always have a reference std; keep the raw product otherwise
            return raw
        mean, var = raw.moments()
        gain = std / var.add(1e-12).sqrt()
        return LowRank(raw.rows, raw.cols, raw.shape, scale=gain, shift=-mean * gain)
    if std is not None:
        if raw.numel() < 2:
            return raw.tanh() * std
        centered = raw - raw.mean()
        return centered * (std / centered.pow(2).mean().add(1e-12).sqrt())
    if info.role == "norm_scale":
        return 1.0 + raw.tanh()
    if info.role == "norm_shift":
        return 0.5 * raw.tanh()
    return raw.tanh() / math.sqrt(max(scale.layer_fan_in, 1))
