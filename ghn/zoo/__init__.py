"""Model families in plain PyTorch (cell CNNs, ResNets, ViTs, GPT-2, Llama, plain classifiers and LMs), their
samplers, presets and `create`.

Everything builds on the `meta` device and without torchvision or timm; `transformers` is needed only for 'hf:'.
"""

# Each family module registers itself in FAMILIES on import.
from ghn.zoo import cnn, gpt2, llama, plain, plain_lm, resnet, vit  # noqa: F401
from ghn.zoo.cnn import CellConfig, CellNetwork, CNNConfig
from ghn.zoo.create import SOURCES, create, names
from ghn.zoo.family import (
    FAMILIES,
    FamilySpec,
    config_hash,
    family_of,
    lookup_config,
    preset_names,
    replace_config,
    sample_configs,
)
from ghn.zoo.gpt2 import GPT2, Conv1D, GPT2Config
from ghn.zoo.hf import HF_PRESETS, HFPresetSpec
from ghn.zoo.hf_formats import HF_EQUIVALENTS, HFEquivalentSpec
from ghn.zoo.llama import Llama, LlamaConfig
from ghn.zoo.plain_lm import PlainLM, PlainLMConfig
from ghn.zoo.resnet import ResNet, ResNetConfig
from ghn.zoo.vit import VisionTransformer, ViTConfig

__all__ = [
    "FAMILIES",
    "FamilySpec",
    "HF_EQUIVALENTS",
    "HF_PRESETS",
    "HFEquivalentSpec",
    "HFPresetSpec",
    "SOURCES",
    "config_hash",
    "create",
    "family_of",
    "lookup_config",
    "names",
    "preset_names",
    "replace_config",
    "sample_configs",
    "CellConfig",
    "CellNetwork",
    "CNNConfig",
    "ResNet",
    "ResNetConfig",
    "VisionTransformer",
    "ViTConfig",
    "GPT2",
    "GPT2Config",
    "Conv1D",
    "Llama",
    "LlamaConfig",
    "PlainLM",
    "PlainLMConfig",
]
