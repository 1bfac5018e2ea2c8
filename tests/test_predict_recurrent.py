"""`ghn.predict` on recurrent models written in plain torch (a GRU sequence classifier, an LSTM byte language model,
RNNs): every parameter predicted, at PyTorch's own init scale, with finite outputs, by untrained and shipped GHNs."""

from __future__ import annotations

import math

import pytest
import torch
from recurrent_models import ByteLM, SequenceClassifier
from torch import nn

import ghn
from ghn.nn import GHN, DecoderConfig, EncoderConfig, GHNConfig


class RNNTagger(nn.Module):
    """A time-major (batch_first=False) ReLU RNN without biases and a per-step linear head.

    Shapes:
        x: (T, B, 4)
        output: (T, B, 3)
    """

    def __init__(self, nonlinearity: str = "relu") -> None:
        super().__init__()
        self.rnn = nn.RNN(4, 12, num_layers=2, nonlinearity=nonlinearity, bias=False)
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0])


MODELS = {
    "gru-classifier": (SequenceClassifier, lambda: torch.randn(2, 7, 8)),
    "lstm-lm": (ByteLM, lambda: torch.randint(0, 256, (2, 9))),
    "lstm-lm-proj": (lambda: ByteLM(proj_size=12), lambda: torch.randint(0, 256, (2, 9))),
    "rnn-relu": (RNNTagger, lambda: torch.randn(6, 2, 4)),
    "rnn-tanh": (lambda: RNNTagger("tanh"), lambda: torch.randn(6, 2, 4)),
}


@pytest.fixture(scope="module")
def small_ghn() -> GHN:
    torch.manual_seed(0)
    config = GHNConfig(
        encoder=EncoderConfig(hidden_dim=16, num_heads=2, num_layers=1),
        decoder=DecoderConfig(rank=4, num_index_features=16),
    )
    return GHN(config).eval()


def _check_recurrent_model(model: nn.Module, inputs: torch.Tensor) -> None:
    """Complete report, finite outputs, and every recurrent weight at 0.5x-2x PyTorch's init std 1/sqrt(3 hidden)
    (its biases within PyTorch's init range 1/sqrt(hidden))."""
    report = model.ghn_report
    assert report.is_complete and not report.not_predicted, str(report)
    assert report.num_predicted_params == report.num_total_params == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        assert torch.isfinite(model(inputs)).all()
    recurrent = [m for m in model.modules() if isinstance(m, nn.RNNBase)]
    assert recurrent
    for rnn in recurrent:
        reference = 1 / math.sqrt(3 * rnn.hidden_size)
        for name, param in rnn.named_parameters():
            assert not param.is_meta and torch.isfinite(param).all(), name
            if name.startswith("weight"):
                ratio = param.std().item() / reference
                assert 0.5 <= ratio <= 2.0, f"{name}: std is {ratio:.2f}x PyTorch's init"
            else:
                assert param.abs().max().item() <= math.sqrt(3) * reference + 1e-6, name


@pytest.mark.parametrize("name", MODELS)
def test_untrained_ghn_predicts_recurrent_models_in_full(small_ghn: GHN, name: str) -> None:
    make, inputs = MODELS[name]
    _check_recurrent_model(ghn.predict(make(), small_ghn), inputs())


@pytest.mark.parametrize("name", ["gru-classifier", "lstm-lm-proj"])
def test_recurrent_model_on_meta_is_predicted_into_a_model_that_runs(small_ghn: GHN, name: str) -> None:
    """nn.LSTM reads its weights from a list (`_flat_weights`) that must follow the predicted tensors."""
    make, inputs = MODELS[name]
    with torch.device("meta"):
        model = make()
    model = ghn.predict(model, small_ghn)
    assert all(not w.is_meta for m in model.modules() if isinstance(m, nn.RNNBase) for w in m._flat_weights)
    _check_recurrent_model(model, inputs())


@pytest.mark.parametrize(
    ("name", "task"), [("gru-classifier", "digits"), ("lstm-lm", "pydoc"), ("lstm-lm-proj", "pydoc")]
)
def test_shipped_ghns_predict_recurrent_models_in_full(name: str, task: str) -> None:
    """`ghn.predict(model)` picks the shipped GHN of the model's task: the byte LSTM gets the pydoc text GHN."""
    make, inputs = MODELS[name]
    model = make()
    assert ghn.hub.default_ghn_for(model).metadata["task"] == task
    _check_recurrent_model(ghn.predict(model), inputs())


def test_layers_of_a_stacked_gru_get_different_predictions(small_ghn: GHN) -> None:
    """Each layer is its own node, at its own depth, so same-shape weights of two layers differ. (The two directions
    of one layer have identical node features and neighbours, so an untrained GHN predicts them alike.)"""
    model = ghn.predict(SequenceClassifier(), small_ghn)
    first, second = model.gru.weight_hh_l0.flatten(), model.gru.weight_hh_l1.flatten()  # both (3 * 16, 16)
    assert torch.corrcoef(torch.stack([first, second]))[0, 1].abs() < 0.9
