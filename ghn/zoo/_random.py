"""Draws from an explicit `torch.Generator`: samplers never touch the global random state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch

__all__ = ["randint", "choice", "coin"]

T = TypeVar("T")


def randint(generator: torch.Generator, low: int, high: int) -> int:
    """A uniform integer in [low, high], both ends included."""
    return int(torch.randint(low, high + 1, (1,), generator=generator).item())


def choice(generator: torch.Generator, options: Sequence[T]) -> T:
    """A uniform pick from `options`."""
    return options[randint(generator, 0, len(options) - 1)]


def coin(generator: torch.Generator, p: float = 0.5) -> bool:
    """True with probability `p`."""
    return bool(torch.rand((1,), generator=generator).item() < p)
