"""GPT-2 language models whose state dicts load into Hugging Face `GPT2LMHeadModel` unchanged.

Paper: "Language Models are Unsupervised Multitask Learners" (Radford et al., 2019); the sampled space is LoGAH's
GPTs-1K, https://arxiv.org/abs/2405.16287. Shape letters: B batch, T tokens, D width, h heads, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ghn._checks import check_float, check_int, fail
from ghn.zoo import _random
from ghn.zoo.family import FAMILIES, FamilySpec, check_context, random_tokens

__all__ = ["GPT2Config", "GPT2", "Conv1D", "build_gpt2", "sample_gpt2_config"]


@dataclass(frozen=True, kw_only=True)
class GPT2Config:
    """Architecture of a GPT-2 model; the default is GPT-2 small (124M), as in Hugging Face `GPT2Config()`."""

    vocab_size: int = 50257
    """Tokens in the vocabulary V."""
    n_positions: int = 1024
    """Context length: the most tokens one forward pass takes."""
    n_embd: int = 768
    """Width D; a multiple of `n_head`."""
    n_layer: int = 12
    """Number of transformer blocks."""
    n_head: int = 12
    """Attention heads per block."""
    layer_norm_epsilon: float = 1e-5
    """Epsilon of every LayerNorm."""
    dropout: float = 0.0
    """Dropout on embeddings, attention probabilities and residual branches while training."""
    initializer_range: float = 0.02
    """Std of the normal init of weights and embeddings; residual projections get it / sqrt(2 * n_layer)."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            check_int(self, name)
        if self.n_embd % self.n_head:
            fail(self, "n_embd", f"a multiple of n_head={self.n_head}")
        check_float(self, "layer_norm_epsilon", low=0.0, is_low_open=True)
        check_float(self, "dropout", low=0.0, high=1.0)
        check_float(self, "initializer_range", low=0.0, is_low_open=True)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def n_inner(self) -> int:
        """Hidden width of each MLP, 4 * n_embd."""
        return 4 * self.n_embd


class Conv1D(nn.Module):
    """A linear layer whose weight is stored (in_features, out_features), the layout of GPT-2 checkpoints.

    Fan-in is `weight.shape[0]`, unlike `nn.Linear`.

    Shapes:
        input: (*, in_features); output: (*, out_features)
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.addmm(self.bias, x.reshape(-1, self.in_features), self.weight)  # (prod(*), out_features)
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class CausalSelfAttention(nn.Module):
    """Masked multi-head self-attention with fused `c_attn` (D -> 3D) and output `c_proj` (D -> D).

    Shapes:
        input: (B, T, D); output: (B, T, D)
    """

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.c_attn = Conv1D(config.n_embd, 3 * config.n_embd)
        self.c_proj = Conv1D(config.n_embd, config.n_embd)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = (t.view(B, T, self.n_head, D // self.n_head).transpose(1, 2) for t in self.c_attn(x).split(D, dim=2))
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)  # (B, h, T, D/h)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, D)))


class MLP(nn.Module):
    """`c_fc` (D -> 4D), tanh-approximated GELU, `c_proj` (4D -> D).

    Shapes:
        input: (B, T, D); output: (B, T, D)
    """

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.c_fc = Conv1D(config.n_embd, config.n_inner)
        self.act = nn.GELU(approximate="tanh")
        self.c_proj = Conv1D(config.n_inner, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).

    Shapes:
        input: (B, T, D); output: (B, T, D)
    """

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """Token and position embeddings, the blocks `h`, and the final LayerNorm `ln_f`.

    Shapes:
        input: (B, T) token ids; output: (B, T, D) hidden states
    """

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.n_positions = config.n_positions
        self.wte = _embedding(config.vocab_size, config.n_embd)
        self.wpe = _embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        check_context(input_ids, self.n_positions)
        T = input_ids.shape[1]
        positions = torch.arange(T, device=input_ids.device)  # (T,)
        x = self.drop(self.wte(input_ids) + self.wpe(positions))  # (B, T, D)
        for block in self.h:
            x = block(x)
        return self.ln_f(x)


def _embedding(num_embeddings: int, embedding_dim: int) -> nn.Embedding:
    """An uninitialized `nn.Embedding` (`GPT2.reset_parameters` sets its values).

    Passing `_weight` skips `nn.Embedding.reset_parameters`, whose `normal_` on the meta device imports
    `torch._dynamo` (about 2 s, once per process) and would make meta builds slow.
    """
    return nn.Embedding(num_embeddings, embedding_dim, _weight=torch.empty(num_embeddings, embedding_dim))


class GPT2(nn.Module):
    """GPT-2 with a language-model head tied to the token embedding; keys match `GPT2LMHeadModel`.

    Shapes:
        input: (B, T) token ids (T <= n_positions); output: (B, T, V) logits
    """

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = config.vocab_size
        self.transformer = Transformer(config)
        # Made on meta and then tied, so a large vocabulary is never allocated twice.
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False, device="meta")
        self.lm_head.weight = self.transformer.wte.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2's init: normal(0, initializer_range) weights and embeddings, zero biases, unit LayerNorms, and
        std initializer_range / sqrt(2 * n_layer) for the residual projections `c_proj`."""
        if self.transformer.wte.weight.is_meta:
            return  # meta tensors hold no values; skipping keeps meta builds instant
        std = self.config.initializer_range
        for name, module in self.named_modules():
            if isinstance(module, (Conv1D, nn.Embedding)):
                is_residual = name.endswith("c_proj")
                nn.init.normal_(module.weight, std=std / math.sqrt(2 * self.config.n_layer) if is_residual else std)
            if isinstance(module, (Conv1D, nn.LayerNorm)):
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.transformer(input_ids))  # (B, T, V)

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        """Random token ids (batch_size, min(n_positions, 16)), dtype long, on the device of the parameters."""
        return random_tokens(self.config, batch_size, self.transformer.wte.weight.device)

    def extra_repr(self) -> str:
        config = self.config
        return (
            f"n_layer={config.n_layer}, n_embd={config.n_embd}, n_head={config.n_head}, "
            f"vocab_size={config.vocab_size}"
        )


def build_gpt2(config: GPT2Config) -> GPT2:
    """The GPT-2 model described by `config`."""
    return GPT2(config)


# LoGAH's GPTs-1K: deeper networks are narrower (depth -> inclusive width range).
_WIDTH_BY_DEPTH = ((3, 176, 256), (5, 128, 176), (9, 72, 176))


def sample_gpt2_config(generator: torch.Generator) -> GPT2Config:
    """A random small byte-level GPT-2 from LoGAH's GPTs-1K space: 3-9 layers, width 72-256, 2-8 heads.

    Width is drawn as heads * head_dim inside the depth's range. Vocabulary (256) and context (128) are the
    defaults of a byte-level text task; change them with `dataclasses.replace` or `replace_config`.
    """
    n_layer = _random.randint(generator, 3, 9)
    low, high = next((low, high) for max_depth, low, high in _WIDTH_BY_DEPTH if n_layer <= max_depth)
    n_head = _random.randint(generator, 2, 8)
    head_dim = _random.randint(generator, -(-low // n_head), high // n_head)
    return GPT2Config(vocab_size=256, n_positions=128, n_embd=n_head * head_dim, n_layer=n_layer, n_head=n_head)


def sample_tiny_gpt2_config(generator: torch.Generator) -> GPT2Config:
    """A CPU-sized byte-level GPT-2: 2-6 layers, 2-4 heads of width 8-32 (60 distinct architectures)."""
    n_head = _random.randint(generator, 2, 4)
    return GPT2Config(
        vocab_size=256,
        n_positions=128,
        n_embd=n_head * 8 * _random.randint(generator, 1, 4),
        n_layer=_random.randint(generator, 2, 6),
        n_head=n_head,
    )


def _presets() -> dict[str, GPT2Config]:
    return {
        "gpt2": GPT2Config(),
        "gpt2-medium": GPT2Config(n_embd=1024, n_layer=24, n_head=16),
        "gpt2-large": GPT2Config(n_embd=1280, n_layer=36, n_head=20),
        "gpt2-xl": GPT2Config(n_embd=1600, n_layer=48, n_head=25),
    }


FAMILIES.register(
    "gpt2",
    FamilySpec(
        name="gpt2",
        config_cls=GPT2Config,
        build=build_gpt2,
        sample=sample_gpt2_config,
        variants={"tiny": sample_tiny_gpt2_config},
        presets=_presets(),
        task="text",
    ),
)
