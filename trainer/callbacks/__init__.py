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
``load_state_dict(state)``; the Trainer stores it in the checkpoint under the callback's
``state_key`` (its name in the config's ``callbacks`` group), else its class's name.
A callback whose files training can do without (pictures, TensorBoard) marks its hooks
:func:`best_effort`: a failed write is one warning, not the end of the run.
"""

from __future__ import annotations

import difflib
import functools
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from torchcamp.trainer.errors import WriteFailed

log = logging.getLogger(__name__)

Hook = TypeVar("Hook", bound=Callable[..., Any])

# The events above, and the call a best_effort hook makes on a failed write.
EVENTS = (
    "on_fit_start",
    "on_train_step_end",
    "on_save_checkpoint",
    "on_epoch_end",
    "on_train_end",
    "on_fit_end",
    "on_nonfinite_loss",
    "on_interrupt",
    "on_exception",
    "on_output_failed",
)


class Callback:
    """Base class: override the events you need. Lower ``order`` runs first.

    ``output_dir`` and ``outputs`` name what a :func:`best_effort` callback writes (for its
    warning); ``output_failed`` turns true once a write of it failed.
    """

    order = 0
    output_dir: Path | None = None
    outputs = "its files"
    output_failed = False

    def on_output_failed(self) -> None:
        """Called once when a :func:`best_effort` hook's write failed: let go of open files."""


def best_effort(hook: Hook) -> Hook:
    """Mark a callback's ``hook`` as writing what training can do without (pictures,
    TensorBoard events): when a write fails (a full disk, a read-only folder, a file where
    a folder should be), the callback logs one warning naming the file and the error, and
    from then on its best-effort hooks return at once; training goes on. A full disk still
    stops the run, at the next checkpoint or ``metrics.csv``, which cannot be done without.
    """

    @functools.wraps(hook)
    def guarded(self: Callback, *args: Any, **kwargs: Any) -> Any:
        if self.output_failed:
            return None
        try:
            return hook(self, *args, **kwargs)
        except (OSError, WriteFailed) as error:
            if self.output_failed:  # a nested best-effort call failed first, and warned
                return None
            self.output_failed = True
            os_error = error.os_error if isinstance(error, WriteFailed) else error
            path = getattr(error, "path", None) or getattr(os_error, "filename", None)
            reason = getattr(os_error, "strerror", None) or error
            log.warning(
                "could not write %s (%s): the run goes on without %s",
                path or self.output_dir,
                reason,
                self.outputs,
            )
            self.on_output_failed()
            return None

    return guarded  # type: ignore[return-value]


def run_callbacks(callbacks: Iterable[Any], event: str, *args: Any) -> None:
    """Call ``event`` on every callback that defines it, in ``order`` (0 when it has none)."""
    for method in callback_methods(callbacks, event):
        method(*args)


def callback_methods(callbacks: Iterable[Any], event: str) -> list[Callable[..., Any]]:
    """The bound ``event`` methods of the callbacks that define it, in ``order``: looked up
    once per epoch for a per-step event, not on every step."""
    ordered = sorted(callbacks, key=lambda cb: getattr(cb, "order", 0))
    return [getattr(cb, event) for cb in ordered if getattr(cb, event, None) is not None]


def misnamed_events(cls: type) -> list[tuple[str, list[str]]]:
    """The methods of ``cls`` whose names look like an event and are none (``on_epoch_ends``,
    which would never be called), each with the events whose names are close to it."""
    found = []
    for name in sorted(dir(cls)):
        if name.startswith("on") and name not in EVENTS and callable(getattr(cls, name, None)):
            found.append((name, difflib.get_close_matches(name, EVENTS, n=3, cutoff=0.75)))
    return found


def state_key(callback: Any) -> str:
    """Where the checkpoint keeps ``callback``'s state: its ``state_key`` (its name in the
    config's ``callbacks`` group, set where callbacks are built), else its class's name."""
    return getattr(callback, "state_key", None) or type(callback).__name__


def callback_states(callbacks: Iterable[Any]) -> dict[str, Any]:
    """The states of the callbacks that have one, by :func:`state_key`."""
    return {state_key(cb): cb.state_dict() for cb in callbacks if hasattr(cb, "state_dict")}


def load_callback_states(callbacks: Iterable[Any], saved: Mapping[str, Any]) -> None:
    """Give each callback its state in ``saved`` (:func:`callback_states` of a checkpoint).
    A checkpoint written before callbacks were keyed by name holds a state under its class's
    name: it restores the one callback of that class (of two, neither: whose is it?)."""
    callbacks = list(callbacks)
    classes = Counter(type(cb).__name__ for cb in callbacks)
    for callback in callbacks:
        if not hasattr(callback, "load_state_dict"):
            continue
        state = saved.get(state_key(callback))
        if state is None and classes[type(callback).__name__] == 1:
            state = saved.get(type(callback).__name__)
        if state is not None:
            callback.load_state_dict(state)
