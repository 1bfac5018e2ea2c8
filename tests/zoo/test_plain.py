"""The `plain` family: MLPs and conv stacks as users write them, and the spaces that mix them in."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ghn
from ghn.errors import ConfigError
from ghn.zoo import FAMILIES, config_hash, lookup_config
from ghn.zoo.plain import ACTIVATIONS, PlainConfig, build_plain
from ghn.zoo.space import SPACES, ArchitectureSampler, adapt_config

DIGITS = {"in_channels": 1, "image_size": 8, "num_classes": 10}


def _tiny_draws(num: int, seed: int = 0) -> list[PlainConfig]:
    generator = torch.Generator().manual_seed(seed)
    sampler = FAMILIES.get("plain").sampler("tiny")
    return [adapt_config(sampler(generator), DIGITS) for _ in range(num)]


def test_lenet5_preset_has_lenet5_layers():
    _, config = lookup_config("lenet5")
    model = build_plain(config)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(3, 6, (5, 5)), (6, 16, (5, 5))]
    assert [(m.in_features, m.out_features) for m in linears] == [(16 * 8 * 8, 120), (120, 84), (84, 10)]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_mlp_flattens_the_image_into_its_hidden_layers():
    model = build_plain(PlainConfig(kind="mlp", widths=(64, 32), norm="layer", activation="tanh", **DIGITS))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 64), (64, 32), (32, 10)]
    assert sum(isinstance(m, nn.LayerNorm) for m in model.modules()) == 2
    assert sum(isinstance(m, nn.Tanh) for m in model.modules()) == 2
    assert not any(isinstance(m, nn.Conv2d) for m in model.modules())
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.parametrize("pool", ["max", "avg", "stride"])
def test_stages_halve_odd_sizes_rounding_up_for_every_pool(pool):
    config = PlainConfig(widths=(4, 8, 8), pool=pool, image_size=7, in_channels=1, head_widths=(16,))
    assert config.feature_size == 1  # 7 -> 4 -> 2 -> 1
    model = build_plain(config)
    assert model.features(torch.randn(2, 1, 7, 7)).shape == (2, 8, 1, 1)
    assert model(torch.randn(2, 1, 7, 7)).shape == (2, 10)
    has_pool = any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in model.modules())
    assert has_pool == (pool != "stride")


def test_separable_convs_are_depthwise_then_pointwise_with_group_norm():
    model = build_plain(PlainConfig(widths=(12,), separable=True, norm="group", kernel_size=3, head="pool", **DIGITS))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.groups, c.kernel_size) for c in convs] == [(1, (3, 3)), (1, (1, 1))]  # one input channel: groups 1
    model = build_plain(PlainConfig(widths=(6, 12), separable=True, norm="group", head="pool", **DIGITS))
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert [(c.groups, c.in_channels) for c in depthwise] == [(6, 6)]
    groups = [m.num_groups for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert groups and all(g in (1, 2, 4, 8) for g in groups)
    for norm in (m for m in model.modules() if isinstance(m, nn.GroupNorm)):
        assert norm.num_channels % norm.num_groups == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kernel_size": 4}, r"PlainConfig.kernel_size is 4; it must be an odd integer"),
        ({"norm": "layer"}, r"PlainConfig.norm is 'layer'; it must be 'none', 'batch' or 'group' for conv"),
        ({"kind": "mlp", "widths": (8,), "norm": "group"}, r"PlainConfig.norm is 'group'; .* for MLPs"),
        ({"activation": "swish"}, r"PlainConfig.activation is 'swish'; it must be one of"),
        ({"widths": ()}, r"PlainConfig.widths is \(\); it must be a tuple of integers >= 1, not empty"),
        ({"head_widths": (0,)}, r"PlainConfig.head_widths is \(0,\); it must be a tuple of integers >= 1"),
        ({"kind": "rnn"}, r"PlainConfig.kind is 'rnn'; it must be one of 'conv', 'mlp'"),
    ],
)
def test_config_validation_names_field_value_and_fix(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PlainConfig(**kwargs)


def test_tiny_draws_cover_the_options_build_on_digits_and_stay_cpu_sized():
    configs = _tiny_draws(200)
    assert len({config_hash(c) for c in configs}) >= 195
    assert {c.kind for c in configs} == {"mlp", "conv"}
    convs = [c for c in configs if c.kind == "conv"]
    assert {c.norm for c in convs} == {"none", "batch", "group"}
    assert {c.pool for c in convs} == {"max", "avg", "stride"}
    assert {c.head for c in convs} == {"pool", "flatten"}
    assert {c.separable for c in convs} == {True, False}
    assert {c.activation for c in configs} == set(ACTIVATIONS)
    sizes = []
    for config in configs[:60]:
        model = build_plain(config)
        assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
        sizes.append(sum(p.numel() for p in model.parameters()))
    assert max(sizes) < 1_000_000 and sorted(sizes)[len(sizes) // 2] < 50_000


def test_mixed_plain_tiny_space_draws_every_family():
    space = SPACES.get("mixed-plain-tiny")
    assert sorted(space.families) == ["cnn", "plain", "resnet", "vit"]
    assert SPACES.get("plain-tiny").families == ["plain"]
    configs = ArchitectureSampler("mixed-plain-tiny", seed=0, task_values=DIGITS).distinct(40)
    assert {type(c).__name__ for c in configs} == {"CNNConfig", "ResNetConfig", "ViTConfig", "PlainConfig"}


def test_conv_variant_and_the_conv_heavy_space_draw_conv_stacks():
    sample = FAMILIES.get("plain").variants["tiny-conv"]
    generator = torch.Generator().manual_seed(0)
    configs = [sample(generator) for _ in range(60)]
    assert {c.kind for c in configs} == {"conv"} and {c.norm for c in configs} == {"none", "batch", "group"}
    draws = ArchitectureSampler("mixed-convs-tiny", seed=0, task_values=DIGITS).distinct(200)
    convs = sum(getattr(c, "kind", None) == "conv" for c in draws)
    assert 0.45 < convs / len(draws) < 0.8
    assert {type(c).__name__ for c in draws} == {"CNNConfig", "ResNetConfig", "ViTConfig", "PlainConfig"}


def test_every_parameter_of_plain_draws_is_predicted():
    model_ghn = ghn.GHN.from_preset("logah-tiny")
    for config in _tiny_draws(8, seed=1):
        model = build_plain(config)
        _, report = ghn.predict(model, model_ghn, return_report=True)
        assert not report.not_predicted and report.num_predicted_params == report.num_total_params, config
        assert all(torch.isfinite(p).all() for p in model.parameters())
