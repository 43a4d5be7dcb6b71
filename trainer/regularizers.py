"""Explicit weight penalties added to the training loss (``conf/regularizer/``)."""

from __future__ import annotations

import torch
from torch import nn


class L2Penalty:
    """``weight / 2 * sum(w**2)`` over weights, not biases: the course's Regularization class."""

    def __init__(self, weight: float = 1e-4) -> None:
        self.weight = weight

    def __call__(self, model: nn.Module) -> torch.Tensor:
        weights = [param for name, param in model.named_parameters() if _is_weight(name, param)]
        return 0.5 * self.weight * sum(param.pow(2).sum() for param in weights)


def _is_weight(name: str, param: nn.Parameter) -> bool:
    # Biases (and normalisation shifts) are left alone, as the course's penalty does.
    return param.requires_grad and not name.endswith("bias")
