"""`ghn.zoo.create` and `names`: every source, overrides, devices, and the errors for bad specs."""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from ghn.errors import ConfigError, MissingDependencyError, UnknownNameError
from ghn.zoo import HF_PRESETS, SOURCES, create, names

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def factories_on_path(monkeypatch):
    """Make tests/zoo importable whatever pytest's import mode, for 'module:zoo_factories:...' specs."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


def test_zoo_imports_optional_libraries_only_lazily():
    """No module of ghn.zoo imports transformers, torchvision or timm at import time (they are extras)."""
    optional = {"transformers", "torchvision", "timm"}
    for path in sorted((ROOT / "ghn" / "zoo").glob("*.py")):
        for node in ast.parse(path.read_text()).body:  # module level only; lazy imports live inside functions
            if isinstance(node, ast.Import):
                imported = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not imported & optional, f"{path.name}:{node.lineno} imports {imported & optional}"


def test_sources_are_registered():
    assert SOURCES.names() == ["hf", "module", "timm", "torchvision", "zoo"]


def test_zoo_preset_with_override():
    model = create("zoo:resnet18", num_classes=10)
    assert model.fc.out_features == 10 and model.config.num_classes == 10
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_zoo_family_default_with_overrides_and_lists():
    model = create("zoo:vit", device="meta", depth=2, image_size=32, patch_size=4)
    assert len(model.blocks) == 2 and model.config.embed_dim == 768
    model = create("zoo:resnet", device="meta", layers=[1, 1])
    assert model.config.layers == (1, 1)


def test_zoo_nested_override_from_dict():
    model = create("zoo:darts", device="meta", normal={"edges": [["conv_3x3", 0], ["se", 1]], "concat": [2]})
    assert model.config.normal.edges == (("conv_3x3", 0), ("se", 1))


def test_create_on_meta_builds_no_storage():
    model = create("zoo:gpt2-large", device="meta")
    assert all(p.is_meta for p in model.parameters())
    assert model.example_inputs()[0].is_meta


def test_create_on_meta_keeps_buffers_real():
    """Regression (issue 12): only parameters go to meta, so buffers a constructor computes keep their values."""
    model = create("zoo:resnet18-cifar", device="meta")
    assert all(p.is_meta for p in model.parameters()) and not any(b.is_meta for b in model.buffers())


def test_create_on_meta_keeps_hf_buffers_real():
    """Regression (issue 12): a `transformers` model on meta keeps the buffer values its constructor computes."""
    pytest.importorskip("transformers")
    on_meta, on_cpu = create("hf:llama-tiny", device="meta"), create("hf:llama-tiny")
    assert all(p.is_meta for p in on_meta.parameters())
    for name, buffer in on_cpu.named_buffers():
        torch.testing.assert_close(on_meta.get_buffer(name), buffer, rtol=0, atol=0, msg=name)


def test_names_lists_presets_families_and_hf():
    all_names = names()
    assert {"zoo:resnet18", "zoo:vit-s/16", "zoo:gpt2-large", "zoo:cnn", "zoo:darts", "hf:llama-tiny"} <= set(all_names)
    assert all_names == sorted(all_names)
    assert names("zoo:vit-*/16") == ["zoo:vit-b/16", "zoo:vit-l/16", "zoo:vit-s/16", "zoo:vit-tiny/16"]
    assert names("hf:*") == [f"hf:{n}" for n in HF_PRESETS.names()]


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("resnet18", r"Model spec 'resnet18' has no source\. Write '<source>:<name>'"),
        ("zo:resnet18", r"unknown source 'zo'\. Did you mean 'zoo'\? Known sources: 'hf', 'module'"),
        ("zoo:resnet19", r"Unknown zoo preset or family 'resnet19'\. Did you mean 'resnet18'"),
        ("hf:gpt3", r"Unknown hf preset 'gpt3'\. Did you mean 'gpt2'"),
    ],
)
def test_unknown_spec_raises_with_suggestions(spec, match):
    with pytest.raises(UnknownNameError, match=match):
        create(spec)


def test_unknown_override_names_the_field():
    with pytest.raises(ConfigError, match=r"'num_clases' \(did you mean 'num_classes'\?\) for 'ResNetConfig'"):
        create("zoo:resnet18", num_clases=10)


def test_bad_override_value_names_field_and_value():
    with pytest.raises(ConfigError, match=r"ResNetConfig.num_classes is 0; it must be an integer >= 1"):
        create("zoo:resnet18", num_classes=0)


@pytest.mark.parametrize(
    ("spec", "module", "extra"),
    [
        ("torchvision:resnet18", "torchvision", "vision"),
        ("timm:resnet18", "timm", "vision"),
        ("hf:gpt2", "transformers", "hf"),
    ],
)
def test_missing_optional_library_says_what_to_install(monkeypatch, spec, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail, installed or not
    with pytest.raises(MissingDependencyError, match=rf"needs '{module}'.*pip install 'ghn\[{extra}\]'"):
        create(spec)


def _fake_torchvision() -> types.ModuleType:
    models = types.SimpleNamespace(
        list_models=lambda: ["resnet18", "vit_b_16"],
        get_model=lambda name, weights, **kwargs: nn.Linear(2, kwargs.get("num_classes", 1000)),
    )
    return types.SimpleNamespace(models=models)


def test_torchvision_source_calls_get_model(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", _fake_torchvision())
    assert create("torchvision:resnet18", device="meta", num_classes=7).weight.shape == (7, 2)
    with pytest.raises(UnknownNameError, match=r"Unknown model 'resnet19' in torchvision\. Did you mean 'resnet18'"):
        create("torchvision:resnet19")


def test_timm_source_calls_create_model(monkeypatch):
    calls = []

    def create_model(name, pretrained, **kwargs):
        calls.append((name, pretrained, kwargs))
        return nn.Linear(2, 2)

    known = ["vit_small_patch16_224"]
    fake = types.SimpleNamespace(is_model=known.__contains__, list_models=lambda: known, create_model=create_model)
    monkeypatch.setitem(sys.modules, "timm", fake)
    create("timm:vit_small_patch16_224", num_classes=10)
    assert calls == [("vit_small_patch16_224", False, {"num_classes": 10})]
    with pytest.raises(UnknownNameError, match=r"Did you mean 'vit_small_patch16_224'"):
        create("timm:vit_small_patch16_244")


def test_module_source_calls_the_factory(factories_on_path):
    model = create("module:zoo_factories:make_mlp", hidden=8)
    assert model[0].out_features == 8
    assert all(p.is_meta for p in create("module:zoo_factories:make_mlp", device="meta").parameters())


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ("module:zoo_factories", ConfigError, r"'module:zoo_factories' is malformed\. Write 'module:<package"),
        ("module::make_mlp", ConfigError, r"is malformed"),
        ("module:ghn_zoo_no_such_module:make", UnknownNameError, r"Module 'ghn_zoo_no_such_module' .* cannot be found"),
        ("module:zoo_factories:make_mpl", UnknownNameError, r"Unknown factory 'make_mpl' .* Did you mean 'make_mlp'"),
        ("module:zoo_factories:make_number", ConfigError, r"returned a 'int', not an nn\.Module"),
        ("module:zoo_broken_factory:make", ModuleNotFoundError, r"ghn_zoo_test_dependency_that_does_not_exist"),
    ],
)
def test_bad_module_spec_raises_clearly(factories_on_path, spec, error, match):
    with pytest.raises(error, match=match):
        create(spec)


# --- hf --------------------------------------------------------------------------------------------------------

SMALL_HF_PRESETS = [n for n in HF_PRESETS.names() if not n.startswith("gpt2")]


@pytest.mark.parametrize("name", SMALL_HF_PRESETS)
def test_small_hf_presets_build_and_run_on_cpu(name):
    pytest.importorskip("transformers")
    model = create(f"hf:{name}").eval()
    config = model.config
    if model.main_input_name == "input_ids":
        inputs = torch.randint(0, config.vocab_size, (2, 8))
    else:
        inputs = torch.randn(2, config.num_channels, 32, 32)
    with torch.no_grad():
        logits = model(**{model.main_input_name: inputs}).logits
    assert logits.shape[0] == 2 and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"])
def test_hf_gpt2_presets_build_on_meta_with_zoo_sizes(name):
    pytest.importorskip("transformers")
    model = create(f"hf:{name}", device="meta")
    zoo_model = create(f"zoo:{name}", device="meta")
    assert type(model).__name__ == "GPT2LMHeadModel"
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in zoo_model.state_dict().items()}


def test_hf_overrides_replace_config_fields():
    pytest.importorskip("transformers")
    model = create("hf:llama-tiny", num_hidden_layers=1, attn_implementation="eager")
    assert model.config.num_hidden_layers == 1 and len(model.model.layers) == 1
    assert model.config._attn_implementation == "eager"
    with pytest.raises(ConfigError, match=r"override\(s\) 'num_hiden_layers' \(did you mean 'num_hidden_layers'"):
        create("hf:llama-tiny", num_hiden_layers=1)
