"""Architecture spaces: weighted mixes of model families that a GHN trains on, sampled with a seed and
de-duplicated by `config_hash`, with held-out architectures that training never sees.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ghn._logging import get_logger
from ghn.errors import ConfigError
from ghn.registry import Registry
from ghn.zoo.family import FAMILIES, FamilySpec, config_hash, replace_config

__all__ = ["SPACES", "FamilyChoice", "SpaceSpec", "ArchitectureSampler", "adapt_config"]

logger = get_logger(__name__)

#: Config fields a task sets when present in a family's config (image shape and classes, vocab and context).
TASK_FIELDS = ("in_channels", "image_size", "num_classes", "vocab_size", "n_positions")


@dataclass(frozen=True)
class FamilyChoice:
    """One family of a space: how often it is drawn and which config fields every draw gets."""

    family: str
    weight: float = 1.0
    variant: str = "default"
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        FAMILIES.get(self.family).sampler(self.variant)
        if not self.weight > 0:
            raise ConfigError(f"FamilyChoice {self.family!r} needs a positive weight, got {self.weight!r}.")


@dataclass(frozen=True)
class SpaceSpec:
    """A named architecture space: a weighted mix of families, all of one task kind."""

    name: str
    choices: tuple[FamilyChoice, ...]

    def __post_init__(self) -> None:
        if not self.choices:
            raise ConfigError(f"Space {self.name!r} has no families.")
        tasks = {FAMILIES.get(c.family).task for c in self.choices}
        if len(tasks) > 1:
            raise ConfigError(f"Space {self.name!r} mixes task kinds {sorted(tasks)}; use one kind per space.")

    @property
    def task(self) -> str:
        return FAMILIES.get(self.choices[0].family).task

    @property
    def families(self) -> list[str]:
        return [c.family for c in self.choices]


SPACES: Registry[SpaceSpec] = Registry("architecture space")


def adapt_config(config: Any, task_values: Mapping[str, Any]) -> Any:
    """`config` with the task's shape fields (see TASK_FIELDS) set where the config has such a field."""
    names = {f.name for f in dataclasses.fields(config)}
    return replace_config(config, {k: v for k, v in task_values.items() if k in names and k in TASK_FIELDS})


class ArchitectureSampler:
    """Seeded draws from a space, optionally adapted to a task and excluding held-out hashes.

    `state_dict()`/`load_state_dict()` hold the generator state, so resumed training continues the same stream.

    Args:
        space: a `SpaceSpec` or the name of a registered one.
        seed: seed of the sampler's own generator (never the global RNG).
        task_values: fields every config gets (e.g. {'in_channels': 1, 'image_size': 8, 'num_classes': 10}).
        exclude: config hashes never returned (held-out architectures).
    """

    def __init__(
        self,
        space: SpaceSpec | str,
        *,
        seed: int = 0,
        task_values: Mapping[str, Any] | None = None,
        exclude: Iterable[str] = (),
    ) -> None:
        self.space = SPACES.get(space) if isinstance(space, str) else space
        self.task_values = dict(task_values or {})
        self.exclude = set(exclude)
        self.generator = torch.Generator().manual_seed(seed)
        weights = torch.tensor([c.weight for c in self.space.choices], dtype=torch.float64)
        self._probs = weights / weights.sum()

    def _draw(self) -> Any:
        index = int(torch.multinomial(self._probs, 1, generator=self.generator))
        choice = self.space.choices[index]
        spec: FamilySpec = FAMILIES.get(choice.family)
        config = replace_config(spec.sampler(choice.variant)(self.generator), choice.overrides)
        return adapt_config(config, self.task_values)

    def sample(self, max_attempts: int = 1000) -> Any:
        """One config that is not excluded."""
        for _ in range(max_attempts):
            config = self._draw()
            if config_hash(config) not in self.exclude:
                return config
        raise ConfigError(f"Space {self.space.name!r} gave only excluded architectures in {max_attempts} draws.")

    def __iter__(self) -> Iterator[Any]:
        while True:
            yield self.sample()

    def distinct(self, num: int, *, max_attempts: int | None = None) -> list[Any]:
        """`num` distinct, non-excluded configs; an error says how many exist when the space holds fewer."""
        max_attempts = 50 * num + 200 if max_attempts is None else max_attempts
        found: dict[str, Any] = {}
        for _ in range(max_attempts):
            if len(found) == num:
                break
            config = self._draw()
            key = config_hash(config)
            if key not in self.exclude:
                found.setdefault(key, config)
        if len(found) < num:
            raise ConfigError(
                f"Space {self.space.name!r} holds only {len(found)} distinct architectures (found in "
                f"{max_attempts} draws), not {num}. Ask for at most {len(found)}."
            )
        return list(found.values())

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "exclude": sorted(self.exclude)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.exclude = set(state["exclude"])


def _register(name: str, *choices: FamilyChoice) -> None:
    SPACES.register(name, SpaceSpec(name, tuple(choices)))


_register("cnns", FamilyChoice("cnn"))
_register("resnets", FamilyChoice("resnet"))
_register("vits", FamilyChoice("vit"))
_register("vits-wide", FamilyChoice("vit", variant="wide"))
_register("gpts", FamilyChoice("gpt2"))
_register("llamas", FamilyChoice("llama"))
_register("lms", FamilyChoice("gpt2"), FamilyChoice("llama"))  # GPT-2 and Llama, half each
_register("lms-plain", FamilyChoice("gpt2", 0.375), FamilyChoice("llama", 0.375), FamilyChoice("plain-lm", 0.25))
_register("plain", FamilyChoice("plain"))
_register("mixed", FamilyChoice("cnn", 0.4), FamilyChoice("resnet", 0.3), FamilyChoice("vit", 0.3))
# CPU-sized versions, for training on 2 cores in minutes (the embedded default run uses mixed-plain-tiny, below).
_register("cnns-tiny", FamilyChoice("cnn", variant="tiny"))
_register("resnets-tiny", FamilyChoice("resnet", variant="tiny"))
_register("vits-tiny", FamilyChoice("vit", variant="tiny"))
_register("gpts-tiny", FamilyChoice("gpt2", variant="tiny"))
_register("llamas-tiny", FamilyChoice("llama", variant="tiny"))
_register("lms-tiny", FamilyChoice("gpt2", variant="tiny"), FamilyChoice("llama", variant="tiny"))
_register("plain-tiny", FamilyChoice("plain", variant="tiny"))
_register("plain-convs-tiny", FamilyChoice("plain", variant="tiny-conv"))  # conv stacks of every norm, no MLPs
_register(
    "mixed-tiny",
    FamilyChoice("cnn", 0.4, variant="tiny"),
    FamilyChoice("resnet", 0.3, variant="tiny"),
    FamilyChoice("vit", 0.3, variant="tiny"),
)
# mixed-tiny with plain MLPs and conv stacks, the shapes of user code (issue 11: GHNs trained without them fine-tune
# such networks worse than their default init early on).
_register(
    "mixed-plain-tiny",
    FamilyChoice("cnn", 0.25, variant="tiny"),
    FamilyChoice("resnet", 0.2, variant="tiny"),
    FamilyChoice("vit", 0.3, variant="tiny"),
    FamilyChoice("plain", 0.25, variant="tiny"),
)
# mixed-plain-tiny at half weight and plain conv stacks for the other half: a second training stage for a GHN that was
# trained on mixed-plain-tiny and fits conv stacks poorly (issue 11; trained from scratch, a conv-heavy mix fit less of
# every family: c1 in benchmarks/RESULTS.md).
_register(
    "mixed-convs-tiny",
    FamilyChoice("cnn", 0.125, variant="tiny"),
    FamilyChoice("resnet", 0.1, variant="tiny"),
    FamilyChoice("vit", 0.15, variant="tiny"),
    FamilyChoice("plain", 0.125, variant="tiny"),
    FamilyChoice("plain", 0.5, variant="tiny-conv"),
)
# lms-tiny with plain-PyTorch LMs (`nn.TransformerEncoder`, PyTorch's default init), the text shapes of user code.
_register(
    "lms-plain-tiny",
    FamilyChoice("gpt2", 0.375, variant="tiny"),
    FamilyChoice("llama", 0.375, variant="tiny"),
    FamilyChoice("plain-lm", 0.25, variant="tiny"),
)
