"""`export` and `export_predicted`: predicted weights round-trip into Hugging Face `from_pretrained` and strict
`load_state_dict` with equal outputs, carry their record, never overwrite without force, never leave a partial file,
cast dtypes, and stream a meta model tensor by tensor; plus `ghn export` on the command line."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

import ghn
from ghn._io import SafetensorsWriter
from ghn.cli import main
from ghn.errors import ConfigError, MetaBufferError
from ghn.export import RECORD_NAME, export, export_predicted, read_export_record
from ghn.nn import GHN, DecoderConfig, EncoderConfig, GHNConfig

transformers = pytest.importorskip("transformers")

GPT2_SMALL = dict(n_layer=2, n_embd=32, n_head=2, vocab_size=256, n_positions=32)
LLAMA_SMALL = dict(
    num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
    vocab_size=256, n_positions=32,
)  # fmt: skip
VISION = {
    "zoo:resnet18-cifar": dict(layers=(1, 1), base_width=8, num_classes=7, image_size=16),
    "zoo:vit": dict(depth=2, embed_dim=32, num_heads=2, image_size=16, patch_size=4, num_classes=5),
}


@pytest.fixture
def small_ghn() -> GHN:
    config = GHNConfig(
        encoder=EncoderConfig(hidden_dim=16, num_heads=2, num_layers=1),
        decoder=DecoderConfig(rank=4, num_index_features=16),
    )
    hypernet = GHN(config).eval()
    hypernet.metadata = {"name": "tiny.test", "sha256": "ab" * 32, "task": "digits"}
    return hypernet


def _predicted(spec: str, hypernet: GHN, **overrides) -> nn.Module:
    return ghn.predict(ghn.zoo.create(spec, device="meta", **overrides), hypernet, device="cpu").eval()


def _hf_gpt2() -> nn.Module:
    config = transformers.GPT2Config(**GPT2_SMALL, bos_token_id=None, eos_token_id=None)
    return transformers.GPT2LMHeadModel(config)


def _llama() -> nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config)


class Shifted(nn.Module):
    """A linear layer plus a stored (persistent) shift its constructor computes; with `keep_value=False` the value
    is kept nowhere else.

    Shapes:
        input: (B, 4)
        output: (B, 4)
    """

    def __init__(self, value: float = 0.5, keep_value: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.register_buffer("shift", torch.full((4,), value))
        if keep_value:
            self.value, self.keep_value = value, keep_value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + self.shift


def _tokens() -> torch.Tensor:
    return torch.randint(0, GPT2_SMALL["vocab_size"], (2, 8))


# -- round trips -------------------------------------------------------------------------------------------------------
def test_hf_gpt2_round_trips_through_from_pretrained(tmp_path: Path, small_ghn: GHN) -> None:
    model = ghn.predict(_hf_gpt2(), small_ghn).eval()
    out = export(model, tmp_path / "gpt2", ghn=small_ghn)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "ghn_export.json", "model.safetensors"]
    loaded, info = transformers.GPT2LMHeadModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert "lm_head.weight" not in load_file(out / "model.safetensors")  # stored once, re-tied on load
    assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()
    tokens = _tokens()
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(tokens).logits, model(tokens).logits)


def test_zoo_gpt2_loads_into_hf_gpt2(tmp_path: Path, small_ghn: GHN) -> None:
    model = _predicted("zoo:gpt2", small_ghn, **GPT2_SMALL)
    out = export(model, tmp_path / "gpt2", spec="zoo:gpt2")
    loaded, info = transformers.GPT2LMHeadModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    tokens = _tokens()
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(tokens).logits, model(tokens))


@pytest.mark.parametrize("tied", [False, True])
def test_zoo_llama_loads_into_hf_llama(tmp_path: Path, small_ghn: GHN, tied: bool) -> None:
    model = _predicted("zoo:tinyllama-1.1b", small_ghn, **LLAMA_SMALL, tie_word_embeddings=tied)
    out = export(model, tmp_path / "llama", spec="zoo:tinyllama-1.1b")
    loaded, info = transformers.LlamaForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert ("lm_head.weight" in load_file(out / "model.safetensors")) is not tied  # a tied head is stored once
    assert (loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()) is tied
    tokens = _tokens()
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(tokens).logits, model(tokens))


@pytest.mark.parametrize("spec", list(VISION))
def test_zoo_vision_model_loads_strictly(tmp_path: Path, small_ghn: GHN, spec: str) -> None:
    model = _predicted(spec, small_ghn, **VISION[spec])
    out = export(model, tmp_path / "model.safetensors", spec=spec)
    fresh = ghn.zoo.create(spec, **VISION[spec]).eval()
    fresh.load_state_dict(load_file(out), strict=True)
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fresh(images), model(images))


def test_plain_file_of_a_tied_model_loads_strictly(tmp_path: Path, small_ghn: GHN) -> None:
    model = _predicted("zoo:gpt2", small_ghn, **GPT2_SMALL)
    out = export(model, tmp_path / "gpt2.safetensors")
    weights = load_file(out)
    assert set(weights) == set(model.state_dict())  # both names of the tied tensor
    fresh = ghn.zoo.create("zoo:gpt2", **GPT2_SMALL).eval()
    fresh.load_state_dict(weights, strict=True)
    tokens = _tokens()
    with torch.no_grad():
        torch.testing.assert_close(fresh(tokens), model(tokens))


# -- records -----------------------------------------------------------------------------------------------------------
def test_exports_carry_their_record(tmp_path: Path, small_ghn: GHN) -> None:
    model = _predicted("zoo:gpt2", small_ghn, **GPT2_SMALL)
    out = export(model, tmp_path / "gpt2", spec="zoo:gpt2", ghn=small_ghn, metadata={"run": 3})
    beside = json.loads((out / RECORD_NAME).read_text())
    with safe_open(str(out / "model.safetensors"), framework="pt") as file:
        header = file.metadata()
    assert header["format"] == "pt"  # what transformers checks
    assert json.loads(header["ghn_export"]) == beside == read_export_record(out)
    assert beside["ghn"]["name"] == "tiny.test" and beside["ghn"]["sha256"] == "ab" * 32
    assert beside["spec"] == "zoo:gpt2" and beside["config"]["n_layer"] == 2
    assert beside["ghn_version"] == ghn.__version__ and beside["metadata"] == {"run": 3}
    assert datetime.fromisoformat(beside["date"]).utcoffset().total_seconds() == 0
    assert beside["prediction"]["num_predicted_params"] == beside["prediction"]["num_total_params"] > 0


# -- safety ------------------------------------------------------------------------------------------------------------
def test_existing_output_is_not_overwritten_without_force(tmp_path: Path, small_ghn: GHN) -> None:
    model = _predicted("zoo:resnet18-cifar", small_ghn, **VISION["zoo:resnet18-cifar"])
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"keep me")
    with pytest.raises(ConfigError, match="already exists.*force=True"):
        export(model, path)
    assert path.read_bytes() == b"keep me"
    export(model, path, force=True)
    assert set(load_file(path)) == set(model.state_dict())

    gpt2 = _predicted("zoo:gpt2", small_ghn, **GPT2_SMALL)
    export(gpt2, tmp_path / "gpt2")
    with pytest.raises(ConfigError, match="already exists"):
        export(gpt2, tmp_path / "gpt2")
    export(gpt2, tmp_path / "gpt2", force=True)


@pytest.mark.parametrize("name", ["model.safetensors", "gpt2_dir"])
def test_failed_serialization_leaves_no_partial_file(
    tmp_path: Path, small_ghn: GHN, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    model = _predicted("zoo:gpt2", small_ghn, **GPT2_SMALL)
    write = SafetensorsWriter.write
    calls = []

    def failing_write(self, key, tensor):
        calls.append(key)
        if len(calls) == 3:
            raise OSError("disk full")
        write(self, key, tensor)

    monkeypatch.setattr(SafetensorsWriter, "write", failing_write)
    with pytest.raises(OSError, match="disk full"):
        export(model, tmp_path / name)
    assert list(tmp_path.iterdir()) == []  # no output, no temp file or folder


def test_bfloat16_export_casts_floating_tensors_only(tmp_path: Path, small_ghn: GHN) -> None:
    model = _predicted("zoo:resnet18-cifar", small_ghn, **VISION["zoo:resnet18-cifar"])
    weights = load_file(export(model, tmp_path / "model.safetensors", dtype="bfloat16"))
    for key, tensor in model.state_dict().items():
        expected = tensor.bfloat16() if tensor.is_floating_point() else tensor
        assert weights[key].dtype == expected.dtype
        torch.testing.assert_close(weights[key], expected, rtol=0, atol=0)
    assert read_export_record(tmp_path / "model.safetensors")["dtype"] == "bfloat16"


def test_bad_arguments_fail_early(tmp_path: Path, small_ghn: GHN) -> None:
    model = _predicted("zoo:resnet18-cifar", small_ghn, **VISION["zoo:resnet18-cifar"])
    with pytest.raises(ConfigError, match="Unknown export dtype 'int8'"):
        export(model, tmp_path / "m.safetensors", dtype="int8")
    with pytest.raises(ConfigError, match="Unknown export format"):
        export(model, tmp_path / "m.safetensors", format="onnx")
    with pytest.raises(ConfigError, match="ending in '.safetensors'"):
        export(model, tmp_path / "model")
    with pytest.raises(ConfigError, match="no registered equivalent"):
        export(model, tmp_path / "model", format="hf")
    with pytest.raises(ConfigError, match="on 'meta'.*export_predicted"):
        export(ghn.zoo.create("zoo:resnet18-cifar", device="meta"), tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


# -- streaming ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_streamed_export_equals_export_of_the_predicted_model(tmp_path: Path, small_ghn: GHN, dtype) -> None:
    overrides = VISION["zoo:resnet18-cifar"]
    meta = ghn.zoo.create("zoo:resnet18-cifar", device="meta", **overrides)
    streamed = export_predicted(meta, small_ghn, tmp_path / "streamed.safetensors", dtype=dtype)
    assert all(p.is_meta for p in meta.parameters())  # the given model is not changed
    predicted = _predicted("zoo:resnet18-cifar", small_ghn, **overrides)
    reference = export(predicted, tmp_path / "ref.safetensors", dtype=dtype)
    expected = load_file(reference)
    got = load_file(streamed)
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)
    record = read_export_record(streamed)
    assert record["prediction"]["num_predicted_params"] == record["prediction"]["num_total_params"]


def test_streamed_export_of_a_spec_loads_into_hf(tmp_path: Path, small_ghn: GHN) -> None:
    meta = ghn.zoo.create("zoo:gpt2", device="meta", **GPT2_SMALL)
    out = export_predicted(meta, small_ghn, tmp_path / "gpt2", dtype="bfloat16")
    loaded, info = transformers.GPT2LMHeadModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert loaded.transformer.wte.weight.dtype == torch.bfloat16
    reference = _predicted("zoo:gpt2", small_ghn, **GPT2_SMALL)
    expected = reference.transformer.h[1].mlp.c_fc.weight.bfloat16()
    torch.testing.assert_close(loaded.transformer.h[1].mlp.c_fc.weight, expected)
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_streamed_export_of_a_meta_llama_loads_with_its_rotary_frequencies(tmp_path: Path, small_ghn: GHN) -> None:
    """Regression (issue 12): a Llama built on meta was predicted with zero rotary frequencies. The frequencies are
    a non-persistent buffer, which the Hugging Face format does not store: `from_pretrained` makes its own, and the
    loaded model computes what the predicted one does."""
    with torch.device("meta"):
        model = _llama()
    out = export_predicted(model, small_ghn, tmp_path / "llama")
    assert not any(key.endswith("inv_freq") for key in load_file(out / "model.safetensors"))
    loaded, info = transformers.LlamaForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    with torch.device("meta"):
        predicted = _llama()
    predicted = ghn.predict(predicted, small_ghn, device="cpu").eval()
    torch.testing.assert_close(predicted.model.rotary_emb.inv_freq, _llama().model.rotary_emb.inv_freq, rtol=0, atol=0)
    streamed = load_file(out / "model.safetensors")
    expected = load_file(export(predicted, tmp_path / "ref") / "model.safetensors")
    assert streamed.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(streamed[key], expected[key], rtol=0, atol=0, msg=key)
    tokens = _tokens()
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(tokens).logits, predicted(tokens).logits)


def test_streamed_export_stores_recomputed_meta_buffers_not_zeros(tmp_path: Path, small_ghn: GHN) -> None:
    with torch.device("meta"):
        model = Shifted()
    inputs = torch.zeros(1, 4)
    streamed = load_file(export_predicted(model, small_ghn, tmp_path / "s.safetensors", example_inputs=inputs))
    assert torch.equal(streamed["shift"], torch.full((4,), 0.5))
    assert model.shift.is_meta  # the given model is not changed
    with torch.device("meta"):
        predicted = Shifted()
    ghn.predict(predicted, small_ghn, example_inputs=inputs)
    reference = load_file(export(predicted, tmp_path / "r.safetensors"))
    for key in reference:
        torch.testing.assert_close(streamed[key], reference[key], rtol=0, atol=0, msg=key)


def test_streamed_export_of_a_meta_buffer_that_cannot_be_recomputed_raises(tmp_path: Path, small_ghn: GHN) -> None:
    with torch.device("meta"):
        model = Shifted(0.25, keep_value=False)
    with pytest.raises(MetaBufferError, match=r"'shift'.*needs its argument 'value'.*ghn\.empty_weights\(\)"):
        export_predicted(model, small_ghn, tmp_path / "s.safetensors", example_inputs=torch.zeros(1, 4))
    assert list(tmp_path.iterdir()) == []
    with ghn.empty_weights():
        model = Shifted(0.25, keep_value=False)
    out = export_predicted(model, small_ghn, tmp_path / "s.safetensors", example_inputs=torch.zeros(1, 4))
    assert torch.equal(load_file(out)["shift"], torch.full((4,), 0.25))


@pytest.mark.parametrize("mix", [{"init_blend": 0.36}, {"own_spectrum": True}], ids=["blend", "spectrum"])
def test_streamed_export_blends_with_the_models_own_init_like_predict(tmp_path: Path, mix: dict) -> None:
    """A GHN that mixes the model's own init into its weights (init_blend > 0, own_spectrum) does it in the streamed
    file too: the file equals `export(predict(model))`."""
    hypernet = GHN.from_preset("logah-tiny", **mix)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    inputs = torch.zeros(1, 8)
    streamed = load_file(export_predicted(model, hypernet, tmp_path / "s.safetensors", example_inputs=inputs))
    predicted = ghn.predict(model, hypernet, example_inputs=inputs, inplace=False)
    reference = load_file(export(predicted, tmp_path / "r.safetensors"))
    assert not torch.equal(predicted[0].weight, model[0].weight)
    for key in reference:
        torch.testing.assert_close(streamed[key], reference[key], rtol=0, atol=0, msg=key)


def test_ghn_export_command_writes_a_loadable_file(tmp_path: Path, small_ghn: GHN, capsys) -> None:
    small_ghn.save_pretrained(tmp_path / "ghn")
    out = tmp_path / "resnet.safetensors"
    assert main(["export", "zoo:resnet18-cifar", "--ghn", str(tmp_path / "ghn"), "--out", str(out)]) == 0
    assert "predicted" in capsys.readouterr().out
    ghn.zoo.create("zoo:resnet18-cifar").load_state_dict(load_file(out), strict=True)
    assert read_export_record(out)["spec"] == "zoo:resnet18-cifar"
    assert main(["export", "zoo:resnet18-cifar", "--ghn", str(tmp_path / "ghn"), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
