"""The ``callbacks`` config group, built: each entry's ``_target_`` is called with the entry's
keys, plus ``run`` (a :class:`~torchcamp.trainer.app.assembly.RunContext`) when its signature
has a parameter of that name. A target that returns None adds nothing (the built-in ones do
so on DDP ranks other than 0, which write no files).

The built-in entries point at the factories below, which take what they need from ``run``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
from collections.abc import Mapping
from typing import Any

import torch

from torchcamp.trainer import visualize
from torchcamp.trainer.app.assembly import RunContext
from torchcamp.trainer.app.builders import call, instantiate
from torchcamp.trainer.app.signatures import import_target
from torchcamp.trainer.callbacks import EVENTS, misnamed_events
from torchcamp.trainer.callbacks.checkpointing import ModelCheckpoint
from torchcamp.trainer.callbacks.csv_logger import CSVLogger
from torchcamp.trainer.callbacks.early_stopping import EarlyStopping
from torchcamp.trainer.callbacks.model_views import ModelViewsLogger
from torchcamp.trainer.callbacks.profiler import Profiler
from torchcamp.trainer.callbacks.run_plots import RunPlots
from torchcamp.trainer.callbacks.tensorboard import TensorBoardLogger
from torchcamp.trainer.errors import UserError


def build_callbacks(nodes: Mapping[str, Mapping[str, Any]], run: RunContext) -> list[Any]:
    """The callbacks of the ``callbacks`` group's entries, in the config's order."""
    built = []
    for name, node in nodes.items():
        group = f"callbacks.{name}"
        target = import_target(group, node["_target_"])
        # Built as a partial first: `run` holds a model and loaders, which Hydra would try to
        # turn into config if it were passed to instantiate.
        factory = call(group, instantiate, {**node, "_partial_": True})
        if _accepts(target, "run"):
            factory = functools.partial(factory, run=run)
        callback = call(group, factory)
        if callback is not None:
            _check_events(group, callback)
            _name(callback, name)
            built.append(callback)
    return built


def _check_events(group: str, callback: Any) -> None:
    """Refuse a callback with a method named like an event that is none: it would never be
    called, and nothing else would say so."""
    for method, close in misnamed_events(type(callback)):
        hint = (
            f"did you mean {' or '.join(close)}?" if close else f"the events: {', '.join(EVENTS)}"
        )
        raise UserError(
            f"{group}: {type(callback).__name__}.{method} is not a callback event and would "
            f"never be called ({hint})"
        )


def _name(callback: Any, name: str) -> None:
    """Key the callback's state in checkpoints by its name in the group, so that two of one
    class keep their own (an object that takes no attributes is keyed by its class)."""
    with contextlib.suppress(AttributeError):
        callback.state_key = name


def _accepts(target: Any, name: str) -> bool:
    try:
        return name in inspect.signature(target).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False


def model_checkpoint(
    run: RunContext,
    every_n_steps: int | None = None,
    save_top_k: int = 1,
    every_n_epochs: int | None = None,
    keep_step_checkpoints: int = 0,
) -> ModelCheckpoint:
    """``checkpoints/last.pt`` every epoch (and every ``every_n_steps`` optimizer steps), the
    ``save_top_k`` best epochs with ``best.pt`` the top one, snapshots every ``every_n_epochs``
    epochs, the newest ``keep_step_checkpoints`` step files (see :class:`ModelCheckpoint`);
    each holds the resolved config and the run's ``meta``."""
    return ModelCheckpoint(
        run.directory.checkpoints,
        extra={"config": run.settings.config, "meta": run.meta},
        save=run.is_main,  # under DDP every rank takes part, rank 0 writes
        every_n_steps=every_n_steps,
        save_top_k=save_top_k,
        every_n_epochs=every_n_epochs,
        keep_step_checkpoints=keep_step_checkpoints,
    )


def tensorboard(
    run: RunContext, confusion_matrix: bool = True, every_n_epochs: int | None = None
) -> TensorBoardLogger | None:
    """TensorBoard under ``tb/``, with the config as hyperparameters and the task's images
    (``task.epoch_images``, drawn on held-out data where there is some); rank 0 only."""
    if not run.is_main:
        return None
    images_fn = None
    if run.task.epoch_images is not None:
        shown = run.splits.get("val", run.splits["train"])
        images_fn = functools.partial(run.task.epoch_images, dataset=shown, device=run.device)
    return TensorBoardLogger(
        run.directory.tensorboard,
        hparams=run.settings.choices | flatten(run.settings.config),
        notes=run.notes,
        class_names=getattr(run.splits["train"], "classes", None),
        images_fn=images_fn,
        image_dir=run.directory.path,
        confusion_matrix=confusion_matrix,
        every_n_epochs=every_n_epochs,
    )


def metrics_csv(run: RunContext) -> CSVLogger | None:
    """``metrics.csv`` in the run directory, one row per epoch; rank 0 only."""
    return CSVLogger(run.directory.metrics_csv) if run.is_main else None


def plots(run: RunContext, every_n_epochs: int | None = None) -> RunPlots | None:
    """``curves.png`` and (classifiers) ``confusion_matrix.png``; rank 0 only."""
    if not run.is_main:
        return None
    return RunPlots(
        run.directory.curves,
        run.directory.confusion_matrix,
        monitor=run.settings.trainer["monitor"],
        monitor_mode=run.settings.trainer["monitor_mode"],
        class_names=getattr(run.splits["train"], "classes", None),
        every_n_epochs=every_n_epochs,
    )


def early_stopping(
    monitor: str | None = None,
    patience: int | None = None,
    min_delta: float = 0.0,
    mode: str = "min",
) -> EarlyStopping | None:
    """Lightning's EarlyStopping; None (off) without a ``patience``. Every rank runs it, so
    every rank stops at the same epoch."""
    if patience is None:
        return None
    if monitor is None:  # trainer.monitor=null (dcgan's default), which it defaults to
        raise UserError(
            f"callbacks.early_stopping.patience={patience} needs a metric to watch, and "
            "callbacks.early_stopping.monitor is null: set it, e.g. "
            "callbacks.early_stopping.monitor=val/loss"
        )
    return EarlyStopping(monitor, patience=patience, min_delta=min_delta, mode=mode)


def model_views(
    run: RunContext,
    input_grid: bool = True,
    graph: bool = True,
    kernels: bool = True,
    feature_maps: bool = True,
    feature_layer: str | None = None,
    grad_cam: bool = True,
    grad_cam_layer: str | None = None,
    num_images: int = 4,
    every_n_epochs: int | None = None,
) -> ModelViewsLogger | None:
    """The model views (see :class:`ModelViewsLogger`) of the first training batch of epoch 0
    and of the first ``num_images`` held-out images (training images without a val split);
    image views only for a model that reads images. The layers are checked on every rank (a
    bad name stops them all); the callback runs on rank 0."""
    model = run.model
    kernel_layer = visualize.first_conv(model) if kernels else None
    feature_layer = _view_layer(
        model, feature_maps, feature_layer, visualize.first_conv, "feature_layer"
    )
    grad_cam_layer = _view_layer(
        model, grad_cam, grad_cam_layer, visualize.grad_cam_layer, "grad_cam_layer"
    )
    if not run.is_main:
        return None
    loaders = run.loaders
    train_inputs, images = (), None
    if input_grid or graph:
        count = min(loaders["train"].batch_size, visualize.MAX_TILES)
        train_inputs = visualize.batch_inputs(first_samples(loaders["train"], count))
    if feature_layer or grad_cam_layer:
        shown = first_samples(loaders.get("val", loaders["train"]), num_images)
        images = visualize.image_inputs(visualize.batch_inputs(shown))
    normalization = run.task.normalization
    mean, std = (normalization and normalization(run.splits["train"])) or (None, None)
    # A detector, fed a list of images, answers with a list of dicts, which tracing refuses.
    traceable = all(isinstance(x, torch.Tensor) for x in train_inputs)
    return ModelViewsLogger(
        train_images=visualize.image_inputs(train_inputs) if input_grid else None,
        graph_inputs=tuple(x[:1] for x in train_inputs) if graph and traceable else None,
        images=images,
        mean=mean,
        std=std,
        forward=run.task.forward_images,
        kernel_layer=kernel_layer,
        feature_layer=feature_layer,
        # Grad-CAM explains each image's class score: a classifier's batch of images (a
        # detector's images travel as a list).
        grad_cam_layer=grad_cam_layer if isinstance(images, torch.Tensor) else None,
        every_n_epochs=every_n_epochs,
    )


def _view_layer(model: Any, on: bool, name: str | None, pick: Any, setting: str) -> str | None:
    """The layer a view looks at: None when the view is off; ``name``, else ``pick(model)``
    (None: the model has none). A name the model lacks is a UserError listing some it has."""
    if not on:
        return None
    name = name or pick(model)
    if name is not None:
        visualize.find_layer(model, name, f"callbacks.model_views.{setting}")
    return name


def first_samples(loader: Any, count: int) -> Any:
    """The first ``count`` samples ``loader`` gives in epoch 0, in its sampler's order and each
    with its seeded augmentation (see trainer/data.py), collated; no global RNG is drawn."""
    keys = itertools.islice(iter(loader.sampler), count)
    return loader.collate_fn([loader.dataset[key] for key in keys])


def flatten(resolved: Mapping[str, Any]) -> dict[str, Any]:
    """Every value of the config as ``{"optimizer.lr": 0.01, ...}`` (TensorBoard's HParams)."""
    flat: dict[str, Any] = {}

    def visit(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key not in ("_target_", "_partial_"):
                    visit(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = node if isinstance(node, (int, float, str, bool)) else str(node)

    visit(resolved, "")
    return flat


def profiler(
    run: RunContext, wait: int = 1, warmup: int = 2, active: int = 3, row_limit: int = 15
) -> Profiler | None:
    """``torch.profiler`` over optimizer steps ``wait + warmup + 1`` to ``wait + warmup +
    active``: ``profile/trace.json`` (Perfetto, chrome://tracing) and the top operators in the
    log; rank 0 only."""
    if not run.is_main:
        return None
    return Profiler(
        run.directory.profile,
        wait=wait,
        warmup=warmup,
        active=active,
        row_limit=row_limit,
    )
