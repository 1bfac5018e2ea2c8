"""`predict` and `predict_params` with an untrained LoGAH-Tiny: every zoo preset and Hugging Face model gets complete,
finite, well-scaled parameters; predictions are deterministic, diverse and differentiable; batching, copies,
reports, meta models, devices and bad input behave as documented."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.func import functional_call

import ghn
from ghn.errors import CheckpointError, ConfigError, GraphError, MetaBufferError
from ghn.graph import build_graph, derive_example_inputs
from ghn.nn import GHN, DecoderConfig, EncoderConfig, GHNConfig, LowRank, param_scales, reference_std
from ghn.predict import PredictionReport, predict, predict_params

STANDARDIZED_ROLES = ("weight", "classifier", "embedding")
SLOW_SPECS = ("gpt2-large", "gpt2-xl", "vit-l/")  # 300M-1.5B parameters each: `pytest -m slow`
# Filling every tensor of a model for real is checked on small presets by default and on all with `-m slow`.
SMALL_SPECS = ("zoo:cnn", "zoo:resnet18-cifar", "zoo:vit-tiny/4", "hf:llama-tiny", "hf:convnext-tiny")


# -- models -----------------------------------------------------------------------------------------------------------
class TinyCNN(nn.Module):
    """Conv, batch norm, ReLU, a residual conv, pooling and a linear head.

    Shapes:
        input: (B, 3, 8, 8)
        output: (B, 5)
    """

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Linear(width, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))  # (B, W, 8, 8)
        x = x + self.conv(x)
        return self.head(x.mean((2, 3)))

    def example_inputs(self) -> torch.Tensor:
        return torch.zeros(1, 3, 8, 8)


class TinyLM(nn.Module):
    """Token embedding, layer norm, and an output projection tied to the embedding.

    Shapes:
        input: (B, T) token ids < 20
        output: (B, T, 20)
    """

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.norm = nn.LayerNorm(8)
        self.mix = nn.Linear(8, 8)
        self.out = nn.Linear(8, 20, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.mix(self.norm(self.embed(tokens)))))


#: Every untrained GHN preset starts with this classifier-head gain (see ghn/nn/normalize.py).
UNTRAINED_CLASSIFIER_GAIN = GHN.from_preset("logah-tiny").classifier_gain

def _mlp(*widths: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def _deep_mlp(depth: int = 40, width: int = 16) -> nn.Sequential:
    return _mlp(*([width] * (depth + 1)))


# -- fixtures and checks -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def logah_tiny() -> GHN:
    torch.manual_seed(0)
    return GHN.from_preset("logah-tiny").eval()


@pytest.fixture
def small_ghn() -> GHN:
    config = GHNConfig(
        encoder=EncoderConfig(hidden_dim=16, num_heads=2, num_layers=1),
        decoder=DecoderConfig(rank=4, num_index_features=16),
    )
    return GHN(config)


def _sample(prediction: torch.Tensor | LowRank, max_rows: int = 16) -> torch.Tensor:
    """The prediction's values, or for a low-rank one the values of `max_rows` evenly spaced rows (its factors are
    checked to be finite, so every entry of the product is)."""
    if not isinstance(prediction, LowRank):
        return prediction.reshape(-1)
    factors = (prediction.rows, prediction.cols, torch.as_tensor(prediction.scale), torch.as_tensor(prediction.shift))
    assert all(torch.isfinite(f).all() for f in factors)
    rows = prediction.rows  # (T, m, R)
    if rows.shape[-2] > max_rows:
        rows = rows[..., torch.linspace(0, rows.shape[-2] - 1, max_rows).round().long(), :]
    shape = (rows.shape[-2], *prediction.shape[1:])
    return LowRank(rows, prediction.cols, shape, prediction.scale, prediction.shift).materialize().reshape(-1)


def _check_values(name: str, info, values: torch.Tensor, scale, classifier_gain: float = 1.0) -> None:
    """Finite, and for a standardized role a std within 0.5x-2x of the reference init."""
    assert torch.isfinite(values).all(), f"{name!r} has non-finite values"
    if info.role in STANDARDIZED_ROLES and values.numel() > 1:
        ratio = values.std().item() / reference_std(info, scale, classifier_gain=classifier_gain)
        assert 0.5 <= ratio <= 2.0, f"{name!r} ({info.role}, {info.shape}): std is {ratio:.2f}x the reference"


def _check_graph_predictions(ghn_model: GHN, graph) -> None:
    """Every trainable parameter of `graph` is predicted, finite and well scaled (large tensors by row samples)."""
    assert graph.coverage().is_complete, graph.coverage()
    scales = param_scales(graph)
    seen = []
    with torch.no_grad():
        for index, name, prediction in ghn_model.iter_predictions([graph]):
            assert index == 0
            info = graph.params[name]
            shape = prediction.shape if isinstance(prediction, LowRank) else tuple(prediction.shape)
            assert tuple(shape) == info.shape, name
            _check_values(name, info, _sample(prediction), scales[name], ghn_model.classifier_gain)
            seen.append(name)
    assert len(seen) == len(set(seen))
    assert set(seen) == {name for name, info in graph.params.items() if info.trainable}


def _check_predicted_model(model: nn.Module, report: PredictionReport) -> None:
    """`predict` filled every parameter with real, finite, well-scaled values and said so; no tensor is left on
    meta (buffers a GHN cannot know, such as a meta Llama's rotary frequencies, are recomputed)."""
    assert not report.not_predicted, str(report)
    assert report.is_complete
    assert model.ghn_report is report
    assert report.num_predicted_params == report.num_total_params > 0
    graph = build_graph(model)
    scales = param_scales(graph)
    for name, info in graph.params.items():
        param = model.get_parameter(name)
        assert not param.is_meta, name
        _check_values(name, info, param.detach(), scales[name], UNTRAINED_CLASSIFIER_GAIN)
    assert not any(b.is_meta for b in model.buffers())


def _spec_params(*, default: tuple[str, ...] | None = None) -> list:
    """Every model name of the zoo; the huge ones, and those not in `default` when given, are marked slow."""
    slow = [any(m in s for m in SLOW_SPECS) or (default is not None and s not in default) for s in ghn.zoo.names()]
    return [pytest.param(s, marks=pytest.mark.slow) if is_slow else s for s, is_slow in zip(ghn.zoo.names(), slow)]


def _create(spec: str, **overrides) -> nn.Module:
    if spec.startswith("hf:"):
        pytest.importorskip("transformers")
    return ghn.zoo.create(spec, device="meta", **overrides)


# -- every zoo preset -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", _spec_params())
def test_zoo_preset_predictions_are_complete_finite_and_well_scaled(logah_tiny: GHN, spec: str) -> None:
    _check_graph_predictions(logah_tiny, build_graph(_create(spec)))


@pytest.mark.parametrize("spec", _spec_params(default=SMALL_SPECS))
def test_zoo_preset_on_meta_is_predicted_into_real_tensors(logah_tiny: GHN, spec: str) -> None:
    model, report = predict(_create(spec), logah_tiny, return_report=True)
    _check_predicted_model(model, report)


# -- Hugging Face models, built offline from small configs ------------------------------------------------------------
HF_MODELS = {
    "GPT2LMHeadModel": ("GPT2Config", dict(n_embd=32, n_layer=2, n_head=2, n_positions=64)),
    "LlamaForCausalLM": (
        "LlamaConfig",
        dict(
            vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128,
        ),
    ),  # fmt: skip
    "BertForSequenceClassification": (
        "BertConfig",
        dict(
            vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
            max_position_embeddings=128, num_labels=3,
        ),
    ),  # fmt: skip
    "ViTForImageClassification": (
        "ViTConfig",
        dict(
            image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=128, num_labels=10,
        ),
    ),  # fmt: skip
    "ResNetForImageClassification": (
        "ResNetConfig",
        dict(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], layer_type="basic", num_labels=10),
    ),
    "ConvNextForImageClassification": (
        "ConvNextConfig",
        dict(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], image_size=32, num_labels=10),
    ),
}


def _hf_model(class_name: str, **overrides) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config_name, config = HF_MODELS[class_name]
    return getattr(transformers, class_name)(getattr(transformers, config_name)(**{**config, **overrides}))


@pytest.mark.parametrize("class_name", sorted(HF_MODELS))
def test_hf_model_prediction_is_complete_finite_and_well_scaled(logah_tiny: GHN, class_name: str) -> None:
    model, report = predict(_hf_model(class_name).eval(), logah_tiny, return_report=True)
    _check_predicted_model(model, report)
    args, kwargs = derive_example_inputs(model, torch.device("cpu"))
    with torch.no_grad():
        output = model(*args, **kwargs)
    assert torch.isfinite(output.logits).all()


def test_hf_gpt2_on_meta_is_predicted_into_real_tensors_with_ties_kept(logah_tiny: GHN) -> None:
    with torch.device("meta"):
        model = _hf_model("GPT2LMHeadModel")
    assert model.lm_head.weight is model.transformer.wte.weight
    model, report = predict(model, logah_tiny, return_report=True)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.transformer.wte.weight.device.type == "cpu"
    _check_predicted_model(model, report)
    # all 50257 rows of the embedding differ: nothing is tiled, even far beyond any block width
    embedding = model.transformer.wte.weight.detach()
    direction = torch.randn(embedding.shape[1], dtype=torch.float64)
    assert (embedding.double() @ direction).unique().numel() == embedding.shape[0] == 50257


def _meta_build(build: str):
    return torch.device("meta") if build == "meta" else ghn.empty_weights()


@pytest.mark.parametrize("build", ["meta", "empty_weights"])
@pytest.mark.parametrize("class_name", ["LlamaForCausalLM", "GPT2LMHeadModel", "ViTForImageClassification"])
def test_hf_model_built_on_meta_gives_the_logits_of_the_model_built_on_cpu(
    logah_tiny: GHN, class_name: str, build: str
) -> None:
    """Regression (issue 12): a Llama predicted from meta came back with zero rotary frequencies. Built either
    way, the predicted model must compute what the same model built normally computes with the same parameters."""
    with _meta_build(build):
        model = _hf_model(class_name)
    model = predict(model, logah_tiny).eval()
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    reference = _hf_model(class_name).eval()
    params = dict(model.named_parameters(remove_duplicate=False))
    missing, unexpected = reference.load_state_dict(params, strict=False)
    assert not unexpected and set(missing) <= {name for name, _ in reference.named_buffers()}
    for name, buffer in reference.named_buffers():
        torch.testing.assert_close(model.get_buffer(name), buffer, rtol=0, atol=0, msg=name)
    args, kwargs = derive_example_inputs(reference, torch.device("cpu"))
    with torch.no_grad():
        expected = reference(*args, **kwargs).logits
        torch.testing.assert_close(model(*args, **kwargs).logits, expected, rtol=0, atol=0)
    if class_name == "LlamaForCausalLM":
        assert model.model.rotary_emb.inv_freq.abs().min() > 0


# -- determinism and diversity --------------------------------------------------------------------------------------
def test_prediction_is_deterministic(logah_tiny: GHN) -> None:
    model = TinyCNN()
    first = predict_params(model, logah_tiny)
    second = predict_params(build_graph(copy.deepcopy(model)), logah_tiny)
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0)


def test_different_architectures_get_different_values(logah_tiny: GHN) -> None:
    shallow = predict_params(_mlp(8, 16, 3), logah_tiny, example_inputs=torch.zeros(1, 8))
    deep = predict_params(_mlp(8, 16, 16, 16, 3), logah_tiny, example_inputs=torch.zeros(1, 8))
    assert shallow["0.weight"].shape == deep["0.weight"].shape
    assert not torch.allclose(shallow["0.weight"], deep["0.weight"])


def test_same_shape_layers_of_one_model_are_not_identical(logah_tiny: GHN) -> None:
    params = predict_params(_deep_mlp(depth=12), logah_tiny, example_inputs=torch.zeros(1, 16))
    weights = [params[f"{2 * i}.weight"] for i in range(12)]
    for i in range(len(weights)):
        for j in range(i + 1, len(weights)):
            assert not torch.allclose(weights[i], weights[j]), (i, j)


# -- differentiable prediction --------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["logah-tiny", "ghn3-tiny"])
def test_task_loss_gives_gradients_to_every_ghn_parameter(preset: str) -> None:
    hypernet = GHN.from_preset(preset)
    cnn, lm = TinyCNN(), TinyLM()
    images, labels = torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))
    tokens = torch.randint(0, 20, (2, 6))
    cnn_params, lm_params = predict_params([cnn, build_graph(lm, tokens)], hypernet)
    assert all(p.requires_grad for p in cnn_params.values())
    loss = nn.functional.cross_entropy(functional_call(cnn, cnn_params, (images,)), labels)
    logits = functional_call(lm, lm_params, (tokens,))
    loss = loss + nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten())
    loss.backward()
    without = [n for n, p in hypernet.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not without, f"no gradient reaches {without}"


def test_predictions_inside_autocast_are_the_float32_ones(logah_tiny: GHN) -> None:
    """bf16-mixed training runs the GHN inside autocast; it still predicts in float32, as outside (in bf16 its
    orthogonalizations and spectrum map sent a sixth of the training gradients to norms of 1e6 to inf)."""
    cnn, lm = TinyCNN(), TinyLM()
    graphs = [cnn, build_graph(lm, torch.randint(0, 20, (2, 6)))]
    torch.manual_seed(0)  # the graph's own init is drawn afresh in each prediction
    expected = predict_params(graphs, logah_tiny)
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = predict_params(graphs, logah_tiny)
    for want, got in zip(expected, inside, strict=True):
        for name, value in want.items():
            assert got[name].dtype == torch.float32, name
            torch.testing.assert_close(got[name], value, msg=name)


# -- batches and lists ----------------------------------------------------------------------------------------------
def test_batched_prediction_equals_predicting_each_alone(logah_tiny: GHN) -> None:
    models = [_mlp(8, 4), _deep_mlp(depth=60), TinyCNN()]
    inputs = [torch.zeros(1, 8), torch.zeros(1, 16), None]
    graphs = [build_graph(model, example) for model, example in zip(models, inputs)]
    assert graphs[1].num_nodes >= 10 * graphs[0].num_nodes
    together = predict_params(graphs, logah_tiny)
    assert isinstance(together, list) and len(together) == 3
    for graph, batched in zip(graphs, together):
        alone = predict_params(graph, logah_tiny)
        assert batched.keys() == alone.keys()
        for name in alone:
            torch.testing.assert_close(batched[name], alone[name])


def test_predict_list_of_models(logah_tiny: GHN) -> None:
    models = [TinyCNN(), TinyCNN(width=4)]
    expected = [predict_params(m, logah_tiny) for m in models]
    result, reports = predict(models, logah_tiny, return_report=True)
    assert result == models and len(reports) == 2
    for model, report, params in zip(models, reports, expected):
        assert model.ghn_report is report and report.is_complete
        for name, value in params.items():
            torch.testing.assert_close(model.get_parameter(name).detach(), value.detach())
    assert isinstance(predict(tuple(models), logah_tiny), list)


# -- what predict does to the model ------------------------------------------------------------------------------------
def test_inplace_false_leaves_the_original_untouched(logah_tiny: GHN) -> None:
    model = TinyCNN()
    model.bn.running_mean.fill_(3.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    predicted = predict(model, logah_tiny, inplace=False)
    assert predicted is not model and not hasattr(model, "ghn_report")
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)
    assert not torch.allclose(predicted.head.weight, model.head.weight)
    assert predict(model, logah_tiny) is model


def test_predict_writes_in_place_keeping_parameter_objects(logah_tiny: GHN) -> None:
    model = TinyCNN()
    weight = model.head.weight
    old = weight.detach().clone()
    predict(model, logah_tiny)
    assert model.head.weight is weight and weight.requires_grad
    assert not torch.allclose(weight, old)
    torch.testing.assert_close(weight.detach(), predict_params(model, logah_tiny)["head.weight"].detach())


def test_return_report(logah_tiny: GHN) -> None:
    model = TinyCNN()
    result = predict(model, logah_tiny, return_report=True)
    assert isinstance(result, tuple) and result[0] is model
    report = result[1]
    assert isinstance(report, PredictionReport) and report is model.ghn_report
    assert report.model_type == "TinyCNN"
    assert sorted(report.predicted) == sorted(name for name, _ in model.named_parameters())
    assert report.num_total_params == sum(p.numel() for p in model.parameters())
    assert report.num_predicted_tensors == report.num_total_tensors == 7
    assert report.is_complete and not report.not_predicted
    assert str(report).startswith(f"TinyCNN: predicted {report.num_total_params:,}/{report.num_total_params:,}")


def test_batchnorm_running_stats_are_reset_and_reported(logah_tiny: GHN) -> None:
    model = TinyCNN()
    model.bn.running_mean.fill_(5.0)
    model.bn.running_var.fill_(3.0)
    model.bn.num_batches_tracked.fill_(7)
    _, report = predict(model, logah_tiny, return_report=True)
    assert torch.equal(model.bn.running_mean, torch.zeros(8))
    assert torch.equal(model.bn.running_var, torch.ones(8))
    assert model.bn.num_batches_tracked.item() == 0
    assert report.reset_buffers == ["bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]
    assert "running statistics reset" in str(report)


def test_meta_model_is_predicted_into_real_cpu_tensors(logah_tiny: GHN) -> None:
    with torch.device("meta"):
        model = TinyCNN()
    model, report = predict(model, logah_tiny, return_report=True)
    _check_predicted_model(model, report)
    assert all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])
    assert torch.equal(model.bn.running_var, torch.ones(8))
    assert report.recomputed_buffers == []  # BatchNorm's are reset, and listed as such
    assert torch.isfinite(model(torch.randn(2, 3, 8, 8))).all()


class Scaled(nn.Module):
    """A linear layer whose output is scaled by a buffer its constructor computes; with `keep_factor=False` the
    factor is kept nowhere, so the constructor cannot be run again to recompute the buffer.

    Shapes:
        input: (B, 4)
        output: (B, 4)
    """

    def __init__(self, factor: float = 2.0, keep_factor: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.register_buffer("scale", torch.full((4,), factor))
        if keep_factor:
            self.factor, self.keep_factor = factor, keep_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * self.scale


def test_meta_model_buffers_are_recomputed_not_zeroed(logah_tiny: GHN) -> None:
    """Regression (issue 12): buffers a constructor computes came back as zeros from a model built on meta."""
    with torch.device("meta"):
        model = Scaled()
    _, report = predict(model, logah_tiny, example_inputs=torch.zeros(1, 4), return_report=True)
    assert torch.equal(model.scale, torch.full((4,), 2.0))
    assert report.recomputed_buffers == ["scale"] and report.is_complete
    assert "buffers recomputed" in str(report)


def test_meta_buffer_that_cannot_be_recomputed_raises_with_the_fix(logah_tiny: GHN) -> None:
    with torch.device("meta"):
        model = Scaled(3.0, keep_factor=False)  # re-running Scaled() would give 2.0, not 3.0
    fix = r"'scale'.*re-running Scaled\(\.\.\.\) needs its argument 'factor'.*with ghn\.empty_weights\(\):"
    with pytest.raises(MetaBufferError, match=fix):
        predict(model, logah_tiny, example_inputs=torch.zeros(1, 4))
    assert all(t.is_meta for t in model.state_dict().values())  # it raised before writing anything
    with ghn.empty_weights():
        model = Scaled(3.0, keep_factor=False)
    _, report = predict(model, logah_tiny, example_inputs=torch.zeros(1, 4), return_report=True)
    assert torch.equal(model.scale, torch.full((4,), 3.0))
    assert report.recomputed_buffers == [] and report.is_complete


def test_unused_parameters_are_reported_not_predicted(logah_tiny: GHN) -> None:
    class WithUnused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(4, 4)
            self.unused = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    model = WithUnused()
    old = model.unused.weight.detach().clone()
    _, report = predict(model, logah_tiny, example_inputs=torch.zeros(1, 4), return_report=True)
    assert not report.is_complete
    assert set(report.not_predicted) == {"unused.weight", "unused.bias"}
    assert "not used in forward" in report.not_predicted["unused.weight"]
    assert torch.equal(model.unused.weight, old)  # left as it was, never deleted
    assert report.num_predicted_tensors == 2 and report.num_total_tensors == 4
    with torch.device("meta"):
        on_meta = WithUnused()
    _, report = predict(on_meta, logah_tiny, example_inputs=torch.zeros(1, 4), return_report=True)
    assert torch.equal(on_meta.unused.weight, torch.zeros(4, 4))
    assert "set to zeros" in report.not_predicted["unused.weight"]


def test_report_counts_only_trainable_parameters(logah_tiny: GHN) -> None:
    """Regression: a frozen layer was counted as predicted but not in the total ('predicted 67/35 parameters')."""
    model = _mlp(4, 8, 3)
    model[0].weight.requires_grad_(False)
    _, report = predict(model, logah_tiny, example_inputs=torch.zeros(1, 4), return_report=True)
    assert "0.weight" in report.predicted  # frozen tensors are still written
    assert report.num_predicted_params == report.num_total_params == 8 + 8 * 3 + 3
    assert report.num_predicted_tensors == report.num_total_tensors == 3


def test_channels_last_model_is_predicted(logah_tiny: GHN) -> None:
    """Regression: writing a low-rank prediction into a channels_last conv weight raised in `view`."""
    model = TinyCNN().to(memory_format=torch.channels_last)
    expected = predict_params(TinyCNN(), logah_tiny)
    predict(model, logah_tiny)
    assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(model.conv.weight.detach(), expected["conv.weight"].detach())


def test_predict_restores_the_ghn_training_mode(small_ghn: GHN) -> None:
    small_ghn.train()
    predict(TinyCNN(), small_ghn)
    assert small_ghn.training
    small_ghn.eval()
    predict(TinyCNN(), small_ghn)
    assert not small_ghn.training


def test_ghn_given_as_a_saved_path(tmp_path: Path, small_ghn: GHN) -> None:
    path = small_ghn.save_pretrained(tmp_path / "ghn")
    from_path = predict(TinyCNN(), str(path))
    from_object = predict(TinyCNN(), small_ghn.eval())
    for (name, a), (_, b) in zip(from_path.named_parameters(), from_object.named_parameters()):
        torch.testing.assert_close(a, b, msg=name)
    assert predict_params(TinyCNN(), path).keys() == dict(TinyCNN().named_parameters()).keys()


# -- devices ----------------------------------------------------------------------------------------------------------
def test_device_argument_places_the_predicted_model(logah_tiny: GHN) -> None:
    with torch.device("meta"):
        model = TinyCNN()
    predict(model, logah_tiny, device="cpu")
    assert all(t.device == torch.device("cpu") for t in [*model.parameters(), *model.buffers()])
    on_cpu = TinyCNN()
    weight = on_cpu.head.weight
    predict(on_cpu, logah_tiny, device=torch.device("cpu"))
    assert on_cpu.head.weight is weight


def test_device_cannot_be_meta(logah_tiny: GHN) -> None:
    with pytest.raises(ValueError, match="device cannot be 'meta'"):
        predict(TinyCNN(), logah_tiny, device="meta")


@pytest.mark.gpu
def test_device_argument_moves_a_cpu_model_to_cuda(logah_tiny: GHN) -> None:
    """Regression: `device=` was ignored for models that were not on meta."""
    model = TinyLM()
    tokens = torch.randint(0, 20, (1, 5))
    expected = predict_params(model, logah_tiny, example_inputs=tokens)
    predict(model, logah_tiny, example_inputs=tokens, device="cuda")
    assert all(t.is_cuda for t in [*model.parameters(), *model.buffers()])
    assert model.out.weight is model.embed.weight  # ties survive the move
    for name, value in expected.items():  # the CPU GHN's values, moved
        torch.testing.assert_close(model.get_parameter(name).detach().cpu(), value.detach(), rtol=0, atol=0)


@pytest.mark.gpu
def test_ghn_on_cuda_predicts_a_cpu_model_like_the_cpu_ghn(logah_tiny: GHN) -> None:
    expected = predict_params(TinyCNN(), logah_tiny)
    on_gpu = copy.deepcopy(logah_tiny).cuda()
    model = predict(TinyCNN(), on_gpu)
    assert all(p.device.type == "cpu" for p in model.parameters())
    for name, value in expected.items():
        torch.testing.assert_close(model.get_parameter(name).detach(), value.detach(), rtol=1e-3, atol=1e-4)
    with torch.device("meta"):
        meta_model = TinyCNN()
    predict(meta_model, on_gpu)
    assert all(t.is_cuda for t in [*meta_model.parameters(), *meta_model.buffers()])  # the GHN's device


# -- bad input --------------------------------------------------------------------------------------------------------
def test_non_module_is_a_type_error(logah_tiny: GHN) -> None:
    with pytest.raises(TypeError, match="predict expects an nn.Module .* got 'object'"):
        predict(object(), logah_tiny)
    with pytest.raises(TypeError, match="got 'str'"):
        predict([TinyCNN(), "resnet18"], logah_tiny)
    with pytest.raises(TypeError, match="Expected an nn.Module or a ComputationGraph, got 'int'"):
        predict_params(3, logah_tiny)
    with pytest.raises(TypeError, match="ghn must be a GHN or the path of a saved one, got 'int'"):
        predict(TinyCNN(), 42)


def test_missing_ghn_path_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="No GHN checkpoint at"):
        predict(TinyCNN(), tmp_path / "no-such-ghn")
    with pytest.raises(CheckpointError, match="No GHN checkpoint at"):
        predict_params(TinyCNN(), str(tmp_path / "no-such-ghn"))


class Failing(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("this forward always fails")


@pytest.mark.parametrize(
    "make",
    [lambda: nn.Linear(4, 4).requires_grad_(False), Failing],
    ids=["no_trainable_parameters", "failing_forward"],
)
def test_graph_errors_propagate_unchanged(logah_tiny: GHN, make) -> None:
    with pytest.raises(GraphError) as direct:
        build_graph(make(), torch.zeros(1, 4))
    with pytest.raises(GraphError) as through_predict:
        predict(make(), logah_tiny, example_inputs=torch.zeros(1, 4))
    with pytest.raises(GraphError) as through_params:
        predict_params(make(), logah_tiny, example_inputs=torch.zeros(1, 4))
    for caught in (through_predict, through_params):
        assert type(caught.value) is type(direct.value)
        assert str(caught.value) == str(direct.value)


# -- the GHN-3 block decoder ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [TinyCNN, lambda: _create("zoo:vit-tiny/4", depth=2)], ids=["cnn", "vit"])
def test_ghn3_tiny_predicts_complete_finite_parameters(make) -> None:
    model, report = predict(make(), GHN.from_preset("ghn3-tiny"), return_report=True)
    _check_predicted_model(model, report)


def test_init_blend_mixes_the_models_own_init_into_the_weights() -> None:
    """GHNConfig.init_blend = f: each weight is sqrt(1 - f) * prediction + sqrt(f) * the model's own init (its
    values, at the init std), biases and norms as predicted; on meta the own init is drawn fresh."""
    hyper = GHN.from_preset("logah-tiny", init_blend=0.36)
    model = _mlp(8, 64, 3)
    own = {n: p.detach().clone() for n, p in model.named_parameters()}
    graph = build_graph(model)
    alone = predict_params(graph, hyper)
    predict(model, hyper)
    assert model.ghn_report.init_blend == 0.36 and "blended" in str(model.ghn_report)
    for name, value in model.named_parameters():
        expected = alone[name].detach()
        if value.dim() >= 2:  # own init centered and put at its (rule-snapped) std
            reference = (own[name] - own[name].mean()) * (graph.params[name].init_std / own[name].std())
            expected = 0.8 * expected + 0.6 * reference
            assert 0.7 < float(value.std() / own[name].std()) < 1.3, name
        torch.testing.assert_close(value.detach(), expected, msg=name, atol=1e-5, rtol=1e-4)
    with torch.device("meta"):
        meta = _mlp(8, 64, 3)
    predict(meta, hyper)
    assert all(torch.isfinite(p).all() and not p.is_meta for p in meta.parameters())
    assert 0.7 < float(meta[0].weight.std() / own["0.weight"].std()) < 1.3


def test_own_spectrum_puts_every_weight_at_the_own_inits_scale_on_real_and_meta_models() -> None:
    """GHNConfig.own_spectrum: each weight is the GHN's directions at the spectrum of the model's own init
    (`ghn.nn.spectrum`), so its std is the own init's whatever the GHN's; `predict` writes what `predict_params`
    returns for the same model; biases and norms as predicted; on meta the own init is drawn; the report says so."""
    hyper = GHN.from_preset("logah-tiny", own_spectrum=True)
    model = _mlp(8, 64, 3)
    own = {n: p.detach().clone() for n, p in model.named_parameters()}
    expected = predict_params(model, hyper)
    alone = GHN(dataclasses.replace(hyper.config, own_spectrum=False))
    alone.load_state_dict(hyper.state_dict())
    plain = predict_params(build_graph(model), alone)
    predict(model, hyper)
    assert model.ghn_report.own_spectrum and "spectrum of the model's own init" in str(model.ghn_report)
    for name, value in model.named_parameters():
        torch.testing.assert_close(value.detach(), expected[name].detach(), msg=name, atol=1e-6, rtol=1e-5)
        if value.dim() >= 2:
            assert 0.8 < float(value.std() / own[name].std()) < 1.25, name
            assert not torch.allclose(value.detach(), own[name])
        else:
            torch.testing.assert_close(value.detach(), plain[name].detach(), msg=name)
    with torch.device("meta"):
        meta = _mlp(8, 64, 3)
    predict(meta, hyper)
    assert all(torch.isfinite(p).all() and not p.is_meta for p in meta.parameters())
    assert 0.8 < float(meta[0].weight.std() / own["0.weight"].std()) < 1.25
    with pytest.raises(ConfigError, match="own_spectrum must be True or False"):
        GHN.from_preset("logah-tiny", own_spectrum=1)
    with pytest.raises(ConfigError, match="needs the low-rank decoder"):
        GHN.from_preset("ghn3-tiny", own_spectrum=True)


def test_free_spectrum_roles_keep_the_ghns_relative_spectrum_in_predict_and_predict_params() -> None:
    """GHNConfig.free_spectrum_roles: weights of those roles keep the GHN's relative strengths of their directions
    (not one flat value), at the own init's scale; `predict` and `predict_params` agree."""
    torch.manual_seed(0)
    flat = GHN.from_preset("logah-tiny", own_spectrum=True)
    free = GHN(dataclasses.replace(flat.config, free_spectrum_roles=("embedding",)))
    free.load_state_dict(flat.state_dict())
    model = TinyLM()
    tokens = torch.zeros(1, 5, dtype=torch.long)
    params = {"flat": predict_params(model, flat, example_inputs=tokens),
              "free": predict_params(model, free, example_inputs=tokens)}  # fmt: skip
    values = {k: torch.linalg.svdvals(p["embed.weight"].detach()) for k, p in params.items()}
    assert float(values["flat"].max() / values["flat"].min()) < 1.01  # 20 x 8: the GHN spans it, one value each
    assert float(values["free"].max() / values["free"].min()) > 1.05
    torch.testing.assert_close(params["free"]["mix.weight"], params["flat"]["mix.weight"])  # other roles as before
    predict(model, free, example_inputs=tokens)
    for name, value in model.named_parameters():
        torch.testing.assert_close(value.detach(), params["free"][name].detach(), msg=name, atol=1e-6, rtol=1e-5)


def test_free_spectrum_share_mixes_the_flat_and_the_ghns_spectrum_and_is_checked() -> None:
    """GHNConfig.free_spectrum_share: between the flat and the free spectrum (its spread of singular values in
    between), in `predict_params` and `predict` alike; a share outside (0, 1] is a ConfigError that says so."""
    torch.manual_seed(0)
    flat = GHN.from_preset("logah-tiny", own_spectrum=True)
    model, tokens = TinyLM(), torch.zeros(1, 5, dtype=torch.long)
    spread = {}
    for share in (0.5, 1.0):
        ghn = GHN(dataclasses.replace(flat.config, free_spectrum_roles=("embedding",), free_spectrum_share=share))
        ghn.load_state_dict(flat.state_dict())
        params = predict_params(model, ghn, example_inputs=tokens)
        values = torch.linalg.svdvals(params["embed.weight"].detach())
        spread[share] = float(values.max() / values.min())
        predict(model, ghn, example_inputs=tokens)
        torch.testing.assert_close(model.embed.weight.detach(), params["embed.weight"].detach(), atol=1e-6, rtol=1e-5)
    assert 1.01 < spread[0.5] < spread[1.0]
    for bad in (0.0, 1.5, True):
        with pytest.raises(ConfigError, match="free_spectrum_share must be in"):
            GHN.from_preset("logah-tiny", own_spectrum=True, free_spectrum_share=bad)


class _PositionTable(nn.Module):
    """Patches plus a learned (1, N, d) position table, as ViTs hold it."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Linear(4, 48)
        self.pos = nn.Parameter(torch.randn(1, 17, 48) * 0.02)
        self.head = nn.Linear(48, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((self.patch(x) + self.pos).mean(1))


def test_table_spectrum_puts_a_position_table_at_its_matrix_spectrum_in_predict_and_predict_params() -> None:
    """GHNConfig.table_spectrum: a (1, N, d) position table is put at the own init's spectrum as an N x d matrix, so
    its rows are as far apart as the own init's (the GHN alone gives near-copies); `predict` writes what
    `predict_params` returns, on real and meta models; other parameters are as without it."""
    torch.manual_seed(0)
    model, x = _PositionTable(), torch.zeros(2, 17, 4)
    own = model.pos.detach().clone()
    base = GHN.from_preset("logah-tiny", own_spectrum=True)
    tables = GHN(dataclasses.replace(base.config, table_spectrum=True))
    tables.load_state_dict(base.state_dict())

    def row_cos(table: torch.Tensor) -> float:
        unit = torch.nn.functional.normalize(table.detach().reshape(17, 48), dim=1)
        return float(((unit @ unit.T).abs().sum() - 17) / (17 * 16))

    as_vector = predict_params(model, base, example_inputs=x)
    params = predict_params(model, tables, example_inputs=x)
    assert row_cos(as_vector["pos"]) > 2 * row_cos(own) and row_cos(params["pos"]) < 1.5 * row_cos(own)
    assert 0.8 < float(params["pos"].std() / own.std()) < 1.25
    torch.testing.assert_close(params["patch.weight"], as_vector["patch.weight"])
    predict(model, tables, example_inputs=x)
    for name, value in model.named_parameters():  # the Newton-Schulz polar of two code paths: float32 rounding
        torch.testing.assert_close(value.detach(), params[name].detach(), msg=name, atol=1e-5, rtol=1e-4)
    with torch.device("meta"):
        meta = _PositionTable()
    predict(meta, tables, example_inputs=x.to("meta"))
    assert torch.isfinite(meta.pos).all() and row_cos(meta.pos) < 1.5 * row_cos(own)
    one_unit = nn.Conv2d(3, 1, 3)  # a (1, 3, 3, 3) weight is held as one row too, but it is no position table
    kernels = {name: predict_params(one_unit, ghn)["weight"] for name, ghn in (("off", base), ("on", tables))}
    torch.testing.assert_close(kernels["on"], kernels["off"])
    with pytest.raises(ConfigError, match="table_spectrum must be True or False"):
        GHN.from_preset("logah-tiny", own_spectrum=True, table_spectrum="yes")


def test_init_blend_must_be_a_fraction() -> None:
    with pytest.raises(ConfigError, match="init_blend must be in"):
        GHN.from_preset("logah-tiny", init_blend=1.0)
