"""Task losses and metrics shared by training and evaluation: cross-entropy and accuracy for classifiers,
next-token loss and perplexity (and bits per token) for language models."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

__all__ = ["logits_of", "task_loss", "evaluate", "batchnorm_batch_stats"]


def logits_of(output: Any) -> Tensor:
    """Logits from a model output: a tensor, or an object/dict with `logits` (Hugging Face)."""
    if isinstance(output, Tensor):
        return output
    logits = output["logits"] if isinstance(output, Mapping) else getattr(output, "logits", None)
    if logits is None:
        raise TypeError(f"Cannot find logits in a model output of type {type(output).__name__!r}.")
    return logits


def task_loss(output: Any, target: Tensor) -> tuple[Tensor, Tensor]:
    """(mean cross-entropy, number of correct predictions) for (B, K) or (B, T, V) logits."""
    logits = logits_of(output)
    logits = logits.reshape(-1, logits.shape[-1])
    target = target.reshape(-1)
    loss = F.cross_entropy(logits.float(), target)
    correct = (logits.argmax(-1) == target).sum()
    return loss, correct


def batchnorm_batch_stats(model: nn.Module) -> nn.Module:
    """Eval mode except BatchNorm, which uses batch statistics: how the GHN-2 protocol scores networks with no
    training (their running statistics are meaningless before training)."""
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.train()
    return model


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], *, params: Mapping[str, Tensor] | None = None) -> dict[str, float]:
    """Loss, accuracy and perplexity of `model` (or of `params` in it, via functional_call) over `batches`.

    BatchNorm uses batch statistics (see `batchnorm_batch_stats`); nothing in `model` is changed.
    """
    was_training = model.training
    batchnorm_batch_stats(model)
    device = next(iter(params.values())).device if params else next(model.parameters()).device
    buffers = {name: b.clone() for name, b in model.named_buffers()}  # running stats must stay untouched
    total_loss, total_correct, count = 0.0, 0, 0
    try:
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            state = {**buffers, **(params or {})}
            output = functional_call(model, state, (x,)) if state else model(x)
            loss, correct = task_loss(output, y)
            n = y.numel()
            total_loss += float(loss) * n
            total_correct += int(correct)
            count += n
    finally:
        model.train(was_training)
    mean_loss = total_loss / max(count, 1)
    return {"loss": mean_loss, "acc": total_correct / max(count, 1), "ppl": math.exp(min(mean_loss, 50.0))}
