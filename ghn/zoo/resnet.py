"""ResNets of any depth and width, with torchvision's parameter names (`conv1`, `layer1.0.conv1`, `fc`).

Paper: "Deep Residual Learning for Image Recognition", https://arxiv.org/abs/1512.03385; wide variants:
https://arxiv.org/abs/1605.07146. Shape letters: B batch, C channels, H/W height/width, K classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ghn._checks import check_choice, check_float, check_int, fail, freeze
from ghn.zoo import _random
from ghn.zoo.family import FAMILIES, FamilySpec, random_images

__all__ = ["ResNetConfig", "ResNet", "BasicBlock", "Bottleneck", "build_resnet", "sample_resnet_config"]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut.

    Shapes:
        input: (B, in_channels, H, W); output: (B, planes, H / stride, W / stride)
    """

    expansion = 1

    def __init__(self, in_channels: int, planes: int, *, stride: int, inner_width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, inner_width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner_width)
        self.conv2 = nn.Conv2d(inner_width, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, with batch norm and a shortcut (stride on the 3x3, as torchvision).

    Shapes:
        input: (B, in_channels, H, W); output: (B, 4 * planes, H / stride, W / stride)
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, *, stride: int, inner_width: int) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, inner_width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner_width)
        self.conv2 = nn.Conv2d(inner_width, inner_width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(inner_width)
        self.conv3 = nn.Conv2d(inner_width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """A 1x1 projection with batch norm where the block changes shape, else None (identity)."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


@dataclass(frozen=True)
class _Stem:
    kernel_size: int
    stride: int
    has_maxpool: bool


_STEMS = {
    "imagenet": _Stem(kernel_size=7, stride=2, has_maxpool=True),
    "cifar": _Stem(kernel_size=3, stride=1, has_maxpool=False),
}


@dataclass(frozen=True, kw_only=True)
class ResNetConfig:
    """Architecture of a ResNet; the default is ResNet-18 for 224px ImageNet."""

    block: Literal["basic", "bottleneck"] = "basic"
    """Residual block: 'basic' (two 3x3 convs, ResNet-18/34) or 'bottleneck' (1x1-3x3-1x1, ResNet-50 and deeper)."""
    layers: tuple[int, ...] = (2, 2, 2, 2)
    """Number of blocks in each stage; stage i has `base_width * 2**i` planes and stride 2 except the first."""
    base_width: int = 64
    """Channels of the stem and planes of the first stage."""
    width_multiplier: float = 1.0
    """Scales the inner width of every block, as wide ResNets do (2.0 gives Wide-ResNet-50-2 from ResNet-50)."""
    stem: Literal["imagenet", "cifar"] = "imagenet"
    """'imagenet': 7x7 stride-2 conv and 3x3 stride-2 max pool; 'cifar': 3x3 stride-1 conv, no pool."""
    in_channels: int = 3
    """Channels of the input images."""
    num_classes: int = 1000
    """Outputs of the classifier `fc`."""
    image_size: int = 224
    """Height and width of the example inputs; the network itself accepts any size."""

    def __post_init__(self) -> None:
        freeze(self, "layers")
        check_choice(self, "block", BLOCKS)
        if not self.layers or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in self.layers):
            fail(self, "layers", "a non-empty tuple of integers >= 1, one per stage")
        check_int(self, "base_width")
        check_float(self, "width_multiplier", low=0.0, is_low_open=True)
        check_choice(self, "stem", _STEMS)
        check_int(self, "in_channels")
        check_int(self, "num_classes")
        check_int(self, "image_size")

    @property
    def stage_widths(self) -> tuple[int, ...]:
        """Planes of each stage (the block output has `expansion` times as many channels)."""
        return tuple(self.base_width * 2**i for i in range(len(self.layers)))

    @property
    def num_features(self) -> int:
        """Channels entering the classifier."""
        return self.stage_widths[-1] * BLOCKS[self.block].expansion


class ResNet(nn.Module):
    """A ResNet image classifier with torchvision's module names.

    Shapes:
        input: (B, in_channels, H, W) images; output: (B, K) logits
    """

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        self.config = config
        self.num_classes = config.num_classes
        stem = _STEMS[config.stem]
        self.conv1 = nn.Conv2d(
            config.in_channels, config.base_width, stem.kernel_size, stride=stem.stride,
            padding=stem.kernel_size // 2, bias=False,
        )  # fmt: skip
        self.bn1 = nn.BatchNorm2d(config.base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem.has_maxpool else nn.Identity()
        self.stage_names = tuple(f"layer{i + 1}" for i in range(len(config.layers)))
        in_channels = config.base_width
        for i, (name, planes) in enumerate(zip(self.stage_names, config.stage_widths, strict=True)):
            stride = 1 if i == 0 else 2
            stage, in_channels = _stage(config, in_channels, planes, num_blocks=config.layers[i], stride=stride)
            self.add_module(name, stage)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, config.num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torchvision's init: Kaiming-normal (fan_out, ReLU) convs, unit/zero batch norm, default `fc`."""
        if self.fc.weight.is_meta:
            return  # meta tensors hold no values; skipping keeps meta builds instant
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def reference_init(self) -> dict[str, tuple[float, float]]:
        """(mean, std) `reset_parameters` gives each conv, also on meta (ghn.graph.init_stats reads it)."""
        return {
            f"{path}.weight": (0.0, math.sqrt(2.0 / (module.out_channels * math.prod(module.kernel_size))))
            for path, module in self.named_modules()
            if isinstance(module, nn.Conv2d)
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, base_width, H', W')
        for name in self.stage_names:
            x = getattr(self, name)(x)
        x = torch.flatten(self.avgpool(x), 1)  # (B, num_features)
        return self.fc(x)  # (B, K)

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        """Random images (batch_size, in_channels, image_size, image_size) on the device of the parameters."""
        return random_images(self.config, batch_size, self.fc.weight.device)

    def extra_repr(self) -> str:
        config = self.config
        return (
            f"block={config.block!r}, layers={config.layers}, base_width={config.base_width}, "
            f"num_classes={config.num_classes}"
        )


def _stage(
    config: ResNetConfig, in_channels: int, planes: int, *, num_blocks: int, stride: int
) -> tuple[nn.Sequential, int]:
    """The blocks of one stage and the number of channels they output."""
    block_cls = BLOCKS[config.block]
    inner_width = max(1, int(planes * config.width_multiplier))
    blocks = []
    for i in range(num_blocks):
        blocks.append(block_cls(in_channels, planes, stride=stride if i == 0 else 1, inner_width=inner_width))
        in_channels = planes * block_cls.expansion
    return nn.Sequential(*blocks), in_channels


def build_resnet(config: ResNetConfig) -> ResNet:
    """The ResNet described by `config`."""
    return ResNet(config)


def sample_resnet_config(generator: torch.Generator) -> ResNetConfig:
    """A random small CIFAR ResNet: basic or bottleneck blocks, 3 or 4 stages of 1-4 blocks, base width 16-64."""
    block = _random.choice(generator, ("basic", "bottleneck"))
    num_stages = _random.randint(generator, 3, 4)
    layers = tuple(_random.randint(generator, 1, 4) for _ in range(num_stages))
    base_width = 8 * _random.randint(generator, 2, 8)
    return ResNetConfig(
        block=block, layers=layers, base_width=base_width, stem="cifar", num_classes=10, image_size=32
    )


def sample_tiny_resnet_config(generator: torch.Generator) -> ResNetConfig:
    """A CPU-sized ResNet for small images: basic or bottleneck blocks, 2-3 stages of 1-2 blocks, base width 8-24."""
    block = _random.choice(generator, ("basic", "bottleneck"))
    num_stages = _random.randint(generator, 2, 3)
    layers = tuple(_random.randint(generator, 1, 2) for _ in range(num_stages))
    base_width = 8 * _random.randint(generator, 1, 3)
    return ResNetConfig(block=block, layers=layers, base_width=base_width, stem="cifar", num_classes=10, image_size=32)


def _presets() -> dict[str, ResNetConfig]:
    imagenet = {
        "resnet18": ResNetConfig(block="basic", layers=(2, 2, 2, 2)),
        "resnet34": ResNetConfig(block="basic", layers=(3, 4, 6, 3)),
        "resnet50": ResNetConfig(block="bottleneck", layers=(3, 4, 6, 3)),
    }
    cifar = {
        f"{name}-cifar": ResNetConfig(block=c.block, layers=c.layers, stem="cifar", num_classes=10, image_size=32)
        for name, c in imagenet.items()
    }
    return {**imagenet, **cifar}


FAMILIES.register(
    "resnet",
    FamilySpec(
        name="resnet",
        config_cls=ResNetConfig,
        build=build_resnet,
        sample=sample_resnet_config,
        variants={"tiny": sample_tiny_resnet_config},
        presets=_presets(),
        task="image",
    ),
)
