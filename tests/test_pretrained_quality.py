"""The shipped checkpoints do their job: held-out architectures of their own space and task, predicted with no
training, against the family's random init (issue 6). Fixed seeds, real margins."""

from __future__ import annotations

from statistics import mean

import pytest
import torch

import ghn
from ghn.data import load_task
from ghn.data.architectures import heldout_configs, make_architecture, task_values
from ghn.data.metrics import evaluate
from ghn.hub import PRETRAINED


def _heldout_scores(name: str, count: int) -> tuple[list[float], list[float]]:
    """(GHN, random-init) metric per held-out architecture of the checkpoint's own space, on its task's test split."""
    if name not in PRETRAINED.names():
        pytest.fail(f"{name!r} is not in pretrained/manifest.json; ship it with pretrained/ship.py")
    hypernet = ghn.from_pretrained(name)
    meta = hypernet.metadata
    task = load_task(meta["task"], **({"context": meta["task_values"]["n_positions"]} if meta["task_kind"] == "text" else {}))
    data = list(torch.utils.data.DataLoader(task.test, batch_size=256))[:4]
    archs = [make_architecture(c) for c in heldout_configs(meta["space"], task_values(task), count, seed=0)]
    key = "acc" if task.kind == "image" else "loss"
    predicted, random = [], []
    for arch, params in zip(archs, hypernet([a.graph for a in archs])):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = arch.build()
        predicted.append(evaluate(model, data, params={k: v.detach() for k, v in params.items()})[key])
        random.append(evaluate(model, data)[key])
    return predicted, random


def test_shipped_digits_ghn_beats_random_init_with_no_training() -> None:
    predicted, random = _heldout_scores("logah-tiny.digits", 10)
    assert mean(random) < 0.16  # random init sits near chance (10%)
    assert mean(predicted) > mean(random) + 0.15, (predicted, random)  # measured: 33.6% vs 10.4%
    assert sum(p > r for p, r in zip(predicted, random)) >= 8


def test_shipped_pydoc_ghn_has_lower_loss_than_random_init_with_no_training() -> None:
    predicted, random = _heldout_scores("logah-tiny.pydoc", 6)
    assert mean(predicted) < mean(random) - 2.0, (predicted, random)  # nats per byte; measured: 2.74 vs 5.40
    assert all(p < r for p, r in zip(predicted, random))
