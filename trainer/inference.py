"""``evaluate`` and ``predict`` from a checkpoint: plain objects in, metrics and records out.

A checkpoint carries the run's resolved config and, under ``meta["data"]``, what the model
needs from the training data (class names, a vocabulary), so :func:`training_stand_in` lets the
task's ``build_model`` rebuild the model on a machine without that data. Each task says how it
predicts (``task.predict(model, inputs, options) -> records``); the CLI reads the config and
prints the records.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from torchcamp.trainer.errors import UserError
from torchcamp.trainer.options import Compute, Reporting
from torchcamp.trainer.trainer import Trainer

if TYPE_CHECKING:
    from torchcamp.tasks.contract import Task


@dataclass
class PredictOptions:
    """What a task's ``predict`` gets besides the model and the inputs.

    ``data`` is the checkpoint's ``meta["data"]`` (e.g. ``classes``, ``vocab``),
    ``data_options`` its config's task-specific ``data.*`` keys (e.g. ``image_size``),
    ``transforms`` the ``transforms`` group built (``{"train": ..., "eval": ...}``) or None.
    ``threshold`` is the lowest detection score kept, ``num_images`` how many images a
    generator draws (from noise seeded by ``seed``), ``top_k`` how many classes a name gets.
    Tasks that write files write them into ``output_dir``.
    """

    device: torch.device
    output_dir: Path
    batch_size: int = 16
    num_workers: int = 0
    data: dict[str, Any] = field(default_factory=dict)
    data_options: dict[str, Any] = field(default_factory=dict)
    transforms: dict[str, Any] | None = None
    threshold: float = 0.5
    num_images: int = 64
    seed: int = 0
    top_k: int = 3


def describe_training_data(task: Task, train_set: Any) -> dict[str, Any]:
    """What the model and its predictions need from the training data, as plain values for the
    checkpoint's ``meta["data"]``: the task's ``describe_data(train_set)``, or nothing."""
    return dict(task.describe_data(train_set)) if task.describe_data is not None else {}


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
    path: Path, saved: Mapping[str, Any] | None, task: Task, train_set: Any
) -> None:
    """Refuse data whose classes (or vocabulary) differ from those the checkpoint was trained on:
    the weights might still load, and every metric would be wrong. An older checkpoint
    without ``meta["data"]`` is not checked."""
    if saved is None:
        return
    current = describe_training_data(task, train_set)
    differ = sorted(key for key in {*saved, *current} if saved.get(key) != current.get(key))
    if differ:
        raise UserError(
            f"checkpoint {path} was trained on other {' and '.join(differ)} than this data has "
            f"(e.g. {differ[0]} {saved.get(differ[0])} vs {current.get(differ[0])}): set "
            "data.root to the run's data"
        )


def evaluate(
    task: Task,
    model: nn.Module,
    optimizer: Any,
    loss_fn: Callable | None,
    loaders: Mapping[str, Any],
    *,
    device: torch.device,
    precision: str = "32",
    channels_last: bool = False,
) -> dict[str, float]:
    """``{"val/acc": ..., "test/loss": ...}``: the model over each of ``loaders`` (by split
    name) as the run evaluated it, through a Trainer with the task's step, summary and
    evaluator, at the run's precision. ``optimizer`` is the run's (the Trainer names a GAN's
    phases after its optimizers); nothing is trained."""
    trainer = Trainer(
        model,
        task.step,
        optimizer,
        loss_fn,
        device=device,
        summarize_fn=task.summarize,
        make_evaluator=task.make_evaluator,
        compute=Compute(precision=precision, channels_last=channels_last),
        reporting=Reporting(progress=False),
    )
    metrics: dict[str, float] = {}
    for split, loader in loaders.items():
        metrics |= trainer.evaluate(loader, split)
    return metrics
