"""Learning-rate schedules that torch does not ship as one class (``conf/scheduler/``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch.optim.lr_scheduler import LRScheduler, SequentialLR


class WarmupThen:
    """A ``LambdaLR`` factor: linear warmup over ``warmup_steps``, then constant or cosine.

    With ``after="cosine"`` the factor falls from 1 to 0 at ``total_steps``. A plain object
    (not a lambda) so that ``LambdaLR.state_dict`` saves it as primitives.
    """

    def __init__(self, warmup_steps: int, after: str = "constant", total_steps: int | None = None):
        if after not in ("constant", "cosine"):
            raise ValueError(f"after must be constant or cosine, got {after!r}")
        if after == "cosine" and not total_steps:
            raise ValueError("after=cosine needs total_steps")
        self.warmup_steps, self.after, self.total_steps = warmup_steps, after, total_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.after == "constant":
            return 1.0
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def sequential(
    optimizer: torch.optim.Optimizer,
    schedulers: Sequence[Callable[[torch.optim.Optimizer], LRScheduler]],
    milestones: Sequence[int],
) -> SequentialLR:
    """``SequentialLR`` over scheduler factories, each bound to ``optimizer`` here."""
    return SequentialLR(optimizer, [make(optimizer) for make in schedulers], list(milestones))
