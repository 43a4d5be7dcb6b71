"""The callback protocol: extras around the training loop as a small sorted list (fastai's
``run_cbs``). This module imports nothing heavy, so importing the Trainer stays light; the
callbacks themselves live in this package's modules (``checkpointing``, ``tensorboard``,
``model_views``).

Events, in the order the Trainer fires them:

- ``on_fit_start(trainer)`` before the first batch;
- ``on_train_step_end(trainer, outputs)`` after each optimizer step;
- ``on_save_checkpoint(trainer)`` just before a checkpoint of the current step is written
  (loggers flush, so nothing logged up to that step can be lost behind it);
- ``on_epoch_end(trainer, metrics)`` after validation;
- ``on_train_end(trainer)`` after the last epoch or when training stops early (time limit,
  early stopping), before the test split is scored;
- ``on_fit_end(trainer, metrics)`` with the final metrics (test included);
- ``on_nonfinite_loss(trainer)`` when a NaN/Inf loss stops the run;
- ``on_interrupt(trainer)`` when a signal stops it at a step boundary;
- ``on_exception(trainer, error)`` when ``train`` ends on any other error (a tracker marks
  its run failed).

A callback with state to carry across a resume defines ``state_dict()`` and
``load_state_dict(state)``; the Trainer stores it in the checkpoint under the class's name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


class Callback:
    """Base class: override the events you need. Lower ``order`` runs first."""

    order = 0


def run_callbacks(callbacks: Iterable[Any], event: str, *args: Any) -> None:
    """Call ``event`` on every callback that defines it, in ``order`` (0 when it has none)."""
    for method in callback_methods(callbacks, event):
        method(*args)


def callback_methods(callbacks: Iterable[Any], event: str) -> list[Callable[..., Any]]:
    """The bound ``event`` methods of the callbacks that define it, in ``order``: looked up
    once per epoch for a per-step event, not on every step."""
    ordered = sorted(callbacks, key=lambda cb: getattr(cb, "order", 0))
    return [getattr(cb, event) for cb in ordered if getattr(cb, event, None) is not None]
