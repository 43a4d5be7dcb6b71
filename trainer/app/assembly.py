"""Building a run from its settings: the task, data, model, optimizers, schedulers, loss,
callbacks and the Trainer. ``train``, ``evaluate``, the benchmarks and the tests all build
through these functions.

The order matters in two places: the model is on its device before the optimizer exists (some,
Adagrad, create their state eagerly), and callbacks are built last, from a :class:`RunContext`
that holds everything before them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from torchcamp.datasets.balance import class_weighted_loss
from torchcamp.tasks.contract import Task, describe_training_data
from torchcamp.tasks.models.custom import import_user_module
from torchcamp.trainer import devices, distributed
from torchcamp.trainer.app import builders
from torchcamp.trainer.app.data import build_datasets, build_loaders, cache_decoded
from torchcamp.trainer.app.run_dir import RunDirectory
from torchcamp.trainer.app.settings import Settings
from torchcamp.trainer.errors import UserError
from torchcamp.trainer.options import Compute, Limits, Monitor, Reporting, Stepping
from torchcamp.trainer.trainer import Trainer

log = logging.getLogger("torchcamp")


@dataclass
class RunContext:
    """What a run is built from, handed to every callback factory that asks for ``run``.

    ``model`` is the bare model on ``device`` (before any DDP wrapping), ``meta`` what each
    checkpoint records about the run (task, group choices, overrides, the training data's
    class names or vocabulary), ``notes`` texts for the logs (a synthetic data set's warning),
    ``data_report`` the task's report on its data (for metrics.json).
    """

    settings: Settings
    directory: RunDirectory
    task: Task
    splits: dict[str, Any]
    loaders: dict[str, Any]
    model: nn.Module
    device: torch.device
    is_main: bool
    meta: dict[str, Any]
    notes: dict[str, str] = field(default_factory=dict)
    cached_mb: float = 0.0
    data_report: dict[str, Any] = field(default_factory=dict)


def load_task(settings: Settings) -> Task:
    """The ``TASK`` of the module ``task.module`` names (a :class:`~torchcamp.tasks.Task`).

    A module in the working directory imports, as ``python -m`` would find it (the CLI puts
    the working directory on ``sys.path``).
    """
    name = settings.task.module
    module = import_user_module(f"task.module={name}", name)
    task = getattr(module, "TASK", None)
    if not isinstance(task, Task):
        raise UserError(
            f"task.module={name} defines no TASK: a task module ends with "
            "TASK = torchcamp.tasks.Task(build_datasets=..., build_model=..., step=...) "
            "(docs/extending/task.md)"
        )
    return task


def build_model(settings: Settings, task: Task, train_set: Any, device: torch.device) -> nn.Module:
    """The task's model from the ``model`` node, finished by what ``train_set`` says (its
    classes, vocabulary; a stand-in for it when predicting), on ``device``."""
    return builders.build_model(settings.model, task, train_set).to(device)


def build_optimizers(settings: Settings, task: Task, model: nn.Module) -> tuple[Any, Any]:
    """``(parts, optimizer)``: a GAN names its parts (D, G), one optimizer each; other tasks
    have no parts (None) and one optimizer."""
    parts = task.parts(model) if task.parts is not None else None
    optimizer = builders.build_optimizers(
        settings.optimizer, model, parts, settings.task.optimizers
    )
    return parts, optimizer


def build_loss(settings: Settings, task: Task, train_set: Any) -> Any:
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
    is_main = distributed.rank() == 0
    data_report = describe_splits(task, splits, directory) if is_main else {}
    # What predict needs of the data (class names, vocabulary): checkpoints then work without it.
    meta = meta | {"data": describe_training_data(task, splits["train"])}
    cached_mb = cache_decoded(splits, settings.data.cache_mb)
    loaders = build_loaders(settings, splits, task.collate_fn, device)
    model = build_model(settings, task, splits["train"], device)
    return RunContext(
        settings=settings,
        directory=directory,
        task=task,
        splits=splits,
        loaders=loaders,
        model=model,
        device=device,
        is_main=is_main,
        meta=meta,
        notes=notes,
        cached_mb=cached_mb,
        data_report=data_report,
    )


def describe_splits(task: Task, splits: dict[str, Any], directory: RunDirectory) -> dict[str, Any]:
    """Before the first epoch: the task's report on its data (logged by the task, returned for
    metrics.json) and the resolved split written into the run directory, where it has them."""
    if task.save_split is not None:
        directory.path.mkdir(parents=True, exist_ok=True)
        task.save_split(splits, directory.path)
    return dict(task.report_data(splits)) if task.report_data is not None else {}


def trainer_options(
    *,
    precision: str = "32",
    max_epochs: int = 1,
    accumulate_grad_batches: int = 1,
    gradient_clip_val: float | None = None,
    log_every_n_steps: int = 10,
    monitor: str | None = "val/loss",
    monitor_mode: str = "min",
    progress: bool = True,
    channels_last: bool = False,
    compile: bool | Mapping[str, Any] = False,
    deterministic: bool = False,
    cudnn_benchmark: bool = False,
    detect_anomaly: bool = False,
    max_time: float | None = None,
    limit_train_batches: int | float | None = None,
    limit_val_batches: int | float | None = None,
    limit_test_batches: int | float | None = None,
    extras_budget: float = 0.01,
) -> dict[str, Any]:
    """The ``trainer:`` config keys, named as users know them, as the Trainer's grouped
    keyword arguments (``limits``, ``compute``, ``stepping``, ``monitor``, ``reporting``).

    Its signature is what ``trainer.*`` overrides are checked against (signatures.py). The
    process-wide switches (``deterministic``, ``cudnn_benchmark``, ``detect_anomaly``) are no
    Trainer's: :func:`~torchcamp.trainer.app.process.setup_process` sets them.
    """
    del deterministic, cudnn_benchmark, detect_anomaly  # set by setup_process
    return {
        "limits": Limits(
            max_epochs=max_epochs,
            max_time=max_time,
            train_batches=limit_train_batches,
            val_batches=limit_val_batches,
            test_batches=limit_test_batches,
        ),
        "compute": Compute(precision=precision, channels_last=channels_last, compile=compile),
        "stepping": Stepping(
            accumulate_grad_batches=accumulate_grad_batches, gradient_clip_val=gradient_clip_val
        ),
        "monitor": Monitor(metric=monitor, mode=monitor_mode),
        "reporting": Reporting(
            log_every_n_steps=log_every_n_steps, progress=progress, extras_budget=extras_budget
        ),
    }


def build_trainer(run: RunContext, gpus: list[int], callbacks: list[Any]) -> Trainer:
    """The Trainer over ``run``'s model (wrapped for the device strategy), with its optimizers,
    schedulers, loss and regularizer built from the settings, and ``callbacks``."""
    settings, task = run.settings, run.task
    parts, optimizer = build_optimizers(settings, task, run.model)
    steps = builders.steps_per_epoch(
        run.loaders["train"],
        settings.trainer["accumulate_grad_batches"],
        settings.trainer.get("limit_train_batches"),
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
    # The `trainer:` keys, grouped; bars on the main process only.
    keys = settings.trainer | {"progress": settings.trainer["progress"] and run.is_main}
    options = builders.call("trainer", functools.partial(trainer_options, **keys))
    trainer = functools.partial(
        Trainer,
        model,
        task.step,
        optimizer,
        build_loss(settings, task, run.splits["train"]),
        device=run.device,
        scheduler=scheduler,
        regularizer=builders.build_regularizer(settings.regularizer),
        callbacks=callbacks,
        summarize_fn=task.summarize,
        make_evaluator=task.make_evaluator,
        **options | {"stepping": replace(options["stepping"], scheduler_interval=interval)},
    )
    return builders.call("trainer", trainer)
