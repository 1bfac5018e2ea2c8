"""Llama language models whose state dicts load into Hugging Face `LlamaForCausalLM` unchanged.

Paper: "LLaMA: Open and Efficient Foundation Language Models" (Touvron et al., 2023): pre-RMSNorm blocks, rotary
position embeddings, SwiGLU MLPs, no biases, grouped-query attention (Llama 2), an untied head by default. The
sampled space takes GPT-2's depth and width ranges (`ghn.zoo.gpt2`), as LoGAH's Llama-1K does, and also varies the
key/value heads, the MLP width and head tying, so a text space can mix both families.
Shape letters: B batch, T tokens, D width, h heads, g key/value heads, d head width, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ghn._checks import check_bool, check_float, check_positive, fail
from ghn.zoo import _random
from ghn.zoo.family import FAMILIES, FamilySpec, check_context, random_tokens
from ghn.zoo.gpt2 import _WIDTH_BY_DEPTH, _embedding

__all__ = ["LlamaConfig", "Llama", "build_llama", "sample_llama_config"]


@dataclass(frozen=True, kw_only=True)
class LlamaConfig:
    """Architecture of a Llama model; the default is TinyLlama-1.1B. Field names are those of Hugging Face
    `LlamaConfig`, except `n_positions` (HF `max_position_embeddings`)."""

    vocab_size: int = 32000
    """Tokens in the vocabulary V."""
    n_positions: int = 2048
    """Context length: the most tokens one forward pass takes."""
    hidden_size: int = 2048
    """Width D; a multiple of 2 * `num_attention_heads` (rotary pairs)."""
    intermediate_size: int = 5632
    """Hidden width of each SwiGLU MLP."""
    num_hidden_layers: int = 22
    """Number of transformer blocks."""
    num_attention_heads: int = 32
    """Query heads h per block."""
    num_key_value_heads: int = 4
    """Key/value heads g (grouped-query attention); divides `num_attention_heads`."""
    rms_norm_eps: float = 1e-6
    """Epsilon of every RMSNorm."""
    rope_theta: float = 10000.0
    """Base of the rotary embedding's frequencies."""
    initializer_range: float = 0.02
    """Std of the normal init of every linear weight and of the token embedding."""
    tie_word_embeddings: bool = False
    """Whether the head shares the token embedding's weight."""

    def __post_init__(self) -> None:
        check_positive(self, "vocab_size", "n_positions", "hidden_size", "intermediate_size", "num_hidden_layers")
        check_positive(self, "num_attention_heads", "num_key_value_heads")
        if self.hidden_size % self.num_attention_heads or self.head_dim % 2:
            fail(self, "hidden_size", f"a multiple of 2 * num_attention_heads = {2 * self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            fail(self, "num_key_value_heads", f"a divisor of num_attention_heads={self.num_attention_heads}")
        check_float(self, "rms_norm_eps", low=0.0, is_low_open=True)
        check_float(self, "rope_theta", low=0.0, is_low_open=True)
        check_float(self, "initializer_range", low=0.0, is_low_open=True)
        check_bool(self, "tie_word_embeddings")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def rotary_cos_sin(
    num_tokens: int, head_dim: int, theta: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (T, d) of the rotary angles of positions 0..T-1, frequencies repeated as [f, f] (HF's layout)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)  # (d/2,)
    angles = torch.outer(torch.arange(num_tokens, device=device, dtype=torch.float32), inv_freq)  # (T, d/2)
    angles = torch.cat((angles, angles), dim=-1)  # (T, d)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, heads, T, d) rotated pairwise (i, i + d/2) by the angles of its positions."""
    first, second = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat((-second, first), dim=-1) * sin.to(x.dtype)


class LlamaAttention(nn.Module):
    """Causal grouped-query self-attention with rotary positions; `q/k/v/o_proj` without biases.

    Shapes:
        input: (B, T, D) and cos, sin (T, d); output: (B, T, D)
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, T, d)
        k = self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, g, T, d)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, g, T, d)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        group = self.num_heads // self.num_kv_heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)  # (B, h, T, d)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, h, T, d)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim))


class LlamaMLP(nn.Module):
    """SwiGLU: `down_proj(silu(gate_proj(x)) * up_proj(x))`.

    Shapes:
        input: (B, T, D); output: (B, T, D)
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(nn.Module):
    """Pre-RMSNorm block: x + attn(input_layernorm(x)), then x + mlp(post_attention_layernorm(x)).

    Shapes:
        input: (B, T, D) and cos, sin (T, d); output: (B, T, D)
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.input_layernorm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = LlamaAttention(config)
        self.post_attention_layernorm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = LlamaMLP(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    """Token embedding `embed_tokens`, the blocks `layers` and the final RMSNorm `norm`.

    Shapes:
        input: (B, T) token ids; output: (B, T, D) hidden states
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = _embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LlamaBlock(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        check_context(input_ids, self.config.n_positions)
        T = input_ids.shape[1]
        cos, sin = rotary_cos_sin(T, self.config.head_dim, self.config.rope_theta, input_ids.device)
        x = self.embed_tokens(input_ids)  # (B, T, D)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.norm(x)


class Llama(nn.Module):
    """Llama with a language-model head (tied to the token embedding if the config says so); keys match
    `LlamaForCausalLM`.

    Shapes:
        input: (B, T) token ids (T <= n_positions); output: (B, T, V) logits
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = config.vocab_size
        self.model = LlamaModel(config)
        if config.tie_word_embeddings:  # made on meta and then tied: a large vocabulary is never allocated twice
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False, device="meta")
            self.lm_head.weight = self.model.embed_tokens.weight
        else:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Llama's init (as in `transformers`): normal(0, initializer_range) linear weights and token embedding,
        unit RMSNorms."""
        if self.model.embed_tokens.weight.is_meta:
            return  # meta tensors hold no values; skipping keeps meta builds instant
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=self.config.initializer_range)
            elif isinstance(module, nn.RMSNorm):
                nn.init.ones_(module.weight)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.model(input_ids))  # (B, T, V)

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        """Random token ids (batch_size, min(n_positions, 16)), dtype long, on the device of the parameters."""
        return random_tokens(self.config, batch_size, self.model.embed_tokens.weight.device)

    def extra_repr(self) -> str:
        config = self.config
        return (
            f"num_hidden_layers={config.num_hidden_layers}, hidden_size={config.hidden_size}, "
            f"num_attention_heads={config.num_attention_heads}, num_key_value_heads={config.num_key_value_heads}, "
            f"vocab_size={config.vocab_size}"
        )


def build_llama(config: LlamaConfig) -> Llama:
    """The Llama model described by `config`."""
    return Llama(config)


def _sample(generator: torch.Generator, n_layer: int, num_heads: int, head_dim: int) -> LlamaConfig:
    """A byte-level Llama (vocabulary 256, context 128) of the given depth, heads and head width; the rest drawn."""
    hidden = num_heads * head_dim
    num_kv_heads = _random.choice(generator, [g for g in range(1, num_heads + 1) if num_heads % g == 0])
    intermediate = 8 * math.ceil(_random.choice(generator, (2.0, 8.0 / 3.0, 4.0)) * hidden / 8)
    return LlamaConfig(
        vocab_size=256,
        n_positions=128,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=n_layer,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        tie_word_embeddings=_random.coin(generator, 0.25),
    )


def sample_llama_config(generator: torch.Generator) -> LlamaConfig:
    """A random small byte-level Llama in GPT-2's GPTs-1K ranges: 3-9 layers, width 72-256, 2-8 query heads of
    even width, any divisor of them as key/value heads, MLP 2-4x wide, a tied head one time in four."""
    n_layer = _random.randint(generator, 3, 9)
    low, high = next((low, high) for max_depth, low, high in _WIDTH_BY_DEPTH if n_layer <= max_depth)
    num_heads = _random.randint(generator, 2, 8)
    head_dim = 2 * _random.randint(generator, -(-low // (2 * num_heads)), high // (2 * num_heads))
    return _sample(generator, n_layer, num_heads, head_dim)


def sample_tiny_llama_config(generator: torch.Generator) -> LlamaConfig:
    """A CPU-sized byte-level Llama: 2-6 layers, 2-4 query heads of width 8-32, the rest as `sample_llama_config`."""
    num_heads = _random.randint(generator, 2, 4)
    head_dim = 8 * _random.randint(generator, 1, 4)
    return _sample(generator, _random.randint(generator, 2, 6), num_heads, head_dim)


def _presets() -> dict[str, LlamaConfig]:
    return {
        "tinyllama-1.1b": LlamaConfig(),
        "smollm-135m": LlamaConfig(
            vocab_size=49152,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            tie_word_embeddings=True,
        ),
        "llama2-7b": LlamaConfig(
            n_positions=4096,
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
        ),
    }


FAMILIES.register(
    "llama",
    FamilySpec(
        name="llama",
        config_cls=LlamaConfig,
        build=build_llama,
        sample=sample_llama_config,
        variants={"tiny": sample_tiny_llama_config},
        presets=_presets(),
        task="text",
    ),
)
