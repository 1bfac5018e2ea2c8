"""Datasets of architectures for GHN training: configs from a space, each built once on `meta` and turned into a
computation graph (with its PyG view) that is cached, never rebuilt per step."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from ghn._logging import get_logger
from ghn.graph import ComputationGraph, build_graph
from ghn.zoo import FAMILIES, config_hash, family_of
from ghn.zoo.space import ArchitectureSampler, SpaceSpec

if TYPE_CHECKING:
    from ghn.data.task import TaskData

__all__ = [
    "HELDOUT_SEED_OFFSET",
    "Architecture",
    "ArchitectureDataset",
    "SampledArchitectures",
    "collate_architectures",
    "heldout_configs",
    "make_architecture",
    "task_values",
    "training_sampler",
]

logger = get_logger(__name__)

#: Held-out architectures are drawn with seed `seed + HELDOUT_SEED_OFFSET`, so they never share a stream with the
#: training draws of the same seed.
HELDOUT_SEED_OFFSET = 1_000_003


def task_values(task: TaskData) -> dict[str, Any]:
    """The config fields a task sets in every architecture (see `ghn.zoo.space.adapt_config`): image shape and
    classes for image tasks, vocabulary and context for text tasks."""
    if task.kind == "image":
        return {"in_channels": task.in_channels, "image_size": task.image_size, "num_classes": task.num_classes}
    return {"vocab_size": task.vocab_size, "n_positions": task.context}


def heldout_configs(space: SpaceSpec | str, task_values: Mapping[str, Any], num: int, *, seed: int = 0) -> list[Any]:
    """The `num` held-out architectures of `space` for training seed `seed`: distinct configs, adapted to the
    task, that a GHN trained with this seed never sees. A smaller `num` gives a prefix of a larger one.

    Raises:
        ConfigError: the space holds fewer than `num` distinct architectures.
        UnknownNameError: `space` is not a registered space.
    """
    sampler = ArchitectureSampler(space, seed=seed + HELDOUT_SEED_OFFSET, task_values=task_values)
    return sampler.distinct(num)


def training_sampler(
    space: SpaceSpec | str, task_values: Mapping[str, Any], *, seed: int = 0, exclude: Sequence[str] = ()
) -> ArchitectureSampler:
    """The stream a GHN trained with seed `seed` draws its training architectures from, past the held-out hashes
    `exclude`: `distinct(n)` is its fixed training set (or that set's first n), iterating it the endless one."""
    return ArchitectureSampler(space, seed=seed, task_values=task_values, exclude=exclude)


@dataclass
class Architecture:
    """One architecture: its family, config, hash and computation graph (PyG view computed)."""

    family: str
    config: Any
    hash: str
    graph: ComputationGraph

    def build(self, device: torch.device | str | None = None) -> torch.nn.Module:
        """A fresh model of this architecture with the family's random init."""
        with torch.device(device or "cpu"):
            return FAMILIES.get(self.family).build(self.config)


def make_architecture(config: Any) -> Architecture:
    """Build `config` on `meta`, trace it, and compute the PyG view once."""
    spec = family_of(config)
    with torch.device("meta"):
        model = spec.build(config)
    graph = build_graph(model)
    graph.to_pyg()
    return Architecture(spec.name, config, config_hash(config), graph)


def collate_architectures(items: list[Architecture]) -> list[Architecture]:
    """A meta-batch stays a list: graphs are batched by the GHN itself."""
    return list(items)


class ArchitectureDataset(Dataset):
    """A fixed list of distinct architectures (map-style, so DDP shards it without overlap)."""

    def __init__(self, configs: Sequence[Any], *, progress: bool = False, description: str = "graphs") -> None:
        from tqdm.auto import tqdm

        self.items = [make_architecture(c) for c in tqdm(configs, desc=f"Building {description}", disable=not progress)]
        logger.info("Built %d %s", len(self.items), description)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Architecture:
        return self.items[index]

    @property
    def hashes(self) -> list[str]:
        return [a.hash for a in self.items]


class SampledArchitectures(IterableDataset):
    """An endless stream of architectures from a sampler; graphs are cached by hash as they are first seen.

    Each DDP rank and DataLoader worker draws from its own seed (seed + 1000 * rank + worker), so shards differ.
    """

    def __init__(self, sampler: ArchitectureSampler, *, rank: int = 0, cache_size: int = 4096) -> None:
        self.sampler = sampler
        self.rank = rank
        self.cache_size = cache_size
        self._cache: dict[str, Architecture] = {}

    def __iter__(self) -> Iterator[Architecture]:
        worker = get_worker_info()
        if worker is not None or self.rank:
            offset = 1000 * self.rank + (worker.id if worker is not None else 0)
            self.sampler.generator.manual_seed(int(self.sampler.generator.initial_seed()) + offset)
        for config in self.sampler:
            key = config_hash(config)
            if key not in self._cache:
                if len(self._cache) >= self.cache_size:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[key] = make_architecture(config)
            yield self._cache[key]
