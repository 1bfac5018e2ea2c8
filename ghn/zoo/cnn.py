"""DARTS / DeepNets-1M style cell networks: a stem, a stack of normal and reduction cells, pooling, a classifier.

Papers: DARTS, https://arxiv.org/abs/1806.09055; DeepNets-1M (GHN-2), https://arxiv.org/abs/2110.13100.
Shape letters: B batch, C channels, H/W height/width, K classes. A cell's states are numbered as in DARTS: 0 and 1
are the outputs of the two previous cells, 2, 3, ... its intermediate nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ghn._checks import check_bool, check_choice, check_int, fail, freeze
from ghn.registry import Registry
from ghn.zoo import _random
from ghn.zoo.family import FAMILIES, FamilySpec, random_images

__all__ = [
    "CELL_OPS",
    "DARTS_V2",
    "CellConfig",
    "CNNConfig",
    "Cell",
    "CellNetwork",
    "FactorizedReduce",
    "SqueezeExcite",
    "build_cnn",
    "sample_cnn_config",
]

# An op builder takes (channels, stride, use_batchnorm) and keeps the channel count.
CELL_OPS = Registry[Callable[[int, int, bool], nn.Module]]("cell op")


def _relu_conv(
    c_in: int, c_out: int, kernel_size: int, use_batchnorm: bool, *, stride: int = 1, dilation: int = 1
) -> list[nn.Module]:
    """ReLU, then a conv (bias only without batch norm), then batch norm if used: DARTS's ReLU-Conv-BN."""
    padding = dilation * (kernel_size - 1) // 2
    layers: list[nn.Module] = [
        nn.ReLU(inplace=False),
        nn.Conv2d(c_in, c_out, kernel_size, stride, padding, dilation=dilation, bias=not use_batchnorm),
    ]
    return layers + ([nn.BatchNorm2d(c_out)] if use_batchnorm else [])


def _depthwise_separable(
    channels: int, kernel_size: int, use_batchnorm: bool, *, stride: int = 1, dilation: int = 1
) -> list[nn.Module]:
    """ReLU, depthwise kxk conv, pointwise 1x1 conv, batch norm if used."""
    padding = dilation * (kernel_size - 1) // 2
    conv = nn.Conv2d(channels, channels, kernel_size, stride, padding, dilation=dilation, groups=channels, bias=False)
    pointwise = nn.Conv2d(channels, channels, 1, bias=not use_batchnorm)
    return [nn.ReLU(inplace=False), conv, pointwise] + ([nn.BatchNorm2d(channels)] if use_batchnorm else [])


class FactorizedReduce(nn.Module):
    """Halve the resolution with two stride-2 1x1 convs on the input and on the input shifted by one pixel.

    The shift pads the bottom/right edge, so odd sizes work too (DARTS's version needs even sizes).

    Shapes:
        input: (B, C_in, H, W); output: (B, C_out, ceil(H / 2), ceil(W / 2))
    """

    def __init__(self, in_channels: int, out_channels: int, use_batchnorm: bool) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(in_channels, out_channels // 2, 1, stride=2, bias=not use_batchnorm)
        self.conv_2 = nn.Conv2d(in_channels, out_channels - out_channels // 2, 1, stride=2, bias=not use_batchnorm)
        self.bn = nn.BatchNorm2d(out_channels) if use_batchnorm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))  # (B, C_in, H, W), moved up-left by one pixel
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class SqueezeExcite(nn.Module):
    """Channel gating x * sigmoid(W2 relu(W1 mean_hw(x))); with stride 2 it then keeps every other pixel.

    Paper: https://arxiv.org/abs/1709.01507.

    Shapes:
        input: (B, C, H, W); output: (B, C, ceil(H / stride), ceil(W / stride))
    """

    def __init__(self, channels: int, stride: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.relu = nn.ReLU(inplace=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.gate = nn.Sigmoid()
        self.subsample = nn.AvgPool2d(1, stride=stride) if stride > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))  # (B, C, 1, 1)
        return self.subsample(x * weights)


def _conv(kernel_size: int) -> Callable[[int, int, bool], nn.Module]:
    return lambda c, stride, bn: nn.Sequential(*_relu_conv(c, c, kernel_size, bn, stride=stride))


def _sep_conv(kernel_size: int) -> Callable[[int, int, bool], nn.Module]:
    """DARTS's separable conv: the depthwise-separable unit twice, the first one strided."""
    return lambda c, stride, bn: nn.Sequential(
        *_depthwise_separable(c, kernel_size, bn, stride=stride), *_depthwise_separable(c, kernel_size, bn)
    )


def _dil_conv(kernel_size: int) -> Callable[[int, int, bool], nn.Module]:
    return lambda c, stride, bn: nn.Sequential(*_depthwise_separable(c, kernel_size, bn, stride=stride, dilation=2))


def _skip(channels: int, stride: int, use_batchnorm: bool) -> nn.Module:
    return nn.Identity() if stride == 1 else FactorizedReduce(channels, channels, use_batchnorm)


CELL_OPS.register("conv_1x1", _conv(1))
CELL_OPS.register("conv_3x3", _conv(3))
CELL_OPS.register("conv_5x5", _conv(5))
CELL_OPS.register("sep_conv_3x3", _sep_conv(3))
CELL_OPS.register("sep_conv_5x5", _sep_conv(5))
CELL_OPS.register("dil_conv_3x3", _dil_conv(3))
CELL_OPS.register("dil_conv_5x5", _dil_conv(5))
CELL_OPS.register("max_pool_3x3", lambda c, stride, bn: nn.MaxPool2d(3, stride=stride, padding=1))
CELL_OPS.register(
    "avg_pool_3x3", lambda c, stride, bn: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
)
CELL_OPS.register("skip_connect", _skip)
CELL_OPS.register("se", lambda c, stride, bn: SqueezeExcite(c, stride))


@dataclass(frozen=True)
class _Merge:
    combine: Callable[[list[torch.Tensor]], torch.Tensor]
    is_concat: bool
    """The output has one block of channels per merged state (else as many channels as one state)."""


_MERGES = {
    "concat": _Merge(combine=lambda states: torch.cat(states, dim=1), is_concat=True),
    "sum": _Merge(combine=lambda states: sum(states[1:], states[0]), is_concat=False),
}


@dataclass(frozen=True, kw_only=True)
class CellConfig:
    """One cell of a genotype: two (op, input state) edges per intermediate node and the states merged as output."""

    edges: tuple[tuple[str, int], ...]
    """(op name, input state) pairs, two per intermediate node; node i (state i + 2) reads states below i + 2."""
    concat: tuple[int, ...]
    """Intermediate states (2, 3, ...) merged into the cell's output."""

    def __post_init__(self) -> None:
        freeze(self, "edges")
        freeze(self, "concat")
        if not self.edges or len(self.edges) % 2:
            fail(self, "edges", "a non-empty tuple with two (op, input) pairs per intermediate node")
        for i, edge in enumerate(self.edges):
            is_pair = isinstance(edge, tuple) and len(edge) == 2 and isinstance(edge[1], int)
            if not is_pair or edge[0] not in CELL_OPS or not 0 <= edge[1] < i // 2 + 2:
                fail(self, "edges", f"(op, input) pairs with op in {CELL_OPS.names()} and 0 <= input < node + 2")
        states = range(2, self.num_nodes + 2)
        if not self.concat or len(set(self.concat)) != len(self.concat) or not set(self.concat) <= set(states):
            fail(self, "concat", f"distinct intermediate states in [2, {self.num_nodes + 1}]")

    @property
    def num_nodes(self) -> int:
        """Intermediate nodes of the cell."""
        return len(self.edges) // 2


DARTS_V2 = (
    CellConfig(
        edges=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
               ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)),
        concat=(2, 3, 4, 5),
    ),
    CellConfig(
        edges=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
               ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)),
        concat=(2, 3, 4, 5),
    ),
)  # fmt: skip
"""The normal and reduction cells found by DARTS (second order), as in its `genotypes.py`."""


@dataclass(frozen=True, kw_only=True)
class CNNConfig:
    """Architecture of a cell network; the default is the DARTS-V2 genotype with 8 cells of width 16 on 32px."""

    normal: CellConfig = DARTS_V2[0]
    """Genotype of the normal cells (stride 1)."""
    reduce: CellConfig = DARTS_V2[1]
    """Genotype of the reduction cells (stride 2 on the inputs, twice the channels)."""
    num_cells: int = 8
    """Number of cells."""
    init_channels: int = 16
    """Channels C of the first cells; doubled at each reduction cell."""
    reduction_cells: tuple[int, ...] | None = None
    """Indices of the reduction cells; None puts them at 1/3 and 2/3 of the depth, as DARTS does."""
    stem: Literal["cifar", "imagenet"] = "cifar"
    """'cifar': one 3x3 conv to 3C channels; 'imagenet': DARTS's three stride-2 3x3 convs (8x smaller)."""
    use_batchnorm: bool = True
    """Batch norm after every conv (ReLU-Conv-BN); without it, ReLU-Conv with conv biases."""
    merge: Literal["concat", "sum"] = "concat"
    """How a cell combines its `concat` states: channel concatenation (DARTS) or a sum."""
    in_channels: int = 3
    """Channels of the input images."""
    num_classes: int = 10
    """Outputs of the classifier."""
    image_size: int = 32
    """Height and width of the example inputs; the network itself accepts any size."""

    def __post_init__(self) -> None:
        freeze(self, "reduction_cells")
        for name in ("normal", "reduce"):
            if not isinstance(getattr(self, name), CellConfig):
                fail(self, name, "a CellConfig")
        check_int(self, "num_cells")
        check_int(self, "init_channels", low=2)
        cells = self.reduction_cells
        if cells is not None and (
            not isinstance(cells, tuple) or len(set(cells)) != len(cells)
            or not all(isinstance(i, int) and 0 <= i < self.num_cells for i in cells)
        ):  # fmt: skip
            fail(self, "reduction_cells", f"None or distinct cell indices in [0, {self.num_cells - 1}]")
        check_choice(self, "stem", _STEMS)
        check_bool(self, "use_batchnorm")
        check_choice(self, "merge", _MERGES)
        for name in ("in_channels", "num_classes", "image_size"):
            check_int(self, name)

    @property
    def reduction_indices(self) -> tuple[int, ...]:
        """Sorted indices of the reduction cells."""
        if self.reduction_cells is not None:
            return tuple(sorted(self.reduction_cells))
        return tuple(sorted({self.num_cells // 3, 2 * self.num_cells // 3}))


class Cell(nn.Module):
    """A DARTS cell: preprocess the two previous outputs to C channels, compute the nodes, merge.

    Shapes:
        inputs: s0 (B, C_pp, H0, W0), s1 (B, C_p, H, W) with H0 = 2H after a reduction, else H0 = H
        output: (B, C * len(concat) or C, H / stride, W / stride)
    """

    def __init__(
        self, genotype: CellConfig, c_pp: int, c_p: int, channels: int, *, config: CNNConfig,
        is_reduction: bool, is_reduction_prev: bool,
    ) -> None:  # fmt: skip
        super().__init__()
        bn = config.use_batchnorm
        self.preprocess0 = (
            FactorizedReduce(c_pp, channels, bn) if is_reduction_prev
            else nn.Sequential(*_relu_conv(c_pp, channels, 1, bn))
        )  # fmt: skip
        self.preprocess1 = nn.Sequential(*_relu_conv(c_p, channels, 1, bn))
        self.inputs = tuple(index for _, index in genotype.edges)
        self.ops = nn.ModuleList(
            CELL_OPS.get(op)(channels, 2 if is_reduction and index < 2 else 1, bn) for op, index in genotype.edges
        )
        self.concat = genotype.concat
        self.merge = _MERGES[config.merge]
        self.out_channels = channels * (len(self.concat) if self.merge.is_concat else 1)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]  # each (B, C, H, W)
        for i in range(0, len(self.ops), 2):
            a = self.ops[i](states[self.inputs[i]])
            b = self.ops[i + 1](states[self.inputs[i + 1]])
            states.append(a + b)
        return self.merge.combine([states[i] for i in self.concat])


@dataclass(frozen=True)
class _Stem:
    build: Callable[[int, int, bool], tuple[nn.Module, nn.Module, int]]
    """(in_channels, C, use_batchnorm) -> (stem0, stem1, out_channels); s0 = stem0(x), s1 = stem1(s0)."""
    is_reducing: bool
    """stem1 halves the resolution, so the first cell reduces s0."""


def _conv_bn(c_in: int, c_out: int, stride: int, use_batchnorm: bool) -> list[nn.Module]:
    conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=not use_batchnorm)
    return [conv] + ([nn.BatchNorm2d(c_out)] if use_batchnorm else [])


def _cifar_stem(in_channels: int, channels: int, bn: bool) -> tuple[nn.Module, nn.Module, int]:
    return nn.Sequential(*_conv_bn(in_channels, 3 * channels, 1, bn)), nn.Identity(), 3 * channels


def _imagenet_stem(in_channels: int, channels: int, bn: bool) -> tuple[nn.Module, nn.Module, int]:
    stem0 = nn.Sequential(
        *_conv_bn(in_channels, channels // 2, 2, bn), nn.ReLU(inplace=True), *_conv_bn(channels // 2, channels, 2, bn)
    )
    stem1 = nn.Sequential(nn.ReLU(inplace=False), *_conv_bn(channels, channels, 2, bn))
    return stem0, stem1, channels


_STEMS = {"cifar": _Stem(_cifar_stem, is_reducing=False), "imagenet": _Stem(_imagenet_stem, is_reducing=True)}


class CellNetwork(nn.Module):
    """A classifier made of a stem, `num_cells` DARTS cells, global average pooling and a linear layer.

    Shapes:
        input: (B, in_channels, H, W) images; output: (B, K) logits
    """

    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        self.config = config
        self.num_classes = config.num_classes
        stem = _STEMS[config.stem]
        self.stem0, self.stem1, c_stem = stem.build(config.in_channels, config.init_channels, config.use_batchnorm)
        c_pp, c_p, channels = c_stem, c_stem, config.init_channels
        is_reduction_prev = stem.is_reducing
        self.cells = nn.ModuleList()
        for i in range(config.num_cells):
            is_reduction = i in config.reduction_indices
            channels *= 2 if is_reduction else 1
            genotype = config.reduce if is_reduction else config.normal
            cell = Cell(
                genotype, c_pp, c_p, channels, config=config,
                is_reduction=is_reduction, is_reduction_prev=is_reduction_prev,
            )  # fmt: skip
            self.cells.append(cell)
            c_pp, c_p, is_reduction_prev = c_p, cell.out_channels, is_reduction
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = self.stem0(x)
        s1 = self.stem1(s0)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(torch.flatten(self.global_pooling(s1), 1))  # (B, C_last) -> (B, K)

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        """Random images (batch_size, in_channels, image_size, image_size) on the device of the parameters."""
        return random_images(self.config, batch_size, self.classifier.weight.device)

    def extra_repr(self) -> str:
        config = self.config
        return (
            f"num_cells={config.num_cells}, init_channels={config.init_channels}, merge={config.merge!r}, "
            f"use_batchnorm={config.use_batchnorm}, num_classes={config.num_classes}"
        )


def build_cnn(config: CNNConfig) -> CellNetwork:
    """The cell network described by `config` (PyTorch's default init, as DARTS)."""
    return CellNetwork(config)


def _sample_cell(generator: torch.Generator) -> CellConfig:
    """A DeepNets-1M style cell: 1-4 nodes, each with two random ops on random earlier states; the nodes no
    other node reads are merged into the output."""
    ops = CELL_OPS.names()
    num_nodes = _random.randint(generator, 1, 4)
    edges = []
    for node in range(num_nodes):
        edges += [(_random.choice(generator, ops), _random.randint(generator, 0, node + 1)) for _ in range(2)]
    used = {index for _, index in edges}
    concat = tuple(state for state in range(2, num_nodes + 2) if state not in used)
    return CellConfig(edges=tuple(edges), concat=concat)


def sample_cnn_config(generator: torch.Generator) -> CNNConfig:
    """A random DeepNets-1M style CIFAR network: random normal and reduction cells, 4-12 cells, width 16-64,
    with or without batch norm, concat or sum merging."""
    normal = _sample_cell(generator)
    reduce = _sample_cell(generator)
    return CNNConfig(
        normal=normal,
        reduce=reduce,
        num_cells=_random.randint(generator, 4, 12),
        init_channels=_random.randint(generator, 16, 64),
        use_batchnorm=_random.coin(generator),
        merge=_random.choice(generator, ("concat", "sum")),
    )


def sample_tiny_cnn_config(generator: torch.Generator) -> CNNConfig:
    """Like `sample_cnn_config` at CPU size for small images: 3-6 cells of width 8-16 (tens of thousands of
    parameters), for GHN training on digits-sized data."""
    config = sample_cnn_config(generator)
    return replace(
        config,
        num_cells=_random.randint(generator, 3, 6),
        init_channels=_random.randint(generator, 8, 16),
    )


def _presets() -> dict[str, CNNConfig]:
    return {
        "darts": CNNConfig(),
        "darts-imagenet": CNNConfig(
            num_cells=14, init_channels=48, stem="imagenet", num_classes=1000, image_size=224
        ),
    }


FAMILIES.register(
    "cnn",
    FamilySpec(
        name="cnn",
        config_cls=CNNConfig,
        build=build_cnn,
        sample=sample_cnn_config,
        variants={"tiny": sample_tiny_cnn_config},
        presets=_presets(),
        task="image",
    ),
)
