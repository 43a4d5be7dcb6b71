"""``evaluate`` and ``predict`` from a checkpoint: plain objects in, metrics and records out.

A checkpoint carries the run's resolved config and, under ``meta["data"]``, what the model
needs from the training data (class names, a vocabulary), so :func:`training_stand_in` lets the
task's ``build_model`` rebuild the model on a machine without that data. Each task says how it
predicts (``task.predict(model, inputs, options) -> records``); the CLI reads the config and
prints the records.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from torchcamp.trainer.errors import UserError
from torchcamp.trainer.options import Compute, Reporting
from torchcamp.trainer.trainer import Trainer


def training_stand_in(path: Path, meta: Mapping[str, Any]) -> SimpleNamespace:
    """An object with the attributes ``build_model`` reads from the training set (``classes``,
    ``vocab``), made from the checkpoint's ``meta["data"]``."""
    data = meta.get("data")
    if data is None:
        raise UserError(
            f"checkpoint {path} has no description of its training data (meta.data: class "
            "names, vocabulary), which predict needs: it was written by an older torchcamp; "
            "train the run again to predict with it (evaluate works, given the data)"
        )
    return SimpleNamespace(**data)


def check_same_data(
    path: Path, saved: Mapping[str, Any] | None, current: Mapping[str, Any]
) -> None:
    """Refuse data whose description ``current`` (classes, vocabulary: the task's
    ``describe_data`` of this training set) differs from ``saved``, the one the checkpoint was
    trained on: the weights might still load, and every metric would be wrong. An older
    checkpoint without ``meta["data"]`` (``saved`` None) is not checked."""
    if saved is None:
        return
    differ = sorted(key for key in {*saved, *current} if saved.get(key) != current.get(key))
    if differ:
        raise UserError(
            f"checkpoint {path} was trained on other {' and '.join(differ)} than this data has "
            f"(e.g. {differ[0]} {saved.get(differ[0])} vs {current.get(differ[0])}): set "
            "data.root to the run's data"
        )


def evaluate(
    step: Callable[..., Mapping[str, Any]],
    model: nn.Module,
    optimizer: Any,
    loss_fn: Callable | None,
    loaders: Mapping[str, Any],
    *,
    summarize_fn: Callable | None = None,
    make_evaluator: Callable | None = None,
    device: torch.device,
    precision: str = "32",
    channels_last: bool = False,
) -> dict[str, float]:
    """``{"val/acc": ..., "test/loss": ...}``: the model over each of ``loaders`` (by split
    name) as the run evaluated it, through a Trainer with the task's ``step``, ``summarize_fn``
    and ``make_evaluator``, at the run's precision. ``optimizer`` is the run's (the Trainer
    names a GAN's phases after its optimizers); nothing is trained."""
    trainer = Trainer(
        model,
        step,
        optimizer,
        loss_fn,
        device=device,
        summarize_fn=summarize_fn,
        make_evaluator=make_evaluator,
        compute=Compute(precision=precision, channels_last=channels_last),
        reporting=Reporting(progress=False),
    )
    metrics: dict[str, float] = {}
    for split, loader in loaders.items():
        metrics |= trainer.evaluate(loader, split)
    return metrics
