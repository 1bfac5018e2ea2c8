"""The Hugging Face form of a model, which `ghn.export` writes as a `save_pretrained` directory: a `transformers`
model is its own, and a zoo model whose state dict loads unchanged into a `transformers` class registers that twin in
`HF_EQUIVALENTS` (its config as the twin's config, and the keys `from_pretrained` re-ties).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ghn.registry import Registry
from ghn.zoo._optional import require
from ghn.zoo.gpt2 import GPT2
from ghn.zoo.llama import Llama

__all__ = ["HF_EQUIVALENTS", "HFEquivalentSpec", "HFForm", "hf_form"]


@dataclass(frozen=True)
class HFEquivalentSpec:
    """A zoo model class whose state dict loads unchanged into a `transformers` class.

    Attributes:
        name: registry key ('gpt2').
        module_type: the zoo class (`ghn.zoo.GPT2`).
        model_class: the `transformers` class it loads into ('GPT2LMHeadModel').
        config_class: that class's config class ('GPT2Config').
        config: the config class's keyword arguments for one model.
        tied_keys: state-dict keys that `from_pretrained` re-ties, so the file stores them once (under the other name).
    """

    name: str
    module_type: type[nn.Module]
    model_class: str
    config_class: str
    config: Callable[[nn.Module], dict[str, Any]]
    tied_keys: tuple[str, ...] = ()


HF_EQUIVALENTS = Registry[HFEquivalentSpec]("Hugging Face equivalent")


@dataclass(frozen=True)
class HFForm:
    """What a Hugging Face directory needs besides the weights: the config object, the class, the re-tied keys."""

    config: Any
    model_class: str
    tied_keys: tuple[str, ...]


def hf_form(model: nn.Module) -> HFForm | None:
    """The Hugging Face form of `model`: itself for a `PreTrainedModel`, its registered equivalent for a zoo model,
    None for any other model.

    Raises:
        MissingDependencyError: `model` has a registered equivalent but `transformers` is not installed.
    """
    transformers = sys.modules.get("transformers")  # a model cannot be a PreTrainedModel unless it was imported
    if transformers is not None and isinstance(model, transformers.PreTrainedModel):
        return HFForm(model.config, type(model).__name__, _tied_keys(model))
    spec = next((s for s in HF_EQUIVALENTS.values() if type(model) is s.module_type), None)
    if spec is None:
        return None
    purpose = (f"Exporting a {type(model).__name__!r} as a Hugging Face directory (format='safetensors' writes a "
               "plain state dict without it)")  # fmt: skip
    transformers = require("transformers", extra="hf", purpose=purpose)
    config = getattr(transformers, spec.config_class)(**spec.config(model))
    return HFForm(config, spec.model_class, spec.tied_keys)


def _tied_keys(model: nn.Module) -> tuple[str, ...]:
    """Patterns of the keys `from_pretrained` re-ties (transformers 5: a {tied: source} map; 4: a list)."""
    expand = getattr(model, "get_expanded_tied_weights_keys", None)
    keys = expand(all_submodels=True) if callable(expand) else getattr(model, "_tied_weights_keys", None)
    return tuple(keys or ())


# -- registered twins ---------------------------------------------------------------------------------------------------
def _gpt2_config(model: nn.Module) -> dict[str, Any]:
    config = model.config
    # GPT-2's special token 50256 only exists in the full vocabulary; smaller (byte-level) vocabularies have none.
    special = 50256 if config.vocab_size > 50256 else None
    return {
        "vocab_size": config.vocab_size,
        "n_positions": config.n_positions,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,  # 4 * n_embd, like the zoo's MLP
        "activation_function": "gelu_new",  # tanh-approximated GELU, like the zoo's MLP
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "initializer_range": config.initializer_range,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "bos_token_id": special,
        "eos_token_id": special,
        "tie_word_embeddings": True,
    }


HF_EQUIVALENTS.register(
    "gpt2", HFEquivalentSpec("gpt2", GPT2, "GPT2LMHeadModel", "GPT2Config", _gpt2_config, ("lm_head.weight",))
)


def _llama_config(model: nn.Module) -> dict[str, Any]:
    config = model.config
    return {
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.n_positions,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "hidden_act": "silu",
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "initializer_range": config.initializer_range,
        "tie_word_embeddings": config.tie_word_embeddings,
    }


# An untied head keeps its own key: only a key that holds the same tensor as another is dropped (`ghn.export`).
HF_EQUIVALENTS.register(
    "llama", HFEquivalentSpec("llama", Llama, "LlamaForCausalLM", "LlamaConfig", _llama_config, ("lm_head.weight",))
)
