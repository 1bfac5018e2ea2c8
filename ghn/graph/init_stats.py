"""The model's own init of every parameter, as (mean, std): the scale a GHN's prediction is put at.

Where the model holds real tensors, their values tell it (measured, so any init rule a user or a library applied
is followed); a measurement that agrees with the rule below within sampling noise is snapped to the rule, so two
builds of one model class get the same prediction. A model that `ghn.predict` filled keeps the statistics it had
before (`INIT_STATS_ATTR`), so predicting it again gives the same values. On `meta` the rules give it, first match
wins:

| model / module                                   | weight                               | bias | norm weight / bias |
|--------------------------------------------------|--------------------------------------|------|--------------------|
| a model with `reference_init()` (ghn.zoo)        | what it returns ({name: (mean, std)}) |      |                    |
| transformers model (`config.initializer_range`)  | normal(0, r); GPT-2 `c_proj` r/sqrt(2 n_layer) | 0 | 1 / 0          |
| `nn.Linear`, `nn.ConvNd` (PyTorch default)       | kaiming_uniform(a=sqrt 5): 1/sqrt(3 fan_in) | U(+-1/sqrt fan_in) | |
| transformers `Conv1D` outside a model: normal(0, 0.02), bias 0 |
| `nn.Embedding`                                   | normal(0, 1)                         |      |                    |
| `nn.MultiheadAttention` `in_proj_weight`         | xavier_uniform: sqrt(2/(fan_in+fan_out)) | 0 (and `out_proj`'s) |  |
| norms (`*Norm*` modules)                         |                                      |      | 1 / 0              |
| RNN/GRU/LSTM                                     | U(+-1/sqrt hidden)                   | same |                    |

Anything else is left unknown (None), and normalization falls back to its fan-in rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from ghn.graph.graph import ParamInfo

__all__ = ["INIT_STATS_ATTR", "fill_init_stats", "rule_init_stats"]

#: Attribute of a model's root module where `ghn.predict` records {name: (mean, std)} of the init it replaced.
INIT_STATS_ATTR = "_ghn_init_stats"

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def fill_init_stats(model: nn.Module, params: Mapping[str, ParamInfo]) -> None:
    """Set `init_mean`/`init_std` of every `ParamInfo` from the model's values, or on meta from the rules."""
    recorded = getattr(model, INIT_STATS_ATTR, None) or {}
    declared = _declared(model)
    for name, info in params.items():
        tensor = model.get_parameter(name)
        stats = recorded.get(name)
        if stats is None:
            rule = declared.get(name) or rule_init_stats(model, name, info)
            stats = rule if tensor.is_meta or tensor.numel() == 0 else _measured(tensor, rule)
        if stats is not None:
            info.init_mean, info.init_std = float(stats[0]), float(stats[1])


def _measured(tensor: torch.Tensor, rule: tuple[float, float] | None) -> tuple[float, float]:
    """(mean, std) of the tensor's values, or `rule` when they agree with it within sampling noise."""
    values = tensor.detach().float()
    mean, std = float(values.mean()), float(values.std(unbiased=False)) if values.numel() > 1 else 0.0
    if rule is None:
        return mean, std
    tolerance = 0.1 + 3.0 / math.sqrt(2.0 * values.numel())  # relative noise of a sample std, with margin
    rule_mean, rule_std = rule
    if rule_std > 0 and abs(std - rule_std) <= tolerance * rule_std and abs(mean - rule_mean) <= tolerance * rule_std:
        return rule
    if rule_std == 0 and std == 0 and mean == rule_mean:
        return rule
    return mean, std


def _declared(model: nn.Module) -> Mapping[str, tuple[float, float]]:
    declare = getattr(model, "reference_init", None)
    return declare() if callable(declare) else {}


def rule_init_stats(model: nn.Module, name: str, info: ParamInfo) -> tuple[float, float] | None:
    """(mean, std) the model's init rule gives parameter `name` (see the table above), or None when unknown."""
    owner_path, _, leaf = name.rpartition(".")
    owner = model.get_submodule(owner_path)
    is_bias = leaf.endswith("bias")
    if isinstance(owner, _NORM_TYPES) or "norm" in type(owner).__name__.lower():
        return (0.0, 0.0) if is_bias else (1.0, 0.0)
    config = getattr(model, "config", None)
    init_range = getattr(config, "initializer_range", None)
    if isinstance(init_range, (int, float)) and len(info.shape) >= 1:
        if is_bias or len(info.shape) == 1:
            return 0.0, 0.0
        layers = getattr(config, "n_layer", None)
        if leaf == "weight" and owner_path.endswith("c_proj") and isinstance(layers, int) and layers > 0:
            return 0.0, init_range / math.sqrt(2 * layers)  # GPT-2's residual projections
        return 0.0, float(init_range)
    if isinstance(owner, nn.Embedding) and leaf == "weight":
        return 0.0, 1.0
    parent = model.get_submodule(owner_path.rpartition(".")[0]) if owner_path else None
    if isinstance(parent, nn.MultiheadAttention) and owner_path.endswith("out_proj") and is_bias:
        return 0.0, 0.0  # MultiheadAttention zeroes its output projection's bias
    if isinstance(owner, nn.MultiheadAttention):
        if is_bias:
            return 0.0, 0.0
        if leaf == "in_proj_weight":
            fan_out, fan_in = info.shape
            return 0.0, math.sqrt(2.0 / (fan_in + fan_out))
    if isinstance(owner, nn.RNNBase):
        return 0.0, 1.0 / math.sqrt(3.0 * owner.hidden_size)
    if type(owner).__name__ == "Conv1D":  # transformers' Conv1D: normal(0, 0.02), zero bias
        return (0.0, 0.0) if is_bias else (0.0, 0.02)
    if isinstance(owner, (nn.Linear, nn.modules.conv._ConvNd, nn.Bilinear)):
        if is_bias:
            weight = getattr(owner, "weight", None)
            fan_in = _fan_in(weight) if isinstance(weight, torch.Tensor) else info.shape[0]
            return 0.0, 1.0 / math.sqrt(3.0 * max(fan_in, 1))
        return 0.0, 1.0 / math.sqrt(3.0 * max(info.fan_in, 1))
    return None


def _fan_in(weight: torch.Tensor) -> int:
    return weight.shape[1] * math.prod(weight.shape[2:]) if weight.dim() >= 2 else weight.shape[0]
