"""Recurrent models written in plain torch, shared by the graph and the prediction tests of nn.RNN/GRU/LSTM."""

from __future__ import annotations

import torch
from torch import nn


class SequenceClassifier(nn.Module):
    """A bidirectional two-layer GRU over a sequence of feature vectors and a linear head on its last step.

    Shapes:
        x: (B, T, 8)
        output: (B, 5)
    """

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(8, 16, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)  # (B, T, 32)
        return self.head(out[:, -1])


class ByteLM(nn.Module):
    """Byte embedding, a two-layer LSTM (optionally with projections) and a linear head over the 256 bytes.

    Shapes:
        tokens: (B, T) bytes
        output: (B, T, 256)
    """

    def __init__(self, proj_size: int = 0) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, 32)
        self.lstm = nn.LSTM(32, 48, num_layers=2, batch_first=True, proj_size=proj_size)
        self.head = nn.Linear(proj_size or 48, 256)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(tokens))  # (B, T, proj_size or 48)
        return self.head(out)
