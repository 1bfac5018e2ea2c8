"""GHN training: the CLI end to end on tiny settings, resume, bad input, and 2-process CPU DDP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ghn.errors import CheckpointError, ConfigError, UnknownNameError
from ghn.nn import GHN
from ghn.train import GHNDataModule, GHNModule
from ghn.train.cli import build_cli, main

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--data.num_train_archs", "8",
    "--data.num_heldout_archs", "2",
    "--data.batch_size", "16",
    "--data.eval_batch_size", "128",
    "--data.progress", "false",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
    "--trainer.log_every_n_steps", "1",
    "--trainer.val_check_interval", "2",
]  # fmt: skip


def _run(tmp_path: Path, *extra: str) -> dict:
    return main([*TINY, "--trainer.default_root_dir", str(tmp_path), "--out_dir", str(tmp_path / "ghn"), *extra])


def test_train_writes_ghn_logs_checkpoints_and_heldout_table(tmp_path, capsys):
    summary = _run(tmp_path, "--trainer.max_steps", "3")
    assert summary["steps"] == 3
    rows = summary["heldout"]
    assert len(rows) == 2
    for row in rows:
        assert 0.0 <= row["acc"] <= 1.0 and 0.0 <= row["acc_random"] <= 1.0
        assert torch.isfinite(torch.tensor([row["loss"], row["loss_random"]])).all()
    out = capsys.readouterr().out
    assert "GHN accuracy (%)" in out and "random-init accuracy (%)" in out
    ghn = GHN.load(tmp_path / "ghn")
    assert ghn.metadata["task"] == "digits" and ghn.metadata["steps"] == 3
    assert ghn.metadata["task_values"] == {"in_channels": 1, "image_size": 8, "num_classes": 10}
    assert json.loads((tmp_path / "ghn" / "heldout.json").read_text()) == rows
    assert list(tmp_path.rglob("events.out.tfevents.*")), "TensorBoard logs"
    assert list(tmp_path.rglob("last.ckpt")), "checkpoint at the end"


def test_trained_ghn_is_written_before_the_heldout_evaluation(tmp_path, monkeypatch):
    """A run that dies in the final evaluation (killed, out of memory) still leaves its trained GHN."""
    import ghn.train.cli as cli

    def fail(*args, **kwargs):
        assert GHN.load(tmp_path / "ghn").metadata["steps"] == 2
        raise RuntimeError("killed during the held-out evaluation")

    monkeypatch.setattr(cli, "heldout_rows", fail)
    with pytest.raises(RuntimeError, match="killed during"):
        _run(tmp_path, "--trainer.max_steps", "2")
    assert "heldout" not in GHN.load(tmp_path / "ghn").metadata
    assert not (tmp_path / "ghn" / "heldout.json").exists()


def test_heldout_evaluation_gets_back_the_threads_that_ddp_split(tmp_path, monkeypatch):
    """CPU DDP gives each rank its share of the cores (Lightning lowers the thread count); rank 0 evaluates the
    held-out networks alone after training, with the thread count the run started with."""
    import lightning.pytorch as pl

    import ghn.train.cli as cli

    fit, seen = pl.Trainer.fit, []

    def fit_then_lower_threads(self, *args, **kwargs):
        fit(self, *args, **kwargs)
        torch.set_num_threads(1)

    def record(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise RuntimeError("recorded")

    monkeypatch.setattr(pl.Trainer, "fit", fit_then_lower_threads)
    monkeypatch.setattr(cli, "heldout_rows", record)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError, match="recorded"):
            _run(tmp_path, "--trainer.max_steps", "1")
    finally:
        torch.set_num_threads(threads)
    assert seen == [2]


def test_training_logs_the_documented_metrics(tmp_path):
    _run(tmp_path, "--trainer.max_steps", "4", "--final_eval", "false")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next(tmp_path.rglob("events.out.tfevents.*")).parent))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("train/loss", "train/deviation", "train/acc", "train/grad_norm", "train/archs_per_s", "train/samples_per_s",
                "val/acc", "val/acc_random", "val/loss", "val/loss_random"):  # fmt: skip
        assert tag in tags, tag
    assert any(t.startswith("train/loss_") for t in tags), "loss per family"
    assert any(t.startswith("lr") for t in tags), "learning rate"


def test_resume_restores_step_optimizer_and_sampler(tmp_path):
    _run(tmp_path, "--trainer.max_steps", "2", "--final_eval", "false")
    checkpoint = next(tmp_path.rglob("last.ckpt"))
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)  # our own file, written by Lightning
    assert state["optimizer_states"] and state["lr_schedulers"]
    assert "sampler" in state["GHNDataModule"]
    summary = _run(tmp_path / "resumed", "--trainer.max_steps", "4", "--ckpt_path", str(checkpoint), "--final_eval", "false")
    assert summary["steps"] == 4


def test_bf16_mixed_precision_trains_on_cpu_and_keeps_float32_weights(tmp_path):
    """`--trainer.precision bf16-mixed` (the GPU recipes' precision; 1.5x the steps on a CPU with native bf16)
    trains the GHN under CPU autocast, lookahead steps included, and leaves finite float32 weights and table."""
    summary = _run(tmp_path, "--trainer.max_steps", "2", "--trainer.precision", "bf16-mixed")
    assert summary["steps"] == 2
    assert all(torch.isfinite(torch.tensor([r["loss"], r["acc"]])).all() for r in summary["heldout"])
    after = GHN.load(tmp_path / "ghn").state_dict()
    floats = [value for value in after.values() if value.is_floating_point()]
    assert all(value.dtype == torch.float32 and torch.isfinite(value).all() for value in floats)


def test_unknown_config_field_fails_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit):
        build_cli(["--data.spcae", "vits", "--trainer.default_root_dir", str(tmp_path)])
    assert "spcae" in capsys.readouterr().err


def test_bad_names_and_sizes_fail_before_training():
    with pytest.raises(UnknownNameError, match="space"):
        GHNDataModule(space="vitz")
    with pytest.raises(UnknownNameError, match="task"):
        GHNDataModule(task="mnist")
    with pytest.raises(ConfigError, match="meta-batch"):
        GHNDataModule(num_train_archs=2, meta_batch_size=4)
    with pytest.raises(UnknownNameError):
        GHNModule("logah-huge")
    with pytest.raises(ConfigError, match="deviation_penalty"):
        GHNModule(deviation_penalty=-1.0)
    with pytest.raises(ConfigError, match="--model.init_blend"):
        GHNModule(ghn_overrides={"init_blend": 0.2})
    with pytest.raises(ConfigError, match="noise must be a fraction"):
        GHNModule(noise=1.0)
    wider = GHNModule("logah-small", ghn_overrides={"decoder": {"rank": 16}}).ghn.config  # merged field by field
    assert wider.decoder.rank == 16 and wider.encoder.hidden_dim == 128
    with pytest.raises(ConfigError, match="did you mean 'rank'"):
        GHNModule(ghn_overrides={"decoder": {"rnak": 16}})
    assert GHNModule(noise=0.25, init_blend=None).ghn.config.init_blend == 0.25
    assert GHNModule(noise=0.25).ghn.config.init_blend == 0.08 == GHNModule().ghn.config.init_blend  # digits recipe
    assert GHNModule(init_blend=0.0).ghn.config.init_blend == 0.0
    assert GHNModule().ghn.config.own_spectrum and not GHNModule(own_spectrum=False).ghn.config.own_spectrum
    with pytest.raises(ConfigError, match="--model.own_spectrum"):
        GHNModule(ghn_overrides={"own_spectrum": False})
    assert GHNModule().ghn.config.centered_units and not GHNModule(centered_units=False).ghn.config.centered_units
    with pytest.raises(ConfigError, match="--model.centered_units"):
        GHNModule(ghn_overrides={"centered_units": False})
    with pytest.raises(ConfigError, match="init_blend must be in"):
        GHNModule(init_blend=1.5)
    with pytest.raises(ConfigError, match="lookahead_steps"):
        GHNModule(lookahead_steps=-1)
    with pytest.raises(ConfigError, match="lookahead_lr"):
        GHNModule(lookahead_lr=0.0)


def test_lookahead_takes_adam_steps_and_trains_the_ghn_through_the_values():
    from torch.func import functional_call

    from ghn.data.architectures import make_architecture
    from ghn.data.metrics import task_loss
    from ghn.zoo import lookup_config

    torch.manual_seed(0)
    module = GHNModule(lookahead_steps=2, lookahead_lr=0.01, noise=0.0)
    arch = make_architecture(lookup_config("vit-tiny/4")[1])
    model = module.target_model(arch).train()
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    params = module.ghn([arch.graph])[0]
    loss, _ = task_loss(functional_call(model, params, (x[:4],)), y[:4])
    after = module._after_adam_steps(model, params, loss, x[:4], y[:4])
    moved = max(float((after[n] - params[n]).abs().max()) for n in params)
    assert moved == pytest.approx(0.02, rel=1e-3)  # two Adam steps of lr 0.01 move a value by at most 2 * lr
    total, _ = module._task_loss(model, params, x, y)
    total.backward()
    assert all(p.grad is not None for p in module.ghn.parameters() if p.requires_grad)


def test_deviation_penalty_is_zero_at_the_init_and_grows_without_limit_at_the_bounds():
    from ghn.data.architectures import make_architecture
    from ghn.nn.normalize import NORM_BOUND, _center_and_bound, deviation
    from ghn.zoo import lookup_config

    module = GHNModule()
    arch = make_architecture(lookup_config("vit-tiny/4")[1])  # LayerNorms and biases
    params = {n: torch.full(info.shape, 1.0 if info.role == "norm_scale" else 0.0) for n, info in arch.graph.params.items()}
    assert float(module._deviation(arch, params)) == pytest.approx(0.0)
    scales = module._scales(arch)
    def at(fraction: float) -> dict[str, torch.Tensor]:  # every bounded value at `fraction` of its bound
        values = {}
        for n, info in arch.graph.params.items():
            center, bound = _center_and_bound(info, scales[n])
            values[n] = torch.full(info.shape, center + fraction * bound)
        return values

    assert float(module._deviation(arch, at(0.1))) == pytest.approx(0.01 / 0.99, rel=1e-4)  # ~t^2 near the init
    assert float(module._deviation(arch, at(2**-0.5))) == pytest.approx(1.0, rel=1e-4)
    assert float(module._deviation(arch, at(1.0))) >= 1e4  # at the bound: no value parks there for free
    one_at_bound = dict(params)
    name = next(n for n in module._bounded(arch))
    one_at_bound[name] = at(1.0)[name]
    assert float(module._deviation(arch, one_at_bound, reduce="max")) >= 1e4
    raw = torch.tensor(3.0, requires_grad=True)  # a saturated decoder output still gets pulled back towards 0
    info, scale = arch.graph.params[name], scales[name]
    center, bound = _center_and_bound(info, scale)
    deviation(center + bound * torch.tanh(raw) * torch.ones(info.shape), info, scale).backward()
    assert float(raw.grad) > 1.0
    with pytest.raises(ConfigError, match="deviation_max_penalty"):
        GHNModule(deviation_max_penalty=-1.0)
    assert NORM_BOUND < 0.5


def test_space_must_match_task_kind():
    data = GHNDataModule(task="pydoc", space="mixed-tiny", num_train_archs=4, num_heldout_archs=1, progress=False)
    with pytest.raises(ConfigError, match="text data"):
        data.setup()


def test_text_task_trains_gpt_space(tmp_path):
    summary = _run(
        tmp_path,
        "--data.task", "pydoc", "--data.task_options", "{context: 16}", "--data.space", "gpts-tiny",
        "--data.eval_batch_size", "64", "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
    )  # fmt: skip
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in summary["heldout"])


def _same_weights(a: GHN, b: GHN) -> bool:
    ours, theirs = a.state_dict(), b.state_dict()
    return ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_configs_parse(tmp_path):
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        args = ["--config", str(path), "--trainer.logger", "false"]
        if "init_from:" in path.read_text():  # a later stage: start it from a GHN of the config it builds
            first = build_cli([*args, "--model.init_from", "null"]).model.ghn
            start = first.save_pretrained(tmp_path / path.stem)
            args += ["--model.init_from", str(start)]
        cli = build_cli(args)
        assert cli.model.ghn.num_parameters() > 0, path
        if cli.model.init_from is not None:
            assert _same_weights(cli.model.ghn, first), path


def test_init_from_starts_training_at_a_saved_ghn_and_keeps_its_heldout_draws(tmp_path):
    """A second stage: the first stage's GHN is where training starts, its held-out draws (heldout_space) stay held
    out, and the saved GHN records both, so 'heldout:N' and 'train:N' redraw what each stage left out and fit."""
    from ghn.data.architectures import heldout_configs, task_values
    from ghn.evaluate import evaluate_ghn
    from ghn.zoo import config_hash

    _run(tmp_path / "first", "--trainer.max_steps", "1", "--data.space", "mixed-plain-tiny", "--final_eval", "false")
    first = GHN.load(tmp_path / "first" / "ghn")
    module = GHNModule(init_from=str(tmp_path / "first" / "ghn"), init_blend=0.3, signal_scale=True)  # its own
    assert module.ghn.config.init_blend == 0.3 and module.ghn.config.signal_scale
    assert _same_weights(module.ghn, first)

    _run(
        tmp_path / "second", "--trainer.max_steps", "1", "--model.init_from", str(tmp_path / "first" / "ghn"),
        "--data.space", "mixed-convs-tiny", "--data.heldout_space", "mixed-plain-tiny",
    )  # fmt: skip
    second = GHN.load(tmp_path / "second" / "ghn")
    meta = second.metadata
    assert meta["space"] == "mixed-convs-tiny" and meta["heldout_space"] == "mixed-plain-tiny"
    assert meta["init_from"] == str(tmp_path / "first" / "ghn")
    heldout = [config_hash(c) for c in heldout_configs("mixed-plain-tiny", meta["task_values"], 2)]
    assert [row["hash"] for row in meta["heldout"]] == heldout
    small = {"steps": (0,), "seeds": 1, "inits": ("ghn",)}
    assert [a.hash for a in evaluate_ghn(second, archs="heldout:2", **small).archs] == heldout
    data = GHNDataModule(space="mixed-convs-tiny", heldout_space="mixed-plain-tiny", num_train_archs=8,
                         num_heldout_archs=2, progress=False)  # fmt: skip
    data.setup()
    assert data.heldout.hashes == heldout and not set(data.train_archs.hashes) & set(heldout)
    trained = evaluate_ghn(second, archs="train:2", **small).archs
    assert [a.hash for a in trained] == data.train_archs.hashes[:2]


def test_replay_archs_trains_a_later_stage_on_the_first_stages_draws_too(tmp_path):
    """replay_archs adds the first stage's training draws (heldout_space, same seed) to the new space's; the saved GHN
    records how many, and bad values fail before any work."""
    first = GHNDataModule(space="mixed-plain-tiny", num_train_archs=6, num_heldout_archs=2, progress=False)
    first.setup()
    second = GHNDataModule(space="plain-convs-tiny", heldout_space="mixed-plain-tiny", num_train_archs=4,
                           replay_archs=6, num_heldout_archs=2, progress=False)  # fmt: skip
    second.setup()
    assert second.heldout.hashes == first.heldout.hashes
    assert second.train_archs.hashes[-6:] == first.train_archs.hashes
    assert len(second.train_archs) == 10 and not set(second.train_archs.hashes) & set(first.heldout.hashes)
    assert {a.config.kind for a in second.train_archs[:4]} == {"conv"}

    _run(tmp_path / "first", "--trainer.max_steps", "1", "--final_eval", "false")
    _run(
        tmp_path / "second", "--trainer.max_steps", "2", "--model.init_from", str(tmp_path / "first" / "ghn"),
        "--data.space", "plain-convs-tiny", "--data.heldout_space", "mixed-plain-tiny", "--data.replay_archs", "8",
        "--final_eval", "false",
    )  # fmt: skip
    assert GHN.load(tmp_path / "second" / "ghn").metadata["replay_archs"] == 8
    with pytest.raises(ConfigError, match="replay_archs must be >= 0"):
        GHNDataModule(replay_archs=-1)
    with pytest.raises(ConfigError, match="set num_train_archs"):
        GHNDataModule(replay_archs=4, num_train_archs=None)


def test_batch_per_arch_gives_every_architecture_its_own_samples(tmp_path, monkeypatch):
    """batch_per_arch: the loader's batch holds meta_batch_size * batch_size samples, split one chunk per
    architecture after the transfer, and each architecture's loss is computed on its own chunk."""
    data = GHNDataModule(num_train_archs=4, num_heldout_archs=2, meta_batch_size=2, batch_size=8,
                         batch_per_arch=True, progress=False)  # fmt: skip
    data.setup()
    x, y = next(iter(data.train_dataloader().flattened[1]))
    assert x.shape[0] == 16
    archs = [data.train_archs[0], data.train_archs[1]]
    batch = data.on_after_batch_transfer({"archs": archs, "data": [x, y]}, 0)
    (x0, y0), (x1, y1) = batch["data_per_arch"]
    assert torch.equal(x0, x[:8]) and torch.equal(x1, x[8:]) and torch.equal(y1, y[8:])
    assert data.on_after_batch_transfer({"archs": archs}, 0) == {"archs": archs}  # validation batches pass through

    module = GHNModule(lookahead_steps=0)
    losses = {}
    for name, step in (("own", batch), ("shared", {"archs": archs, "data": [x0, y0]})):
        torch.manual_seed(0)
        losses[name] = module.training_step(step, 0).item()
    assert losses["own"] != losses["shared"]  # the second architecture saw other samples
    keys = []
    step = GHNModule.training_step
    monkeypatch.setattr(GHNModule, "training_step", lambda self, b, i: keys.append(sorted(b)) or step(self, b, i))
    _run(tmp_path, "--trainer.max_steps", "2", "--data.batch_per_arch", "true", "--data.meta_batch_size", "2",
         "--final_eval", "false")  # fmt: skip
    assert keys == [["archs", "data_per_arch"]] * 2  # the trainer calls the datamodule's hook


def test_init_from_a_ghn_of_another_config_fails_in_one_line(tmp_path):
    GHN.from_preset("logah-tiny").save_pretrained(tmp_path / "plain")  # no own spectrum, no centered units
    with pytest.raises(ConfigError, match="init_from .* whose centered_units, own_spectrum differ"):
        GHNModule(init_from=str(tmp_path / "plain"))
    with pytest.raises(CheckpointError, match="init_from 'runs/nowhere': No GHN checkpoint at"):
        GHNModule(init_from="runs/nowhere")
    with pytest.raises(ConfigError, match="heldout_space 'gpts-tiny' holds text models"):
        GHNDataModule(space="mixed-plain-tiny", heldout_space="gpts-tiny")


def test_ddp_two_cpu_processes(tmp_path):
    """Two gloo processes train, validate and finish together. The ranks' meta-batches hold different families
    (mixed space), which once deadlocked on per-family metrics, and only rank 0 writes the GHN."""
    command = [
        sys.executable, str(ROOT / "train_ghn.py"), *TINY, "--data.meta_batch_size", "2",
        "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
        "--trainer.max_steps", "4", "--trainer.default_root_dir", str(tmp_path), "--out_dir", str(tmp_path / "ghn"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "ghn" / "model.safetensors").is_file()
    assert "Held-out architectures" in result.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data.task", "nope"], "Unknown task 'nope'. Known: "),
        (["--model.optim.lr", "-1"], "OptimConfig.lr must be positive"),
        (["--data.task", "textfile"], "Task 'textfile' needs option(s) 'path'"),  # a data error, raised before fit spawns anything
    ],
)
def test_train_script_errors_are_one_line_with_exit_code_2(argv, message, capsys, monkeypatch):
    from lightning.pytorch import Trainer

    from ghn.train.cli import run

    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: pytest.fail("trained despite a bad config"))
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert f"train_ghn.py: error: {message}" in err and "Traceback" not in err
    assert run([*argv, "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_ghn_train_passes_options_through_and_reports_errors_in_one_line(capsys):
    from ghn.cli import main as ghn_main

    assert ghn_main(["train", "--data.task", "nope"]) == 2
    err = capsys.readouterr().err
    assert "ghn train: error: Unknown task 'nope'" in err and "Traceback" not in err
    assert ghn_main(["train", "--data.task", "nope", "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_train_script_file_exits_2_with_one_line():
    result = subprocess.run([sys.executable, str(ROOT / "train_ghn.py"), "--data.task", "nope"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("train_ghn.py: error: Unknown task 'nope'")
    assert "Traceback" not in result.stderr
