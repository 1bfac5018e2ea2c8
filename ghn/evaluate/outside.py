"""The outside evaluation set: small networks written the way users write them, not with `ghn.zoo`, so a GHN is
scored on code it never trained on (plain MLPs, LeNet-style CNNs, BatchNorm, GroupNorm and depthwise nets, a
hand-written ViT, language models on `nn.TransformerEncoder` and `nn.LSTM`, and Hugging Face ViT, GPT-2 and Llama).

Every entry builds for a task's shapes (`task_values`: image channels, size and classes; text vocabulary and
context), with each module's own default init. `OUTSIDE.names()` lists them; `ghn eval --archs outside` runs all
of one task kind, `outside:<name>` one of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ghn.registry import Registry

__all__ = ["OUTSIDE", "OutsideModel", "outside_names"]


@dataclass(frozen=True)
class OutsideModel:
    """One network of the outside set: its task kind ('image' or 'text') and a factory from the task's values."""

    name: str
    kind: str
    build: Callable[[Mapping[str, Any]], nn.Module]
    summary: str
    needs: str | None = None  # an optional package the factory imports


OUTSIDE = Registry[OutsideModel]("outside model")


def outside_names(kind: str) -> list[str]:
    """Names of the outside networks for task kind `kind` ('image' or 'text')."""
    return [name for name in OUTSIDE.names() if OUTSIDE.get(name).kind == kind]


# -- image classifiers --------------------------------------------------------------------------------------------
class MLP(nn.Module):
    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class LeNet(nn.Module):
    def __init__(self, in_channels: int, image_size: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 16, 3, padding=1)
        side = image_size // 4
        self.fc1 = nn.Linear(16 * side * side, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


class ConvBN(nn.Module):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        layers, width = [], in_channels
        for out in (32, 64, 64):
            layers += [nn.Conv2d(width, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            width = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean((2, 3)))


class ResBlockGN(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, width), nn.Conv2d(width, width, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(8, width), nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class ResNetGN(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.blocks = nn.Sequential(ResBlockGN(width), ResBlockGN(width))
        self.norm = nn.GroupNorm(8, width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.silu(self.norm(self.blocks(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class SeparableNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU6())
        blocks = []
        for cin, cout, stride in ((32, 64, 1), (64, 64, 2), (64, 128, 1)):
            blocks += [
                nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(),
                nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6(),
            ]  # fmt: skip
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(self, in_channels: int, image_size: int, num_classes: int, dim: int = 64, depth: int = 3) -> None:
        super().__init__()
        patch = 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, (image_size // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(ViTBlock(dim, 4) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


def _hf_vit(values: Mapping[str, Any]) -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=values["image_size"], patch_size=2, num_channels=values["in_channels"], hidden_size=64,
        num_hidden_layers=3, num_attention_heads=4, intermediate_size=128, num_labels=values["num_classes"],
    )  # fmt: skip
    return ViTForImageClassification(config)


# -- language models ----------------------------------------------------------------------------------------------
class EncoderLM(nn.Module):
    """A causal LM on `nn.TransformerEncoder`, as a PyTorch tutorial writes it."""

    def __init__(self, vocab_size: int, context: int, dim: int = 96, depth: int = 3, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Embedding(context, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)

    def forward(self, idx: Tensor) -> Tensor:
        T = idx.shape[1]
        x = self.embed(idx) + self.pos(torch.arange(T, device=idx.device))
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=idx.device)
        return self.head(self.norm(self.encoder(x, mask=mask, is_causal=True)))


class LSTMLM(nn.Module):
    """The LSTM language model of PyTorch's word_language_model example (its uniform(-0.1, 0.1) embedding and
    decoder init), batch first."""

    def __init__(self, vocab_size: int, dim: int = 96, depth: int = 2) -> None:
        super().__init__()
        self.encoder = nn.Embedding(vocab_size, dim)
        self.rnn = nn.LSTM(dim, dim, depth, batch_first=True)
        self.decoder = nn.Linear(dim, vocab_size)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, idx: Tensor) -> Tensor:
        hidden, _ = self.rnn(self.encoder(idx))
        return self.decoder(hidden)


def _hf_gpt2(values: Mapping[str, Any]) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=values["vocab_size"], n_positions=values["n_positions"], n_embd=96, n_layer=3, n_head=4,
                        bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config)


def _hf_llama(values: Mapping[str, Any]) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=values["vocab_size"], max_position_embeddings=values["n_positions"], hidden_size=96,
        intermediate_size=256, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def _image(fn: Callable[[int, int, int], nn.Module]) -> Callable[[Mapping[str, Any]], nn.Module]:
    return lambda v: fn(v["in_channels"], v["image_size"], v["num_classes"])


_ENTRIES = [
    OutsideModel("mlp", "image", _image(lambda c, s, k: MLP(c * s * s, k)), "MLP 128-64, ReLU"),
    OutsideModel("lenet", "image", _image(LeNet), "LeNet: conv-pool-conv-pool-fc-fc, ReLU"),
    OutsideModel("conv-bn", "image", _image(lambda c, s, k: ConvBN(c, k)), "3 conv + BatchNorm, global pool"),
    OutsideModel("resnet-gn", "image", _image(lambda c, s, k: ResNetGN(c, k)), "residual net, GroupNorm, SiLU"),
    OutsideModel("separable", "image", _image(lambda c, s, k: SeparableNet(c, k)), "depthwise-separable, ReLU6"),
    OutsideModel("vit", "image", _image(TinyViT), "hand-written ViT, 3 blocks, width 64, patch 2"),
    OutsideModel("hf-vit", "image", _hf_vit, "transformers ViTForImageClassification, 3 layers", "transformers"),
    OutsideModel("encoder-lm", "text", lambda v: EncoderLM(v["vocab_size"], v["n_positions"]),
                 "causal LM on nn.TransformerEncoder, 3 layers, width 96"),
    OutsideModel("lstm-lm", "text", lambda v: LSTMLM(v["vocab_size"]), "LSTM LM (PyTorch example), 2 layers, width 96"),
    OutsideModel("hf-gpt2", "text", _hf_gpt2, "transformers GPT2LMHeadModel, 3 layers, width 96", "transformers"),
    OutsideModel("hf-llama", "text", _hf_llama, "transformers LlamaForCausalLM, 3 layers, width 96, GQA", "transformers"),
]  # fmt: skip
for _entry in _ENTRIES:
    OUTSIDE.register(_entry.name, _entry)
