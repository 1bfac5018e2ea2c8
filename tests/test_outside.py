"""The outside evaluation set (`ghn.evaluate.outside`): networks written the way users write them build for a task's
shapes, are traced in full, are predicted at the scale of their own init, and run through `evaluate_ghn`."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import ghn
from ghn.errors import ConfigError, UnknownNameError
from ghn.evaluate import evaluate_ghn, parse_archs
from ghn.evaluate.outside import OUTSIDE, outside_names
from ghn.graph import build_graph
from ghn.nn.normalize import NORM_BOUND

IMAGE = {"in_channels": 1, "image_size": 8, "num_classes": 10}
TEXT = {"vocab_size": 256, "n_positions": 32}
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None


def _built(name: str):
    entry = OUTSIDE.get(name)
    if entry.needs and importlib.util.find_spec(entry.needs) is None:
        pytest.skip(f"needs {entry.needs}")
    values = IMAGE if entry.kind == "image" else TEXT
    model = entry.build(values)
    x = torch.rand(2, 1, 8, 8) if entry.kind == "image" else torch.randint(0, 256, (2, 32))
    return entry, model, x


def test_both_task_kinds_have_outside_networks() -> None:
    assert len(outside_names("image")) >= 6 and len(outside_names("text")) >= 4
    assert set(outside_names("image")).isdisjoint(outside_names("text"))


@pytest.mark.parametrize("own_spectrum", [False, True], ids=["raw", "own-spectrum"])
@pytest.mark.parametrize("name", OUTSIDE.names())
def test_outside_network_is_traced_in_full_and_predicted_at_its_own_scale(name: str, own_spectrum: bool) -> None:
    """Rule compared with: each weight tensor's std within 0.5x-2x of the std of the same tensor in the model's own
    (PyTorch or transformers default) init; norm scales inside (1 - 0.8 * NORM_BOUND, 1 + 0.8 * NORM_BOUND). For an
    untrained GHN writing its predictions alone and one putting them at the own init's spectrum."""
    entry, model, x = _built(name)
    out = model(x)
    width = (out if isinstance(out, torch.Tensor) else out.logits).shape[-1]
    assert width == (10 if entry.kind == "image" else 256)
    graph = build_graph(model, x[:1])
    assert graph.coverage().fraction == 1.0, graph.coverage()
    own = {n: p.detach().clone() for n, p in model.named_parameters()}
    hyper = ghn.GHN.from_preset("logah-tiny", own_spectrum=own_spectrum)
    predicted = ghn.predict(model, hyper, example_inputs=x[:1])
    assert predicted.ghn_report.is_complete
    for param_name, value in predicted.named_parameters():
        info, reference = graph.params.get(param_name), own[param_name]
        if info is None:
            continue  # a tied alias
        assert torch.isfinite(value).all(), param_name
        if value.dim() >= 2 and reference.std() > 0:
            ratio = float(value.std() / reference.std())
            assert 0.5 <= ratio <= 2.0, (param_name, ratio)
        if info.role == "norm_scale":
            assert (value - 1).abs().max() < 0.8 * NORM_BOUND, param_name


def test_outside_items_are_parsed_and_checked() -> None:
    assert parse_archs("heldout:2,outside,outside:mlp") == [("heldout", 2), ("outside", None), ("outside", "mlp")]
    with pytest.raises(UnknownNameError, match="mlpp"):
        parse_archs("outside:mlpp")


def test_evaluate_ghn_runs_the_outside_set_for_the_task_kind(digits_ghn) -> None:
    result = evaluate_ghn(digits_ghn, task="digits", archs="outside:mlp,outside:lenet", steps=(0, 20), seeds=1)
    assert [a.name for a in result.archs] == ["outside:mlp", "outside:lenet"]
    assert all(a.family == "outside" and a.coverage == 1.0 for a in result.archs)
    rows = result.versus("ghn", "random")
    assert [r["step"] for r in rows] == [0, 20] and all(r["num_archs"] == 2 for r in rows)
    assert 0.0 <= rows[-1]["init"] <= 1.0 and 0 <= rows[-1]["wins"] <= 2


def test_an_outside_network_of_the_other_kind_is_refused(digits_ghn) -> None:
    with pytest.raises(ConfigError, match="is a text model but task 'digits' is image data"):
        evaluate_ghn(digits_ghn, task="digits", archs="outside:encoder-lm", steps=(0,), seeds=1)


@pytest.fixture(scope="module")
def digits_ghn():
    hyper = ghn.GHN.from_preset("logah-tiny")
    hyper.metadata = {"task": "digits"}
    return hyper
