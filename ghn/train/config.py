"""Typed configs of GHN training (YAML and command line via LightningCLI); the data side is `GHNDataModule`'s
signature."""

from __future__ import annotations

from dataclasses import dataclass

from ghn.errors import ConfigError

__all__ = ["OptimConfig"]


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """AdamW with linear warmup and cosine decay, stepped every optimizer step."""

    lr: float = 1e-3
    """Peak learning rate."""
    weight_decay: float = 1e-5
    """AdamW weight decay of the GHN's parameters."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    warmup_steps: int = 50
    """Steps of linear warmup from 0 to `lr`."""
    min_lr_ratio: float = 0.05
    """The cosine schedule ends at `lr * min_lr_ratio`."""

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"OptimConfig.lr must be positive, got {self.lr!r}.")
        if self.warmup_steps < 0:
            raise ConfigError(f"OptimConfig.warmup_steps must be >= 0, got {self.warmup_steps!r}.")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"OptimConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}.")
