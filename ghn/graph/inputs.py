"""Example inputs for tracing: given by the user, or derived from what the model says about itself."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from ghn.errors import GraphError

__all__ = ["derive_example_inputs", "normalize_inputs"]

Inputs = tuple[tuple[Any, ...], dict[str, Any]]
_TOKENS = 16  # sequence length of derived token inputs: any length gives the same graph
_IMAGE = 224  # side of derived images when the model states none


def normalize_inputs(example_inputs: Any, device: torch.device) -> Inputs:
    """(args, kwargs) on `device` from a tensor, a tuple/list of args, a dict of kwargs or an (args, kwargs) pair."""
    if isinstance(example_inputs, torch.Tensor):
        args, kwargs = (example_inputs,), {}
    elif isinstance(example_inputs, dict):
        args, kwargs = (), dict(example_inputs)
    elif (
        isinstance(example_inputs, tuple)
        and len(example_inputs) == 2
        and isinstance(example_inputs[0], tuple)
        and isinstance(example_inputs[1], dict)
    ):
        args, kwargs = example_inputs
    elif isinstance(example_inputs, (tuple, list)):
        args, kwargs = tuple(example_inputs), {}
    else:
        raise TypeError(
            f"example_inputs must be a tensor, a tuple of positional inputs or a dict of keyword inputs, "
            f"got {type(example_inputs).__name__!r}."
        )
    return _to(args, device), _to(kwargs, device)


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(_to(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value


def derive_example_inputs(model: nn.Module, device: torch.device) -> Inputs:
    """Inputs the model can run on, from (in order) its `example_inputs()` method, a Hugging Face
    `main_input_name` and config, a timm `pretrained_cfg`, or its first parameterized layer."""
    if callable(getattr(model, "example_inputs", None)):
        return normalize_inputs(model.example_inputs(), device)
    for derive in (_from_hf, _from_timm, _from_first_layer):
        inputs = derive(model, device)
        if inputs is not None:
            return inputs
    raise GraphError(
        f"Cannot derive example inputs for model {type(model).__name__!r}. "
        "Pass example_inputs=... (a tensor, a tuple of positional inputs or a dict of keyword inputs)."
    )


def _from_hf(model: nn.Module, device: torch.device) -> Inputs | None:
    config = getattr(model, "config", None)
    name = getattr(model, "main_input_name", None)
    if config is None or name is None:
        return None
    kwargs: dict[str, Any] = {}
    if name == "input_ids":
        limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or _TOKENS
        kwargs[name] = torch.zeros(1, min(_TOKENS, limit), dtype=torch.long, device=device)
    elif name == "pixel_values":
        side = getattr(config, "image_size", None) or _IMAGE
        side = side[0] if isinstance(side, (tuple, list)) else side
        kwargs[name] = torch.zeros(1, getattr(config, "num_channels", 3), side, side, device=device)
    else:
        return None
    accepted = inspect.signature(model.forward).parameters
    if name == "input_ids" and getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" in accepted:
        kwargs["decoder_input_ids"] = kwargs[name]  # the decoder runs too, so its parameters join the graph
    if "use_cache" in accepted:
        kwargs["use_cache"] = False  # a KV cache is not part of the computation graph
    return (), kwargs


def _from_timm(model: nn.Module, device: torch.device) -> Inputs | None:
    config = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if not isinstance(config, dict) or "input_size" not in config:
        return None
    return (torch.zeros(1, *config["input_size"], device=device),), {}


def _from_first_layer(model: nn.Module, device: torch.device) -> Inputs | None:
    """Inputs shaped for the first layer that holds parameters (images for convs, ids for embeddings)."""
    for module in model.modules():
        if not any(True for _ in module.parameters(recurse=False)):
            continue
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            dims = module.weight.dim() - 2
            side = getattr(model, "image_size", None) or (_IMAGE if dims == 2 else 32)
            return (torch.zeros(1, module.in_channels, *[side] * dims, device=device),), {}
        if isinstance(module, nn.Linear):
            return (torch.zeros(1, module.in_features, device=device),), {}
        if isinstance(module, nn.Embedding):
            return (torch.zeros(1, _TOKENS, dtype=torch.long, device=device),), {}
        return None
    return None
