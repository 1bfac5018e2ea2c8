"""`GHNDataModule`: pairs meta-batches of architectures with batches of task data, for image and text tasks.

Architectures are adapted to the task's shapes (channels, image size, classes, vocabulary, context), so no trainer
hard-codes them. Held-out architectures come from a separate seed and are excluded from training by hash.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader

from ghn._logging import get_logger
from ghn.data import TASKS, TaskData, load_task
from ghn.data.architectures import (
    ArchitectureDataset,
    SampledArchitectures,
    collate_architectures,
    heldout_configs,
    task_values,
    training_sampler,
)
from ghn.errors import ConfigError
from ghn.zoo import config_hash, lookup_config
from ghn.zoo.space import SPACES, ArchitectureSampler, adapt_config

__all__ = ["GHNDataModule"]

logger = get_logger(__name__)


def _archs_batch(items: list) -> dict[str, list]:
    return {"archs": collate_architectures(items)}


class GHNDataModule(L.LightningDataModule):
    """Training batches are {'archs': [Architecture] * m, 'data': (x, y)}; validation batches hold held-out archs.

    Args:
        task: task data name (see `ghn.data.list_tasks()`): digits, cifar10, cifar100, imagefolder, pydoc, textfile.
        task_options: keyword options of the task loader (e.g. {'root': 'data'} for cifar10, {'context': 64}).
        space: architecture space (see `ghn.zoo.space.SPACES`): mixed-plain-tiny (default), mixed, cnns, resnets,
            vits, gpts, plain, and their -tiny versions.
        num_train_archs: size of the fixed set of distinct training architectures; None samples without end.
        num_heldout_archs: held-out architectures (never trained on) for validation and the final table.
        heldout_space: the space the held-out architectures are drawn from (default: `space`). A GHN trained in
            stages (`GHNModule.init_from`) on another space keeps its first stage's held-out draws this way: name
            that stage's space, with the same seed, and no stage trains on them.
        replay_archs: the first N training architectures of `heldout_space` (an earlier stage's training set, drawn
            as that stage drew them with the same seed) join this stage's training set, so a later stage keeps
            training on what the first one fit beside `space`'s new networks (needs `num_train_archs`).
        heldout_presets: named zoo presets (e.g. 'resnet18-cifar') also held out, adapted to the task's shapes.
        meta_batch_size: architectures per training step (m).
        batch_size: data samples per training step, shared by the m architectures (each architecture's own
            samples with `batch_per_arch`).
        batch_per_arch: every architecture of a meta-batch trains on its own `batch_size` samples (a loader batch
            of m * batch_size), rather than all m on the same ones: more distinct data per step at the same cost.
        eval_batch_size: data samples per evaluation batch.
        num_workers: DataLoader workers for the data batches.
        seed: seed of architecture sampling (held-out architectures use a derived seed).
        progress: show progress bars while graphs are built.
    """

    def __init__(
        self,
        task: str = "digits",
        task_options: dict[str, Any] | None = None,
        space: str = "mixed-plain-tiny",
        num_train_archs: int | None = 300,
        num_heldout_archs: int = 20,
        heldout_space: str | None = None,
        replay_archs: int = 0,
        heldout_presets: tuple[str, ...] = (),
        meta_batch_size: int = 4,
        batch_size: int = 64,
        batch_per_arch: bool = False,
        eval_batch_size: int = 512,
        num_workers: int = 0,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("meta_batch_size", meta_batch_size), ("batch_size", batch_size),
                            ("eval_batch_size", eval_batch_size), ("num_heldout_archs", num_heldout_archs)):
            if value <= 0:
                raise ConfigError(f"GHNDataModule {name} must be positive, got {value!r}.")
        if num_train_archs is not None and num_train_archs < meta_batch_size:
            raise ConfigError(
                f"num_train_archs ({num_train_archs}) is smaller than one meta-batch ({meta_batch_size}). "
                "Use more architectures or a smaller meta_batch_size."
            )
        if num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {num_workers!r}.")
        if replay_archs < 0:
            raise ConfigError(f"replay_archs must be >= 0, got {replay_archs!r}.")
        if replay_archs and num_train_archs is None:
            raise ConfigError(
                "replay_archs adds an earlier stage's training architectures to a fixed training set; set "
                "num_train_archs (an endless stream of new architectures has no set to add them to)."
            )
        TASKS.get(task)
        kind = SPACES.get(space).task  # unknown names fail here, before any work
        heldout_kind = kind if heldout_space is None else SPACES.get(heldout_space).task
        if heldout_kind != kind:
            raise ConfigError(
                f"heldout_space {heldout_space!r} holds {heldout_kind} models but space {space!r} holds {kind} "
                "models; draw held-out architectures of the kind the GHN trains on."
            )
        for name in heldout_presets:
            lookup_config(name)
        self.save_hyperparameters()
        self.config = self.hparams
        self.progress = progress
        self.task: TaskData | None = None
        self.train_archs: ArchitectureDataset | SampledArchitectures | None = None
        self.heldout: ArchitectureDataset | None = None
        self._eval_cache: dict[str, list] = {}
        self._sampler: ArchitectureSampler | None = None

    @property
    def heldout_space(self) -> str:
        """The space the held-out architectures come from: `heldout_space`, else the training space."""
        return self.config.heldout_space or self.config.space

    # -- setup ---------------------------------------------------------------------------------------------------
    def load_task(self) -> TaskData:
        """Load the task data (once) and check that the space holds models for it: the entry point calls this
        before any process is spawned, so a wrong path or option fails once, in one line."""
        if self.task is not None:
            return self.task
        config = self.config
        task = load_task(config.task, **(config.task_options or {}))
        space = SPACES.get(config.space)
        if space.task != task.kind:
            raise ConfigError(
                f"Space {config.space!r} holds {space.task} models but task {config.task!r} is {task.kind} data. "
                f"Pick a {task.kind} space ({', '.join(n for n in SPACES.names() if SPACES.get(n).task == task.kind)})."
            )
        self.task = task
        return task

    def setup(self, stage: str | None = None) -> None:
        if self.heldout is not None:
            return
        config = self.config
        self.load_task()
        space = SPACES.get(config.space)
        values = task_values(self.task)
        configs = heldout_configs(self.heldout_space, values, config.num_heldout_archs, seed=config.seed)
        configs += [adapt_config(lookup_config(name)[1], values) for name in config.heldout_presets]
        rank = self.trainer.global_rank if self.trainer is not None else 0
        progress = self.progress and rank == 0  # every rank builds the graphs; one bar, like Lightning's own
        self.heldout = ArchitectureDataset(configs, progress=progress, description="held-out graphs")
        self._sampler = training_sampler(space, values, seed=config.seed, exclude=self.heldout.hashes)
        if config.num_train_archs is None:
            self.train_archs = SampledArchitectures(self._sampler, rank=rank)
        else:
            configs = self._sampler.distinct(config.num_train_archs) + self._replayed(values)
            configs = list({config_hash(c): c for c in configs}.values())  # a replayed draw may also be a new one
            self.train_archs = ArchitectureDataset(configs, progress=progress, description="training graphs")
        logger.info(
            "Task %s (%s); space %s; %s training and %d held-out architectures%s",
            config.task, self.task.kind, config.space,
            "endless" if config.num_train_archs is None else len(self.train_archs), len(self.heldout),
            f" ({config.replay_archs} of them replayed from {self.heldout_space})" if config.replay_archs else "",
        )

    def _replayed(self, values: dict[str, Any]) -> list[Any]:
        """The first `replay_archs` training configs of `heldout_space`, drawn as a stage trained on it drew them."""
        if not self.config.replay_archs:
            return []
        stream = training_sampler(self.heldout_space, values, seed=self.config.seed, exclude=self.heldout.hashes)
        return stream.distinct(self.config.replay_archs)

    # -- loaders -------------------------------------------------------------------------------------------------
    def train_dataloader(self) -> CombinedLoader:
        config = self.config
        is_map = isinstance(self.train_archs, ArchitectureDataset)
        archs = DataLoader(
            self.train_archs,
            batch_size=config.meta_batch_size,
            shuffle=is_map,
            drop_last=True,
            collate_fn=collate_architectures,
        )
        data = DataLoader(
            self.task.train,
            batch_size=config.batch_size * (config.meta_batch_size if config.batch_per_arch else 1),
            shuffle=True,
            drop_last=True,
            num_workers=config.num_workers,
            persistent_workers=config.num_workers > 0,
        )
        return CombinedLoader({"archs": archs, "data": data}, mode="max_size_cycle" if is_map else "min_size")

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """With `batch_per_arch`, a training batch's data is split into one (x, y) of `batch_size` per architecture,
        as 'data_per_arch'."""
        if not (self.config.batch_per_arch and "data" in batch):
            return batch
        x, y = batch["data"]
        num = len(batch["archs"])
        rest = {key: value for key, value in batch.items() if key != "data"}
        return {**rest, "data_per_arch": list(zip(x.chunk(num), y.chunk(num), strict=True))}

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.heldout, batch_size=self.config.meta_batch_size, shuffle=False, collate_fn=_archs_batch)

    def eval_batches(self, split: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The whole `split` ('val' or 'test') as a fixed list of batches (cached)."""
        if split not in self._eval_cache:
            dataset = {"val": self.task.val, "test": self.task.test}[split]
            loader = DataLoader(dataset, batch_size=self.config.eval_batch_size, shuffle=False)
            self._eval_cache[split] = list(loader)
        return self._eval_cache[split]

    # -- resume --------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self._sampler.state_dict()} if self._sampler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "sampler" in state:
            self.setup()
            self._sampler.load_state_dict(state["sampler"])
