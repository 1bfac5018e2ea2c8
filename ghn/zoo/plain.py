"""Plain feed-forward classifiers as users write them: MLPs and conv stacks (LeNet, VGG and MobileNet-v1 style),
with a choice of norm, activation, pooling and head, and each module's PyTorch default init.

They put the shapes of everyday user code (no cells, no residuals, tanh or SiLU, flatten-then-FC heads) into a
GHN's training space. Papers: LeNet, http://yann.lecun.com/exdb/publis/pdf/lecun-98.pdf; VGG,
https://arxiv.org/abs/1409.1556; MobileNets, https://arxiv.org/abs/1704.04861.
Shape letters: B batch, C channels, H/W height/width, F features, K classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ghn._checks import check_bool, check_choice, check_int, fail, freeze
from ghn.zoo import _random
from ghn.zoo.family import FAMILIES, FamilySpec, random_images

__all__ = ["ACTIVATIONS", "PlainConfig", "PlainNetwork", "build_plain", "sample_plain_config"]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
}
_NORMS = ("none", "batch", "group", "layer")
_POOLS = ("max", "avg", "stride")
_HEADS = ("pool", "flatten")


def _positive_ints(config: object, name: str, *, allow_empty: bool) -> None:
    value = getattr(config, name)
    ok = isinstance(value, tuple) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in value)
    if not ok or (not value and not allow_empty):
        fail(config, name, "a tuple of integers >= 1" + ("" if allow_empty else ", not empty"))


@dataclass(frozen=True, kw_only=True)
class PlainConfig:
    """Architecture of a plain classifier; the default is LeNet-5 (padded convs, ReLU, max pooling) for 32px images."""

    kind: Literal["mlp", "conv"] = "conv"
    """'mlp': flatten the image, then `widths` hidden Linear layers; 'conv': `widths` conv stages, then the head."""
    widths: tuple[int, ...] = (6, 16)
    """Hidden features of each Linear layer (mlp) or output channels of each conv stage (conv)."""
    convs_per_stage: int = 1
    """Convs in each stage; the first one changes the channels (conv only)."""
    kernel_size: int = 5
    """Side of every conv kernel, odd (conv only)."""
    separable: bool = False
    """Convs as a depthwise kxk conv then a pointwise 1x1 conv, each followed by norm and activation (MobileNet v1)."""
    pool: Literal["max", "avg", "stride"] = "max"
    """How each stage halves the resolution (rounding up): a 2x2 max or average pool after it, or stride 2 in its
    first conv."""
    norm: Literal["none", "batch", "group", "layer"] = "none"
    """Norm after every conv or hidden Linear: BatchNorm, GroupNorm (conv), LayerNorm (mlp), or none."""
    activation: str = "relu"
    """Activation after every conv and hidden Linear: one of ACTIVATIONS."""
    bias: bool = True
    """Biases in the convs and hidden Linear layers (users often keep them next to a norm)."""
    head: Literal["pool", "flatten"] = "flatten"
    """'pool': global average pooling then the head; 'flatten': flatten the feature map (conv only)."""
    head_widths: tuple[int, ...] = (120, 84)
    """Hidden Linear layers of the head before the classifier (conv only; LeNet-5 has 120 and 84)."""
    in_channels: int = 3
    """Channels of the input images."""
    num_classes: int = 10
    """Outputs of the classifier."""
    image_size: int = 32
    """Height and width of the inputs; an MLP and a flatten head are built for exactly this size."""

    def __post_init__(self) -> None:
        freeze(self, "widths")
        freeze(self, "head_widths")
        check_choice(self, "kind", ("mlp", "conv"))
        _positive_ints(self, "widths", allow_empty=self.kind == "mlp")
        _positive_ints(self, "head_widths", allow_empty=True)
        check_int(self, "convs_per_stage")
        check_int(self, "kernel_size")
        if self.kernel_size % 2 == 0:
            fail(self, "kernel_size", "an odd integer (padding keeps the size)")
        check_bool(self, "separable")
        check_choice(self, "pool", _POOLS)
        check_choice(self, "norm", _NORMS)
        check_choice(self, "activation", ACTIVATIONS)
        check_bool(self, "bias")
        check_choice(self, "head", _HEADS)
        for name in ("in_channels", "num_classes", "image_size"):
            check_int(self, name)
        if self.kind == "conv" and self.norm == "layer":
            fail(self, "norm", "'none', 'batch' or 'group' for conv networks ('layer' is for MLPs)")
        if self.kind == "mlp" and self.norm == "group":
            fail(self, "norm", "'none', 'batch' or 'layer' for MLPs ('group' is for conv networks)")

    @property
    def feature_size(self) -> int:
        """Height and width of the last conv stage's output (each stage halves it, rounding up, so never 0)."""
        size = self.image_size
        for _ in self.widths:
            size = -(-size // 2)
        return size


def _groups(channels: int) -> int:
    """GroupNorm groups: the largest of 8, 4, 2, 1 that divides `channels`."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


def _norm(config: PlainConfig, features: int, *, is_conv: bool) -> list[nn.Module]:
    if config.norm == "batch":
        return [nn.BatchNorm2d(features) if is_conv else nn.BatchNorm1d(features)]
    if config.norm == "group":
        return [nn.GroupNorm(_groups(features), features)]
    if config.norm == "layer":
        return [nn.LayerNorm(features)]
    return []


def _conv_unit(config: PlainConfig, c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    """conv (or depthwise + pointwise), norm, activation."""
    k, act = config.kernel_size, ACTIVATIONS[config.activation]
    if not config.separable:
        conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=config.bias)
        return [conv, *_norm(config, c_out, is_conv=True), act()]
    depthwise = nn.Conv2d(c_in, c_in, k, stride=stride, padding=k // 2, groups=c_in, bias=config.bias)
    pointwise = nn.Conv2d(c_in, c_out, 1, bias=config.bias)
    return [
        depthwise, *_norm(config, c_in, is_conv=True), act(),
        pointwise, *_norm(config, c_out, is_conv=True), act(),
    ]  # fmt: skip


def _hidden_linears(config: PlainConfig, in_features: int, widths: tuple[int, ...]) -> tuple[list[nn.Module], int]:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(in_features, width, bias=config.bias), *_norm(config, width, is_conv=False)]
        layers.append(ACTIVATIONS[config.activation]())
        in_features = width
    return layers, in_features


class PlainNetwork(nn.Module):
    """`features` (conv stages, empty for an MLP), then `head`: flatten or pool, hidden Linears, the classifier.

    Shapes:
        input: (B, in_channels, H, W) images; output: (B, K) logits
    """

    def __init__(self, config: PlainConfig) -> None:
        super().__init__()
        self.config = config
        self.num_classes = config.num_classes
        stages: list[nn.Module] = []
        channels = config.in_channels
        for width in config.widths if config.kind == "conv" else ():
            stride = 2 if config.pool == "stride" else 1
            for i in range(config.convs_per_stage):
                stages += _conv_unit(config, channels if i == 0 else width, width, stride if i == 0 else 1)
            if config.pool != "stride":
                pool = nn.MaxPool2d if config.pool == "max" else nn.AvgPool2d
                stages.append(pool(2, ceil_mode=True))
            channels = width
        self.features = nn.Sequential(*stages)
        if config.kind == "mlp":
            pooling: list[nn.Module] = [nn.Flatten()]
            in_features, hidden = channels * config.image_size**2, config.widths
        elif config.head == "pool":
            pooling, in_features, hidden = [nn.AdaptiveAvgPool2d(1), nn.Flatten()], channels, config.head_widths
        else:
            pooling, in_features = [nn.Flatten()], channels * config.feature_size**2
            hidden = config.head_widths
        layers, in_features = _hidden_linears(config, in_features, hidden)
        self.head = nn.Sequential(*pooling, *layers)
        self.classifier = nn.Linear(in_features, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.features(x)))  # (B, F) -> (B, K)

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        """Random images (batch_size, in_channels, image_size, image_size) on the device of the parameters."""
        return random_images(self.config, batch_size, self.classifier.weight.device)

    def extra_repr(self) -> str:
        config = self.config
        return (
            f"kind={config.kind!r}, widths={config.widths}, norm={config.norm!r}, activation={config.activation!r}, "
            f"num_classes={config.num_classes}"
        )


def build_plain(config: PlainConfig) -> PlainNetwork:
    """The plain network described by `config`, with PyTorch's default init."""
    return PlainNetwork(config)


def _sample(
    generator: torch.Generator,
    *,
    widths: tuple[int, ...],
    max_stages: int,
    head_widths: tuple[int, ...],
    mlp_share: float = 0.4,
) -> PlainConfig:
    """One plain network: an MLP (`mlp_share`) or a conv stack with random widths, norm, activation and head."""
    activation = _random.choice(generator, tuple(ACTIVATIONS))
    bias = _random.coin(generator, 0.7)
    if _random.coin(generator, mlp_share):
        depth = _random.randint(generator, 1, 3)
        norm = _random.choice(generator, ("none", "none", "batch", "layer"))
        hidden = tuple(sorted((4 * _random.choice(generator, widths) for _ in range(depth)), reverse=True))
        return PlainConfig(kind="mlp", widths=hidden, norm=norm, activation=activation, bias=bias, head_widths=())
    num_stages = _random.randint(generator, 1, max_stages)
    first = _random.choice(generator, widths)
    stage_widths = tuple(min(first * 2**i, max(widths)) for i in range(num_stages))
    head = _random.choice(generator, _HEADS)
    num_hidden = _random.randint(generator, 0, 2)
    hidden = tuple(sorted((_random.choice(generator, head_widths) for _ in range(num_hidden)), reverse=True))
    return PlainConfig(
        kind="conv",
        widths=stage_widths,
        convs_per_stage=_random.randint(generator, 1, 2),
        kernel_size=_random.choice(generator, (3, 3, 5)),
        separable=_random.coin(generator, 0.25),
        pool=_random.choice(generator, _POOLS),
        norm=_random.choice(generator, ("none", "batch", "group")),
        activation=activation,
        bias=bias,
        head=head,
        head_widths=hidden,
    )


def sample_plain_config(generator: torch.Generator) -> PlainConfig:
    """A random CIFAR-sized plain network: an MLP of 1-3 layers of 64-512 units, or 1-4 conv stages of 16-128
    channels (doubling from the first) with a pooled or flattened head of 0-2 hidden layers of 64-512."""
    return _sample(generator, widths=(16, 24, 32, 48, 64, 96, 128), max_stages=4, head_widths=(64, 128, 256, 512))


_TINY = {"widths": (6, 8, 12, 16, 24, 32, 48, 64), "max_stages": 3, "head_widths": (16, 32, 64, 128)}  # CPU sizes


def sample_tiny_plain_config(generator: torch.Generator) -> PlainConfig:
    """A CPU-sized plain network for small images: an MLP of 1-3 layers of 24-256 units, or 1-3 conv stages of
    6-64 channels (doubling from the first) with a pooled or flattened head of 0-2 hidden layers of 16-128
    (a median of about 12 thousand parameters on 8px digits)."""
    return _sample(generator, **_TINY)


def sample_tiny_plain_conv_config(generator: torch.Generator) -> PlainConfig:
    """A CPU-sized plain conv stack, as `sample_tiny_plain_config` draws them but never an MLP."""
    return _sample(generator, **_TINY, mlp_share=0.0)


def _presets() -> dict[str, PlainConfig]:
    return {
        "lenet5": PlainConfig(),
        "lenet5-mnist": PlainConfig(in_channels=1, image_size=28),
        "mlp-mnist": PlainConfig(kind="mlp", widths=(256, 128), head_widths=(), in_channels=1, image_size=28),
    }


FAMILIES.register(
    "plain",
    FamilySpec(
        name="plain",
        config_cls=PlainConfig,
        build=build_plain,
        sample=sample_plain_config,
        variants={"tiny": sample_tiny_plain_config, "tiny-conv": sample_tiny_plain_conv_config},
        presets=_presets(),
        task="image",
    ),
)
