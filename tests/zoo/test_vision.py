"""torchvision and timm for real (`pytest -m vision`, in the environment README's vision command builds): every
torchvision classification builder and a set of small timm models are built on meta through `ghn.zoo.create`,
traced, and predicted in full by an untrained GHN.

The scale check compares each predicted weight with the model's own init, measured on the same model built on the
CPU: the init the library's code applies (torchvision ResNets, DenseNets, MobileNets, EfficientNets and RegNets:
Kaiming normal fan-out or fan-in convs; ConvNeXt, Swin, MaxViT, GoogLeNet, Inception: truncated normal; ViT:
LeCun-style truncated normal patch embedding, Xavier MLPs; heads normal 0.01 or uniform 1/sqrt(out); timm: its
`init_weights`, truncated normal 0.02 and Kaiming fan-out). On meta those calls compute nothing; ghn gets them from
what `create` records (`ghn.zoo._init_record`), not from PyTorch's default rules (which put a ResNet's 3x3 convs at
0.41x their real std). Tensors the library initializes to a constant (torchvision ViT's zero head) have no ratio.
"""

from __future__ import annotations

import pytest
import torch

import ghn
from ghn.graph import build_graph, derive_example_inputs
from ghn.nn import GHN

pytestmark = pytest.mark.vision
torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")

WEIGHT_ROLES = ("weight", "classifier", "embedding", "position_embedding")

#: Predicted in full only with `-m slow`: builders of over 100M parameters, or over ~5 s each on 2 busy CPU cores
#: (every parameter is written, then the model is built again on the CPU for its real init; ViT-H/14 and
#: RegNet-Y-128GF take ~30 s). Tracing on meta covers all of them by default.
SLOW_TORCHVISION = {
    "convnext_large", "densenet161", "densenet201", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "efficientnet_v2_l", "regnet_x_32gf", "regnet_y_32gf", "regnet_y_128gf", "vgg11", "vgg11_bn", "vgg13",
    "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "vit_h_14", "vit_l_16", "vit_l_32", "wide_resnet101_2",
}  # fmt: skip

#: GoogLeNet and Inception v3 run their auxiliary heads only in training mode; `build_graph` traces in eval mode, so
#: the heads are unowned and `predict` leaves them unpredicted (zeros on meta). Built without them, they pass.
AUX_HEADS = "auxiliary heads run only in training mode and build_graph traces in eval mode, so they are not predicted"
XFAIL_TORCHVISION = {"googlenet": AUX_HEADS, "inception_v3": AUX_HEADS}
NO_AUX = {"googlenet": {"aux_logits": False}, "inception_v3": {"aux_logits": False}}

#: Small variants of the timm families: ResNet, ConvNeXt, EfficientNet, ViT, Swin, DeiT, MobileNetV3, RegNet.
TIMM_MODELS = (
    "resnet18", "resnet50", "convnext_atto", "convnext_tiny", "efficientnet_b0", "vit_tiny_patch16_224",
    "vit_small_patch16_224", "swin_tiny_patch4_window7_224", "deit_tiny_patch16_224",
    "deit_tiny_distilled_patch16_224", "mobilenetv3_small_100", "mobilenetv3_large_100", "regnetx_002",
    "regnety_002",
)  # fmt: skip
#: timm's Swin computes its shifted-window `attn_mask` buffer on the device of `norm1.weight`, so on meta the buffer
#: is meta too, and `ghn.meta.recompute_buffers` cannot rebuild the block (it keeps no `dim`/`input_resolution`
#: attributes); tracing works, `predict` raises MetaBufferError before writing anything.
XFAIL_TIMM = {
    "swin_tiny_patch4_window7_224": (
        "timm's SwinTransformerBlock makes attn_mask on norm1.weight.device (meta) and ghn.meta cannot recompute it"
    ),
}


#: Parameters a constructor makes with their values (`nn.Parameter(torch.zeros(...))`: ViT's class token, ConvNeXt's
#: layer scale 1e-6, Swin V2's logit scale): building on meta (`ghn.empty_weights`) drops the values before any init
#: call the recorder could see, so ghn knows no init for them and falls back to its role rules.
MADE_WITH_VALUES = {"class_token", "pos_embedding", "layer_scale", "logit_scale", "gamma"}


def _torchvision_names() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _params(names, *, slow=frozenset(), xfail=None) -> list:
    xfail = xfail or {}
    params = []
    for name in names:
        marks = [pytest.mark.slow] if name in slow else []
        if name in xfail:
            marks.append(pytest.mark.xfail(strict=True, reason=xfail[name]))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.fixture(scope="module")
def untrained_ghn() -> GHN:
    torch.manual_seed(0)
    return GHN.from_preset("logah-tiny").eval()


def _check_prediction(spec: str, hyper: GHN, **overrides) -> None:
    """Predict `spec` built on meta; complete, finite, and each weight's std within 0.5x-2x of the real init's."""
    model, report = ghn.predict(ghn.zoo.create(spec, device="meta", **overrides), hyper, return_report=True)
    assert report.is_complete and not report.not_predicted, str(report)
    assert report.num_predicted_params == report.num_total_params == sum(p.numel() for p in model.parameters())
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        assert not tensor.is_meta, name
        if tensor.is_floating_point():
            assert torch.isfinite(tensor).all(), f"{name} is not finite"
    graph = build_graph(model)
    torch.manual_seed(0)
    real = ghn.zoo.create(spec, **overrides)  # the same model on the CPU, with its library's real init
    outside = []
    for name, info in graph.params.items():
        if info.role not in WEIGHT_ROLES or info.numel < 2:
            continue
        real_std = real.get_parameter(name).detach().float().std().item()
        if real_std == 0:
            continue  # a constant init: no ratio (ghn puts it at the constant when it recorded the init)
        gain = hyper.classifier_gain if info.role == "classifier" else 1.0
        ratio = model.get_parameter(name).detach().float().std().item() / (gain * real_std)
        if not 0.5 <= ratio <= 2.0:
            outside.append(f"{name} ({info.role}, {tuple(info.shape)}): {ratio:.2f}x")
    assert not outside, f"{len(outside)} weights off their real init's std: " + "; ".join(outside[:8])
    del real
    # A forward in training mode, as fine-tuning runs it: BatchNorm normalizes by the batch. (In eval mode, with
    # running statistics reset, a deep ResNet's activations grow block by block; its own init reaches 2e8 at
    # resnet152's output, the untrained GHN's predictions overflow from resnet101 on.)
    (image,), _ = derive_example_inputs(model, torch.device("cpu"))
    with torch.no_grad():
        output = model.train()(torch.randn(2, *image.shape[1:]))
    assert torch.isfinite(output).all()


# -- torchvision: every classification builder ----------------------------------------------------------------------
def test_every_torchvision_builder_is_covered() -> None:
    assert len(_torchvision_names()) >= 80  # torchvision 0.29 has 80; a smaller list means list_models changed


@pytest.mark.parametrize("name", _params(_torchvision_names(), xfail=XFAIL_TORCHVISION))
def test_torchvision_builder_traces_on_meta(name: str) -> None:
    model = ghn.zoo.create(f"torchvision:{name}", device="meta")
    assert all(p.is_meta for p in model.parameters())
    graph = build_graph(model)
    assert graph.coverage().is_complete, graph.coverage()
    unknown = [n for n, info in graph.params.items() if info.init_std is None]
    assert all(n.rpartition(".")[2] in MADE_WITH_VALUES for n in unknown), f"no recorded init or rule for {unknown}"


@pytest.mark.parametrize(
    "name", _params(_torchvision_names(), slow=SLOW_TORCHVISION, xfail=XFAIL_TORCHVISION)
)  # fmt: skip
def test_torchvision_model_is_predicted_at_its_own_init(untrained_ghn: GHN, name: str) -> None:
    _check_prediction(f"torchvision:{name}", untrained_ghn)


@pytest.mark.parametrize("name", sorted(NO_AUX))
def test_torchvision_model_without_aux_heads_is_predicted_in_full(untrained_ghn: GHN, name: str) -> None:
    _check_prediction(f"torchvision:{name}", untrained_ghn, **NO_AUX[name])


# -- timm: small variants of the main families ------------------------------------------------------------------------
@pytest.mark.parametrize("name", _params(TIMM_MODELS))
def test_timm_model_traces_on_meta(name: str) -> None:
    graph = build_graph(ghn.zoo.create(f"timm:{name}", device="meta"))
    assert graph.coverage().is_complete, graph.coverage()


@pytest.mark.parametrize("name", _params(TIMM_MODELS, xfail=XFAIL_TIMM))
def test_timm_model_is_predicted_at_its_own_init(untrained_ghn: GHN, name: str) -> None:
    _check_prediction(f"timm:{name}", untrained_ghn)


# -- the shipped GHN -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec", ["torchvision:resnet18", "torchvision:mobilenet_v3_small", "timm:vit_tiny_patch16_224"]
)
def test_shipped_ghn_predicts_vision_models_at_their_own_init(spec: str) -> None:
    _check_prediction(spec, ghn.from_pretrained("logah-tiny.digits"))


def test_recorded_init_is_what_the_library_applies() -> None:
    """The (mean, std) recorded on meta agree with the values the same calls draw on the CPU."""
    meta = ghn.zoo.create("torchvision:resnet18", device="meta")
    real = ghn.zoo.create("torchvision:resnet18")
    recorded = meta.reference_init()
    assert set(recorded) == {name for name, _ in real.named_parameters()}
    for name, (mean, std) in recorded.items():
        values = real.get_parameter(name).detach()
        assert abs(values.mean().item() - mean) <= 4 * std / values.numel() ** 0.5 + 1e-6, name
        if values.numel() > 100:
            assert values.std().item() == pytest.approx(std, rel=0.1, abs=1e-6), name
