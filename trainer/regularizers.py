"""Weight penalties added to the loss, and constraints applied after each optimizer step.

A regularizer has two hooks, both optional: ``penalty(model)`` returns a tensor the Trainer
adds to the training loss (logged as ``train/reg_loss``), and ``after_step(model)`` changes
the weights in place after every optimizer step. Biases are never regularized, as in the
course's Regularization class.
"""

from __future__ import annotations

import torch
from torch import nn


def weights(model: nn.Module) -> list[nn.Parameter]:
    """Trainable parameters that are not biases."""
    return [p for name, p in model.named_parameters() if p.requires_grad and not _is_bias(name)]


def _is_bias(name: str) -> bool:
    return name.endswith("bias")


class Regularizer:
    """Base class: no penalty, no constraint."""

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        return None

    def after_step(self, model: nn.Module) -> None:
        return None


class L1Penalty(Regularizer):
    """``weight * sum(|w|)``."""

    def __init__(self, weight: float = 1e-5) -> None:
        self.weight = weight

    def penalty(self, model: nn.Module) -> torch.Tensor:
        return self.weight * sum(p.abs().sum() for p in weights(model))


class L2Penalty(Regularizer):
    """``weight / 2 * sum(w**2)``: the course's L2 term."""

    def __init__(self, weight: float = 1e-4) -> None:
        self.weight = weight

    def penalty(self, model: nn.Module) -> torch.Tensor:
        return 0.5 * self.weight * sum(p.pow(2).sum() for p in weights(model))


class ElasticPenalty(Regularizer):
    """``weight * (l1_ratio * sum|w| + (1 - l1_ratio) / 2 * sum w**2)``."""

    def __init__(self, weight: float = 1e-4, l1_ratio: float = 0.5) -> None:
        self.weight, self.l1_ratio = weight, l1_ratio

    def penalty(self, model: nn.Module) -> torch.Tensor:
        l1 = sum(p.abs().sum() for p in weights(model))
        l2 = sum(p.pow(2).sum() for p in weights(model))
        return self.weight * (self.l1_ratio * l1 + (1 - self.l1_ratio) / 2 * l2)


class OrthogonalPenalty(Regularizer):
    """``weight * sum ||W W^T - I||_F`` over weight matrices, each flattened to (rows, -1)."""

    def __init__(self, weight: float = 1e-4) -> None:
        self.weight = weight

    def penalty(self, model: nn.Module) -> torch.Tensor:
        total = 0.0
        for p in weights(model):
            if p.ndim < 2:  # normalisation scales are vectors, not matrices
                continue
            flat = p.flatten(1)
            gram = flat @ flat.T
            total = total + torch.linalg.matrix_norm(gram - torch.eye(len(gram), device=p.device))
        return self.weight * total


class MaxNorm(Regularizer):
    """After each step, rescale each weight row (a unit's incoming weights) to norm <= max_val."""

    def __init__(self, max_val: float = 3.0, eps: float = 1e-12) -> None:
        self.max_val, self.eps = max_val, eps

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        for p in weights(model):
            if p.ndim < 2:
                continue
            rows = p.view(len(p), -1)
            norms = rows.norm(dim=1, keepdim=True)
            # Only rows above the limit change; the others keep their exact values.
            rows.mul_(torch.where(norms > self.max_val, self.max_val / (norms + self.eps), 1.0))
