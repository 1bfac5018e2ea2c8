"""The shipped checkpoints do their job: held-out architectures of their own space and task, predicted with no
training, against the family's random init (issue 6); fine-tuning from their predictions at least as good as from
the model's own init, with weights at its scale and norms off their bounds (issue 11). Fixed seeds, real margins."""

from __future__ import annotations

import importlib.util
from statistics import mean, median

import pytest
import torch

import ghn
from ghn.data import load_task
from ghn.data.architectures import heldout_configs, make_architecture, task_values
from ghn.data.metrics import evaluate
from ghn.evaluate import INITS, InitContext, evaluate_ghn
from ghn.evaluate.outside import OUTSIDE, outside_names
from ghn.hub import PRETRAINED
from ghn.nn.normalize import NORM_BOUND, param_scales


def _heldout_scores(name: str, count: int) -> tuple[list[float], list[float]]:
    """(GHN, random-init) metric per held-out architecture of the checkpoint's own space, on its task's test split."""
    if name not in PRETRAINED.names():
        pytest.fail(f"{name!r} is not in pretrained/manifest.json; ship it with pretrained/ship.py")
    hypernet = ghn.from_pretrained(name)
    meta = hypernet.metadata
    task = load_task(meta["task"], **({"context": meta["task_values"]["n_positions"]} if meta["task_kind"] == "text" else {}))
    data = list(torch.utils.data.DataLoader(task.test, batch_size=256))[:4]
    space = meta.get("heldout_space") or meta["space"]  # a GHN trained in stages keeps its first stage's held-out
    archs = [make_architecture(c) for c in heldout_configs(space, task_values(task), count, seed=0)]
    key = "acc" if task.kind == "image" else "loss"
    predicted, random = [], []
    for arch in archs:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = arch.build()
        random.append(evaluate(model, data)[key])
        INITS.get("ghn").apply(model, InitContext(arch.graph, hypernet))  # as ghn.predict writes it (blend included)
        predicted.append(evaluate(model, data)[key])
    return predicted, random


def test_shipped_digits_ghn_beats_random_init_with_no_training() -> None:
    predicted, random = _heldout_scores("logah-tiny.digits", 10)
    assert mean(random) < 0.16  # random init sits near chance (10%)
    assert mean(predicted) > 0.3, (predicted, random)  # issue 11: 3x chance; measured: 55.1% vs 10.1%, 9 of 10
    assert sum(p > r for p, r in zip(predicted, random)) >= 8


def test_shipped_pydoc_ghn_has_lower_loss_than_random_init_with_no_training() -> None:
    """Issue 11 asks for 2 nats/byte below the default init: the embeddings' half-free spectrum carries the token
    prior (`free_spectrum_share` 0.5; the flat own spectrum gave 1.3-1.5, benchmarks/RESULTS.md). The median, as
    a plain LM with a tied head at PyTorch's init starts at 23 nats and would carry the mean alone."""
    predicted, random = _heldout_scores("logah-tiny.pydoc", 6)
    assert median(predicted) < median(random) - 2.0, (predicted, random)  # nats/byte; measured: 2.94 vs 5.60
    assert all(p < r for p, r in zip(predicted, random))


def _finetuned(name: str, archs: str, steps: tuple[int, ...]) -> list[dict]:
    """`EvalResult.versus` of the shipped GHN against the model's default init on `archs`, one seed."""
    result = evaluate_ghn(ghn.from_pretrained(name), archs=archs, steps=steps, seeds=1, inits=("ghn", "random"))
    return result.versus("ghn", "random")


def test_shipped_digits_ghn_fine_tunes_at_least_as_well_as_default_init() -> None:
    """Issue 11's floor on fast networks written outside ghn.zoo: after 50 and 100 fine-tuning steps, GHN init at
    least as good as the model's own init on the mean (measured, seed 0: 85.3% vs 75.8% after 50 steps, 93.8% vs
    88.8% after 100; all three ahead after 50 and after 100 steps)."""
    _, fifty, hundred = _finetuned("logah-tiny.digits", "outside:mlp,outside:conv-bn,outside:lenet", (0, 50, 100))
    assert fifty["init"] >= fifty["reference"], fifty
    assert hundred["init"] >= hundred["reference"], hundred


def test_shipped_pydoc_ghn_fine_tunes_ahead_of_default_init() -> None:
    """Issue 11's floor on a causal LM written on nn.TransformerEncoder: lower loss than the model's own init before
    training and after 50 and 100 fine-tuning steps (measured, seed 0: 2.31 / 2.23 / 2.19 vs 5.67 / 2.71 / 2.38)."""
    for row in _finetuned("logah-tiny.pydoc", "outside:encoder-lm", (0, 50, 100)):
        assert row["init"] < row["reference"], row


_SPECS = {
    "logah-tiny.digits": ["outside:" + n for n in outside_names("image")] + ["zoo:resnet18-cifar", "zoo:vit-tiny/4"],
    "logah-tiny.pydoc": ["outside:" + n for n in outside_names("text")] + ["zoo:gpt2"],
}


def _predictions(name: str):
    """(spec, param name, ParamInfo, predicted value, the model's own init value, the std it asks for / the own
    init's) over the shipped GHN's specs."""
    hypernet = ghn.from_pretrained(name)
    values = {"in_channels": 1, "image_size": 8, "num_classes": 10} if "digits" in name else {"vocab_size": 256, "n_positions": 64}
    for spec in _SPECS[name]:
        source, _, model_name = spec.partition(":")
        entry = OUTSIDE.get(model_name) if source == "outside" else None
        if entry is not None and entry.needs and importlib.util.find_spec(entry.needs) is None:
            continue
        model = entry.build(values) if entry is not None else ghn.zoo.create(spec)
        graph = ghn.build_graph(model) if entry is None else ghn.build_graph(model, _example(entry.kind))
        own = {n: p.detach() for n, p in model.named_parameters()}
        scales = param_scales(graph)
        for param_name, value in ghn.predict_params(graph, hypernet).items():
            gain = scales[param_name].signal_gain if hypernet.config.signal_scale else 1.0
            yield spec, param_name, graph.params[param_name], value.detach(), own[param_name], gain


@pytest.mark.parametrize("name", list(_SPECS))
def test_shipped_ghn_predicts_weights_at_the_std_of_the_models_own_init(name: str) -> None:
    """Rule compared with: each weight tensor's std within 0.5x-2x of the same tensor's std in the model's own init
    (measured on a real build), times its signal gain where the GHN has `signal_scale` (ghn/nn/normalize.py: the
    weights of a network without norms at the Kaiming fan-in std, sqrt(6) = 2.45x PyTorch's default before a ReLU)."""
    for spec, param_name, _, value, own, gain in _predictions(name):
        if value.dim() >= 2 and own.std() > 0:
            ratio = float(value.std() / (own.std() * gain))
            assert 0.5 <= ratio <= 2.0, (spec, param_name, ratio, gain)


@pytest.mark.parametrize("name", list(_SPECS))
def test_shipped_ghn_keeps_norm_scales_away_from_their_bounds(name: str) -> None:
    """Norm scales inside 1 +- 0.8 * NORM_BOUND, i.e. never at (or near) their bounds (the deviation penalty and
    its max term keep them there: benchmarks/RESULTS.md, issue 11)."""
    for spec, param_name, info, value, _, _ in _predictions(name):
        if info.role == "norm_scale":
            assert float((value - 1).abs().max()) < 0.8 * NORM_BOUND, (spec, param_name)


def _example(kind: str) -> torch.Tensor:
    return torch.zeros(1, 1, 8, 8) if kind == "image" else torch.zeros(1, 64, dtype=torch.long)
