"""Held-out architecture draws shared by training (`GHNDataModule`) and evaluation (`ghn eval`)."""

from __future__ import annotations

from ghn.data import load_task
from ghn.data.architectures import HELDOUT_SEED_OFFSET, heldout_configs, task_values
from ghn.zoo import config_hash
from ghn.zoo.space import ArchitectureSampler

VALUES = {"in_channels": 1, "image_size": 8, "num_classes": 10}


def test_heldout_configs_are_distinct_adapted_draws_of_the_offset_seed():
    configs = heldout_configs("vits-tiny", VALUES, 4, seed=3)
    expected = ArchitectureSampler("vits-tiny", seed=3 + HELDOUT_SEED_OFFSET, task_values=VALUES).distinct(4)
    assert configs == expected
    assert len({config_hash(c) for c in configs}) == 4
    assert all((c.in_channels, c.image_size, c.num_classes) == (1, 8, 10) for c in configs)


def test_fewer_heldout_configs_are_a_prefix_of_more():
    assert heldout_configs("vits-tiny", VALUES, 2) == heldout_configs("vits-tiny", VALUES, 5)[:2]


def test_task_values_are_the_shape_fields_of_a_task():
    assert task_values(load_task("digits")) == VALUES
    assert task_values(load_task("pydoc", context=32)) == {"vocab_size": 256, "n_positions": 32}
