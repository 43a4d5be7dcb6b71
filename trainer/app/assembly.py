"""Building a run from its settings: the task, data, model, optimizers, schedulers, loss,
callbacks and the Trainer. ``train``, ``evaluate``, the benchmarks and the tests all build
through these functions.

The order matters in two places: the model is on its device before the optimizer exists (some,
Adagrad, create their state eagerly), and callbacks are built last, from a :class:`RunContext`
that holds everything before them.
"""

from __future__ import annotations

import functools
import importlib
import logging
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch
from torch import nn

from torchcamp.datasets.balance import class_weighted_loss
from torchcamp.trainer import devices, distributed
from torchcamp.trainer.app import builders
from torchcamp.trainer.app.data import build_datasets, build_loaders, cache_decoded
from torchcamp.trainer.app.run_dir import RunDirectory
from torchcamp.trainer.app.settings import Settings
from torchcamp.trainer.errors import UserError
from torchcamp.trainer.inference import describe_training_data
from torchcamp.trainer.trainer import Trainer

log = logging.getLogger("torchcamp")


@dataclass
class RunContext:
    """What a run is built from, handed to every callback factory that asks for ``run``.

    ``model`` is the bare model on ``device`` (before any DDP wrapping), ``meta`` what each
    checkpoint records about the run (task, group choices, overrides, the training data's
    class names or vocabulary), ``notes`` texts for the logs (a synthetic data set's warning).
    """

    settings: Settings
    directory: RunDirectory
    task: ModuleType
    splits: dict[str, Any]
    loaders: dict[str, Any]
    model: nn.Module
    device: torch.device
    is_main: bool
    meta: dict[str, Any]
    notes: dict[str, str] = field(default_factory=dict)
    cached_mb: float = 0.0


# What every task module defines (the README's task contract).
TASK_FUNCTIONS = ("build_datasets", "build_model", "step")


def load_task(settings: Settings) -> ModuleType:
    """The task's module (``task.module``), checked to define :data:`TASK_FUNCTIONS`."""
    name = settings.task.module
    try:
        task = importlib.import_module(name)
    except ImportError as error:
        raise UserError(
            f"task.module={name}: cannot import it ({error}); give an importable module such "
            "as torchcamp.tasks.rmb"
        ) from error
    missing = [f for f in TASK_FUNCTIONS if not callable(getattr(task, f, None))]
    if missing:
        raise UserError(
            f"task.module={name} is not a task: it lacks {', '.join(missing)} (a task module "
            f"defines {', '.join(TASK_FUNCTIONS)})"
        )
    return task


def build_model(
    settings: Settings, task: ModuleType, train_set: Any, device: torch.device
) -> nn.Module:
    """The task's model from the ``model`` node, finished by what ``train_set`` says (its
    classes, vocabulary; a stand-in for it when predicting), on ``device``."""
    return builders.build_model(settings.model, task, train_set).to(device)


def build_optimizers(settings: Settings, task: ModuleType, model: nn.Module) -> tuple[Any, Any]:
    """``(parts, optimizer)``: a GAN names its parts (D, G), one optimizer each; other tasks
    have no parts (None) and one optimizer."""
    parts = task.optimized_modules(model) if hasattr(task, "optimized_modules") else None
    optimizer = builders.build_optimizers(
        settings.optimizer, model, parts, settings.task.optimizers
    )
    return parts, optimizer


def build_loss(settings: Settings, task: ModuleType, train_set: Any) -> Any:
    """The loss as the task adapts it; ``data.balance=weights`` weights the classes by their
    inverse frequencies in ``train_set``."""
    loss_name = settings.choices.get("loss", "loss")
    node = settings.loss or {}
    if settings.data.balance == "weights":
        node = class_weighted_loss(node, train_set, loss_name)
    classes = getattr(train_set, "classes", None)  # None: not a classifier (dcgan)
    return builders.build_loss(node, loss_name, task, len(classes) if classes else None)


def build_context(
    settings: Settings,
    directory: RunDirectory,
    meta: dict[str, Any],
    device: torch.device,
) -> RunContext:
    """The task, its data (datasets, decode cache, loaders) and its model, on ``device``."""
    task = load_task(settings)
    splits, notes = build_datasets(settings, task, directory.synthetic_data)
    # What predict needs of the data (class names, vocabulary): checkpoints then work without it.
    meta = meta | {"data": describe_training_data(task, splits["train"])}
    cached_mb = cache_decoded(splits, settings.data.cache_mb)
    loaders = build_loaders(settings, splits, getattr(task, "collate_fn", None), device)
    model = build_model(settings, task, splits["train"], device)
    return RunContext(
        settings=settings,
        directory=directory,
        task=task,
        splits=splits,
        loaders=loaders,
        model=model,
        device=device,
        is_main=distributed.rank() == 0,
        meta=meta,
        notes=notes,
        cached_mb=cached_mb,
    )


def build_trainer(run: RunContext, gpus: list[int], callbacks: list[Any]) -> Trainer:
    """The Trainer over ``run``'s model (wrapped for the device strategy), with its optimizers,
    schedulers, loss and regularizer built from the settings, and ``callbacks``."""
    settings, task = run.settings, run.task
    parts, optimizer = build_optimizers(settings, task, run.model)
    steps = builders.steps_per_epoch(
        run.loaders["train"], settings.trainer["accumulate_grad_batches"]
    )
    scheduler, interval = builders.build_schedulers(
        settings.scheduler, optimizer, steps, settings.trainer["max_epochs"]
    )
    model = devices.wrap_model(
        run.model,
        settings.device.strategy,
        run.device,
        gpus,
        settings.device.sync_batchnorm,
        # Each phase leaves the other parts without gradients, which DDP must be told.
        find_unused_parameters=parts is not None,
    )
    trainer = functools.partial(
        Trainer,
        model,
        task.step,
        optimizer,
        build_loss(settings, task, run.splits["train"]),
        device=run.device,
        scheduler=scheduler,
        scheduler_interval=interval,
        regularizer=builders.build_regularizer(settings.regularizer),
        callbacks=callbacks,
        summarize_fn=getattr(task, "summarize", None),
        make_evaluator=getattr(task, "make_evaluator", None),
        # The `trainer:` keys are the Trainer's own keyword arguments, as they are.
        **(settings.trainer | {"progress": settings.trainer["progress"] and run.is_main}),
    )
    return builders.call("trainer", trainer)
