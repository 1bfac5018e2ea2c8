"""The initializations an evaluation compares, registered in `INITS`: 'ghn' (the GHN's prediction), 'random' (the
family's own init) and 'orthogonal' (Saxe et al., 2014, https://arxiv.org/abs/1312.6120).

Every init starts from a network freshly built with the family's random init under a seeded RNG and overwrites
what it sets, so parameters an init leaves alone keep the family's init.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ghn.graph import ComputationGraph
from ghn.nn import GHN
from ghn.nn.decoder import LowRank
from ghn.nn.normalize import ParamScale, param_scales, reference_std
from ghn.predict import factored_predictions, write_predictions
from ghn.registry import Registry

__all__ = ["INITS", "InitContext", "InitSpec", "orthogonal_init"]


@dataclass
class InitContext:
    """What an init may use for one architecture: its graph and the GHN, whose prediction is made once, lazily."""

    graph: ComputationGraph
    ghn: GHN | None = None
    _predicted: dict[str, Tensor | LowRank] | None = field(default=None, repr=False)

    def predicted(self) -> dict[str, Tensor | LowRank]:
        """{name: prediction} the GHN makes for the graph, before any own-init mix (`ghn.predict.factored_predictions`:
        cached, detached, on the GHN's device)."""
        if self._predicted is None:
            if self.ghn is None:
                raise ValueError("This evaluation has no GHN, so the 'ghn' init cannot be used.")
            self._predicted = factored_predictions(self.graph, self.ghn)
        return self._predicted


@dataclass(frozen=True)
class InitSpec:
    """A registered init: `apply(model, context)` overwrites the parameters of a freshly built `model` in place."""

    name: str
    apply: Callable[[nn.Module, InitContext], None]
    summary: str
    uses_ghn: bool = False


INITS = Registry[InitSpec]("init")


def _ghn_init(model: nn.Module, context: InitContext) -> None:
    """Write the GHN's prediction into the model as `ghn.predict` does (`ghn.predict.write_predictions`): tied
    tensors are one tensor, so they follow, and the freshly built model's values are its own init."""
    write_predictions(model, context.graph, context.predicted(), context.ghn)


def _random_init(model: nn.Module, context: InitContext) -> None:
    """Keep the family's own init, made under the run's seed."""


def orthogonal_init(model: nn.Module, context: InitContext) -> None:
    """`torch.nn.init.orthogonal_` on every parameter of 2+ dims, rescaled so its entries' RMS is the std of the
    model's own init (`ghn.nn.normalize.reference_std`, the scale GHN predictions get too; the fan-in rule where
    that is unknown); biases and norm shifts 0; norm scales 1.

    An orthogonal (rows x cols) matrix has entries of RMS 1 / sqrt(max(rows, cols)), so the gain is
    std * sqrt(max(rows, cols)), with rows the first dimension and cols the product of the others.
    """
    scales = param_scales(context.graph)
    with torch.no_grad():
        for info in context.graph.params.values():
            if not info.trainable:
                continue
            param = model.get_parameter(info.name)
            if info.role == "norm_scale":
                param.fill_(1.0)
            elif param.dim() < 2 or info.role in ("bias", "norm_shift"):
                param.zero_()
            else:
                std = reference_std(info, scales.get(info.name, ParamScale()))
                rows = param.shape[0]
                gain = (std or 1.0 / math.sqrt(max(info.fan_in, 1))) * math.sqrt(max(rows, param.numel() // rows))
                nn.init.orthogonal_(param, gain=gain)


INITS.register("ghn", InitSpec("ghn", _ghn_init, "the GHN's predicted parameters, as ghn.predict writes them", uses_ghn=True))
INITS.register("random", InitSpec("random", _random_init, "the model family's own random init"))
INITS.register("orthogonal", InitSpec("orthogonal", orthogonal_init, "orthogonal weights scaled by fan-in, biases 0"))
