"""`GHN`: the graph hypernetwork. Graphs in, every owned parameter tensor out.

Node embeddings -> Graphormer encoder -> per-parameter embedding (node + role + slot) -> decoder -> role normalization.
Low-rank decoding follows LoGAH (Zhou et al., 2024, https://arxiv.org/abs/2405.16287); the encoder follows GHN-3
(Knyazev et al., 2023, https://arxiv.org/abs/2303.04143).

Shape letters: N nodes, D hidden.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ghn._logging import get_logger
from ghn.graph import ROLES, ComputationGraph
from ghn.nn.checkpoint import Checkpoint, check_weights, read_checkpoint, save_ghn
from ghn.nn.config import GHN_PRESETS, GHNConfig
from ghn.nn.decoder import DECODERS, LowRank
from ghn.nn.encoder import GraphormerEncoder
from ghn.nn.features import NodeEmbedding
from ghn.nn.normalize import ParamScale, normalize_params, param_scales, reference_std
from ghn.nn.spectrum import at_own_spectrum, gaussian_top_rms

__all__ = ["GHN", "load_ghn"]

logger = get_logger(__name__)

_MAX_SLOTS = 8  # parameters of one node are told apart by their position among its parameters


class GHN(nn.Module):
    """A graph hypernetwork that predicts the parameters of the models whose graphs it reads.

    Example:
        >>> ghn = GHN.from_preset("logah-tiny")
        >>> params = ghn([build_graph(model)])[0]   # {name: tensor}, differentiable
    """

    def __init__(self, config: GHNConfig | None = None) -> None:
        super().__init__()
        self.config = config or GHNConfig()
        self.metadata: dict[str, Any] = {}  # what a loaded checkpoint says about itself (name, training data)
        hidden = self.config.hidden_dim
        self.embed = NodeEmbedding(hidden, self.config.num_op_embeddings, self.config.encoder.max_degree)
        self.encoder = GraphormerEncoder(self.config.encoder)
        self.role = nn.Embedding(len(ROLES), hidden)
        self.slot = nn.Embedding(_MAX_SLOTS, hidden)
        self.param_mlp = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU())
        self.decoder = DECODERS.get(self.config.decoder.kind)(hidden, self.config.decoder)
        # logit of the classifier-head gain 0.5 + 0.5 * sigmoid (see ghn/nn/normalize.py): in (0.5, 1), 0.75 at init.
        self.classifier_gain_logit = nn.Parameter(torch.tensor(0.0))
        if self.config.own_spectrum:  # the own init sets the heads' scale, so this gain does nothing: frozen
            self.classifier_gain_logit.requires_grad_(False)

    # -- construction ---------------------------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> GHN:
        """A randomly initialized GHN of a named size ('logah-tiny', 'logah-small', 'logah-base', 'logah-large',
        'ghn3-tiny'); `overrides` replace top-level config fields (a nested config or a dict of its fields).

        Raises:
            UnknownNameError: `name` is not a preset.
            ConfigError: an override is not a field (the message suggests the closest) or has a bad value.
        """
        config = GHN_PRESETS.get(name)
        return cls(GHNConfig.from_dict({**config.to_dict(), **overrides}) if overrides else config)

    @classmethod
    def load(cls, path: str | Path, *, map_location: str | torch.device = "cpu") -> GHN:
        """Load a GHN saved with `save_pretrained`: its directory (config.json and model.safetensors) or the
        `.safetensors` file alone. Local paths only; `ghn.from_pretrained` also takes pretrained names and URLs.

        Returns:
            The GHN in eval mode on `map_location`, with the checkpoint's `metadata`.

        Raises:
            CheckpointError: no checkpoint at `path`, or one with an unknown format, a bad config, weights that do
                not match it or non-finite values.
        """
        ghn = cls.from_checkpoint(read_checkpoint(path, map_location=map_location), map_location=map_location)
        logger.info("Loaded GHN from %s", path)
        return ghn

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, *, map_location: str | torch.device = "cpu") -> GHN:
        """The GHN a checkpoint record describes (see `ghn.nn.checkpoint`), in eval mode on `map_location`.

        Raises:
            CheckpointError: its weights do not have the names and shapes its config builds.
        """
        ghn = cls(checkpoint.config)
        check_weights(checkpoint.weights, ghn.state_dict(), checkpoint.path)
        ghn.load_state_dict(checkpoint.weights)
        ghn.metadata = checkpoint.metadata
        return ghn.to(map_location).eval()

    def save_pretrained(self, path: str | Path, **metadata: Any) -> Path:
        """Write config.json and model.safetensors into directory `path` (atomically); returns the directory."""
        return save_ghn(self, path, **metadata)

    @property
    def classifier_gain(self) -> float:
        """The learned multiplier of classifier-head std (see ghn/nn/normalize.py)."""
        return float(self._classifier_gain().detach())

    def _classifier_gain(self) -> Tensor:
        return 0.5 + 0.5 * torch.sigmoid(self.classifier_gain_logit)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def device(self) -> torch.device:
        return self.role.weight.device

    # -- prediction -----------------------------------------------------------------------------------------------
    def encode(self, graphs: Sequence[ComputationGraph]) -> list[Tensor]:
        """Contextual node embeddings, one (N, D) tensor per graph, from one batched encoder pass."""
        from torch_geometric.data import Batch  # PyG imports slowly; keep `import ghn` fast

        batch = Batch.from_data_list([g.to_pyg() for g in graphs]).to(self.device)
        nodes = self.encoder(self.embed(batch), batch)
        return list(nodes.split(batch.ptr.diff().tolist()))

    def predict_groups(
        self,
        graphs: Sequence[ComputationGraph],
        embeddings: list[Tensor] | None = None,
        scales: Sequence[Mapping[str, ParamScale]] | None = None,
    ) -> Iterator[tuple[list[tuple[int, str]], Tensor | LowRank]]:
        """Yield ([(graph index, parameter name)] * T, prediction of T tensors), one group per distinct stored
        shape, layout and kind (bounded, see ghn/nn/normalize.py, weight-like, or weight-like of a free spectrum) across
        all `graphs`: every tensor of a group is decoded by the same few batched ops, and low-rank weights stay
        factored (`LowRank`).
        `scales` are the graphs' `param_scales`, when the caller has them."""
        embeddings = self.encode(graphs) if embeddings is None else embeddings
        scales_of = [param_scales(g) for g in graphs] if scales is None else scales
        members, infos, scales, node_vectors, roles, slots = [], [], [], [], [], []
        for index, (graph, nodes) in enumerate(zip(graphs, embeddings, strict=True)):
            graph_scales = scales_of[index]
            for node_index, node in enumerate(graph.nodes):
                for slot, name in enumerate(node.params):
                    info = graph.params[name]
                    members.append((index, name))
                    infos.append(info)
                    scales.append(graph_scales[name])
                    node_vectors.append(nodes[node_index])
                    roles.append(ROLES.index(info.role))
                    slots.append(min(slot, _MAX_SLOTS - 1))
        if not members:
            return
        device = self.device
        param_embeddings = self.param_mlp(
            torch.stack(node_vectors)
            + self.role(torch.tensor(roles, device=device))
            + self.slot(torch.tensor(slots, device=device))
        )  # (J, D)
        groups: dict[tuple, list[int]] = {}
        for j, info in enumerate(infos):
            transposed = info.layout == "in_out" and len(info.shape) >= 2  # stored (in, out, ...): HF Conv1D
            if reference_std(info, scales[j]) is None:
                kind = "bounded"
            else:
                kind = "free" if info.role in self.config.free_spectrum_roles else "flat"
            groups.setdefault((tuple(info.shape), transposed, kind), []).append(j)
        specs = [(shape, transposed, torch.tensor(js, device=device)) for (shape, transposed, _), js in groups.items()]
        for js, raw in zip(groups.values(), self.decoder.decode(param_embeddings, specs, cache={}), strict=True):
            if self.config.normalize:
                raw = normalize_params(
                    raw, [infos[j] for j in js], [scales[j] for j in js], classifier_gain=self._classifier_gain(),
                    center_units=self.config.centered_units,
                )  # fmt: skip
            yield [members[j] for j in js], raw

    def iter_predictions(
        self, graphs: Sequence[ComputationGraph], embeddings: list[Tensor] | None = None
    ) -> Iterator[tuple[int, str, Tensor | LowRank]]:
        """Yield (graph index, parameter name, prediction) one owned parameter at a time; a prediction is a tensor
        or a `LowRank` that `materialize(out=...)` writes straight into the parameter's storage, so a caller can
        place each tensor before the next is made."""
        for members, group in self.predict_groups(graphs, embeddings):
            for t, (index, name) in enumerate(members):
                yield index, name, group[t]  # a LowRank slice or a tensor row

    def forward(
        self, graphs: Sequence[ComputationGraph], own: Sequence[Mapping[str, Tensor]] | None = None
    ) -> list[dict[str, Tensor]]:
        """Every owned parameter of every graph: a list (one per graph) of {name: tensor}, differentiable.

        With `config.own_spectrum`, every low-rank weight is put at the spectrum of the model's own init
        (`ghn.nn.spectrum.at_own_spectrum`): `own[i][name]` when given (the model's values), else fresh Gaussian
        draws of the init std (`ghn.nn.normalize.reference_std`), as a model on meta gets in `ghn.predict`; with
        `config.signal_scale`, then times its `ParamScale.signal_gain`.
        Computed in float32 inside an autocast region too (bf16-mixed training): in bf16 the orthogonalizations
        and the spectrum map sent a sixth of the GHN's gradients to norms of 1e6 to inf (benchmarks/RESULTS.md).
        """
        device_type = self.device.type
        full_precision = (
            torch.autocast(device_type, enabled=False)
            if torch.amp.is_autocast_available(device_type)
            else contextlib.nullcontext()  # a device type autocast does not know
        )
        scales = [param_scales(g) for g in graphs]
        out: list[dict[str, Tensor]] = [{} for _ in graphs]
        with full_precision:
            for members, group in self.predict_groups(graphs, scales=scales):
                if not isinstance(group, LowRank):
                    tensors = group  # (T, *shape)
                elif self.config.own_spectrum:
                    role = graphs[members[0][0]].params[members[0][1]].role
                    own_init, top_rms = self._own_init(graphs, scales, members, own, group.rows)
                    tensors = at_own_spectrum(
                        group, own_init, top_rms, free=self.config.spectrum_share(role),
                        tables=self.config.spectrum_tables(role),
                    )
                else:
                    tensors = group.materialize()
                if self.config.signal_scale:
                    tensors = _at_signal_gain(tensors, [scales[index][name].signal_gain for index, name in members])
                for (index, name), tensor in zip(members, tensors.unbind(0), strict=True):
                    out[index][name] = tensor
        return out

    @staticmethod
    def _own_init(
        graphs: Sequence[ComputationGraph],
        scales: Sequence[Mapping[str, ParamScale]],
        members: list[tuple[int, str]],
        own: Sequence[Mapping[str, Tensor]] | None,
        like: Tensor,
    ) -> tuple[Tensor, Tensor | None]:
        """((T, *shape), (T,) or None): the own init of each member, given or drawn (see `forward`), and, when all
        are drawn, the top-r RMS their law gives (`gaussian_top_rms`: no SVD of a fresh draw in every training step;
        None: measure it on the values)."""
        values, stds = [], []
        for index, name in members:
            given = own[index].get(name) if own is not None else None
            if given is not None and not given.is_meta:
                values.append(given.detach().to(dtype=like.dtype, device=like.device))
            else:
                info = graphs[index].params[name]
                stds.append(reference_std(info, scales[index][name]))
                values.append(torch.randn(info.shape, dtype=like.dtype, device=like.device) * stds[-1])
        values = torch.stack(values)
        if len(stds) < len(members):
            return values, None
        m, n = values.shape[1], values[0].numel() // values.shape[1]
        unit = gaussian_top_rms(m, n, min(like.shape[-1], m, n), 1.0)
        return values, torch.tensor(stds, dtype=like.dtype, device=like.device) * unit

    def extra_repr(self) -> str:
        encoder = self.config.encoder
        return (
            f"hidden_dim={encoder.hidden_dim}, num_layers={encoder.num_layers}, num_heads={encoder.num_heads}, "
            f"decoder={self.config.decoder.kind!r}, rank={self.config.decoder.rank}"
        )


def _at_signal_gain(tensors: Tensor, gains: list[float]) -> Tensor:
    """(T, *shape) tensors, each times its `ParamScale.signal_gain` (`GHNConfig.signal_scale`)."""
    if all(gain == 1.0 for gain in gains):
        return tensors
    factor = torch.tensor(gains, dtype=tensors.dtype, device=tensors.device)
    return tensors * factor.view(-1, *([1] * (tensors.dim() - 1)))


def load_ghn(path: str | Path, *, map_location: str | torch.device = "cpu") -> GHN:
    """`GHN.load` as a function: a GHN saved by `save_ghn` / `GHN.save_pretrained`, from a local path."""
    return GHN.load(path, map_location=map_location)
