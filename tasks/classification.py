"""The step shared by single-label classification tasks."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def classification_step(
    model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], loss_fn: Callable
) -> dict[str, torch.Tensor]:
    """``(inputs, labels)`` -> loss and accuracy of the batch."""
    inputs, labels = batch
    logits = model(inputs)
    loss = loss_fn(logits, labels)
    accuracy = (logits.argmax(dim=1) == labels).float().mean()
    return {"loss": loss, "acc": accuracy}
