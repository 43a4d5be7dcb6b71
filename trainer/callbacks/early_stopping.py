"""Early stopping: end training when the monitored metric has stopped improving."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from torchcamp.trainer.callbacks import Callback
from torchcamp.trainer.errors import UserError
from torchcamp.trainer.status import RunStatus

log = logging.getLogger(__name__)


class EarlyStopping(Callback):
    """Stops training after ``patience`` epochs in which ``monitor`` did not improve by more
    than ``min_delta`` (Lightning's ``EarlyStopping``, with its names and its rule: an epoch
    improves when its value is below ``best - min_delta``, mode ``min``, or above
    ``best + min_delta``, mode ``max``; a NaN never improves).

    The Trainer then finishes the epoch's bookkeeping (``last.pt``, ``metrics.csv``), scores the
    test split with the best weights and the run ends with status ``early_stopped``. The
    counters are in every checkpoint, so a run killed and resumed stops at the same epoch as an
    unbroken one; under DDP every rank sees the same reduced metric and stops with the others.
    """

    # After the loggers (they record the epoch that stops the run), before the checkpoint (the
    # epoch's last.pt holds the counters as they are after this epoch).
    order = 15

    def __init__(
        self, monitor: str, patience: int = 3, min_delta: float = 0.0, mode: str = "min"
    ) -> None:
        self.monitor, self.patience, self.min_delta, self.mode = monitor, patience, min_delta, mode
        self.best: float | None = None
        self.best_epoch = 0
        self.wait = 0  # epochs since the last improvement
        self.stopped_epoch = 0  # the epoch that stopped the run; 0 while it goes on

    def on_fit_start(self, trainer: Any) -> None:
        if self.stopped_epoch:  # killed after it stopped, before the run ended: stop again
            trainer.should_stop, trainer.stop_reason = True, RunStatus.EARLY_STOPPED

    def on_epoch_end(self, trainer: Any, metrics: Mapping[str, float]) -> None:
        if self.monitor not in metrics:
            raise UserError(
                f"callbacks.early_stopping.monitor={self.monitor} is not a metric of this run "
                f"(it has {', '.join(sorted(metrics))}): pick one of them, e.g. "
                "callbacks.early_stopping.monitor=val/loss"
            )
        value = metrics[self.monitor]
        if self._improves(value):
            self.best, self.best_epoch, self.wait = value, trainer.epoch, 0
            return
        self.wait += 1
        if self.wait < self.patience:
            return
        self.stopped_epoch = trainer.epoch
        trainer.should_stop, trainer.stop_reason = True, RunStatus.EARLY_STOPPED
        best = "none" if self.best is None else f"{self.best:.4g} at epoch {self.best_epoch}"
        log.info(
            "early stopping at epoch %d: %s has not improved by more than min_delta=%g in the "
            "last %d epoch(s) (patience); the best was %s",
            trainer.epoch,
            self.monitor,
            self.min_delta,
            self.wait,
            best,
        )

    def _improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.wait, self.stopped_epoch = state["wait"], state["stopped_epoch"]
