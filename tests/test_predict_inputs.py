"""`ghn.predict(model)` on models that declare no input (issue 12.1): traced on the input of the GHN's own task,
after what the model declares; a model whose input differs from the GHN's task gets a note; and when no input works,
the error lists what was tried and shows the call to make. The models are written as users write them."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

import ghn
from ghn.errors import GraphError
from ghn.graph.inputs import task_inputs

transformers = pytest.importorskip("transformers")


class LeNet(nn.Module):
    """conv-pool-conv-pool-linear for 1x8x8 digits: its head only fits 8x8 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


class TinyViT(nn.Module):
    """Patch embedding, class token and position embedding on the model itself, nn.TransformerEncoder, linear head."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, dim, 2, stride=2)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 17, dim))
        layer = nn.TransformerEncoderLayer(dim, 2, 64, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], 1) + self.pos_embed
        return self.head(self.encoder(x)[:, 0])


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * mask


def _hf_vit(image_size: int, channels: int):
    config = transformers.ViTConfig(
        image_size=image_size, patch_size=2, num_channels=channels, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, num_labels=10,
    )  # fmt: skip
    return transformers.ViTForImageClassification(config)


@pytest.mark.parametrize("make", [LeNet, TinyViT], ids=["lenet", "vit"])
def test_a_model_that_declares_no_input_is_traced_on_the_ghns_task(make):
    model = make()
    _, report = ghn.predict(model, return_report=True)
    assert report.is_complete
    assert report.example_inputs == "the task of GHN 'logah-tiny.digits' (digits): (1, 1, 8, 8) float32"
    assert "traced on the task of GHN 'logah-tiny.digits'" in str(report) and not report.notes
    assert torch.isfinite(model(torch.randn(2, 1, 8, 8))).all()


def test_a_given_ghn_lends_its_task_too():
    model = LeNet()
    report = ghn.predict(model, ghn.from_pretrained("logah-tiny.digits")).ghn_report
    assert report.is_complete and "(1, 1, 8, 8)" in report.example_inputs


def test_what_the_model_declares_comes_first():
    model = _hf_vit(8, 1)
    report = ghn.predict(model).ghn_report
    assert report.example_inputs == "its Hugging Face config: pixel_values=(1, 1, 8, 8) float32"
    assert report.is_complete and not report.notes


def test_a_declared_input_unlike_the_ghns_task_is_noted_in_the_report_and_the_log(caplog):
    model = _hf_vit(32, 3)
    with caplog.at_level(logging.WARNING, logger="ghn"):
        report = ghn.predict(model).ghn_report
    assert report.is_complete and len(report.notes) == 1
    assert "(1, 3, 32, 32)" in report.notes[0] and "trained on 1x8x8 images (digits)" in report.notes[0]
    assert report.notes[0] in caplog.text and f"note: {report.notes[0]}" in str(report)


def test_another_class_count_is_noted_in_the_report():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 3))
    report = ghn.predict(model).ghn_report
    assert any("10 classes" in note and "has 3" in note and "untrained" in note for note in report.notes)


def test_a_byte_lstm_lm_gets_token_ids_below_the_vocabulary():
    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.lstm, self.head = nn.Embedding(256, 32), nn.LSTM(32, 32, batch_first=True), nn.Linear(32, 256)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.lstm(self.embed(ids))[0])

    report = ghn.predict(LM()).ghn_report
    assert report.is_complete and not report.notes
    assert report.example_inputs.endswith("(1, 16) int64")


def test_when_no_input_works_the_error_lists_what_was_tried_and_the_call_to_make():
    with pytest.raises(GraphError) as info:
        ghn.predict(TwoInputs())
    message = str(info.value)
    assert "failed on every input ghn derived" in message
    assert "the task of GHN 'logah-tiny.digits' (digits) (1, 1, 8, 8) float32 (TypeError" in message
    assert "its first layer (1, 4) float32" in message
    assert "ghn.predict(model, example_inputs=torch.randn(" in message


def test_build_graph_tries_task_inputs_before_the_first_layer_guess():
    model = LeNet()
    with pytest.raises(GraphError, match=r"forward of 'LeNet' failed on the example inputs"):
        ghn.build_graph(model)  # the first-layer guess (224x224) does not fit its head
    inputs = task_inputs("image", {"in_channels": 1, "image_size": 8}, torch.device("meta"))
    graph = ghn.build_graph(model, task_inputs=[("digits", inputs)])
    assert graph.inputs == "digits: (1, 1, 8, 8) float32" and graph.input_shapes == ((1, 1, 8, 8),)
    assert graph.coverage().is_complete


def test_task_inputs_of_text_are_token_ids_within_the_context():
    args, kwargs = task_inputs("text", {"vocab_size": 256, "n_positions": 8}, torch.device("meta"))
    assert args[0].shape == (1, 8) and args[0].dtype == torch.long and not kwargs
    assert task_inputs("image", {}, torch.device("meta")) is None


def test_export_traces_like_predict(tmp_path):
    from safetensors.torch import load_file

    from ghn.export import export_predicted, read_export_record

    path = export_predicted(LeNet(), None, tmp_path / "lenet.safetensors")  # no input declared, no GHN given
    LeNet().load_state_dict(load_file(path), strict=True)
    assert read_export_record(path)["ghn"]["name"] == "logah-tiny.digits"
