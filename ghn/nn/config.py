"""Configs of the hypernetwork: encoder, decoder, and the whole GHN, with the named presets."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ghn._checks import check_positive
from ghn._config import from_dict, to_dict
from ghn.errors import ConfigError
from ghn.graph.ops import ROLES
from ghn.registry import Registry

__all__ = ["EncoderConfig", "DecoderConfig", "GHNConfig", "GHN_PRESETS"]


@dataclass(frozen=True, kw_only=True)
class EncoderConfig:
    """The Graphormer encoder over the nodes of each graph."""

    hidden_dim: int = 64
    """Width D of node embeddings."""
    num_layers: int = 3
    """Number of pre-LN transformer layers."""
    num_heads: int = 8
    """Attention heads; must divide `hidden_dim`."""
    mlp_ratio: float = 2.0
    """Width of each layer's MLP as a multiple of `hidden_dim`."""
    max_distance: int = 16
    """Shortest-path distances above this share one attention-bias bucket (as do unreachable pairs)."""
    max_degree: int = 32
    """In/out degrees above this share one degree embedding."""
    dropout: float = 0.0
    """Dropout in attention and MLPs during GHN training."""

    def __post_init__(self) -> None:
        check_positive(self, "hidden_dim", "num_layers", "num_heads", "max_distance", "max_degree")
        if self.hidden_dim % self.num_heads:
            raise ConfigError(
                f"EncoderConfig.hidden_dim ({self.hidden_dim}) must be divisible by num_heads ({self.num_heads})."
            )
        if isinstance(self.mlp_ratio, bool) or not isinstance(self.mlp_ratio, (int, float)) or not self.mlp_ratio > 0:
            raise ConfigError(f"EncoderConfig.mlp_ratio must be a positive number, got {self.mlp_ratio!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"EncoderConfig.dropout must be in [0, 1), got {self.dropout!r}.")


@dataclass(frozen=True, kw_only=True)
class DecoderConfig:
    """How node embeddings become parameter tensors."""

    kind: Literal["low_rank", "block"] = "low_rank"
    """'low_rank' (LoGAH: W = A @ B with rows and columns generated per index, any width, no tiling) or 'block'
    (GHN-2/3: one fixed block per node, sliced and tiled to the tensor's shape)."""
    rank: int = 32
    """Rank r of the low-rank factors."""
    num_index_features: int = 64
    """Fourier features that encode a row/column index (low_rank); a multiple of 8, since a quarter of them are
    sin/cos pairs (see `ghn.nn.features.IndexEncoding`)."""
    block_channels: int = 32
    """Block decoder: the block is (block_channels, block_channels, block_kernel, block_kernel)."""
    block_kernel: int = 3
    """Block decoder: spatial size of the block."""

    def __post_init__(self) -> None:
        if self.kind not in ("low_rank", "block"):
            raise ConfigError(f"DecoderConfig.kind must be 'low_rank' or 'block', got {self.kind!r}.")
        check_positive(self, "rank", "num_index_features", "block_channels", "block_kernel")
        if self.num_index_features % 8:
            raise ConfigError(
                f"DecoderConfig.num_index_features must be a multiple of 8, got {self.num_index_features}."
            )


@dataclass(frozen=True, kw_only=True)
class GHNConfig:
    """A whole graph hypernetwork; it round-trips through JSON (`to_dict` / `GHNConfig.from_dict`)."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    normalize: bool = True
    """Scale predicted tensors to the statistics of a sound init for their role (see ghn/nn/normalize.py)."""
    num_op_embeddings: int = 512
    """Rows of the op-type table; ops with larger ids (user ops) share the last row."""
    init_blend: float = 0.0
    """Fraction of each predicted weight's variance that `ghn.predict` takes from the model's own init (its values,
    or fresh draws of its std on meta); training replaces the same fraction with noise, so the GHN learns
    predictions that keep their value when blended. 0 writes the GHN's prediction alone."""
    own_spectrum: bool = False
    """Put each predicted weight at the spectrum of the model's own init: the GHN's r directions at the RMS of the
    own init's top r singular values, the own init in the directions the prediction leaves out
    (`ghn.nn.spectrum`). The GHN chooses directions, the model's init the scale; applied in training and in
    `ghn.predict` alike. Low-rank decoder only (issue 11 in benchmarks/RESULTS.md)."""
    free_spectrum_roles: tuple[str, ...] = ()
    """Roles whose weights, when `own_spectrum` is on, keep the relative strengths the GHN gives their r directions
    (at the own init's top-r energy, with the own init's complement) instead of all at one value, e.g.
    ('embedding', 'classifier') for a language model's output embedding, whose token prior needs a peaked
    spectrum."""
    free_spectrum_share: float = 1.0
    """How far the `free_spectrum_roles` go from one value per direction towards the GHN's relative strengths: each
    direction at (1 - share) + share * its relative strength (in units of the flat value), so every direction keeps
    at least 1 - share of it. 1: the GHN's spectrum alone."""
    table_spectrum: bool = False
    """With `own_spectrum`, put a position table held as one row (role position_embedding: a (1, N, d) parameter such
    as a ViT's position embedding) at the own init's spectrum as the N x d matrix it is
    (`ghn.nn.spectrum.table_at_own_spectrum`): full rank, its positions apart. Off, such a table is one vector of the
    GHN's (issue 11: its predicted positions were near-copies and ViTs fine-tuned behind their own init)."""
    signal_scale: bool = False
    """Put the linear/conv weights of a network with no normalization at the fan-in rule's signal-keeping std
    (Kaiming: sqrt(2 / fan_in) before a ReLU) where its own init is smaller, at most 3x its own
    (`ParamScale.signal_gain` in ghn/nn/normalize.py): PyTorch's default init vanishes the signal of a deep plain
    stack, so a prediction at its scale cannot reach the head (issue 11 in benchmarks/RESULTS.md). Applied in
    training and in `ghn.predict` alike; networks with a norm are left at their own init's scale."""
    centered_units: bool = False
    """Take out of every predicted weight the part its output units share (the mean over units, for 4+ units) and
    out of every bias its mean deviation from the own init, as a random init has none in expectation: no
    prediction can switch a whole no-norm ReLU layer off by shifting all its units one way (issue 11 in
    benchmarks/RESULTS.md: a plain conv stack predicted dead)."""

    def __post_init__(self) -> None:
        check_positive(self, "num_op_embeddings")
        if not (isinstance(self.init_blend, (int, float)) and 0.0 <= self.init_blend < 1.0):
            raise ConfigError(f"GHNConfig.init_blend must be in [0, 1), got {self.init_blend!r}.")
        for name in ("own_spectrum", "centered_units", "table_spectrum", "signal_scale"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"GHNConfig.{name} must be True or False, got {getattr(self, name)!r}.")
        roles = self.free_spectrum_roles
        if not isinstance(roles, (tuple, list)) or any(r not in ROLES for r in roles):
            raise ConfigError(f"GHNConfig.free_spectrum_roles must be a list of roles from {list(ROLES)}, got {roles!r}.")
        object.__setattr__(self, "free_spectrum_roles", tuple(self.free_spectrum_roles))
        share = self.free_spectrum_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 < share <= 1.0:
            raise ConfigError(f"GHNConfig.free_spectrum_share must be in (0, 1], got {share!r}.")
        if self.own_spectrum and self.decoder.kind != "low_rank":
            raise ConfigError(
                f"GHNConfig.own_spectrum needs the low-rank decoder (its factors give the directions), but "
                f"decoder.kind is {self.decoder.kind!r}. Set own_spectrum=False or decoder.kind='low_rank'."
            )

    def spectrum_share(self, role: str) -> float:
        """How much of the GHN's relative spectrum weights of `role` keep at the own spectrum (0: flat)."""
        return float(self.free_spectrum_share) if role in self.free_spectrum_roles else 0.0

    def spectrum_tables(self, role: str) -> bool:
        """Whether a table of `role` held as one row is put at its matrix's spectrum (`table_spectrum`)."""
        return self.table_spectrum and role == "position_embedding"

    @property
    def hidden_dim(self) -> int:
        return self.encoder.hidden_dim

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GHNConfig:
        return from_dict(cls, data)


GHN_PRESETS: Registry[GHNConfig] = Registry("GHN preset")


def _preset(name: str, hidden: int, rank: int, layers: int, heads: int, kind: str = "low_rank") -> None:
    encoder = EncoderConfig(hidden_dim=hidden, num_layers=layers, num_heads=heads)
    GHN_PRESETS.register(name, GHNConfig(encoder=encoder, decoder=replace(DecoderConfig(), kind=kind, rank=rank)))


# Hidden size, rank, layers and heads of the LoGAH paper's variants; 'ghn3-tiny' uses the GHN-3 block decoder.
_preset("logah-tiny", 64, 32, 3, 8)
_preset("logah-small", 128, 90, 5, 16)
_preset("logah-base", 256, 128, 5, 16)
_preset("logah-large", 256, 256, 12, 16)
_preset("ghn3-tiny", 64, 32, 3, 8, kind="block")
