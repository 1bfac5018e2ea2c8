"""The evaluation protocol: finite numbers, random init near chance, exact reproducibility, the measures, bad input
failing before any work, and `ghn eval` end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from ghn.cli import main
from ghn.errors import ConfigError, UnknownNameError
from ghn.evaluate import (
    INITS,
    RECIPES,
    ArchInfo,
    EvalResult,
    FinetuneRecipe,
    InitContext,
    RunResult,
    evaluate_ghn,
    filter_similarity,
    orthogonal_init,
    parameter_diversity,
    protocol,
    steps_to_target,
)
from ghn.evaluate.measures import METRICS, is_clearly_behind
from ghn.graph import build_graph
from ghn.nn import GHN
from ghn.nn.normalize import param_scales, reference_std
from ghn.zoo import CNNConfig, ViTConfig

ZOO_TESTS = Path(__file__).resolve().parent / "zoo"
# Two tiny digits networks: a cell CNN with BatchNorm and a ViT (8x8 images, 1 channel, 10 classes after adaptation).
ARCHS = [
    CNNConfig(num_cells=2, init_channels=8),
    ViTConfig(image_size=8, patch_size=4, depth=2, embed_dim=16, num_heads=2, mlp_ratio=2.0),
]
SMALL = {"task": "digits", "archs": ARCHS, "steps": (0, 5), "seeds": 1}


@pytest.fixture(scope="module")
def ghn() -> GHN:
    torch.manual_seed(0)
    return GHN.from_preset("logah-tiny")


@pytest.fixture(scope="module")
def result(ghn):
    return evaluate_ghn(ghn, **SMALL)


def test_the_protocol_gives_finite_scores_for_every_run(result):
    assert result.grid == (0, 5) and len(result.runs) == len(ARCHS) * 3
    for run in result.runs:
        assert len(run.scores) == 2
        for scores in run.scores:
            assert all(math.isfinite(scores[key]) for key in ("loss", "acc", "ppl"))
            assert 0.0 <= scores["acc"] <= 1.0


def test_random_init_is_near_chance_with_no_training(result):
    for a in range(len(ARCHS)):
        assert 0.0 <= result.values(a, "random", "acc", 0)[0] <= 0.3


def test_steps_to_target_is_measured_against_random(result):
    for run in result.runs:
        if run.init == "random":
            assert run.steps_to_target is not None and run.steps_to_target <= 5
        if run.speedup is not None:
            assert run.speedup > 0


def test_the_same_seed_reproduces_the_same_table_exactly(ghn, result):
    again = evaluate_ghn(ghn, **SMALL)
    assert again.to_markdown() == result.to_markdown()
    assert [r.scores for r in again.runs] == [r.scores for r in result.runs]


def test_worker_processes_give_the_same_numbers(ghn, result):
    parallel = evaluate_ghn(ghn, **SMALL, workers=2)
    assert [(r.arch, r.init, r.seed, r.scores) for r in parallel.runs] == [
        (r.arch, r.init, r.seed, r.scores) for r in result.runs
    ]
    assert parallel.diversity == result.diversity and parallel.to_markdown() == result.to_markdown()


def test_markdown_names_no_training_and_after_n_steps(result):
    text = result.to_markdown()
    assert "| init | no training: acc (%) | no training: loss | after 5 steps: acc (%) |" in text
    for init in ("ghn", "random", "orthogonal"):
        assert f"| {init} |" in text
    assert text.count("| heldout:") == 0 and text.count("| config:0 | cnn |") == 3


def test_json_holds_every_run_as_strict_json(result):
    data = json.loads(result.to_json())
    assert data["metrics"] == ["acc", "loss"] and data["steps"] == [0, 5]
    assert len(data["runs"]) == 6 and data["recipe"]["optimizer"] == "adamw"
    assert set(data["diversity"]) == set(data["similarity"]) == {"ghn", "random", "orthogonal"}
    assert all(0.0 <= value <= 1.0 for value in data["similarity"].values())


def test_plots_are_pngs(result, tmp_path):
    paths = result.plot(tmp_path)
    assert sorted(p.name for p in paths) == ["acc.png", "acc_per_arch.png", "loss.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_text_tasks_report_loss_perplexity_and_bits_per_byte():
    from ghn.zoo import GPT2Config

    config = GPT2Config(n_layer=1, n_embd=16, n_head=2)
    result = evaluate_ghn(
        None, task="pydoc", task_options={"context": 16}, archs=[config], steps=(0, 2), seeds=1, inits=["random"]
    )
    assert [m.key for m in result.metrics] == ["loss", "ppl", "bpb"]
    scores = result.runs[0].scores[0]
    assert scores["bpb"] == pytest.approx(scores["loss"] / math.log(2))
    assert scores["ppl"] == pytest.approx(math.exp(scores["loss"]), rel=1e-5)
    assert abs(scores["loss"] - math.log(256)) < 1.0  # random init: near uniform over 256 bytes
    assert "no training: bits/byte" in result.to_markdown()


# -- measures -------------------------------------------------------------------------------------------------------
def test_steps_to_target_is_the_first_grid_step_that_reaches_it():
    acc, loss = METRICS["image"][0], METRICS["text"][0]
    assert steps_to_target((0, 20, 40), (0.1, 0.5, 0.7), 0.45, acc) == 20
    assert steps_to_target((0, 20, 40), (3.0, 2.0, 1.0), 2.5, loss) == 20
    assert steps_to_target((0, 20), (0.1, 0.2), 0.5, acc) is None
    assert steps_to_target((0, 20), (math.nan, math.nan), 0.5, acc) is None


def test_parameter_diversity_is_zero_for_copies_and_near_one_for_random_tensors():
    weight = torch.randn(16, 32)
    assert parameter_diversity([{"w": weight}, {"w": -2 * weight}]) == pytest.approx(0.0, abs=1e-9)
    independent = [{"w": torch.randn(64, 64), "b": torch.randn(64)} for _ in range(3)]
    assert parameter_diversity(independent) == pytest.approx(1.0, abs=0.05)
    assert parameter_diversity([{"w": torch.randn(4, 4)}, {"w": torch.randn(5, 4)}]) is None
    # only pairs across architectures count: two equal tensors inside one architecture do not lower it
    assert parameter_diversity([{"a": weight, "b": weight}, {"c": torch.randn(16, 32)}]) > 0.9


def test_filter_similarity_is_one_for_rank_one_tensors_and_small_for_random_ones():
    collapsed = torch.randn(32, 1) @ torch.randn(1, 64)  # every row the same direction (up to sign)
    assert filter_similarity([{"w": collapsed}]) == pytest.approx(1.0)
    expected = math.sqrt(2 / (math.pi * 256))  # E|cos| of independent random vectors in 256 dimensions
    assert filter_similarity([{"w": torch.randn(64, 256)}]) == pytest.approx(expected, rel=0.1)
    assert filter_similarity([{"b": torch.randn(8)}, {"w": torch.randn(1, 8)}]) is None


@pytest.mark.parametrize("name", INITS.names())
def test_every_registered_init_fills_a_network_with_finite_values(name, ghn):
    model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 3))
    INITS.get(name).apply(model, InitContext(build_graph(model, torch.zeros(1, 8)), ghn))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_orthogonal_init_is_orthogonal_at_the_role_scale_with_zero_biases_and_unit_norms():
    model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 3))
    graph = build_graph(model, torch.zeros(1, 8))
    orthogonal_init(model, InitContext(graph))
    first, norm, last = model[0], model[1], model[3]
    scales = param_scales(graph)
    std = reference_std(graph.params["0.weight"], scales["0.weight"])
    assert first.weight.pow(2).mean().sqrt().item() == pytest.approx(std, rel=1e-4)
    gram = first.weight.T @ first.weight  # (8, 8): the 8 columns of a tall matrix are orthogonal
    torch.testing.assert_close(gram / gram[0, 0], torch.eye(8), atol=1e-4, rtol=0)
    # the model's own init scale: PyTorch's default Linear init has std 1 / sqrt(3 * fan_in)
    assert std == pytest.approx(1 / math.sqrt(3 * 8), rel=1e-6)
    assert last.weight.pow(2).mean().sqrt().item() == pytest.approx(1 / math.sqrt(3 * 16), rel=1e-4)
    assert first.bias.abs().max() == 0 and (norm.weight == 1).all() and (norm.bias == 0).all()


def test_recipes_cover_both_task_kinds_and_validate_their_fields():
    assert set(RECIPES.names()) == {"image", "text"}
    assert RECIPES.get("image").grid((0, 50)) == (0, 20, 40, 50)
    with pytest.raises(ConfigError, match="'optimizer' must be one of"):
        FinetuneRecipe(optimizer="adam")
    with pytest.raises(ConfigError, match="'lr' must be positive"):
        FinetuneRecipe(lr=0.0)


# -- bad input fails before any work --------------------------------------------------------------------------------
@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a task is loaded or a network is trained."""

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the input was checked")

    monkeypatch.setattr(protocol, "load_task", forbidden)
    monkeypatch.setattr(protocol, "finetune", forbidden)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"task": "digitz"}, UnknownNameError, "Unknown task 'digitz'. Did you mean 'digits'"),
        ({"archs": "zoo:resnt18"}, UnknownNameError, "Unknown zoo preset or family 'resnt18'"),
        ({"archs": "zoo:resnet18,bogus"}, ConfigError, "'bogus' is neither 'heldout:N'"),
        ({"archs": "heldout:x"}, ConfigError, "needs a positive count"),
        ({"steps": (0, 50, 20)}, ConfigError, "strictly increasing"),
        ({"steps": (0, -5)}, ConfigError, "non-negative integers"),
        ({"inits": ["ghn", "xavier"]}, UnknownNameError, "Unknown init 'xavier'"),
        ({"seeds": 0}, ConfigError, "at least 1"),
        ({"device": "gpu0"}, ConfigError, "Unknown device 'gpu0'"),
        ({"workers": 0}, ConfigError, "workers must be a positive integer"),
    ],
)
def test_bad_input_raises_before_any_work(ghn, no_work, options, error, match):
    with pytest.raises(error, match=match):
        evaluate_ghn(ghn, **{**SMALL, **options})


def test_the_ghn_init_needs_a_ghn(no_work):
    with pytest.raises(ConfigError, match="Init 'ghn' needs a GHN"):
        evaluate_ghn(None, **SMALL)


def test_heldout_needs_a_space_when_the_metadata_has_none(ghn, monkeypatch):
    monkeypatch.setattr(protocol, "finetune", lambda *a, **k: pytest.fail("trained before checking the space"))
    with pytest.raises(ConfigError, match="needs the GHN's architecture space"):
        evaluate_ghn(ghn, **{**SMALL, "archs": "heldout:2"})


def test_train_archs_are_the_first_ones_the_ghn_trained_on(ghn, tmp_path):
    """'train:N' redraws what the GHN fit: the datamodule's first N training architectures, past the held-out ones
    the GHN recorded (to tell underfitting from not generalizing)."""
    from ghn.data.architectures import task_values
    from ghn.train.datamodule import GHNDataModule

    data = GHNDataModule(space="vits-tiny", num_train_archs=3, num_heldout_archs=2, meta_batch_size=1, progress=False)
    data.setup()
    path = ghn.save_pretrained(
        tmp_path / "ghn", task="digits", space="vits-tiny", task_kind="image", task_values=task_values(data.task),
        steps=0, heldout=[{"hash": h} for h in data.heldout.hashes],
    )  # fmt: skip
    result = evaluate_ghn(path, archs="train:3", steps=(0,), seeds=1, inits=("ghn",))
    assert [a.name for a in result.archs] == ["train:0", "train:1", "train:2"]
    assert [a.hash for a in result.archs] == data.train_archs.hashes
    assert not set(data.train_archs.hashes) & set(data.heldout.hashes)


def test_train_archs_need_the_recorded_heldout_ones(ghn_dir, monkeypatch):
    monkeypatch.setattr(protocol, "finetune", lambda *a, **k: pytest.fail("trained before checking the archs"))
    with pytest.raises(ConfigError, match="records none for this task and space"):
        evaluate_ghn(ghn_dir, **{**SMALL, "archs": "train:2"})
    with pytest.raises(ConfigError, match="needs a positive count, like 'train:10'"):
        evaluate_ghn(ghn_dir, **{**SMALL, "archs": "train:0"})


def test_specs_that_do_not_build_or_do_not_fit_the_task_fail_before_training(ghn, monkeypatch):
    monkeypatch.syspath_prepend(str(ZOO_TESTS))
    monkeypatch.setattr(protocol, "finetune", lambda *a, **k: pytest.fail("trained before checking the archs"))
    with pytest.raises(ConfigError, match="returned a 'int', not an nn.Module"):
        evaluate_ghn(ghn, **{**SMALL, "archs": "module:zoo_factories:make_number"})
    with pytest.raises(ConfigError, match="does not run on 'digits' inputs of shape"):
        evaluate_ghn(ghn, **{**SMALL, "archs": "module:zoo_factories:make_mlp"})


# -- ghn eval ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ghn_dir(ghn, tmp_path_factory) -> Path:
    """The untrained GHN saved like `ghn train` saves one, over the CPU-sized ViT space."""
    values = {"in_channels": 1, "image_size": 8, "num_classes": 10}
    path = tmp_path_factory.mktemp("ghn") / "ghn"
    ghn.save_pretrained(path, task="digits", space="vits-tiny", task_kind="image", task_values=values, steps=0)
    return path


def test_ghn_eval_writes_the_table_json_and_plots(ghn_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["eval", "--ghn", str(ghn_dir), "--archs", "heldout:2", "--steps", "0,3", "--seeds", "1", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "no training: acc (%)" in printed and "after 3 steps: acc (%)" in printed and "| heldout:1 |" in printed
    assert {p.name for p in out.iterdir()} == {"results.md", "results.json", "acc.png", "loss.png", "acc_per_arch.png"}
    data = json.loads((out / "results.json").read_text())
    assert data["task"] == "digits" and data["inits"] == ["ghn", "random", "orthogonal"]
    assert [a["name"] for a in data["archs"]] == ["heldout:0", "heldout:1"]


def test_ghn_eval_fine_tunes_at_the_learning_rate_asked_for(ghn_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["eval", "--ghn", str(ghn_dir), "--archs", "heldout:1", "--steps", "0,2", "--seeds", "1", "--inits", "ghn",
            "--lr", "0.0005", "--eval-every", "1", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert "adamw lr 0.0005" in capsys.readouterr().out
    recipe = json.loads((out / "results.json").read_text())["recipe"]
    assert recipe["lr"] == 0.0005 and recipe["eval_every"] == 1
    assert main(["eval", "--ghn", str(ghn_dir), "--lr", "0"]) == 2
    assert "'lr' must be positive" in capsys.readouterr().err


def test_ghn_eval_reports_bad_steps_with_exit_code_2(ghn_dir, capsys):
    assert main(["eval", "--ghn", str(ghn_dir), "--steps", "0,100,50"]) == 2
    assert "strictly increasing" in capsys.readouterr().err
    assert main(["eval", "--ghn", str(ghn_dir), "--steps", "0,a"]) == 2
    assert "comma-separated integers" in capsys.readouterr().err


def _two_init_result(ghn_final: list[list[float]], default_final: list[list[float]], kind: str = "image") -> EvalResult:
    """An `EvalResult` whose primary metric after 100 steps is given per architecture and seed (equal at step 0)."""
    key = METRICS[kind][0].key
    archs = [ArchInfo(f"heldout:{a}", "cnn", str(a), 10) for a in range(len(ghn_final))]
    seeds = tuple(range(len(ghn_final[0])))
    runs = [
        RunResult(arch=a, init=init, seed=s, scores=[{key: 0.1, "ppl": 1.0}, {key: table[a][s], "ppl": 1.0}])
        for init, table in (("ghn", ghn_final), ("random", default_final))
        for a in range(len(archs))
        for s in seeds
    ]
    return EvalResult(ghn="g", task="t", kind=kind, archs=archs, inits=("ghn", "random"), seeds=seeds,
                      steps=(0, 100), grid=(0, 100), recipe=FinetuneRecipe(), runs=runs)  # fmt: skip


def test_the_paired_gap_pairs_seeds_and_counts_only_clear_losses_as_behind():
    """A small loss on every seed is clearly behind; a larger mean loss that flips with the seed is not; a tie is
    never behind, and a diverged GHN run always is (issue 11's paired floor)."""
    result = _two_init_result(
        ghn_final=[[0.89, 0.79, 0.69, 0.59], [0.7, 0.9, 0.55, 0.65], [0.9, 0.8, 0.7, 0.6], [math.nan, 0.9, 0.9, 0.9]],
        default_final=[[0.9, 0.8, 0.7, 0.6]] * 4,
    )
    gap, stderr = result.paired_gap(0, "ghn", "random", 100)
    assert gap == pytest.approx(-0.01) and stderr == pytest.approx(0.0, abs=1e-9)
    gap, stderr = result.paired_gap(1, "ghn", "random", 100)
    assert gap == pytest.approx(-0.05) and stderr == pytest.approx(0.0736, abs=1e-3)
    behind = [is_clearly_behind(*result.paired_gap(a, "ghn", "random", 100)) for a in range(4)]
    assert behind == [True, False, False, True]
    start, after = result.versus("ghn", "random")
    assert (after["step"], after["wins"], after["behind"], after["num_archs"]) == (100, 1, 2, 4)
    assert start["behind"] == 0 and start["gap"] == 0.0  # equal with no training
    assert math.isnan(after["gap"])  # a diverged run has no mean gap
    first_three = result.versus("ghn", "random", archs=[0, 1, 2])[1]
    assert first_three["gap"] == pytest.approx(-0.02) and first_three["gap_se"] > 0


def test_the_paired_gap_of_a_loss_is_positive_when_lower_and_one_seed_counts_any_loss():
    result = _two_init_result([[2.0, 2.1]], [[2.2, 2.2]], kind="text")
    assert result.paired_gap(0, "ghn", "random", 100)[0] == pytest.approx(0.15)
    single = _two_init_result([[0.5]], [[0.6]])
    gap, stderr = single.paired_gap(0, "ghn", "random", 100)
    assert gap == pytest.approx(-0.1) and math.isnan(stderr) and single.versus()[1]["behind"] == 1
    assert not is_clearly_behind(0.0, math.nan)
