"""Fixtures every test may use: tiny models, a fixed seed, one intra-op thread, the default dtype restored, and the
`gpu` marker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `@pytest.mark.gpu` tests, saying why, when this machine has no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same global RNG state."""
    torch.manual_seed(0)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Run each test module on one intra-op thread, then restore the previous count.

    Tiny models spend more time synchronizing OpenMP threads than computing (a two-thread forward of a DARTS network
    goes from ~40 ms to over a second when other processes share the cores). Module-scoped, so a module-scoped
    result is computed with the same thread count as the runs compared with it (reductions split over threads
    round differently).
    """
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(num_threads)


@pytest.fixture(autouse=True)
def _restore_default_dtype():
    """A test that changes the default dtype cannot leak it into the next one."""
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)


class TinyMLP(nn.Module):
    """Two linear layers with a ReLU between them.

    Shapes:
        input: (B, 8)
        output: (B, 3)
    """

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class TinyCNN(nn.Module):
    """Conv, batch norm, ReLU, a residual conv, global pooling and a linear head.

    Shapes:
        input: (B, 3, 16, 16)
        output: (B, 10)
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))  # (B, 8, 16, 16)
        x = x + self.conv(x)
        return self.head(x.mean((2, 3)))  # (B, 10)

    def example_inputs(self) -> torch.Tensor:
        return torch.zeros(1, 3, 16, 16)


@pytest.fixture
def tiny_mlp() -> nn.Module:
    return TinyMLP()


@pytest.fixture
def tiny_cnn() -> nn.Module:
    return TinyCNN()
