"""Example inputs for tracing: given by the user, or derived from what the model says about itself."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ghn.errors import GraphError

__all__ = ["candidate_inputs", "derive_example_inputs", "describe_inputs", "normalize_inputs", "task_inputs"]

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
    candidates = candidate_inputs(model, device)
    if not candidates:
        raise GraphError(
            f"Cannot derive example inputs for model {type(model).__name__!r}. "
            "Pass example_inputs=... (a tensor, a tuple of positional inputs or a dict of keyword inputs)."
        )
    return candidates[0][1]


def candidate_inputs(
    model: nn.Module, device: torch.device, task: Sequence[tuple[str, Inputs]] = ()
) -> list[tuple[str, Inputs]]:
    """(where from, inputs) to try in order: what the model declares (its `example_inputs()` method, a Hugging Face
    `main_input_name` and config, a timm `pretrained_cfg`), then `task` (the inputs of a GHN's training data), then
    a guess from its first parameterized layer."""
    if callable(getattr(model, "example_inputs", None)):
        return [("the model's example_inputs()", normalize_inputs(model.example_inputs(), device))]
    declared = [(source, derive(model, device)) for source, derive in
                (("its Hugging Face config", _from_hf), ("its timm pretrained_cfg", _from_timm))]  # fmt: skip
    guessed = [("its first layer", _from_first_layer(model, device))]
    return [(source, inputs) for source, inputs in [*declared, *task, *guessed] if inputs is not None]


def task_inputs(kind: str, values: Mapping[str, Any], device: torch.device) -> Inputs | None:
    """One example of a task's data: (1, C, H, W) zeros for images ('in_channels', 'image_size'), (1, T) token
    ids below the vocabulary for text (T = min(16, 'n_positions')); None when `values` lack them."""
    if kind == "image" and values.get("in_channels") and values.get("image_size"):
        side = values["image_size"]
        return (torch.zeros(1, values["in_channels"], side, side, device=device),), {}
    if kind == "text" and values.get("vocab_size"):
        length = min(_TOKENS, values.get("n_positions") or _TOKENS)
        return (torch.zeros(1, length, dtype=torch.long, device=device),), {}
    return None


def describe_inputs(inputs: Inputs) -> str:
    """'(1, 3, 32, 32) float32' or 'input_ids=(1, 16) int64': shapes and dtypes of the tensors in `inputs`."""
    args, kwargs = inputs

    def one(value: Any) -> str:
        if isinstance(value, torch.Tensor):
            return f"{tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
        return type(value).__name__

    parts = [one(a) for a in args] + [f"{k}={one(v)}" for k, v in kwargs.items() if isinstance(v, torch.Tensor)]
    return ", ".join(parts) or "no tensors"


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
    """Inputs shaped for the first layer that holds parameters (images for convs, ids for embeddings, sequences of
    features for recurrent layers)."""
    for module in model.modules():
        if not any(True for _ in module.parameters(recurse=False)):
            continue
        if module is model and next(model.children(), None) is not None:
            continue  # a model's own parameters (a ViT's class token) say nothing about the input; its layers do
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            dims = module.weight.dim() - 2
            side = getattr(model, "image_size", None) or (_IMAGE if dims == 2 else 32)
            return (torch.zeros(1, module.in_channels, *[side] * dims, device=device),), {}
        if isinstance(module, nn.Linear):
            return (torch.zeros(1, module.in_features, device=device),), {}
        if isinstance(module, nn.Embedding):
            return (torch.zeros(1, _TOKENS, dtype=torch.long, device=device),), {}
        if isinstance(module, nn.RNNBase):
            shape = (1, _TOKENS) if module.batch_first else (_TOKENS, 1)  # (B, T) or (T, B)
            return (torch.zeros(*shape, module.input_size, device=device),), {}
        return None
    return None
