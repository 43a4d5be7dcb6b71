"""Losses, in one place: the course's custom losses (focal loss, Dice loss and the asymmetric
sales-forecast loss) and the adapters through which tasks feed any loss.

The custom losses are plain ``torch.nn.Module``s with ``forward(input, target) -> Tensor``, so a
loss config can name them in ``_target_`` exactly like a ``torch.nn`` loss. The adapters wrap
the loss a config names: :class:`AdaptedLoss` feeds it from a classifier's logits and class
indices, :class:`AdversarialLoss` from a GAN discriminator's probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


class FocalLoss(nn.Module):
    """Multi-class focal loss on logits ``[N, C]`` with class-index targets ``[N]``.

    ``FL = -alpha_t * (1 - p_t) ** gamma * log(p_t)``, where ``p_t`` is the softmax probability
    of the true class (Lin et al., 2017). ``gamma`` down-weights examples that are already
    classified well; ``gamma=0`` with ``alpha=None`` is plain cross-entropy.

    Args:
        alpha: ``None`` (no weighting), one float applied to every example, or a list/tensor of
            ``C`` per-class weights (``alpha_t`` is then the weight of the true class).
        gamma: the focusing exponent, ``>= 0``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (a per-example loss of shape ``[N]``).
    """

    alpha: Tensor | None

    def __init__(
        self,
        alpha: float | Sequence[float] | Tensor | None = None,
        gamma: float = 2.0,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        _check_reduction(reduction)
        self.gamma = float(gamma)
        self.reduction = reduction
        if alpha is None:
            self.register_buffer("alpha", None)
        else:
            weights = torch.as_tensor(alpha, dtype=torch.float32)
            if weights.ndim > 1:
                raise ValueError(
                    f"alpha must be a scalar or a 1-D list, got shape {tuple(weights.shape)}"
                )
            self.register_buffer("alpha", weights)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """``input``: logits ``[N, C]``; ``target``: class indices ``[N]``."""
        if input.ndim != 2:
            raise ValueError(f"FocalLoss expects logits of shape [N, C], got {tuple(input.shape)}")
        target = target.long()
        log_p = F.log_softmax(input.float(), dim=1)
        log_pt = log_p.gather(1, target.unsqueeze(1)).squeeze(1)
        pt = log_pt.exp()
        loss = -((1.0 - pt) ** self.gamma) * log_pt
        if self.alpha is not None:
            if self.alpha.ndim == 0:
                loss = self.alpha * loss
            else:
                if self.alpha.numel() != input.shape[1]:
                    raise ValueError(
                        f"alpha has {self.alpha.numel()} class weights but the input has "
                        f"{input.shape[1]} classes"
                    )
                loss = self.alpha.to(loss.device)[target] * loss
        return _reduce(loss, self.reduction)

    def extra_repr(self) -> str:
        alpha = None if self.alpha is None else self.alpha.tolist()
        return f"alpha={alpha}, gamma={self.gamma}, reduction={self.reduction!r}"


class DiceLoss(nn.Module):
    """The course's Dice loss: ``1 - Dice(sigmoid(input), target)`` over the whole batch.

    The input is raw logits: the sigmoid is applied here. Inputs and targets are flattened and
    ``dice = (2 * sum(p * t) + smooth) / (sum(p) + sum(t) + smooth)``; ``smooth`` keeps the
    ratio defined (and the loss 0) when both are empty. The result is one scalar per batch.

    Args:
        smooth: the additive smoothing term, ``> 0`` to avoid dividing by zero.
    """

    def __init__(self, smooth: float = 1.0) -> None:
        super().__init__()
        self.smooth = float(smooth)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """``input``: logits of any shape; ``target``: 0/1 values with as many elements."""
        probs = torch.sigmoid(input.float()).reshape(-1)
        target = target.float().reshape(-1)
        if probs.numel() != target.numel():
            raise ValueError(
                f"DiceLoss: input has {probs.numel()} elements but target has {target.numel()}"
            )
        intersection = (probs * target).sum()
        dice = (2.0 * intersection + self.smooth) / (probs.sum() + target.sum() + self.smooth)
        return 1.0 - dice

    def extra_repr(self) -> str:
        return f"smooth={self.smooth}"


class AsymmetricLoss(nn.Module):
    """The course's sales-forecast loss: over- and under-prediction cost different amounts.

    For a prediction ``y'`` and a target ``y``, the cost is ``over * (y' - y)`` when
    ``y' > y`` and ``under * (y - y')`` otherwise. With the defaults, selling out (predicting
    too little) costs 10 per unit and overstocking costs 1.

    Args:
        over: cost per unit of over-prediction, ``>= 0``.
        under: cost per unit of under-prediction, ``>= 0``.
        reduction: ``"mean"`` | ``"sum"`` over all elements, or ``"none"`` (elementwise).
    """

    def __init__(
        self, over: float = 1.0, under: float = 10.0, reduction: Reduction = "mean"
    ) -> None:
        super().__init__()
        if over < 0 or under < 0:
            raise ValueError(f"over and under must be >= 0, got over={over}, under={under}")
        _check_reduction(reduction)
        self.over = float(over)
        self.under = float(under)
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """``input``: predictions; ``target``: true values of the same shape."""
        if input.shape != target.shape:
            raise ValueError(
                f"AsymmetricLoss: input shape {tuple(input.shape)} != target shape "
                f"{tuple(target.shape)}"
            )
        diff = input - target.to(input.dtype)
        loss = torch.where(diff > 0, self.over * diff, -self.under * diff)
        return _reduce(loss, self.reduction)

    def extra_repr(self) -> str:
        return f"over={self.over}, under={self.under}, reduction={self.reduction!r}"


# ---- adapters: how a task feeds the loss a config names ----------------------------------

# How logits become the loss's input, and class indices its target.
INPUTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "logits": lambda logits: logits,
    "log_softmax": lambda logits: logits.log_softmax(dim=1),
    "softmax": lambda logits: logits.softmax(dim=1),
    "sigmoid": torch.sigmoid,
}
TARGETS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "index": lambda labels, classes: labels,
    "one_hot": lambda labels, classes: F.one_hot(labels, classes).float(),
    "signed": lambda labels, classes: F.one_hot(labels, classes).float() * 2 - 1,
}


class AdaptedLoss(nn.Module):
    """``loss(INPUTS[input](logits), TARGETS[target](labels))``, computed in float32.

    Losses run outside autocast: some (``BCELoss``) refuse reduced precision, and all are more
    accurate in float32.
    """

    def __init__(self, loss: nn.Module, input: str = "logits", target: str = "index") -> None:
        super().__init__()
        if input not in INPUTS or target not in TARGETS:
            raise ValueError(
                f"adapt.input must be one of {sorted(INPUTS)} and adapt.target one of "
                f"{sorted(TARGETS)}, got input={input!r}, target={target!r}"
            )
        self.loss, self.input, self.target = loss, input, target
        self.plain = input == "logits" and target == "index"

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # One module call per step, this one: the wrapped loss's forward is called as a
        # function (it runs every step; hooks on the wrapped loss itself are not run).
        loss = self.loss.forward if isinstance(self.loss, nn.Module) else self.loss
        if self.plain and logits.dtype == torch.float32:  # most steps: nothing to adapt
            return loss(logits, labels)
        autocast = torch.is_autocast_enabled(logits.device.type)
        with torch.autocast(logits.device.type, enabled=False) if autocast else nullcontext():
            prediction = INPUTS[self.input](logits.float())
            return loss(prediction, TARGETS[self.target](labels, logits.shape[1]))


# Criteria that compare probabilities with targets of the same shape: what AdversarialLoss wraps.
GAN_CRITERIA = (nn.BCELoss, nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss)


class AdversarialLoss(nn.Module):
    """A criterion on D's probabilities against constant targets: 1 for real, 0 for fake, or
    ``1 - s`` and ``s`` with label smoothing ``s`` (the course's tip: 0.9 and 0.1)."""

    def __init__(self, criterion: Callable, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.criterion, self.label_smoothing = criterion, label_smoothing

    def forward(self, scores: torch.Tensor, real: bool) -> torch.Tensor:
        target = 1.0 - self.label_smoothing if real else self.label_smoothing
        # BCE on probabilities is unsafe in float16 (autocast refuses it): compute it in fp32.
        with torch.autocast(scores.device.type, enabled=False):
            scores = scores.float()
            return self.criterion(scores, torch.full_like(scores, target))
