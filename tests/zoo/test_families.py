"""Every registered model family: defaults, seeded samplers, presets on meta, configs, and family-specific layouts."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from ghn._config import from_dict, from_json, to_dict, to_json
from ghn.errors import ConfigError, ShapeError, UnknownNameError
from ghn.zoo import (
    FAMILIES,
    CellConfig,
    CNNConfig,
    GPT2Config,
    LlamaConfig,
    PlainLMConfig,
    ResNetConfig,
    ViTConfig,
    config_hash,
    family_of,
    lookup_config,
    preset_names,
    sample_configs,
)
from ghn.zoo.cnn import CELL_OPS

FAMILY_NAMES = FAMILIES.names()
PRESET_NAMES = preset_names()


def _check_output(model: nn.Module, output: torch.Tensor, inputs: tuple[torch.Tensor, ...]) -> None:
    """Logits of the right shape: (B, K) for classifiers, (B, T, V) for language models."""
    batch_size = inputs[0].shape[0]
    if hasattr(model, "vocab_size"):
        assert output.shape == (batch_size, inputs[0].shape[1], model.vocab_size)
    else:
        assert output.shape == (batch_size, model.num_classes)


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # tied parameters count once


def test_all_families_are_registered():
    assert FAMILY_NAMES == ["cnn", "gpt2", "llama", "plain", "plain-lm", "resnet", "vit"]


def _default_config_param(name: str) -> object:
    """A family name, marked slow when its default model is too large to build quickly on CPU (>30M parameters);
    `test_preset_builds_and_runs_on_meta` still covers those defaults, as presets, in the fast run."""
    spec = FAMILIES.get(name)
    with torch.device("meta"):
        num_params = _num_params(spec.build(spec.default_config()))
    return pytest.param(name, marks=[pytest.mark.slow] if num_params > 30_000_000 else [])


@pytest.mark.parametrize("name", [_default_config_param(name) for name in FAMILY_NAMES])
def test_default_config_builds_and_runs_on_cpu(name):
    spec = FAMILIES.get(name)
    model = spec.build(spec.default_config()).eval()
    assert model.config == spec.default_config()
    inputs = model.example_inputs(batch_size=2)
    with torch.no_grad():
        output = model(*inputs)
    _check_output(model, output, inputs)
    assert torch.isfinite(output).all()


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_sampler_is_seeded_by_its_generator(name):
    spec = FAMILIES.get(name)
    first = [spec.sample(torch.Generator().manual_seed(seed)) for seed in range(3)]
    again = [spec.sample(torch.Generator().manual_seed(seed)) for seed in range(3)]
    assert first == again
    assert [config_hash(c) for c in first] == [config_hash(c) for c in again]
    assert len({config_hash(c) for c in first}) >= 2
    assert all(type(c) is spec.config_cls for c in first)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_sampler_leaves_global_rng_alone(name):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    FAMILIES.get(name).sample(torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_sampled_configs_build_and_run(name, seed):
    spec = FAMILIES.get(name)
    model = spec.build(spec.sample(torch.Generator().manual_seed(seed))).eval()
    inputs = model.example_inputs(batch_size=2)
    with torch.no_grad():
        output = model(*inputs)
    _check_output(model, output, inputs)
    assert torch.isfinite(output).all()


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_preset_builds_and_runs_on_meta(preset):
    family, config = lookup_config(preset)
    with torch.device("meta"):
        model = family.build(config)
    assert all(p.is_meta for p in model.parameters())
    inputs = model.example_inputs()
    assert all(x.is_meta for x in inputs)
    _check_output(model, model(*inputs), inputs)


def test_preset_names_are_unique_and_configs_distinct():
    hashes = {name: config_hash(lookup_config(name)[1]) for name in PRESET_NAMES}
    assert len(set(hashes.values())) == len(PRESET_NAMES)
    assert {"resnet18", "resnet50-cifar", "vit-s/16", "vit-l/2", "gpt2-xl", "darts"} <= set(PRESET_NAMES)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_family_default_is_a_preset(name):
    spec = FAMILIES.get(name)
    assert spec.default_config() in spec.presets.values()


@pytest.mark.parametrize("name", [n for n in FAMILY_NAMES if n in PRESET_NAMES])
def test_preset_named_like_its_family_is_the_family_default(name):
    family, config = lookup_config(name)
    assert config == family.default_config()


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_config_round_trips_through_dict_and_json(preset):
    family, config = lookup_config(preset)
    assert from_dict(family.config_cls, to_dict(config)) == config
    assert from_json(family.config_cls, to_json(config)) == config
    assert config_hash(from_json(family.config_cls, to_json(config))) == config_hash(config)


def test_config_hash_is_short_hex_and_changes_with_any_field():
    config = ResNetConfig()
    digest = config_hash(config)
    assert len(digest) == 16 and int(digest, 16) >= 0
    assert config_hash(dataclasses.replace(config, num_classes=10)) != digest


def test_sample_configs_are_distinct_and_reproducible():
    configs = sample_configs("resnet", 20, seed=3)
    assert len({config_hash(c) for c in configs}) == 20
    assert sample_configs("resnet", 20, seed=3) == configs


def test_sample_configs_raises_when_the_space_runs_out():
    constant = dataclasses.replace(FAMILIES.get("resnet"), sample=lambda generator: ResNetConfig())
    with pytest.raises(ConfigError, match="only 1 distinct configs"):
        sample_configs(constant, 2, max_attempts=10)


def test_family_of_unknown_config_type_raises():
    @dataclasses.dataclass(frozen=True)
    class OtherConfig:
        width: int = 1

    with pytest.raises(UnknownNameError, match="'OtherConfig' belongs to no registered model family"):
        family_of(OtherConfig())


def test_lookup_config_suggests_close_names():
    with pytest.raises(UnknownNameError, match="Did you mean 'resnet18'"):
        lookup_config("resnet19")


def test_family_spec_rejects_bad_task_and_preset_type():
    spec = FAMILIES.get("resnet")
    with pytest.raises(ConfigError, match="task 'audio'"):
        dataclasses.replace(spec, task="audio")
    with pytest.raises(ConfigError, match="Preset 'x' of family 'resnet' is a 'ViTConfig'"):
        dataclasses.replace(spec, presets={"x": ViTConfig()})


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: ResNetConfig(block="wide"), r"ResNetConfig.block is 'wide'; it must be one of 'basic', 'bottleneck'"),
        (lambda: ResNetConfig(layers=()), r"ResNetConfig.layers is \(\); it must be a non-empty tuple"),
        (lambda: ResNetConfig(num_classes=0), r"ResNetConfig.num_classes is 0; it must be an integer >= 1"),
        (lambda: ResNetConfig(base_width=True), r"ResNetConfig.base_width is True"),
        (lambda: ResNetConfig(stem="tiny"), r"ResNetConfig.stem is 'tiny'; it must be one of 'cifar', 'imagenet'"),
        (lambda: ViTConfig(embed_dim=100, num_heads=3), r"ViTConfig.embed_dim is 100; it must be a multiple of num_"),
        (lambda: ViTConfig(image_size=30, patch_size=4), r"ViTConfig.image_size is 30; it must be a multiple of patch"),
        (lambda: ViTConfig(mlp_ratio=0), r"ViTConfig.mlp_ratio is 0; it must be a number in \(0.0, inf\]"),
        (lambda: GPT2Config(n_embd=10, n_head=3), r"GPT2Config.n_embd is 10; it must be a multiple of n_head=3"),
        (lambda: GPT2Config(dropout=1.5), r"GPT2Config.dropout is 1.5; it must be a number in \[0.0, 1.0\]"),
        (lambda: LlamaConfig(hidden_size=96), r"hidden_size is 96; it must be a multiple of 2 \* num_attention_h"),
        (lambda: LlamaConfig(num_key_value_heads=3), r"num_key_value_heads is 3; it must be a divisor of num_attent"),
        (lambda: LlamaConfig(tie_word_embeddings=1), r"LlamaConfig.tie_word_embeddings is 1; it must be True or False"),
        (lambda: PlainLMConfig(width=100, num_heads=3), r"PlainLMConfig.width is 100; it must be a multiple of num_hea"),
        (lambda: PlainLMConfig(activation="silu"), r"PlainLMConfig.activation is 'silu'; it must be one of 'gelu'"),
        (lambda: CNNConfig(num_cells=0), r"CNNConfig.num_cells is 0"),
        (lambda: CNNConfig(merge="mean"), r"CNNConfig.merge is 'mean'; it must be one of 'concat', 'sum'"),
        (lambda: CNNConfig(reduction_cells=(8,)), r"CNNConfig.reduction_cells is \(8,\); it must be None or distinct"),
        (lambda: CellConfig(edges=(("nope", 0), ("conv_3x3", 1)), concat=(2,)), r"CellConfig.edges .* op in"),
        (lambda: CellConfig(edges=(("conv_3x3", 0), ("conv_3x3", 2)), concat=(2,)), r"0 <= input < node \+ 2"),
        (lambda: CellConfig(edges=(("conv_3x3", 0), ("conv_3x3", 1)), concat=(3,)), r"CellConfig.concat is \(3,\)"),
    ],
)
def test_config_validation_names_field_value_and_fix(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_config_lists_become_tuples():
    assert ResNetConfig(layers=[1, 2]) == ResNetConfig(layers=(1, 2))
    cell = CellConfig(edges=[["conv_3x3", 0], ["skip_connect", 1]], concat=[2])
    assert cell.edges == (("conv_3x3", 0), ("skip_connect", 1)) and hash(cell)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (ResNetConfig(), "block='basic', layers=(2, 2, 2, 2), base_width=64, num_classes=1000"),
        (ViTConfig(), "patch_size=16, depth=12, embed_dim=768, num_heads=12, num_classes=1000"),
        (GPT2Config(), "n_layer=12, n_embd=768, n_head=12, vocab_size=50257"),
        (
            LlamaConfig(),
            "num_hidden_layers=22, hidden_size=2048, num_attention_heads=32, num_key_value_heads=4, vocab_size=32000",
        ),
        (CNNConfig(), "num_cells=8, init_channels=16, merge='concat', use_batchnorm=True, num_classes=10"),
    ],
)
def test_repr_shows_defining_numbers(config, expected):
    with torch.device("meta"):
        model = family_of(config).build(config)
    assert model.extra_repr() == expected
    assert expected in repr(model).splitlines()[1]


# --- cnn -------------------------------------------------------------------------------------------------------


def test_thirty_sampled_cnns_build_and_run():
    configs = sample_configs("cnn", 30, seed=1)
    used_ops = {op for c in configs for cell in (c.normal, c.reduce) for op, _ in cell.edges}
    assert used_ops == set(CELL_OPS.names())
    assert {c.use_batchnorm for c in configs} == {True, False}
    assert {c.merge for c in configs} == {"concat", "sum"}
    assert all(4 <= c.num_cells <= 12 and 16 <= c.init_channels <= 64 for c in configs)
    assert all(1 <= cell.num_nodes <= 4 for c in configs for cell in (c.normal, c.reduce))
    x = torch.randn(2, 3, 32, 32)
    for config in configs:
        model = FAMILIES.get("cnn").build(config).eval()
        with torch.no_grad():
            output = model(x)
        assert output.shape == (2, 10) and torch.isfinite(output).all(), config


def test_cnn_without_batchnorm_has_none_and_conv_biases():
    model = FAMILIES.get("cnn").build(CNNConfig(use_batchnorm=False, num_cells=3))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups == 1)


def test_cnn_ops_are_relu_conv_bn():
    op = CELL_OPS.get("conv_3x3")(8, 1, True)
    assert [type(m) for m in op] == [nn.ReLU, nn.Conv2d, nn.BatchNorm2d]
    assert [type(m) for m in CELL_OPS.get("conv_3x3")(8, 1, False)] == [nn.ReLU, nn.Conv2d]


@pytest.mark.parametrize("name", CELL_OPS.names())
@pytest.mark.parametrize("stride", [1, 2])
def test_cell_op_keeps_channels_and_halves_odd_sizes(name, stride):
    op = CELL_OPS.get(name)(6, stride, True)
    output = op(torch.randn(2, 6, 7, 7))
    assert output.shape == ((2, 6, 4, 4) if stride == 2 else (2, 6, 7, 7))


@pytest.mark.parametrize(("merge", "channels"), [("concat", 4 * 4 * 8), ("sum", 4 * 8)])
def test_cnn_merge_sets_classifier_width(merge, channels):
    model = FAMILIES.get("cnn").build(CNNConfig(num_cells=3, init_channels=8, merge=merge))
    assert model.classifier.in_features == channels  # two reductions double 8 twice; DARTS concatenates 4 nodes


def test_cnn_imagenet_stem_and_odd_image_size_run():
    config = CNNConfig(num_cells=3, init_channels=8, stem="imagenet", image_size=72)
    model = FAMILIES.get("cnn").build(config)
    assert model(*model.example_inputs(2)).shape == (2, 10)
    model = FAMILIES.get("cnn").build(CNNConfig(num_cells=3, init_channels=8, image_size=33))
    assert model(*model.example_inputs(2)).shape == (2, 10)


def test_cnn_reduction_cells_default_to_thirds():
    assert CNNConfig(num_cells=8).reduction_indices == (2, 5)
    assert CNNConfig(num_cells=8, reduction_cells=(6, 1)).reduction_indices == (1, 6)


# --- resnet ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "num_params"),
    [("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032), ("resnet18-cifar", 11_173_962)],
)
def test_resnet_presets_match_torchvision_sizes(preset, num_params):
    with torch.device("meta"):
        model = lookup_config(preset)[0].build(lookup_config(preset)[1])
    assert _num_params(model) == num_params


def test_resnet_keys_follow_torchvision():
    with torch.device("meta"):
        keys = set(FAMILIES.get("resnet").build(lookup_config("resnet50")[1]).state_dict())
    expected = {
        "conv1.weight", "bn1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer1.0.conv3.weight",
        "layer1.0.downsample.0.weight", "layer1.0.downsample.1.weight", "layer4.2.bn3.bias", "fc.weight", "fc.bias",
    }  # fmt: skip
    assert expected <= keys


def test_resnet_cifar_stem_keeps_resolution_and_has_no_pool():
    model = FAMILIES.get("resnet").build(ResNetConfig(layers=(1, 1), base_width=8, stem="cifar", image_size=32))
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)


def test_resnet_init_is_kaiming_fan_out():
    model = FAMILIES.get("resnet").build(ResNetConfig(layers=(1, 1), base_width=64))
    weight = model.layer1[0].conv1.weight  # fan_out = 64 * 3 * 3
    assert weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.1)


def test_resnet_sampler_ranges():
    for seed in range(50):
        config = FAMILIES.get("resnet").sample(torch.Generator().manual_seed(seed))
        assert len(config.layers) in (3, 4) and all(1 <= n <= 4 for n in config.layers)
        assert 16 <= config.base_width <= 64 and config.stem == "cifar"
        assert (config.num_classes, config.image_size) == (10, 32)


# --- vit -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "num_params"), [("vit-tiny/16", 5_717_416), ("vit-s/16", 22_050_664), ("vit-b/16", 86_567_656)]
)
def test_vit_presets_match_timm_sizes(preset, num_params):
    family, config = lookup_config(preset)
    with torch.device("meta"):
        assert _num_params(family.build(config)) == num_params


def test_vit_keys_follow_timm():
    with torch.device("meta"):
        keys = set(FAMILIES.get("vit").build(lookup_config("vit-tiny/4")[1]).state_dict())
    expected = {
        "patch_embed.proj.weight", "cls_token", "pos_embed", "blocks.0.norm1.weight", "blocks.0.attn.qkv.weight",
        "blocks.0.attn.qkv.bias", "blocks.0.attn.proj.weight", "blocks.0.norm2.bias", "blocks.0.mlp.fc1.weight",
        "blocks.11.mlp.fc2.bias", "norm.weight", "head.weight", "head.bias",
    }  # fmt: skip
    assert expected <= keys


def test_vit_without_class_token_pools_tokens():
    config = ViTConfig(image_size=16, patch_size=4, depth=1, embed_dim=12, num_heads=3, use_class_token=False)
    model = FAMILIES.get("vit").build(config)
    assert model.cls_token is None and model.pos_embed.shape == (1, 16, 12)
    assert model(*model.example_inputs(2)).shape == (2, 1000)


def test_vit_init_is_truncated_normal():
    model = FAMILIES.get("vit").build(ViTConfig(image_size=32, patch_size=4, depth=1, embed_dim=192, num_heads=3))
    assert model.blocks[0].mlp.fc1.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.pos_embed.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.count_nonzero(model.blocks[0].attn.qkv.bias) == 0


def test_vit_sampler_follows_vits_1k():
    for seed in range(100):
        config = FAMILIES.get("vit").sample(torch.Generator().manual_seed(seed))
        assert 3 <= config.depth <= 9 and 128 <= config.embed_dim <= 512 and 3 <= config.num_heads <= 12
        assert config.embed_dim % config.num_heads == 0 and config.patch_size in (2, 4)
        assert (config.image_size, config.num_classes) == (32, 10)
        assert config.embed_dim <= (256 if config.depth > 5 else 512)


def test_tiny_vit_sampler_reaches_the_widths_users_write():
    """The `tiny` ViTs a digits GHN trains on span 16-128 wide (2-4 heads of 8-32), the widths of the small ViTs
    users write (the outside set's are 64 wide), every width drawn."""
    sample = FAMILIES.get("vit").variants["tiny"]
    generator = torch.Generator().manual_seed(0)
    configs = [sample(generator) for _ in range(300)]
    widths = {c.embed_dim for c in configs}
    assert min(widths) == 16 and max(widths) == 128 and {64, 96} <= widths
    for config in configs:
        assert 2 <= config.num_heads <= 4 and config.embed_dim // config.num_heads in (8, 12, 16, 24, 32)
        assert 2 <= config.depth <= 4 and config.patch_size in (2, 4)


# --- gpt2 ------------------------------------------------------------------------------------------------------

SMALL_GPT2 = GPT2Config(vocab_size=300, n_positions=32, n_embd=48, n_layer=3, n_head=4)


def test_gpt2_sizes_and_tied_head():
    family, config = lookup_config("gpt2")
    with torch.device("meta"):
        model = family.build(config)
    assert _num_params(model) == 124_439_808
    assert model.lm_head.weight is model.transformer.wte.weight


def test_gpt2_xl_builds_on_meta_quickly():
    import time

    family, config = lookup_config("gpt2-xl")
    start = time.perf_counter()
    with torch.device("meta"):
        model = family.build(config)
    assert time.perf_counter() - start < 1.0
    assert _num_params(model) == 1_557_611_200


def test_gpt2_conv1d_weight_is_in_by_out():
    model = FAMILIES.get("gpt2").build(SMALL_GPT2)
    assert model.transformer.h[0].attn.c_attn.weight.shape == (48, 144)
    assert model.transformer.h[0].mlp.c_proj.weight.shape == (192, 48)


def test_gpt2_init_scales_residual_projections():
    model = FAMILIES.get("gpt2").build(dataclasses.replace(SMALL_GPT2, n_embd=256, n_head=4, n_layer=2))
    block = model.transformer.h[0]
    assert block.mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert block.mlp.c_proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(4), rel=0.05)
    assert block.attn.c_proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(4), rel=0.05)


def test_gpt2_example_inputs_are_short_token_ids():
    model = FAMILIES.get("gpt2").build(dataclasses.replace(SMALL_GPT2, n_positions=8))
    (tokens,) = model.example_inputs(3)
    assert tokens.dtype == torch.long and tokens.shape == (3, 8) and int(tokens.max()) < 300
    assert FAMILIES.get("gpt2").build(SMALL_GPT2).example_inputs()[0].shape == (1, 16)


def test_gpt2_rejects_inputs_longer_than_context():
    model = FAMILIES.get("gpt2").build(SMALL_GPT2)
    with pytest.raises(ShapeError, match="Got 33 tokens but the context holds 32"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_gpt2_sampler_follows_gpts_1k_and_takes_overrides():
    for seed in range(100):
        config = FAMILIES.get("gpt2").sample(torch.Generator().manual_seed(seed))
        assert 3 <= config.n_layer <= 9 and 72 <= config.n_embd <= 256 and config.n_embd % config.n_head == 0
        assert (config.vocab_size, config.n_positions) == (256, 128)
    assert dataclasses.replace(config, vocab_size=50257).vocab_size == 50257


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_gpt2_state_dict_loads_into_hf_with_equal_logits(attn_implementation):
    transformers = pytest.importorskip("transformers")
    model = FAMILIES.get("gpt2").build(SMALL_GPT2).eval()
    hf_config = transformers.GPT2Config(
        vocab_size=300, n_positions=32, n_embd=48, n_layer=3, n_head=4, bos_token_id=0, eos_token_id=0,
        attn_implementation=attn_implementation,
    )  # fmt: skip
    hf_model = transformers.GPT2LMHeadModel(hf_config).eval()
    # strict=True: HF GPT-2 has no buffers in its state dict, so the key sets must be identical.
    hf_model.load_state_dict(model.state_dict(), strict=True)
    assert set(hf_model.state_dict()) == set(model.state_dict())
    (tokens,) = model.example_inputs(batch_size=3)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), hf_model(input_ids=tokens).logits)


# --- llama -----------------------------------------------------------------------------------------------------

SMALL_LLAMA = LlamaConfig(
    vocab_size=300, n_positions=32, hidden_size=48, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
    num_key_value_heads=2,
)  # fmt: skip


@pytest.mark.parametrize(
    ("preset", "num_params"), [("tinyllama-1.1b", 1_100_048_384), ("smollm-135m", 134_515_008), ("llama2-7b", 6_738_415_616)]
)
def test_llama_presets_match_hf_sizes(preset, num_params):
    family, config = lookup_config(preset)
    with torch.device("meta"):
        model = family.build(config)
    assert _num_params(model) == num_params
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == config.tie_word_embeddings


def test_llama_init_is_normal_with_unit_norms():
    model = FAMILIES.get("llama").build(dataclasses.replace(SMALL_LLAMA, hidden_size=256, intermediate_size=512))
    block = model.model.layers[0]
    for weight in (block.self_attn.q_proj.weight, block.mlp.down_proj.weight, model.model.embed_tokens.weight):
        assert weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.equal(block.input_layernorm.weight, torch.ones(256))
    assert all(not name.endswith("bias") for name, _ in model.named_parameters())


def test_llama_rejects_inputs_longer_than_context():
    model = FAMILIES.get("llama").build(SMALL_LLAMA)
    with pytest.raises(ShapeError, match="Got 33 tokens but the context holds 32"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_tiny_llama_sampler_varies_heads_mlp_and_tying():
    configs = [FAMILIES.get("llama").sampler("tiny")(torch.Generator().manual_seed(seed)) for seed in range(200)]
    for config in configs:
        assert 2 <= config.num_hidden_layers <= 6 and 2 <= config.num_attention_heads <= 4
        assert config.head_dim in (8, 16, 24, 32) and config.intermediate_size % 8 == 0
        assert 2 * config.hidden_size <= config.intermediate_size <= 4 * config.hidden_size
    assert len({c.num_attention_heads // c.num_key_value_heads for c in configs}) >= 3  # MHA, GQA and MQA
    assert 0.1 < sum(c.tie_word_embeddings for c in configs) / len(configs) < 0.4


def test_lms_tiny_space_draws_both_text_families():
    from ghn.zoo.space import ArchitectureSampler

    configs = ArchitectureSampler("lms-tiny", seed=0, task_values={"vocab_size": 256, "n_positions": 64}).distinct(20)
    assert {type(c).__name__ for c in configs} == {"GPT2Config", "LlamaConfig"}
    assert all(c.n_positions == 64 for c in configs)


@pytest.mark.parametrize("tied", [False, True])
def test_llama_state_dict_loads_into_hf_with_equal_logits(tied):
    transformers = pytest.importorskip("transformers")
    config = dataclasses.replace(SMALL_LLAMA, tie_word_embeddings=tied)
    model = FAMILIES.get("llama").build(config).eval()
    hf_config = transformers.LlamaConfig(
        vocab_size=300, max_position_embeddings=32, hidden_size=48, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied,
    )  # fmt: skip
    hf_model = transformers.LlamaForCausalLM(hf_config).eval()
    hf_model.load_state_dict(model.state_dict(), strict=True)  # the rotary frequencies are not in either state dict
    assert set(hf_model.state_dict()) == set(model.state_dict())
    tokens = torch.randint(0, 300, (3, 32))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), hf_model(input_ids=tokens).logits)


# --- plain-lm --------------------------------------------------------------------------------------------------

SMALL_PLAIN_LM = PlainLMConfig(vocab_size=300, n_positions=32, width=48, depth=2, num_heads=4)


def test_plain_lm_default_is_nn_transformer_encoder_at_pytorch_init():
    family, config = lookup_config("plain-lm")
    with torch.device("meta"):
        model = family.build(config)
    layer = model.encoder.layers[0]
    assert isinstance(layer, nn.TransformerEncoderLayer) and len(model.encoder.layers) == 6
    assert (layer.linear1.out_features, layer.self_attn.num_heads, layer.norm_first) == (2048, 8, False)
    assert isinstance(model.norm, nn.Identity)  # post-norm layers end normalized
    model = family.build(dataclasses.replace(SMALL_PLAIN_LM, width=256, num_heads=4))
    assert model.embed.weight.std().item() == pytest.approx(1.0, rel=0.05)  # nn.Embedding's normal(0, 1)
    bound = 1 / math.sqrt(256)  # nn.Linear's kaiming_uniform(a=sqrt 5): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert model.encoder.layers[0].linear1.weight.abs().max().item() <= bound


def test_plain_lm_is_causal():
    model = FAMILIES.get("plain-lm").build(dataclasses.replace(SMALL_PLAIN_LM, norm_first=True)).eval()
    tokens = torch.randint(0, 300, (1, 12))
    changed = tokens.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % 300
    with torch.no_grad():
        torch.testing.assert_close(model(tokens)[:, :8], model(changed)[:, :8])
    with pytest.raises(ShapeError, match="Got 33 tokens but the context holds 32"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_plain_lm_tied_head_reads_the_embedding_without_bias():
    model = FAMILIES.get("plain-lm").build(dataclasses.replace(SMALL_PLAIN_LM, tie_head=True))
    assert model.head.weight is model.embed.weight and model.head.bias is None


def test_tiny_plain_lm_sampler_varies_the_user_choices():
    configs = [FAMILIES.get("plain-lm").sampler("tiny")(torch.Generator().manual_seed(seed)) for seed in range(100)]
    assert all(1 <= c.depth <= 4 and 2 <= c.num_heads <= 4 and c.width // c.num_heads in (8, 16, 24, 32) for c in configs)
    for name in ("norm_first", "tie_head", "head_bias", "activation", "mlp_ratio"):
        assert len({getattr(c, name) for c in configs}) == 2, name
    assert not any(c.tie_head and c.head_bias for c in configs)


def test_lms_plain_tiny_space_draws_all_three_text_families():
    from ghn.zoo.space import ArchitectureSampler

    sampler = ArchitectureSampler("lms-plain-tiny", seed=0, task_values={"vocab_size": 256, "n_positions": 64})
    assert {type(c).__name__ for c in sampler.distinct(30)} == {"GPT2Config", "LlamaConfig", "PlainLMConfig"}
