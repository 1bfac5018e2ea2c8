"""Causal language models as users write them in plain PyTorch: token and position `nn.Embedding`s, an
`nn.TransformerEncoder` run with a causal mask, and a linear head, each module at its PyTorch default init.

They put the text shapes of everyday user code (PyTorch's tutorials: `nn.MultiheadAttention` with a fused input
projection, post- or pre-norm, ReLU or GELU, embeddings at std 1, a head with a bias) into a GHN's training space,
beside GPT-2 and Llama, which follow their libraries' inits. Shape letters: B batch, T tokens, D width, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ghn._checks import check_bool, check_choice, check_float, check_positive, fail
from ghn.zoo import _random
from ghn.zoo.family import FAMILIES, FamilySpec, check_context, random_tokens
from ghn.zoo.gpt2 import _embedding

__all__ = ["PlainLMConfig", "PlainLM", "build_plain_lm", "sample_plain_lm_config"]


@dataclass(frozen=True, kw_only=True)
class PlainLMConfig:
    """Architecture of a plain causal LM; the default has the encoder of `nn.Transformer()` (6 post-norm layers,
    width 512, 8 heads, feed-forward 2048, ReLU) over a byte vocabulary."""

    vocab_size: int = 256
    """Tokens in the vocabulary V."""
    n_positions: int = 256
    """Context length: the most tokens one forward pass takes (rows of the position embedding)."""
    width: int = 512
    """Width D; a multiple of `num_heads`."""
    depth: int = 6
    """Number of `nn.TransformerEncoderLayer`s."""
    num_heads: int = 8
    """Attention heads per layer."""
    mlp_ratio: float = 4.0
    """Hidden width of each feed-forward block over D."""
    activation: Literal["relu", "gelu"] = "relu"
    """Activation of the feed-forward blocks (`nn.TransformerEncoderLayer`'s choices)."""
    norm_first: bool = False
    """Pre-norm layers with a final LayerNorm (True), or PyTorch's default post-norm without one (False)."""
    tie_head: bool = False
    """The head reads the token embedding's weight (then it has no bias)."""
    head_bias: bool = True
    """A bias in an untied head."""

    def __post_init__(self) -> None:
        check_positive(self, "vocab_size", "n_positions", "width", "depth", "num_heads")
        if self.width % self.num_heads:
            fail(self, "width", f"a multiple of num_heads={self.num_heads}")
        check_float(self, "mlp_ratio", low=0.0, is_low_open=True)
        check_choice(self, "activation", ("relu", "gelu"))
        for name in ("norm_first", "tie_head", "head_bias"):
            check_bool(self, name)

    @property
    def hidden_features(self) -> int:
        return max(1, round(self.mlp_ratio * self.width))


class PlainLM(nn.Module):
    """`embed` + `pos` -> `encoder` (causal mask) -> `norm` (pre-norm only) -> `head`.

    Shapes:
        input: (B, T) token ids (T <= n_positions); output: (B, T, V) logits
    """

    def __init__(self, config: PlainLMConfig) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = config.vocab_size
        self.embed = _embedding(config.vocab_size, config.width)
        self.pos = _embedding(config.n_positions, config.width)
        layer = nn.TransformerEncoderLayer(
            config.width,
            config.num_heads,
            config.hidden_features,
            dropout=0.0,
            activation=config.activation,
            batch_first=True,
            norm_first=config.norm_first,
        )
        self.encoder = nn.TransformerEncoder(layer, config.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.width) if config.norm_first else nn.Identity()
        if config.tie_head:
            self.head = nn.Linear(config.width, config.vocab_size, bias=False, device="meta")
            self.head.weight = self.embed.weight
        else:
            self.head = nn.Linear(config.width, config.vocab_size, bias=config.head_bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """`nn.Embedding`'s default init, normal(0, 1), for the embeddings made uninitialized; every other module
        keeps the default init its constructor gave it."""
        if self.embed.weight.is_meta:
            return  # meta tensors hold no values; skipping keeps meta builds instant
        nn.init.normal_(self.embed.weight)
        nn.init.normal_(self.pos.weight)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        check_context(input_ids, self.config.n_positions)
        T = input_ids.shape[1]
        positions = torch.arange(T, device=input_ids.device)  # (T,)
        x = self.embed(input_ids) + self.pos(positions)  # (B, T, D)
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=input_ids.device)  # (T, T), -inf above
        return self.head(self.norm(self.encoder(x, mask=mask, is_causal=True)))  # (B, T, V)

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        """Random token ids (batch_size, min(n_positions, 16)), dtype long, on the device of the parameters."""
        return random_tokens(self.config, batch_size, self.embed.weight.device)

    def extra_repr(self) -> str:
        config = self.config
        return (
            f"depth={config.depth}, width={config.width}, num_heads={config.num_heads}, "
            f"norm_first={config.norm_first}, vocab_size={config.vocab_size}"
        )


def build_plain_lm(config: PlainLMConfig) -> PlainLM:
    """The plain causal LM described by `config`."""
    return PlainLM(config)


def _sample(generator: torch.Generator, depth: int, num_heads: int, head_dim: int) -> PlainLMConfig:
    """A byte-level LM (vocabulary 256, context 128) of the given depth and heads; the rest drawn."""
    tie_head = _random.coin(generator, 0.25)
    return PlainLMConfig(
        vocab_size=256,
        n_positions=128,
        width=num_heads * head_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=_random.choice(generator, (2.0, 4.0)),
        activation=_random.choice(generator, ("relu", "gelu")),
        norm_first=_random.coin(generator),
        tie_head=tie_head,
        head_bias=not tie_head and _random.coin(generator, 0.75),
    )


def sample_plain_lm_config(generator: torch.Generator) -> PlainLMConfig:
    """A random plain LM: 2-8 layers, 2-8 heads of width 16-64, MLP 2x or 4x, ReLU or GELU, pre- or post-norm."""
    num_heads = _random.randint(generator, 2, 8)
    return _sample(generator, _random.randint(generator, 2, 8), num_heads, 16 * _random.randint(generator, 1, 4))


def sample_tiny_plain_lm_config(generator: torch.Generator) -> PlainLMConfig:
    """A CPU-sized plain LM: 1-4 layers, 2-4 heads of width 8-32, the rest as `sample_plain_lm_config`."""
    num_heads = _random.randint(generator, 2, 4)
    return _sample(generator, _random.randint(generator, 1, 4), num_heads, 8 * _random.randint(generator, 1, 4))


FAMILIES.register(
    "plain-lm",
    FamilySpec(
        name="plain-lm",
        config_cls=PlainLMConfig,
        build=build_plain_lm,
        sample=sample_plain_lm_config,
        variants={"tiny": sample_tiny_plain_lm_config},
        presets={"plain-lm": PlainLMConfig()},
        task="text",
    ),
)
