"""The graph hypernetwork: configs, encoder, decoders, role normalization and the on-disk format."""

from ghn.nn.checkpoint import save_ghn
from ghn.nn.config import GHN_PRESETS, DecoderConfig, EncoderConfig, GHNConfig
from ghn.nn.decoder import DECODERS, BlockDecoder, LowRank, LowRankDecoder
from ghn.nn.encoder import GraphormerEncoder
from ghn.nn.ghn import GHN, load_ghn
from ghn.nn.normalize import normalize_params, param_scales, reference_std

__all__ = [
    "DECODERS",
    "GHN",
    "GHN_PRESETS",
    "BlockDecoder",
    "DecoderConfig",
    "EncoderConfig",
    "GHNConfig",
    "GraphormerEncoder",
    "LowRank",
    "LowRankDecoder",
    "load_ghn",
    "normalize_params",
    "param_scales",
    "reference_std",
    "save_ghn",
]
