"""The Trainer's run state: where the run is (epoch, step, position in the epoch, best metric,
training time, history) and the checkpoint that holds it. :class:`RunState` is a part of
:class:`~torchcamp.trainer.trainer.Trainer` kept in its own file; it works on the Trainer's
state (``module``, ``optimization``, ``callbacks``, ...).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import torch

from torchcamp.trainer.callbacks import callback_states, load_callback_states
from torchcamp.trainer.checkpoint import load_weights
from torchcamp.trainer.metrics import EpochSums
from torchcamp.trainer.utils import get_rng_state


class RunState:
    """The Trainer's position in its run, and its checkpoint (see the module's docstring)."""

    def _reset_progress(self) -> None:
        """Where a new run starts: no epoch, step or best yet; a checkpoint restores these."""
        self.epoch = 0  # epochs completed
        self.global_step = 0  # optimizer steps taken
        # Batches of the current epoch already trained on: a checkpoint written mid-epoch (always
        # at the end of an optimizer step) continues from here, with the epoch's sums so far.
        self.batch_in_epoch = 0
        self.batches_per_epoch: int | None = None
        self._train_sums = EpochSums()
        # Set (to the signal's name) by a signal handler: stop at the next optimizer step.
        self.stop_requested: str | None = None
        self._resumed_rng: dict[str, Any] | None = None  # restored when fit starts
        self.best: float | None = None
        self.is_best = False  # did the last evaluation set a new best?
        # Training time (first training batch to now), counted across resumes: `fit_seconds`.
        self._seconds_before = 0.0  # of the runs this one continues
        self._fit_started: float | None = None
        # One row per epoch (epoch, step, its metrics, lr, seconds): metrics.csv and the curves.
        self.history: list[dict[str, float]] = []
        # Set by a callback (early stopping) or the time limit: training ends after this step
        # (time limit) or epoch (early stopping), then the test split is scored as usual.
        self.should_stop = False
        self.stop_reason: str | None = None  # "early_stopped" | "time_limit"

    @property
    def fit_seconds(self) -> float:
        """Seconds of training so far, from the first training batch, across resumes."""
        if self._fit_started is None:
            return self._seconds_before
        return self._seconds_before + time.perf_counter() - self._fit_started

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The first (for most tasks the only) optimizer."""
        return self.optimization.optimizer

    @property
    def scheduler(self) -> Any:
        """The first optimizer's scheduler, or None."""
        return self.optimization.scheduler

    @property
    def skipped_steps(self) -> int:
        """fp16: optimizer steps the GradScaler skipped (inf/NaN gradients)."""
        return self.optimization.skipped_steps

    @property
    def lr(self) -> float:
        """The learning rate of the first optimizer's first parameter group."""
        return self.optimizer.param_groups[0]["lr"]

    def _update_best(self, metrics: Mapping[str, float]) -> None:
        value = metrics.get(self.monitor)
        self.is_best = False
        if value is None or math.isnan(value):
            return
        better = max if self.monitor_mode == "max" else min
        if self.best is None or better(value, self.best) != self.best:
            self.best, self.is_best = value, True

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly, from the end of the last optimizer
        step: weights, optimizers, schedulers, scaler, position in the epoch and the epoch's
        sums so far, best metric, RNG states, callbacks' states."""
        return {
            "model": self.module.state_dict(),
            **self.optimization.state_dict(),  # optimizers, schedulers, scaler, skipped_steps
            "epoch": self.epoch,
            "global_step": self.global_step,
            "batch_in_epoch": self.batch_in_epoch,
            "batches_per_epoch": self.batches_per_epoch,
            "train_sums": self._train_sums.state_dict(),
            "best": self.best,
            "fit_seconds": self.fit_seconds,
            "extras_seconds": dict(self.extras.spent),
            "history": self.history,
            "rng": get_rng_state(),
            "callbacks": callback_states(self.callbacks),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved; training continues where it stopped (the RNG
        states are restored when :meth:`fit` starts)."""
        load_weights(self.module, state["model"], "the checkpoint")
        self.optimization.load_state_dict(state)
        self.epoch, self.global_step, self.best = (
            state["epoch"],
            state["global_step"],
            state["best"],
        )
        self.batch_in_epoch = state.get("batch_in_epoch", 0)
        self.batches_per_epoch = state.get("batches_per_epoch")
        self._train_sums.load_state_dict(state.get("train_sums") or {}, self.device)
        self._seconds_before = state.get("fit_seconds", 0.0)
        self.extras.spent = dict(state.get("extras_seconds") or {})
        self.history = [dict(row) for row in state.get("history", [])]
        load_callback_states(self.callbacks, state.get("callbacks") or {})
        self._resumed_rng = state["rng"]
