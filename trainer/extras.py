"""When the periodic extras run: the pictures of what the model learned (kernels, feature maps,
Grad-CAM), parameter and gradient histograms, confusion-matrix images, a task's images, the
curves. None of them is needed for training to be correct, and on the short epochs of small
data sets each would cost more than the epoch's training; so each runs on a measured time
budget.

The rule, per extra (an :class:`EpochSchedule`), after an epoch:

- the last epoch always gets it, so a short run still shows everything; when training stops
  early (early stopping, a time limit), the extras run once more for the weights it ends with;
- ``every_n_epochs`` set: the first epoch and every n-th (an explicit choice wins);
- ``trainer.extras_budget`` 0: nothing more (the end only);
- otherwise the first epoch, and any epoch after which what this extra has taken so far plus
  what it took last time stay within ``trainer.extras_budget`` (default 0.01) of the training
  time so far. Each extra has its own allowance, so a costly one cannot starve a cheap one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class ExtrasBudget:
    """The run's allowance for its periodic extras: each may take ``fraction`` of the training
    time so far; ``spent`` counts what each has taken, by name (in the Trainer's checkpoints,
    so a resumed run keeps to it)."""

    def __init__(self, fraction: float = 0.01, clock: Callable[[], float] = time.perf_counter):
        self.fraction = fraction
        self.clock = clock  # a fake one in tests
        self.spent: dict[str, float] = {}

    def allows(self, name: str, cost: float, training_seconds: float) -> bool:
        """Whether ``cost`` more seconds keep extra ``name`` within its allowance."""
        return self.spent.get(name, 0.0) + cost <= self.fraction * training_seconds

    def charge(self, name: str, seconds: float) -> None:
        self.spent[name] = self.spent.get(name, 0.0) + seconds


class EpochSchedule:
    """When the extra ``name`` runs (see the module's docstring). ``trainer`` gives ``epoch``
    (epochs completed), ``max_epochs``, ``fit_seconds`` and ``extras`` (the
    :class:`ExtrasBudget`). ``first=False`` leaves out the first epoch (a curve of one point
    shows nothing). ``cost``: what the extra is expected to take before it has run (None:
    unknown, so it runs once to find out)."""

    def __init__(
        self,
        name: str,
        every_n_epochs: int | None = None,
        first: bool = True,
        cost: float | None = None,
    ) -> None:
        self.name = name
        self.every_n_epochs = every_n_epochs
        self.first = first
        self.cost = cost  # seconds the extra took when it last ran
        self.done_epoch: int | None = None  # the epoch it last ran after

    def due(self, trainer: Any) -> bool:
        """Whether the extra runs after the epoch ``trainer`` has just completed."""
        epoch, budget = trainer.epoch, trainer.extras
        if epoch >= trainer.max_epochs:
            return True
        if self.every_n_epochs:
            return (self.first and epoch == 1) or epoch % self.every_n_epochs == 0
        if budget.fraction <= 0:
            return False
        if epoch == 1:
            return self.first
        if self.cost is None:  # not run yet in this process (a resumed run): find out its cost
            return True
        return budget.allows(self.name, self.cost, trainer.fit_seconds)

    def run(self, trainer: Any, extra: Callable[[], Any]) -> None:
        """Run ``extra`` now, timing it against the budget."""
        budget = trainer.extras
        started = budget.clock()
        extra()
        self.cost = budget.clock() - started
        budget.charge(self.name, self.cost)
        self.done_epoch = trainer.epoch

    def run_if_due(self, trainer: Any, extra: Callable[[], Any]) -> None:
        """After an epoch: run ``extra`` if :meth:`due`."""
        if self.due(trainer):
            self.run(trainer, extra)

    def run_at_end(self, trainer: Any, extra: Callable[[], Any]) -> None:
        """When training ends: run ``extra`` unless it already ran after the last epoch."""
        if trainer.epoch and self.done_epoch != trainer.epoch:
            self.run(trainer, extra)
