"""`FinetuneRecipe`: the one fixed fine-tuning recipe per task kind (the `RECIPES` table), and `finetune`, which
trains a network with it and scores it on a grid of step counts.

The recipes (constant learning rate, so the score after N steps does not depend on how many steps follow):

| kind  | optimizer | lr   | betas       | weight decay | batch | grad clip | augmentation | eval every |
|-------|-----------|------|-------------|--------------|-------|-----------|--------------|------------|
| image | AdamW     | 1e-3 | (0.9, 0.999)| 0.01         | 32    | 1.0       | off          | 20 steps   |
| text  | AdamW     | 1e-3 | (0.9, 0.95) | 0.01         | 16    | 1.0       | (none)       | 20 steps   |

AdamW serves every family of a mixed space (ViTs train poorly with SGD at a constant rate). Augmentation is off so
that a short fine-tune measures the init, not the augmentation noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ghn.data.metrics import evaluate, task_loss
from ghn.errors import ConfigError
from ghn.registry import Registry

__all__ = ["FinetuneRecipe", "RECIPES", "finetune"]

_OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adamw": lambda params, recipe: torch.optim.AdamW(
        params, lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay
    ),
    "sgd": lambda params, recipe: torch.optim.SGD(
        params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay, nesterov=recipe.momentum > 0
    ),
}


@dataclass(frozen=True, kw_only=True)
class FinetuneRecipe:
    """How every network of an evaluation is fine-tuned: the same for every init, architecture and seed."""

    optimizer: Literal["adamw", "sgd"] = "adamw"
    """'adamw' or 'sgd' (Nesterov momentum when `momentum` > 0)."""
    lr: float = 1e-3
    """Constant learning rate (no warm-up, no decay)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW's betas."""
    momentum: float = 0.9
    """SGD's momentum."""
    weight_decay: float = 0.01
    """Decoupled (AdamW) or L2 (SGD) weight decay on every parameter."""
    batch_size: int = 32
    """Training samples (images or token windows) per step."""
    eval_batch_size: int = 512
    """Test samples per evaluation batch; large, since BatchNorm uses batch statistics when scoring."""
    grad_clip: float | None = 1.0
    """Clip the global gradient norm to this value; None turns clipping off."""
    augment: bool = False
    """Load the task with its training augmentation (where the task has one, e.g. random crops)."""
    eval_every: int = 20
    """Also score the network every this many steps, for the curves and steps-to-target."""

    def __post_init__(self) -> None:
        if self.optimizer not in _OPTIMIZERS:
            raise ConfigError(
                f"FinetuneRecipe field 'optimizer' must be one of {sorted(_OPTIMIZERS)}, got {self.optimizer!r}."
            )
        positive = {"lr": self.lr, "batch_size": self.batch_size, "eval_batch_size": self.eval_batch_size,
                    "eval_every": self.eval_every}
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"FinetuneRecipe field {name!r} must be positive, got {value!r}.")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"FinetuneRecipe field 'grad_clip' must be positive or None, got {self.grad_clip!r}.")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ConfigError(
                f"FinetuneRecipe needs weight_decay >= 0 and 0 <= momentum < 1, got {self.weight_decay!r} and "
                f"{self.momentum!r}."
            )

    def make_optimizer(self, params: Iterable[Tensor]) -> torch.optim.Optimizer:
        return _OPTIMIZERS[self.optimizer](params, self)

    def grid(self, steps: Sequence[int]) -> tuple[int, ...]:
        """Step counts a run is scored at: `steps` plus every multiple of `eval_every` up to the last of them."""
        return tuple(sorted(set(steps) | set(range(0, steps[-1] + 1, self.eval_every))))


#: The recipe of each task kind ('image', 'text'); see the module docstring for the table.
RECIPES = Registry[FinetuneRecipe]("fine-tune recipe")
RECIPES.register("image", FinetuneRecipe())
RECIPES.register("text", FinetuneRecipe(betas=(0.9, 0.95), batch_size=16, eval_batch_size=64))


def finetune(
    model: nn.Module,
    train: Dataset,
    eval_batches: Sequence[tuple[Tensor, Tensor]],
    *,
    recipe: FinetuneRecipe,
    grid: Sequence[int],
    seed: int,
) -> list[dict[str, float]]:
    """Train `model` in place with `recipe` and score it on `eval_batches` at every step count of `grid`.

    The training data order comes from a DataLoader generator seeded with `seed` alone, so every init and
    architecture sees the same batches. Dropout and augmentation draw from the global RNG, which the caller seeds.
    A run whose training loss stops being finite scores NaN from then on.

    Args:
        model: the network, on the device of `eval_batches`.
        train: training split; batches of `recipe.batch_size` samples, shuffled, the last partial batch dropped.
        eval_batches: the test split as a fixed list of (x, y) batches, already on the model's device.
        grid: increasing step counts, the first of them usually 0 (no training).

    Returns:
        One `ghn.data.metrics.evaluate` dict (loss, acc, ppl) per entry of `grid`.
    """
    device = next(model.parameters()).device
    loader = DataLoader(
        train, batch_size=recipe.batch_size, shuffle=True, drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )
    optimizer = recipe.make_optimizer(model.parameters())
    batches = iter(loader)
    scores: list[dict[str, float]] = []
    step, is_finite = 0, True
    for target in grid:
        while is_finite and step < target:
            try:
                x, y = next(batches)
            except StopIteration:  # a new epoch: the seeded generator gives the next permutation
                batches = iter(loader)
                x, y = next(batches)
            is_finite = _train_step(model, optimizer, x.to(device), y.to(device), recipe.grad_clip)
            step += 1
        scores.append(evaluate(model, eval_batches) if is_finite else _nan_scores())
    return scores


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, clip: float | None) -> bool:
    """One optimizer step; False (and no update) when the loss is not finite."""
    model.train()
    loss, _ = task_loss(model(x), y)
    if not torch.isfinite(loss):
        return False
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return True


def _nan_scores() -> dict[str, float]:
    return {"loss": math.nan, "acc": math.nan, "ppl": math.nan}
