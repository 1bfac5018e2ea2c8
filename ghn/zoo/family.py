"""`FamilySpec` and the `FAMILIES` registry: each zoo family's config type, builder, sampler and named presets.

A config is identified by `config_hash`, so sampled architectures can be de-duplicated (unlike the ViTs-1K set of
LoGAH, which held about 160 distinct networks).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from ghn._checks import TASK_KINDS, TaskKind
from ghn._config import from_dict, to_dict
from ghn._logging import get_logger
from ghn.errors import ConfigError, RegistryError, ShapeError, UnknownNameError
from ghn.registry import Registry, close_matches

__all__ = [
    "FamilySpec",
    "FAMILIES",
    "config_hash",
    "family_of",
    "lookup_config",
    "preset_names",
    "random_images",
    "random_tokens",
    "check_context",
    "replace_config",
    "sample_configs",
]

logger = get_logger(__name__)


@dataclass(frozen=True)
class FamilySpec:
    """One model family of the zoo.

    Attributes:
        name: Registry key of the family ('resnet').
        config_cls: The family's frozen config dataclass; `config_cls()` is the family's default architecture.
        build: Makes the model for a config; the model has `config`, `example_inputs(batch_size)` and
            `num_classes` (image classifiers) or `vocab_size` (language models).
        sample: Draws a random config of the family's architecture space from the given generator only.
        presets: Named configs ('resnet50'); preset names are unique across all families.
        task: 'image' for classifiers of (B, C, H, W) images, 'text' for language models over (B, T) token ids.
        variants: other named samplers of the family's space ('tiny' for CPU-sized nets, 'wide' for wider ranges);
            `sampler(name)` returns one, with 'default' meaning `sample`.
    """

    name: str
    config_cls: type
    build: Callable[[Any], nn.Module]
    sample: Callable[[torch.Generator], Any]
    presets: Mapping[str, Any] = field(default_factory=dict)
    task: TaskKind = "image"
    variants: Mapping[str, Callable[[torch.Generator], Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not dataclasses.is_dataclass(self.config_cls):
            raise ConfigError(f"FamilySpec {self.name!r} has config_cls {self.config_cls!r}; it must be a dataclass.")
        if self.task not in TASK_KINDS:
            raise ConfigError(f"FamilySpec {self.name!r} has task {self.task!r}; it must be one of {TASK_KINDS}.")
        for preset, config in self.presets.items():
            if type(config) is not self.config_cls:
                raise ConfigError(
                    f"Preset {preset!r} of family {self.name!r} is a {type(config).__name__!r}; "
                    f"it must be a {self.config_cls.__name__!r}."
                )
        object.__setattr__(self, "presets", MappingProxyType(dict(self.presets)))
        object.__setattr__(self, "variants", MappingProxyType(dict(self.variants)))

    def sampler(self, variant: str = "default") -> Callable[[torch.Generator], Any]:
        """The family's sampler called `variant` ('default' is `sample`)."""
        if variant == "default":
            return self.sample
        if variant not in self.variants:
            known = ", ".join(["default", *sorted(self.variants)])
            raise UnknownNameError(f"Family {self.name!r} has no sampler variant {variant!r}. Known: {known}.")
        return self.variants[variant]

    def default_config(self) -> Any:
        """The family's default config, `config_cls()`."""
        return self.config_cls()


FAMILIES = Registry[FamilySpec]("model family")


def family_of(config: Any) -> FamilySpec:
    """The registered family whose config type is exactly `type(config)`.

    Raises:
        UnknownNameError: No registered family uses this config type.
    """
    for spec in FAMILIES.values():
        if type(config) is spec.config_cls:
            return spec
    raise UnknownNameError(
        f"Config type {type(config).__name__!r} belongs to no registered model family. "
        f"Register a FamilySpec for it in its ghn/zoo file (known: {', '.join(FAMILIES.names())})."
    )


def config_hash(config: Any) -> str:
    """A 16-hex-digit fingerprint of `config` and its family: equal architectures get equal hashes.

    It is the sha256 of the canonical JSON (sorted keys, no spaces) of the family name and `to_dict(config)`.
    """
    payload = {"family": family_of(config).name, "config": to_dict(config)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _preset_index() -> dict[str, tuple[FamilySpec, Any]]:
    index: dict[str, tuple[FamilySpec, Any]] = {}
    for spec in FAMILIES.values():
        for name, config in spec.presets.items():
            if name in index:
                raise RegistryError(
                    f"Preset {name!r} is defined by families {index[name][0].name!r} and {spec.name!r}. "
                    "Rename one of them; preset names are unique across the zoo."
                )
            index[name] = (spec, config)
    return index


def preset_names(pattern: str | None = None) -> list[str]:
    """Sorted names of all presets of all families, optionally filtered by a shell-style `pattern` ('vit-*')."""
    names = sorted(_preset_index())
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)] if pattern else names


def lookup_config(name: str) -> tuple[FamilySpec, Any]:
    """The family and config called `name`: a preset ('resnet18', 'vit-s/16') or a family (its default config).

    Presets win over families; where a name is both (such as 'gpt2'), the preset is the family default.

    Raises:
        UnknownNameError: `name` is neither a preset nor a family; lists close matches.
    """
    index = _preset_index()
    if name in index:
        return index[name]
    if name in FAMILIES:
        spec = FAMILIES.get(name)
        return spec, spec.default_config()
    known = sorted(set(index) | set(FAMILIES.names()))
    hint = close_matches(name, known)
    suggestion = f"Did you mean {', '.join(map(repr, hint))}?" if hint else f"Known: {', '.join(known)}."
    raise UnknownNameError(f"Unknown zoo preset or family {name!r}. {suggestion}")


def random_images(config: Any, batch_size: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Example inputs of an image family's model: random images (batch_size, config.in_channels,
    config.image_size, config.image_size) on `device`."""
    size = config.image_size
    return (torch.randn(batch_size, config.in_channels, size, size, device=device),)


def check_context(input_ids: torch.Tensor, n_positions: int) -> None:
    """A language model's input guard: at most `n_positions` tokens in (B, T) `input_ids`, else a `ShapeError`."""
    if input_ids.shape[1] > n_positions:
        raise ShapeError(
            f"Got {input_ids.shape[1]} tokens but the context holds {n_positions}. Pass at most that many."
        )


def random_tokens(config: Any, batch_size: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Example inputs of a text family's model: random token ids (batch_size, min(config.n_positions, 16)), dtype
    long, on `device`."""
    num_tokens = min(config.n_positions, 16)
    return (torch.randint(0, config.vocab_size, (batch_size, num_tokens), device=device),)


def replace_config(config: Any, overrides: Mapping[str, Any]) -> Any:
    """`config` with the fields in `overrides` replaced (nested configs may be given as dicts), then validated.

    Raises:
        ConfigError: An override names no field of the config (the message suggests the closest one), or a new
            value is not allowed.
    """
    if not overrides:
        return config
    current = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init}
    return from_dict(type(config), {**current, **overrides})


def sample_configs(family: str | FamilySpec, num: int, *, seed: int = 0, max_attempts: int | None = None) -> list[Any]:
    """`num` distinct configs drawn from `family`'s sampler, de-duplicated by `config_hash`.

    Args:
        family: A family name or spec.
        num: How many distinct configs to return.
        seed: Seed of the one `torch.Generator` all draws come from; the same seed gives the same list.
        max_attempts: Draws allowed before giving up; default `20 * num + 100`.

    Raises:
        ConfigError: The family's space ran out of new configs within `max_attempts` draws.
    """
    spec = FAMILIES.get(family) if isinstance(family, str) else family
    generator = torch.Generator().manual_seed(seed)
    max_attempts = 20 * num + 100 if max_attempts is None else max_attempts
    configs: dict[str, Any] = {}
    for _ in range(max_attempts):
        if len(configs) == num:
            break
        config = spec.sample(generator)
        configs.setdefault(config_hash(config), config)
    if len(configs) < num:
        raise ConfigError(
            f"Family {spec.name!r} gave only {len(configs)} distinct configs in {max_attempts} draws, not {num}. "
            "Ask for fewer or pass a larger max_attempts."
        )
    logger.info("Sampled %d distinct %s configs (seed %d).", num, spec.name, seed)
    return list(configs.values())
