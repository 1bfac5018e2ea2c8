"""Hugging Face `transformers` models built offline from a config (never downloaded), named by preset.

`transformers` is optional (`pip install 'ghn[hf]'`) and imported only when a preset is built. Example inputs for
these models come from their `main_input_name` and config, so nothing is patched onto the HF classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn

from ghn._checks import TaskKind
from ghn.errors import ConfigError
from ghn.registry import Registry, close_matches
from ghn.zoo._optional import require

__all__ = ["HFPresetSpec", "HF_PRESETS", "build_hf"]


@dataclass(frozen=True)
class HFPresetSpec:
    """A `transformers` model class and the config it is built from.

    Attributes:
        name: Registry key ('gpt2-large', 'llama-tiny').
        model_class: Name of the model class in `transformers` ('GPT2LMHeadModel').
        config_class: Name of its config class in `transformers` ('GPT2Config').
        config: Keyword arguments of the config class (plain values only).
        task: 'image' or 'text'.
    """

    name: str
    model_class: str
    config_class: str
    config: Mapping[str, Any] = field(default_factory=dict)
    task: TaskKind = "text"

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))


HF_PRESETS = Registry[HFPresetSpec]("hf preset")


def build_hf(name: str, overrides: Mapping[str, Any] | None = None) -> nn.Module:
    """The `transformers` model of preset `name`, randomly initialized, with config fields replaced by `overrides`.

    Raises:
        UnknownNameError: `name` is not a registered HF preset.
        MissingDependencyError: `transformers` is not installed.
        ConfigError: An override is not an attribute of the preset's config.
    """
    spec = HF_PRESETS.get(name)
    transformers = require("transformers", extra="hf", purpose=f"Spec 'hf:{name}'")
    config_cls = getattr(transformers, spec.config_class)
    overrides = dict(overrides or {})
    defaults = config_cls(**spec.config)
    # HF keeps some constructor arguments under a private name ('attn_implementation' as '_attn_implementation').
    unknown = sorted(key for key in overrides if not (hasattr(defaults, key) or hasattr(defaults, f"_{key}")))
    if unknown:
        raise ConfigError(
            f"Unknown override(s) {_with_suggestions(unknown, dir(defaults))} for {spec.config_class!r} of "
            f"'hf:{name}'. Pass attributes of that config class."
        )
    config = config_cls(**{**spec.config, **overrides})
    return getattr(transformers, spec.model_class)(config)


def _with_suggestions(keys: list[str], known: list[str]) -> str:
    """"'a' (did you mean 'b'?), 'c'" for the `keys`, each with its closest name in `known`."""
    parts = []
    for key in keys:
        close = close_matches(key, known, 1)
        parts.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ", ".join(parts)


def _register(name: str, model_class: str, config_class: str, task: TaskKind, **config: Any) -> None:
    HF_PRESETS.register(name, HFPresetSpec(name, model_class, config_class, config, task))


_register("gpt2", "GPT2LMHeadModel", "GPT2Config", "text")
_register("gpt2-medium", "GPT2LMHeadModel", "GPT2Config", "text", n_embd=1024, n_layer=24, n_head=16)
_register("gpt2-large", "GPT2LMHeadModel", "GPT2Config", "text", n_embd=1280, n_layer=36, n_head=20)
_register("gpt2-xl", "GPT2LMHeadModel", "GPT2Config", "text", n_embd=1600, n_layer=48, n_head=25)
_register(
    "llama-tiny", "LlamaForCausalLM", "LlamaConfig", "text",
    vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=128, bos_token_id=1, eos_token_id=2,
)  # fmt: skip
_register(
    "bert-tiny", "BertForSequenceClassification", "BertConfig", "text",
    vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
    max_position_embeddings=128, num_labels=2,
)  # fmt: skip
_register(
    "vit-tiny", "ViTForImageClassification", "ViTConfig", "image",
    image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
    num_labels=10,
)  # fmt: skip
_register(
    "resnet-tiny", "ResNetForImageClassification", "ResNetConfig", "image",
    embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], layer_type="basic", num_labels=10,
)  # fmt: skip
_register(
    "convnext-tiny", "ConvNextForImageClassification", "ConvNextConfig", "image",
    hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], image_size=32, num_labels=10,
)  # fmt: skip
