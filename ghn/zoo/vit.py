"""Vision Transformers (pre-LN, class token, learned position embedding) with timm's parameter names.

Paper: "An Image is Worth 16x16 Words", https://arxiv.org/abs/2010.11929; the sampled space is LoGAH's ViTs-1K,
https://arxiv.org/abs/2405.16287. Shape letters: B batch, N tokens, D width, h heads, K classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ghn._checks import check_bool, check_float, check_int, fail
from ghn.zoo import _random
from ghn.zoo.family import FAMILIES, FamilySpec, random_images

__all__ = ["ViTConfig", "VisionTransformer", "build_vit", "sample_vit_config"]


@dataclass(frozen=True, kw_only=True)
class ViTConfig:
    """Architecture of a Vision Transformer; the default is ViT-B/16 for 224px ImageNet."""

    image_size: int = 224
    """Height and width of the input images; a multiple of `patch_size`."""
    patch_size: int = 16
    """Side of the square patches that become tokens."""
    in_channels: int = 3
    """Channels of the input images."""
    num_classes: int = 1000
    """Outputs of the classifier `head`."""
    depth: int = 12
    """Number of transformer blocks."""
    embed_dim: int = 768
    """Token width D; a multiple of `num_heads`."""
    num_heads: int = 12
    """Attention heads per block."""
    mlp_ratio: float = 4.0
    """Hidden width of each MLP as a multiple of `embed_dim`."""
    qkv_bias: bool = True
    """Whether the query/key/value projection has a bias."""
    use_class_token: bool = True
    """Classify from a learned class token; otherwise from the mean of the patch tokens."""
    layer_norm_eps: float = 1e-6
    """Epsilon of every LayerNorm."""

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "in_channels", "num_classes", "depth", "embed_dim", "num_heads"):
            check_int(self, name)
        if self.image_size % self.patch_size:
            fail(self, "image_size", f"a multiple of patch_size={self.patch_size}")
        if self.embed_dim % self.num_heads:
            fail(self, "embed_dim", f"a multiple of num_heads={self.num_heads}")
        check_float(self, "mlp_ratio", low=0.0, is_low_open=True)
        check_bool(self, "qkv_bias")
        check_bool(self, "use_class_token")
        check_float(self, "layer_norm_eps", low=0.0, is_low_open=True)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        """Patches plus the class token, if any."""
        return self.num_patches + int(self.use_class_token)

    @property
    def mlp_width(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens with one strided convolution.

    Shapes:
        input: (B, C, H, W); output: (B, N, D) with N = (H / patch_size) * (W / patch_size)
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(config.in_channels, config.embed_dim, config.patch_size, stride=config.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, D, H/p, W/p) -> (B, N, D)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection, computed by `scaled_dot_product_attention`.

    Shapes:
        input: (B, N, D); output: (B, N, D)
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(config.embed_dim, 3 * config.embed_dim, bias=config.qkv_bias)
        self.proj = nn.Linear(config.embed_dim, config.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, h, N, D/h)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, D/h)
        return self.proj(x.transpose(1, 2).reshape(B, N, D))


class Mlp(nn.Module):
    """Linear, GELU, linear.

    Shapes:
        input: (B, N, D); output: (B, N, D)
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.embed_dim, config.mlp_width)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(config.mlp_width, config.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)).

    Shapes:
        input: (B, N, D); output: (B, N, D)
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.attn = Attention(config)
        self.norm2 = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.mlp = Mlp(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """A ViT image classifier with timm's module names (`patch_embed.proj`, `blocks.0.attn.qkv`, `head`).

    Shapes:
        input: (B, in_channels, image_size, image_size) images; output: (B, K) logits
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        self.num_classes = config.num_classes
        self.patch_embed = PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.embed_dim)) if config.use_class_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_tokens, config.embed_dim))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.head = nn.Linear(config.embed_dim, config.num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """timm's init: truncated normal (std 0.02) for linear weights, position embedding and class token."""
        if self.head.weight.is_meta:
            return  # meta tensors hold no values; skipping keeps meta builds instant
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def reference_init(self) -> dict[str, tuple[float, float]]:
        """(mean, std) `reset_parameters` gives each tensor it sets, also on meta (ghn.graph.init_stats reads it)."""
        stats = {"pos_embed": (0.0, 0.02)} | ({"cls_token": (0.0, 0.02)} if self.cls_token is not None else {})
        for path, module in self.named_modules():
            prefix = f"{path}." if path else ""
            if isinstance(module, nn.Linear):
                stats[prefix + "weight"] = (0.0, 0.02)
                if module.bias is not None:
                    stats[prefix + "bias"] = (0.0, 0.0)
        return stats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, N_patches, D)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, N, D)
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        x = x[:, 0] if self.cls_token is not None else x.mean(dim=1)  # (B, D)
        return self.head(x)  # (B, K)

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        """Random images (batch_size, in_channels, image_size, image_size) on the device of the parameters."""
        return random_images(self.config, batch_size, self.head.weight.device)

    def extra_repr(self) -> str:
        config = self.config
        return (
            f"patch_size={config.patch_size}, depth={config.depth}, embed_dim={config.embed_dim}, "
            f"num_heads={config.num_heads}, num_classes={config.num_classes}"
        )


def build_vit(config: ViTConfig) -> VisionTransformer:
    """The Vision Transformer described by `config`."""
    return VisionTransformer(config)


# LoGAH's ViTs-1K: deeper networks are narrower (depth -> inclusive width range).
_WIDTH_BY_DEPTH = ((3, 384, 512), (5, 256, 384), (9, 128, 256))


def sample_vit_config(generator: torch.Generator) -> ViTConfig:
    """A random CIFAR ViT from LoGAH's ViTs-1K space: depth 3-9, width 128-512, 3-12 heads, patch 2 or 4.

    Width is drawn as heads * head_dim inside the depth's range, so every width divides into its heads.
    """
    depth = _random.randint(generator, 3, 9)
    low, high = next((low, high) for max_depth, low, high in _WIDTH_BY_DEPTH if depth <= max_depth)
    num_heads = _random.randint(generator, 3, 12)
    head_dim = _random.randint(generator, -(-low // num_heads), high // num_heads)
    patch_size = _random.choice(generator, (2, 4))
    return ViTConfig(
        image_size=32,
        patch_size=patch_size,
        num_classes=10,
        depth=depth,
        embed_dim=num_heads * head_dim,
        num_heads=num_heads,
    )


def sample_tiny_vit_config(generator: torch.Generator) -> ViTConfig:
    """A CPU-sized ViT for small images: depth 2-4, 2-4 heads of width 8-32 (16-128 wide, the widths of small ViTs
    as users write them), patch 2 or 4."""
    num_heads = _random.randint(generator, 2, 4)
    return ViTConfig(
        image_size=32,
        patch_size=_random.choice(generator, (2, 4)),
        num_classes=10,
        depth=_random.randint(generator, 2, 4),
        embed_dim=num_heads * _random.choice(generator, (8, 12, 16, 24, 32)),
        num_heads=num_heads,
        mlp_ratio=_random.choice(generator, (2.0, 4.0)),
    )


def sample_wide_vit_config(generator: torch.Generator) -> ViTConfig:
    """A wider range than ViTs-1K: depth 3-12, width 128-768 (heads 3-12 of 32-64 each), patch 2 or 4."""
    num_heads = _random.randint(generator, 3, 12)
    head_dim = _random.randint(generator, max(1, -(-128 // num_heads)), 64)
    return ViTConfig(
        image_size=32,
        patch_size=_random.choice(generator, (2, 4)),
        num_classes=10,
        depth=_random.randint(generator, 3, 12),
        embed_dim=num_heads * head_dim,
        num_heads=num_heads,
    )


_SIZES = {"tiny": (12, 192, 3), "s": (12, 384, 6), "b": (12, 768, 12), "l": (24, 1024, 16)}


def _presets() -> dict[str, ViTConfig]:
    presets = {}
    for size, (depth, embed_dim, num_heads) in _SIZES.items():
        shape = {"depth": depth, "embed_dim": embed_dim, "num_heads": num_heads}
        presets[f"vit-{size}/16"] = ViTConfig(patch_size=16, **shape)
        for patch_size in (4, 2):
            presets[f"vit-{size}/{patch_size}"] = ViTConfig(
                image_size=32, patch_size=patch_size, num_classes=10, **shape
            )
    return presets


FAMILIES.register(
    "vit",
    FamilySpec(
        name="vit",
        config_cls=ViTConfig,
        build=build_vit,
        sample=sample_vit_config,
        variants={"tiny": sample_tiny_vit_config, "wide": sample_wide_vit_config},
        presets=_presets(),
        task="image",
    ),
)
