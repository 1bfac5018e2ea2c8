"""GHN configs and presets: validation, JSON round trips, sizes against the LoGAH paper, and reprs."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from ghn.errors import ConfigError, UnknownNameError
from ghn.nn import GHN, GHN_PRESETS, BlockDecoder, DecoderConfig, EncoderConfig, GHNConfig, LowRankDecoder

# Parameter counts reported in the LoGAH paper (Zhou et al., 2024, Table 1); our presets must be no larger.
LOGAH_PAPER_SIZES = {
    "logah-tiny": 2_500_000,
    "logah-small": 21_400_000,
    "logah-base": 78_200_000,
    "logah-large": 289_400_000,
}


def test_presets_exist() -> None:
    assert set(LOGAH_PAPER_SIZES) | {"ghn3-tiny"} <= set(GHN_PRESETS.names())
    for name in GHN_PRESETS.names():
        assert isinstance(GHN_PRESETS.get(name), GHNConfig)


def test_logah_tiny_matches_the_paper() -> None:
    config = GHN_PRESETS.get("logah-tiny")
    assert (config.encoder.hidden_dim, config.decoder.rank, config.encoder.num_layers) == (64, 32, 3)
    assert config.decoder.kind == "low_rank"
    assert GHN_PRESETS.get("ghn3-tiny").decoder.kind == "block"


def test_unknown_preset_suggests_close_names() -> None:
    with pytest.raises(UnknownNameError, match="logah-tiny"):
        GHN.from_preset("logah-tiyn")


def test_from_preset_applies_overrides() -> None:
    with torch.device("meta"):
        ghn = GHN.from_preset("logah-tiny", normalize=False, num_op_embeddings=64)
        assert GHN.from_preset("logah-tiny").config is GHN_PRESETS.get("logah-tiny")
        nested = GHN.from_preset("logah-tiny", encoder={"hidden_dim": 32, "num_heads": 4})
        replaced = GHN.from_preset("logah-tiny", decoder=DecoderConfig(rank=8))
    assert ghn.config.normalize is False
    assert ghn.embed.op.num_embeddings == 64
    assert ghn.config.encoder == GHN_PRESETS.get("logah-tiny").encoder
    assert nested.config.encoder == EncoderConfig(hidden_dim=32, num_heads=4)  # the other encoder fields: defaults
    assert replaced.config.decoder.rank == 8 and replaced.config.encoder == ghn.config.encoder


def test_unknown_preset_override_is_a_config_error() -> None:
    """Regression: an unknown override escaped as dataclasses' TypeError, with no suggestion."""
    with pytest.raises(ConfigError, match=r"'hidden_dim'.*Valid fields: centered_units, decoder, encoder"):
        GHN.from_preset("logah-tiny", hidden_dim=32)
    with pytest.raises(ConfigError, match=r"'normalise' \(did you mean 'normalize'\?\)"):
        GHN.from_preset("logah-tiny", normalise=False)


@pytest.mark.parametrize("name", sorted(GHN_PRESETS.names()))
def test_preset_json_round_trip(name: str) -> None:
    config = GHN_PRESETS.get(name)
    text = json.dumps(config.to_dict())
    assert GHNConfig.from_dict(json.loads(text)) == config


def test_custom_config_json_round_trip() -> None:
    config = GHNConfig(
        encoder=EncoderConfig(hidden_dim=24, num_layers=2, num_heads=3, mlp_ratio=1.5, dropout=0.1),
        decoder=DecoderConfig(kind="block", rank=5, num_index_features=16, block_channels=8, block_kernel=5),
        normalize=False,
        num_op_embeddings=100,
    )
    data = json.loads(json.dumps(config.to_dict()))
    assert data["encoder"]["hidden_dim"] == 24 and data["decoder"]["kind"] == "block"
    assert GHNConfig.from_dict(data) == config


def test_partial_dict_keeps_defaults() -> None:
    config = GHNConfig.from_dict({"encoder": {"hidden_dim": 16, "num_heads": 4}})
    assert config.encoder.hidden_dim == 16 and config.encoder.num_layers == EncoderConfig().num_layers
    assert config.decoder == DecoderConfig()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"normalise": True}, r"'normalise' \(did you mean 'normalize'\?\)"),
        ({"encoder": {"hidden_dm": 8}}, r"'hidden_dm' \(did you mean 'hidden_dim'\?\).*'EncoderConfig'"),
        ({"decoder": {"rnak": 4}}, r"'rnak' \(did you mean 'rank'\?\)"),
    ],
)
def test_unknown_key_is_an_error_with_a_suggestion(data: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        GHNConfig.from_dict(data)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: EncoderConfig(hidden_dim=0), r"EncoderConfig.hidden_dim must be a positive integer, got 0"),
        (lambda: EncoderConfig(hidden_dim=-8), r"EncoderConfig.hidden_dim must be a positive integer, got -8"),
        (lambda: EncoderConfig(hidden_dim=8.0), r"EncoderConfig.hidden_dim must be a positive integer, got 8.0"),
        (lambda: EncoderConfig(hidden_dim=True, num_heads=1), r"hidden_dim must be a positive integer, got True"),
        (lambda: EncoderConfig(num_layers=0), r"EncoderConfig.num_layers"),
        (lambda: EncoderConfig(hidden_dim=64, num_heads=6), r"hidden_dim \(64\) must be divisible by num_heads \(6\)"),
        (lambda: EncoderConfig(max_distance=0), r"EncoderConfig.max_distance"),
        (lambda: EncoderConfig(max_degree=-1), r"EncoderConfig.max_degree"),
        (lambda: EncoderConfig(dropout=1.0), r"EncoderConfig.dropout must be in \[0, 1\), got 1.0"),
        (lambda: EncoderConfig(dropout=-0.1), r"EncoderConfig.dropout"),
        (lambda: EncoderConfig(mlp_ratio=0.0), r"EncoderConfig.mlp_ratio must be a positive number, got 0.0"),
        (lambda: EncoderConfig(mlp_ratio=-2.0), r"EncoderConfig.mlp_ratio must be a positive number, got -2.0"),
        (lambda: DecoderConfig(kind="mlp"), r"DecoderConfig.kind must be 'low_rank' or 'block', got 'mlp'"),
        (lambda: DecoderConfig(rank=0), r"DecoderConfig.rank must be a positive integer, got 0"),
        (lambda: DecoderConfig(block_channels=0), r"DecoderConfig.block_channels"),
        (lambda: DecoderConfig(block_kernel=-3), r"DecoderConfig.block_kernel"),
        (lambda: DecoderConfig(num_index_features=12), r"num_index_features must be a multiple of 8, got 12"),
        (lambda: DecoderConfig(num_index_features=4), r"num_index_features must be a multiple of 8, got 4"),
        (lambda: GHNConfig(num_op_embeddings=0), r"GHNConfig.num_op_embeddings"),
    ],
)
def test_invalid_values_raise_config_error(make, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make()


def test_invalid_value_in_a_dict_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="num_heads"):
        GHNConfig.from_dict({"encoder": {"hidden_dim": 10, "num_heads": 4}})


def test_mlp_ratio_below_zero_is_a_config_error_not_a_torch_error() -> None:
    """Regression: a negative mlp_ratio used to surface as torch's 'negative dimension' RuntimeError."""
    with pytest.raises(ConfigError):
        GHN(GHNConfig(encoder=EncoderConfig(mlp_ratio=-1.0)))


def test_configs_are_frozen() -> None:
    config = GHNConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.normalize = False  # type: ignore[misc]
    assert dataclasses.replace(config, normalize=False).normalize is False


@pytest.mark.parametrize(("name", "paper_size"), sorted(LOGAH_PAPER_SIZES.items()))
def test_logah_preset_is_no_larger_than_the_paper(name: str, paper_size: int) -> None:
    with torch.device("meta"):  # sizes only: no memory, no init cost
        ghn = GHN.from_preset(name)
    assert all(p.is_meta for p in ghn.parameters())
    assert 0 < ghn.num_parameters() <= paper_size


def test_preset_sizes_grow_with_the_preset() -> None:
    with torch.device("meta"):
        sizes = [GHN.from_preset(name).num_parameters() for name in LOGAH_PAPER_SIZES]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)


def test_ghn_repr_shows_defining_numbers() -> None:
    with torch.device("meta"):
        ghn = GHN.from_preset("logah-small")
    assert ghn.extra_repr() == "hidden_dim=128, num_layers=5, num_heads=16, decoder='low_rank', rank=90"
    text = repr(ghn)
    assert text.startswith("GHN(\n  hidden_dim=128, num_layers=5, num_heads=16, decoder='low_rank', rank=90\n")
    assert "LowRankDecoder(\n    rank=90, index_dim=90\n" in text


def test_decoder_reprs_show_defining_numbers() -> None:
    low_rank = LowRankDecoder(16, DecoderConfig(rank=12, num_index_features=32))
    assert repr(low_rank).startswith("LowRankDecoder(\n  rank=12, index_dim=32\n")
    block = BlockDecoder(16, DecoderConfig(kind="block", block_channels=8, block_kernel=5))
    assert repr(block).startswith("BlockDecoder(\n  block=(8, 8, 5, 5)\n")
