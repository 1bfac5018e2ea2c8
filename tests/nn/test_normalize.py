"""Role-based normalization: gains, residual depth scaling and fan-ins from the graph, the rule of every role, and the
signal gain of networks without norms (`signal_scale`)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from ghn.errors import ConfigError
from ghn.graph import ParamInfo, build_graph
from ghn.nn import GHN, DecoderConfig, EncoderConfig, GHNConfig, LowRank, param_scales, reference_std
from ghn.nn.normalize import EMBEDDING_STD, SIGNAL_GAIN_CAP, ParamScale, _signal_gain, normalize_params
from ghn.predict import blend_with_init, predict, predict_params


class Residual(nn.Module):
    """Two residual linear blocks (ReLU, then tanh) and a head.

    Shapes:
        input: (B, 8)
        output: (B, 3)
    """

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 8)
        self.fc2 = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.fc1(x)
        x = x + self.fc2(torch.relu(x))
        return self.head(torch.tanh(x))


class WithLooseParams(nn.Module):
    """Parameters used by plain tensor ops: a (1, D) bias added, a (1, D) scale multiplied, a (1, 1, D) token.

    Shapes:
        input: (B, 16)
        output: (B, 2, 16)
    """

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 16)
        self.bias2d = nn.Parameter(torch.zeros(1, 16))
        self.gamma = nn.Parameter(torch.ones(1, 16))
        self.token = nn.Parameter(torch.zeros(1, 1, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (self.fc(x) + self.bias2d) * self.gamma
        return torch.cat([self.token.expand(x.shape[0], 1, 16), y[:, None]], 1)


def test_reference_std_of_each_role() -> None:
    scale = ParamScale(gain=2.0, depth_scale=0.5)
    weight = ParamInfo("w", (10, 4, 3, 3), role="weight", layout="out_in")
    assert reference_std(weight, scale) == pytest.approx(2.0 * 0.5 / math.sqrt(4 * 9))
    transposed = ParamInfo("c_attn.weight", (64, 192), role="weight", layout="in_out")  # HF Conv1D: (in, out)
    assert reference_std(transposed, ParamScale()) == pytest.approx(1 / math.sqrt(64))
    classifier = ParamInfo("head.weight", (10, 25), role="classifier", layout="out_in")
    assert reference_std(classifier, scale) == pytest.approx(1 / 5)  # no gain, no depth scale
    for role in ("embedding", "position_embedding"):
        assert reference_std(ParamInfo("e", (100, 8), role=role), scale) == EMBEDDING_STD
    for role in ("bias", "norm_scale", "norm_shift"):
        assert reference_std(ParamInfo("b", (8,), role=role), scale) is None
    assert reference_std(ParamInfo("o", (8,), role="other"), scale) is None  # 1-D 'other' is bias-like
    assert reference_std(ParamInfo("o", (8, 4), role="other", layout="out_in"), ParamScale()) == pytest.approx(0.5)


def test_param_scales_read_gain_depth_and_fan_in_from_the_graph() -> None:
    graph = build_graph(Residual(), torch.zeros(1, 8))
    scales = param_scales(graph)
    assert set(scales) == set(graph.params)
    # both residual projections feed an add: divided by sqrt(2 residual adds); the head is not
    assert scales["fc1.weight"].depth_scale == pytest.approx(1 / math.sqrt(2))
    assert scales["fc2.weight"].depth_scale == pytest.approx(1 / math.sqrt(2))
    assert scales["head.weight"].depth_scale == 1.0
    assert scales["fc1.bias"].depth_scale == 1.0
    assert scales["fc1.bias"].layer_fan_in == 8 and scales["head.bias"].layer_fan_in == 8


def test_gain_follows_the_activation_after_the_layer() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    scales = param_scales(build_graph(model, torch.zeros(1, 4)))
    assert scales["0.weight"].gain == pytest.approx(math.sqrt(2))
    assert scales["2.weight"].gain == pytest.approx(5 / 3)
    assert scales["4.weight"].gain == 1.0


def test_tensor_rules_of_each_role() -> None:
    infos = [
        ParamInfo("w", (64,), role="weight"),
        ParamInfo("b", (64,), role="bias"),
        ParamInfo("g", (64,), role="norm_scale"),
        ParamInfo("s", (64,), role="norm_shift"),
    ]
    scales = [ParamScale(), ParamScale(layer_fan_in=16), ParamScale(), ParamScale()]
    raw = torch.randn(4, 64) * 10  # large raw values: every rule must bound or rescale them
    out = normalize_params(raw, infos, scales)
    assert out.shape == raw.shape
    torch.testing.assert_close(out[0].std(unbiased=False), torch.tensor(1 / 8))
    assert out[1].abs().max() <= 1 / 4 and out[1].abs().max() > 0
    assert ((out[2] >= 0) & (out[2] <= 2)).all()  # 1 + tanh: closed in float32, where tanh saturates
    assert out[3].abs().max() <= 0.5


def test_low_rank_group_with_a_two_dim_bias_is_normalized_elementwise() -> None:
    """Regression: a group mixing a (1, D) weight and a (1, D) bias (`x + p`) crashed with a TypeError (no std)."""
    rows, cols = torch.randn(2, 1, 4), torch.randn(2, 16, 4)
    infos = [ParamInfo("w", (1, 16), role="weight", layout="out_in"), ParamInfo("b", (1, 16), role="bias")]
    out = normalize_params(LowRank(rows, cols, (1, 16)), infos, [ParamScale(), ParamScale(layer_fan_in=4)])
    assert isinstance(out, torch.Tensor) and out.shape == (2, 1, 16)
    torch.testing.assert_close(out[0].std(unbiased=False), torch.tensor(1 / 4))
    assert out[1].abs().max() <= 1 / 2


@pytest.mark.parametrize("layout", ["out_in", "in_out"])
def test_centered_units_take_out_the_row_every_unit_shares(layout: str) -> None:
    """`center_units`: a weight's mean over its output units is zero (dim 0, or dim 1 of an (in, out) tensor), in
    the factored and the dense form alike, and the std rule still holds."""
    shape = (12, 24) if layout == "out_in" else (24, 12)  # 12 output units, 24 inputs
    out_dim = 0 if layout == "out_in" else 1
    infos = [ParamInfo(f"w{i}", shape, role="weight", layout=layout) for i in range(3)]
    scales = [ParamScale(layer_fan_in=24)] * 3
    rows, cols = torch.randn(3, shape[0], 4) + 2.0, torch.randn(3, shape[1], 4) + 1.0  # a strong shared part
    shared = LowRank(rows, cols, shape).materialize().mean(1 + out_dim).abs().mean()
    assert shared > 1.0
    for raw in (LowRank(rows, cols, shape), LowRank(rows, cols, shape).materialize()):
        out = normalize_params(raw, infos, scales, center_units=True)
        dense = out.materialize() if isinstance(out, LowRank) else out
        assert dense.mean(1 + out_dim).abs().max() < 1e-5
        torch.testing.assert_close(dense.std((1, 2), unbiased=False), torch.full((3,), 24**-0.5))
        plain = normalize_params(raw, infos, scales)
        plain = plain.materialize() if isinstance(plain, LowRank) else plain
        assert plain.mean(1 + out_dim).abs().max() > 0.1


def test_centered_units_center_biases_within_their_bound_and_leave_norms_and_few_units_alone() -> None:
    infos = [
        ParamInfo("b", (16,), role="bias"),
        ParamInfo("s", (16,), role="norm_shift"),
        ParamInfo("b3", (3,), role="bias"),
    ]
    scales = [ParamScale(layer_fan_in=16), ParamScale(), ParamScale(layer_fan_in=16)]
    raw = [torch.randn(16) + 3.0, torch.randn(16) + 3.0, torch.randn(3) + 3.0]  # every value near its upper bound
    bias, shift = normalize_params(torch.stack(raw[:2]), infos[:2], scales[:2], center_units=True)
    assert abs(float(bias.mean())) < 1e-6 and bias.abs().max() <= 0.25 and bias.std() > 0
    assert shift.min() > 0.2  # norm shifts keep their shared part
    (few,) = normalize_params(raw[2][None], infos[2:], scales[2:], center_units=True)
    assert few.min() > 0.2  # 3 units: not centered (MIN_CENTERED_UNITS)


def test_a_ghn_with_centered_units_predicts_no_shared_row_and_no_shared_bias() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    ghn = GHN(GHNConfig(encoder=EncoderConfig(hidden_dim=16, num_layers=1, num_heads=2), centered_units=True))
    params = ghn([build_graph(model)])[0]
    assert len(params) == 6
    for name, value in params.items():
        assert value.mean(0).abs().max() < 1e-5, name  # weights: the mean row; biases: the mean value


def test_loose_parameters_are_predicted_by_their_roles() -> None:
    model = WithLooseParams()
    graph = build_graph(model, torch.zeros(2, 16))
    assert graph.params["bias2d"].role == "bias" and graph.params["token"].role == "embedding"
    config = GHNConfig(encoder=EncoderConfig(hidden_dim=8, num_heads=2, num_layers=1), decoder=DecoderConfig(rank=4))
    params = GHN(config)([graph])[0]
    assert set(params) == set(graph.params)
    assert params["bias2d"].shape == (1, 16) and params["bias2d"].abs().max() <= 1.0
    # the token is zeros in the model's own init, so it is predicted as zeros; on meta no rule knows it: 0.02
    assert graph.params["token"].init_std == 0.0 and params["token"].abs().max() == 0
    with torch.device("meta"):
        meta_graph = build_graph(WithLooseParams(), torch.zeros(2, 16))
    assert meta_graph.params["token"].init_std is None
    params = GHN(config)([meta_graph])[0]
    torch.testing.assert_close(params["token"].std(unbiased=False), torch.tensor(EMBEDDING_STD))


def test_normalization_can_be_switched_off() -> None:
    graph = build_graph(Residual(), torch.zeros(1, 8))
    config = GHNConfig(encoder=EncoderConfig(hidden_dim=8, num_heads=2, num_layers=1), normalize=False)
    ghn = GHN(config)
    raw = ghn([graph])[0]
    normalized = GHN(GHNConfig(encoder=config.encoder))
    normalized.load_state_dict(ghn.state_dict())
    scaled = normalized([graph])[0]
    assert not torch.allclose(raw["fc1.weight"], scaled["fc1.weight"])
    info, scale = graph.params["fc1.weight"], param_scales(graph)["fc1.weight"]
    torch.testing.assert_close(scaled["fc1.weight"].std(unbiased=False), torch.tensor(reference_std(info, scale)))


def _plain_stack() -> nn.Module:
    """Three ReLU convs with no norm and a linear head, at PyTorch's default init."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(8 * 16, 4),
    )  # fmt: skip


def test_signal_gain_lifts_weights_of_a_network_without_norms_to_the_fan_in_rule() -> None:
    """ParamScale.signal_gain: PyTorch's default conv init (std 1 / sqrt(3 fan_in)) against Kaiming's gain /
    sqrt(fan_in): sqrt(6) before a ReLU, 5 / sqrt(3) before a tanh, at most SIGNAL_GAIN_CAP; 1 for the head, biases,
    a network with a norm, an own init already at the rule, and where the own init is unknown."""
    torch.manual_seed(0)
    stack = _plain_stack()
    scales = param_scales(build_graph(stack, torch.zeros(1, 1, 4, 4)))
    assert scales["0.weight"].signal_gain == pytest.approx(math.sqrt(6), rel=0.05)
    assert scales["2.weight"].signal_gain == pytest.approx(math.sqrt(6), rel=0.05)
    assert scales["4.weight"].signal_gain == pytest.approx(5 / math.sqrt(3), rel=0.05)
    nn.init.normal_(stack[4].weight, std=1e-3)
    assert param_scales(build_graph(stack, torch.zeros(1, 1, 4, 4)))["4.weight"].signal_gain == SIGNAL_GAIN_CAP == 3.0
    for name in ("7.weight", "0.bias", "7.bias"):  # the head keeps its own (learned) gain
        assert scales[name].signal_gain == 1.0, name
    normed = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(128, 4))
    assert all(s.signal_gain == 1.0 for s in param_scales(build_graph(normed, torch.zeros(1, 1, 4, 4))).values())
    kaiming = _plain_stack()
    for layer in (kaiming[0], kaiming[2]):
        nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    scales = param_scales(build_graph(kaiming, torch.zeros(1, 1, 4, 4)))
    assert scales["0.weight"].signal_gain == pytest.approx(1.0, abs=0.05)  # a sample of the rule: within its noise
    assert scales["2.weight"].signal_gain == pytest.approx(1.0, abs=0.05)
    with torch.device("meta"):  # PyTorch's init rule stands in for the values: the same gains
        meta = _plain_stack()
    meta_scales = param_scales(build_graph(meta, torch.zeros(1, 1, 4, 4)))
    assert meta_scales["0.weight"].signal_gain == pytest.approx(math.sqrt(6), rel=0.05)
    unknown = ParamInfo("w", (8, 8, 3, 3), role="weight", layout="out_in")  # no rule knows it: the fan-in rule's std
    assert _signal_gain(unknown, meta_scales["2.weight"]) == 1.0


@pytest.mark.parametrize("own_spectrum", [False, True])
def test_a_ghn_with_signal_scale_predicts_plain_stacks_at_the_signal_gain(own_spectrum: bool) -> None:
    """GHNConfig.signal_scale multiplies each prediction by its signal gain in the GHN's forward, `predict_params`
    and `predict` alike (with and without the own-spectrum map); everything else is the prediction without it."""
    torch.manual_seed(0)
    model, x = _plain_stack(), torch.zeros(1, 1, 4, 4)
    config = GHNConfig(encoder=EncoderConfig(hidden_dim=16, num_layers=1, num_heads=2), own_spectrum=own_spectrum)
    off = GHN(config)
    on = GHN(dataclasses.replace(config, signal_scale=True))
    on.load_state_dict(off.state_dict())
    gains = {name: scale.signal_gain for name, scale in param_scales(build_graph(model, x)).items()}
    torch.manual_seed(1)
    plain = predict_params(model, off, example_inputs=x)
    torch.manual_seed(1)
    scaled = predict_params(model, on, example_inputs=x)
    assert gains["0.weight"] > 2
    for name, value in plain.items():
        torch.testing.assert_close(scaled[name], value * gains[name], msg=name)
    _, report = predict(model, on, example_inputs=x, return_report=True)
    for name, value in model.named_parameters():
        torch.testing.assert_close(value.detach(), scaled[name].detach(), msg=name, atol=2e-5, rtol=1e-5)
    assert report.signal_gains == pytest.approx({n: g for n, g in gains.items() if g != 1.0})
    assert "3 weights of this network without norms at the fan-in rule's signal-keeping std" in str(report)
    with pytest.raises(ConfigError, match="signal_scale must be True or False"):
        GHNConfig(signal_scale="yes")


def test_blending_a_signal_scaled_prediction_scales_the_own_init_alike() -> None:
    """Training blends the GHN's output (already times its signal gain) with the own init at `gain` times its std;
    `ghn.predict` blends first and multiplies after: the same tensor."""
    torch.manual_seed(0)
    prediction, own = torch.randn(6, 5), torch.randn(6, 5) * 0.3
    info = ParamInfo("w", (6, 5), role="weight", layout="out_in", init_mean=0.0, init_std=0.25)
    in_training = blend_with_init(prediction * 2.4, own, info, 0.2, gain=2.4)
    in_predict = blend_with_init(prediction.clone(), own, info, 0.2) * 2.4
    torch.testing.assert_close(in_training, in_predict)
