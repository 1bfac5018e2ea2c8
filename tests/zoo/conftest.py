"""Zoo tests run many tiny CPU models: one intra-op thread is faster for them and immune to oversubscribed cores."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Use one intra-op thread for the test, then restore the previous count.

    Tiny convolutions spend more time synchronizing OpenMP threads than computing; when other processes share
    the cores, a two-thread forward of a DARTS network goes from ~40 ms to over a second.
    """
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(num_threads)
