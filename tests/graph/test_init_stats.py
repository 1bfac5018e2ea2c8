"""`ParamInfo.init_mean/init_std`: the model's own init, measured on real tensors and from the rules on meta."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import ghn
from ghn.graph import build_graph


class UserNet(nn.Module):
    """Standard torch modules with their default init, and one custom-initialized layer."""

    def __init__(self, custom_std: float = 0.3) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 32)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.norm = nn.LayerNorm(32)
        self.conv = nn.Conv1d(32, 48, 3, padding=1)
        self.custom = nn.Linear(48, 16)
        nn.init.normal_(self.custom.weight, std=custom_std)
        nn.init.constant_(self.custom.bias, 0.5)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx)
        x = self.norm(x + self.attn(x, x, x, need_weights=False)[0])
        return self.custom(self.conv(x.transpose(1, 2)).transpose(1, 2))


def _graphs() -> tuple:
    idx = torch.zeros(1, 6, dtype=torch.long)
    real = UserNet()
    with torch.device("meta"):
        meta = UserNet()
    return real, build_graph(real, idx), build_graph(meta, idx)


def test_real_tensors_are_measured_and_a_custom_init_is_followed() -> None:
    real, graph, _ = _graphs()
    weight, bias = graph.params["custom.weight"], graph.params["custom.bias"]
    assert weight.init_std == pytest.approx(float(real.custom.weight.std(unbiased=False)), rel=1e-5)
    assert weight.init_std == pytest.approx(0.3, rel=0.15)
    assert bias.init_mean == pytest.approx(0.5) and bias.init_std == 0.0


@pytest.mark.parametrize(
    "name",
    ["embed.weight", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
     "norm.weight", "norm.bias", "conv.weight", "conv.bias"],
)  # fmt: skip
def test_meta_rules_give_what_pytorch_default_init_gives(name: str) -> None:
    real, graph, meta_graph = _graphs()
    measured = real.get_parameter(name).detach()
    rule = meta_graph.params[name]
    assert rule.init_std is not None, name
    noise = 4 * rule.init_std / measured.numel() ** 0.5  # sampling error of a mean
    assert rule.init_mean == pytest.approx(float(measured.mean()), abs=noise + 1e-6)
    if rule.init_std == 0:
        assert float(measured.std()) == 0.0
    else:
        assert float(measured.std(unbiased=False)) == pytest.approx(rule.init_std, rel=0.25)
    # a real tensor that agrees with the rule is snapped to it: two builds give the same statistics
    assert (graph.params[name].init_mean, graph.params[name].init_std) == (rule.init_mean, rule.init_std)


def test_unknown_meta_parameter_has_no_statistics() -> None:
    class Loose(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(4, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ self.scale

    with torch.device("meta"):
        model = Loose()
    assert build_graph(model, torch.zeros(1, 4)).params["scale"].init_std is None


@pytest.mark.parametrize(
    "spec", ["zoo:resnet18-cifar", "zoo:vit-tiny/4", "zoo:cnn", "zoo:gpt2", "hf:gpt2", "hf:llama-tiny", "hf:vit-tiny", "hf:bert-tiny"]
)
def test_zoo_and_hf_models_on_meta_match_their_real_init(spec: str) -> None:
    if spec.startswith("hf:"):
        pytest.importorskip("transformers")
    real = ghn.zoo.create(spec)
    with torch.device("meta"):
        meta = ghn.zoo.create(spec)
    graph = build_graph(meta)
    for name, info in graph.params.items():
        values = real.get_parameter(name).detach()
        assert info.init_std is not None, name
        if values.dim() >= 2 and values.numel() >= 64:
            assert float(values.std(unbiased=False)) == pytest.approx(info.init_std, rel=0.2), name


def test_a_predicted_model_keeps_the_statistics_of_its_init() -> None:
    model = UserNet()
    hyper = ghn.GHN.from_preset("logah-tiny")
    idx = torch.zeros(1, 6, dtype=torch.long)
    before = {n: (i.init_mean, i.init_std) for n, i in build_graph(model, idx).params.items()}
    ghn.predict(model, hyper, example_inputs=idx)
    after = {n: (i.init_mean, i.init_std) for n, i in build_graph(model, idx).params.items()}
    assert after == before
    again = ghn.predict_params(model, hyper, example_inputs=idx)
    for name, value in model.named_parameters():
        # equal up to float32 rounding of two GHN forwards (values of std 1 differ by up to 1e-5 on some seeds)
        torch.testing.assert_close(value.detach(), again[name].detach(), rtol=1e-4, atol=1e-4, msg=name)
    assert math.isclose(before["custom.weight"][1], 0.3, rel_tol=0.15)
