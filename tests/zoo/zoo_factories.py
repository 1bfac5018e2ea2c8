"""Factories for the 'module:' spec tests (imported by `ghn.zoo.create` through a sys.path entry)."""

from torch import nn


def make_mlp(hidden: int = 4) -> nn.Module:
    return nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, 2))


def make_number() -> int:
    return 3
