"""The ``train`` command: compose the config with Hydra, build plain objects, run the Trainer.

This is the only module that reads the config. Heavy imports (torch, torchvision,
tensorboard) happen inside :func:`train`, so ``train --help`` and ``train --cfg job`` answer
at once.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import json
import logging
import os
import signal
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from torchcamp.trainer.config import validate
from torchcamp.trainer.errors import (
    EXIT_INTERRUPTED,
    EXIT_SWEEP_FAILED,
    EXIT_USER_ERROR,
    TrainingInterrupted,
    UserError,
)

log = logging.getLogger("torchcamp")


@dataclass
class RunInfo:
    """What Hydra knows about this run, as plain values that DDP worker processes can receive."""

    run_dir: Path
    overrides: list[str] = field(default_factory=list)  # the command line's, for resume=auto
    choices: dict[str, str] = field(default_factory=dict)  # group -> option, e.g. loss -> focal

    @classmethod
    def from_hydra(cls) -> RunInfo:
        hydra_cfg = HydraConfig.get()
        choices = {g: c for g, c in hydra_cfg.runtime.choices.items() if not g.startswith("hydra")}
        return cls(Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task), choices)


def train(cfg: DictConfig, info: RunInfo | None = None) -> dict[str, Any]:
    """Train as ``cfg`` says, writing into ``info.run_dir`` (Hydra's output dir by default).

    Under ``device=ddp`` this runs in every rank's process; only rank 0 writes files. Returns
    the final metrics, which rank 0 also writes to ``run_dir/metrics.json``.
    """
    validate(cfg)
    from torchcamp.trainer import distributed

    info = info or RunInfo.from_hydra()
    device, gpus = _setup_process(cfg)
    is_main = distributed.rank() == 0

    meta = {"task": cfg.task.name, "choices": info.choices, "overrides": info.overrides}
    # Read before any work: a wrong path, a corrupt file or another task's checkpoint fails
    # at once.
    resume = _resume_checkpoint(cfg, info, meta)
    resume_path = resume[0] if resume else None
    run_dir = _continued_run(resume_path) or info.run_dir
    if run_dir != info.run_dir:
        finished = _finished_metrics(run_dir, resume[1], cfg.trainer.max_epochs)
        if finished is not None:
            log.info(
                "%s finished this run already (epoch %d); nothing to train. Start a new run "
                "with resume=null, or raise trainer.max_epochs",
                run_dir,
                finished["epoch"],
            )
            metrics = finished | {"status": "skipped", "run_dir": str(run_dir)}
            _write_metrics(metrics, [info.run_dir], is_main)
            return metrics
        log.info("continuing the run in %s (its checkpoints, TensorBoard files, log)", run_dir)
    with _also_logging_to(run_dir / "train.log" if run_dir != info.run_dir and is_main else None):
        return _train_in(cfg, info, run_dir, resume, meta, device, gpus)


def _train_in(
    cfg: DictConfig,
    info: RunInfo,
    run_dir: Path,
    resume: tuple[Path, dict[str, Any]] | None,
    meta: dict[str, Any],
    device: Any,
    gpus: list[int],
) -> dict[str, Any]:
    """Build the task's objects and train, writing into ``run_dir``."""
    from torchcamp.trainer import builders, devices, distributed
    from torchcamp.trainer.callbacks import ModelCheckpoint, TensorBoardLogger
    from torchcamp.trainer.inference import describe_training_data
    from torchcamp.trainer.signals import stop_at_step_boundary
    from torchcamp.trainer.trainer import Trainer

    is_main = distributed.rank() == 0
    resume_path = resume[0] if resume else None
    task = importlib.import_module(cfg.task.module)
    splits, notes = _build_splits(cfg, task, run_dir, is_main)
    # What predict needs of the data (class names, vocabulary): checkpoints then work without it.
    meta = meta | {"data": describe_training_data(task, splits["train"])}
    cached_mb = _cache_decoded(splits, cfg.data.cache_mb)
    loaders = _build_loaders(cfg, splits, getattr(task, "collate_fn", None), device)

    classes = getattr(splits["train"], "classes", None)  # None: not a classifier (dcgan)
    model = _build_model(cfg, task, splits["train"], device)
    view_layers = _view_layers(cfg.trainer.log, model)  # on every rank: a bad name stops all
    parts, optimizer = _build_optimizers(cfg, task, model)
    scheduler, interval = builders.build_schedulers(
        _node(cfg.scheduler),
        optimizer,
        builders.steps_per_epoch(loaders["train"], cfg.trainer.accumulate_grad_batches),
        cfg.trainer.max_epochs,
    )
    loss_fn = _build_loss_fn(cfg, task, splits["train"], info.choices.get("loss", "loss"))
    regularizer = builders.build_regularizer(_node(cfg.regularizer))
    model = devices.wrap_model(
        model,
        cfg.device.strategy,
        device,
        gpus,
        cfg.device.sync_batchnorm,
        # Each phase leaves the other parts without gradients, which DDP must be told.
        find_unused_parameters=parts is not None,
    )

    resolved = OmegaConf.to_container(cfg, resolve=True)
    callbacks = [
        ModelCheckpoint(
            run_dir / "checkpoints",
            extra={"config": resolved, "meta": meta},
            save=is_main,
            every_n_steps=cfg.trainer.checkpoint_every_n_steps,
        )
    ]
    if is_main:
        hparams = info.choices | _flatten(resolved)
        images_fn = None
        if hasattr(task, "epoch_images"):  # drawn on held-out data where there is some
            shown = splits.get("val", splits["train"])
            images_fn = functools.partial(task.epoch_images, dataset=shown, device=device)
        tensorboard = TensorBoardLogger(
            run_dir / "tb",
            hparams=hparams,
            notes=notes,
            class_names=classes,
            images_fn=images_fn,
            image_dir=run_dir,
            flush_every_n_steps=cfg.trainer.checkpoint_every_n_steps,
            confusion_matrix=cfg.trainer.log.confusion_matrix,
        )
        views = _model_views(cfg.trainer.log, task, loaders, view_layers, tensorboard)
        callbacks += [tensorboard, views]
    trainer = Trainer(
        model,
        task.step,
        optimizer,
        loss_fn,
        device=device,
        scheduler=scheduler,
        scheduler_interval=interval,
        regularizer=regularizer,
        precision=str(cfg.trainer.precision),
        max_epochs=cfg.trainer.max_epochs,
        accumulate_grad_batches=cfg.trainer.accumulate_grad_batches,
        gradient_clip_val=cfg.trainer.gradient_clip_val,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        monitor=cfg.trainer.monitor,
        monitor_mode=cfg.trainer.monitor_mode,
        callbacks=callbacks,
        progress=cfg.trainer.progress and is_main,
        summarize_fn=getattr(task, "summarize", None),
        make_evaluator=getattr(task, "make_evaluator", None),
        channels_last=cfg.trainer.channels_last,
        compile=_node(cfg.trainer.compile)
        if OmegaConf.is_dict(cfg.trainer.compile)
        else cfg.trainer.compile,
    )
    if resume is not None:
        _restore(trainer, *resume)

    summary = {"run_dir": str(run_dir), "resumed_from": str(resume_path) if resume_path else None}
    try:
        with stop_at_step_boundary(trainer):
            metrics = trainer.fit(loaders["train"], loaders.get("val"), loaders.get("test"))
    except TrainingInterrupted:
        stopped = {
            "status": "interrupted",
            "epoch": trainer.epoch,
            "global_step": trainer.global_step,
        }
        _write_metrics(summary | stopped, {run_dir, info.run_dir}, is_main)
        raise
    metrics |= {
        "epoch": trainer.epoch,
        "global_step": trainer.global_step,
        "skipped_steps": trainer.skipped_steps,  # fp16 steps the GradScaler skipped
        "time/fit_seconds": round(trainer.fit_seconds, 3),
        "task": cfg.task.name,
        "synthetic": cfg.data.synthetic,
        "data/skipped_corrupt": sum(len(getattr(ds, "skipped", [])) for ds in splits.values()),
        "data/cached_mb": round(cached_mb, 1),
        "world_size": distributed.world_size(),
        **summary,
        "status": "resumed" if resume_path else "completed",
    }
    _write_metrics(metrics, {run_dir, info.run_dir}, is_main)
    return metrics


def _write_metrics(metrics: dict[str, Any], run_dirs: Iterable[Path], is_main: bool) -> None:
    """``metrics.json`` in each of ``run_dirs`` (the run's, and this invocation's when it
    continued an earlier run: a sweep's summary reads its jobs' own directories)."""
    if not is_main:
        return
    for run_dir in run_dirs:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        log.info("metrics: %s", run_dir / "metrics.json")


def _continued_run(resume_path: Path | None) -> Path | None:
    """The run directory a checkpoint continues: a run's own ``checkpoints/last.pt`` goes on in
    that run (same checkpoints, TensorBoard event files, log); any other checkpoint (best.pt,
    a copied file) starts a new run from its state."""
    if resume_path is None or resume_path.name != "last.pt":
        return None
    run = resume_path.resolve().parent.parent
    is_run = resume_path.parent.name == "checkpoints" and (run / ".hydra").is_dir()
    return run if is_run else None


def _finished_metrics(
    run_dir: Path, state: dict[str, Any], max_epochs: int
) -> dict[str, Any] | None:
    """The final metrics of ``run_dir`` if it trained all ``max_epochs`` and finished."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    done = metrics.get("status") in ("completed", "resumed") and state["epoch"] >= max_epochs
    return metrics if done else None


@contextmanager
def _also_logging_to(path: Path | None) -> Iterator[None]:
    """Append this process's log to ``path`` too, while the block runs (None: nothing)."""
    if path is None:
        yield
        return
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _setup_process(cfg: DictConfig) -> tuple[Any, list[int]]:
    """Join the DDP group if asked, pick this process's device, seed, set backend flags."""
    import torch

    from torchcamp.trainer import devices, distributed
    from torchcamp.trainer.utils import seed_everything

    cuda = devices.use_cuda(cfg.device.accelerator)
    if str(cfg.trainer.precision) == "16-mixed" and not cuda:
        raise UserError(
            "trainer.precision=16-mixed needs CUDA, and this run is on the CPU: "
            "use trainer.precision=bf16-mixed or 32"
        )
    gpus = devices.choose_gpus(cfg.device.gpus) if cuda else []
    if cfg.device.strategy == "ddp":
        distributed.init_process_group(cfg.device.backend or ("nccl" if cuda else "gloo"))
        if distributed.rank() != 0:
            logging.getLogger().setLevel(logging.WARNING)  # one voice in the log: rank 0's
    device = devices.process_device(cuda, cfg.device.strategy, gpus)
    # Every rank starts from the same seed: DDP keeps the replicas identical anyway, and a
    # checkpoint's RNG state (rank 0's) then fits every rank on resume.
    seed_everything(cfg.seed)
    torch.backends.cudnn.benchmark = cfg.trainer.cudnn_benchmark
    torch.autograd.set_detect_anomaly(cfg.trainer.detect_anomaly)
    if cfg.trainer.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
    return device, gpus


def _node(node: Any) -> dict | None:
    """A config node as a plain, resolved dict (None stays None)."""
    return OmegaConf.to_container(node, resolve=True) if node is not None else None


def _restore(trainer: Any, path: Path, state: dict[str, Any]) -> None:
    saved_total = next(iter(state["schedulers"].values()), {}).get("total_steps")
    total = getattr(trainer.scheduler, "total_steps", None)
    if saved_total is not None and total is not None and saved_total != total:
        raise UserError(
            f"checkpoint {path} has a schedule of total_steps={saved_total} optimizer steps and "
            f"this run needs {total}: resume with the checkpoint's trainer.max_epochs, or set "
            f"scheduler.total_steps={saved_total}"
        )
    try:
        trainer.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError) as error:
        raise UserError(
            f"checkpoint {path} does not fit this run "
            f"({str(error).strip().splitlines()[0]}); resume with the same task and model"
        ) from error
    log.info("resumed from %s at epoch %d, step %d", path, trainer.epoch, trainer.global_step)


def _check_same_job(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """A checkpoint of another task or model: one line naming both, before any state is read."""

    def describe(meta: dict[str, Any]) -> str:
        return f"task={meta.get('task')} model={(meta.get('choices') or {}).get('model')}"

    if describe(saved) != describe(current):
        raise UserError(
            f"checkpoint {path} is {describe(saved)}; this run is {describe(current)}: resume "
            "with the checkpoint's task and model, or start from its weights with "
            "model.weights_path=... and resume=null"
        )


def _view_layers(log: DictConfig, model: Any) -> dict[str, str | None]:
    """The layers the ``trainer.log`` views look at, by name (None: the view is off, or the
    model has no such layer): the first Conv2d's kernels; ``feature_layer``, by default the
    first Conv2d; ``grad_cam_layer``, by default the block before global pooling or the last
    Conv2d. A name the model does not have is a UserError that lists some it has."""
    from torchcamp.trainer import visualize

    chosen = {
        "kernel_layer": visualize.first_conv(model) if log.kernels else None,
        "feature_layer": (log.feature_layer or visualize.first_conv(model))
        if log.feature_maps
        else None,
        "grad_cam_layer": (log.grad_cam_layer or visualize.grad_cam_layer(model))
        if log.grad_cam
        else None,
    }
    for key in ("feature_layer", "grad_cam_layer"):
        if chosen[key] is not None:
            visualize.find_layer(model, chosen[key], f"trainer.log.{key}")
    return chosen


def _model_views(
    log: DictConfig, task: Any, loaders: dict[str, Any], layers: dict[str, str | None], tb: Any
) -> Any:
    """The ``trainer.log`` views (ModelViewsLogger, writing through the TensorBoardLogger
    ``tb``) of the first training batch of epoch 0 (its first sample traced for the graph) and
    of the first ``num_images`` held-out images (training images where there is no val split);
    images only for a model that reads images."""
    import torch

    from torchcamp.trainer import visualize
    from torchcamp.trainer.callbacks import ModelViewsLogger

    train_inputs, images = (), None
    if log.input_grid or log.graph:
        batch_size = min(loaders["train"].batch_size, visualize.MAX_TILES)
        train_inputs = visualize.batch_inputs(_first_samples(loaders["train"], batch_size))
    if layers["feature_layer"] or layers["grad_cam_layer"]:
        shown = _first_samples(loaders.get("val", loaders["train"]), log.num_images)
        images = visualize.image_inputs(visualize.batch_inputs(shown))
    # A detector, fed a list of images, answers with a list of dicts, which tracing refuses.
    traceable = all(isinstance(x, torch.Tensor) for x in train_inputs)
    return ModelViewsLogger(
        tb,
        train_images=visualize.image_inputs(train_inputs) if log.input_grid else None,
        graph_inputs=tuple(x[:1] for x in train_inputs) if log.graph and traceable else None,
        images=images,
        mean=getattr(task, "MEAN", None),
        std=getattr(task, "STD", None),
        forward=getattr(task, "forward_images", None),
        kernel_layer=layers["kernel_layer"],
        feature_layer=layers["feature_layer"],
        # Grad-CAM explains each image's class score: a classifier's batch of images (a
        # detector's images travel as a list).
        grad_cam_layer=layers["grad_cam_layer"] if isinstance(images, torch.Tensor) else None,
    )


def _first_samples(loader: Any, count: int) -> Any:
    """The first ``count`` samples ``loader`` gives in epoch 0, in its sampler's order and each
    with its seeded augmentation (see trainer/data.py), collated; no global RNG is drawn."""
    keys = itertools.islice(iter(loader.sampler), count)
    return loader.collate_fn([loader.dataset[key] for key in keys])


def _build_splits(
    cfg: DictConfig, task: Any, run_dir: Path, is_main: bool
) -> tuple[dict[str, Any], dict[str, str]]:
    """The task's datasets by split (rendered, downloaded or read from ``data.root``) and notes
    for the logs."""
    data_root, notes = _prepare_data(cfg, task, run_dir, is_main)
    if cfg.data.download and not cfg.data.synthetic:
        _download_once(task, data_root, cfg.task.name)
    options = _node(cfg.task.get("options")) or {}
    splits = task.build_datasets(
        data_root,
        seed=cfg.seed,
        augment=cfg.data.augment,
        skip_corrupt=cfg.data.skip_corrupt,
        **options,
    )
    return splits, notes


def _build_model(cfg: DictConfig, task: Any, train_set: Any, device: Any) -> Any:
    """The task's model from the ``model`` node, finished by what ``train_set`` says (its
    classes, vocabulary; a stand-in for it when predicting), on ``device``."""
    from torchcamp.trainer import builders

    # On the device before the optimizer exists: some (Adagrad) create their state eagerly.
    return builders.build_model(_node(cfg.model), task, train_set).to(device)


def _build_optimizers(cfg: DictConfig, task: Any, model: Any) -> tuple[Any, Any]:
    """``(parts, optimizer)``: a GAN names its parts (D, G), one optimizer each; other tasks
    have no parts (None) and one optimizer."""
    from torchcamp.trainer import builders

    parts = task.optimized_modules(model) if hasattr(task, "optimized_modules") else None
    optimizer = builders.build_optimizers(
        _node(cfg.optimizer), model, parts, _node(cfg.task.get("optimizers"))
    )
    return parts, optimizer


def _build_loss_fn(cfg: DictConfig, task: Any, train_set: Any, loss_name: str) -> Any:
    """The loss as the task adapts it; ``data.balance=weights`` weights the classes by their
    inverse frequencies in ``train_set``."""
    from torchcamp.trainer import builders

    loss_node = _node(cfg.loss)
    if cfg.data.balance == "weights":
        from torchcamp.datasets.balance import class_weighted_loss

        loss_node = class_weighted_loss(loss_node, train_set, loss_name)
    classes = getattr(train_set, "classes", None)  # None: not a classifier (dcgan)
    return builders.build_loss(loss_node, loss_name, task, len(classes) if classes else None)


def _prepare_data(
    cfg: DictConfig, task: Any, run_dir: Path, is_main: bool
) -> tuple[Path, dict[str, str]]:
    """The data root to read, and notes for the logs; renders synthetic data when asked."""
    from torchcamp.trainer import distributed

    if not cfg.data.synthetic:
        return Path(cfg.data.root), {}
    root = run_dir / "synthetic_data"
    if is_main:  # the other ranks wait and read the same files
        task.make_synthetic_data(root, seed=cfg.seed)
    distributed.barrier()
    note = (
        f"data.synthetic=true: training on a rendered stand-in data set in {root}, not on "
        f"real data; its figures say nothing about the real task"
    )
    if is_main:
        log.warning(note)
    return root, {"data/synthetic": note}


def _cache_decoded(splits: dict[str, Any], budget_mb: float) -> float:
    """Keep each split's decoded (and resized) images in memory while they fit in
    ``data.cache_mb`` all together; returns the MB used. Splits whose dataset cannot cache
    (no ``cache_decoded``) read from disk as before."""
    budget = left = int(budget_mb * 2**20)
    for name, dataset in splits.items():
        if hasattr(dataset, "cache_decoded"):
            used = dataset.cache_decoded(left)
            if used:
                log.info(
                    "%s: %d decoded images kept in memory (%.1f MB)",
                    name,
                    len(dataset),
                    used / 2**20,
                )
            left -= used
    return (budget - left) / 2**20


def _num_workers(setting: int | str, device: Any, processes: int) -> int:
    """``data.num_workers``; ``auto`` is 0 on the CPU, where the model is the bottleneck (loading
    hymenoptera ran 40x faster than ResNet18 trained, and workers would take the model's
    cores), and on CUDA one per core up to 8 (the best of 0 to 16 on an H100 with 16 cores)."""
    if setting != "auto":
        return int(setting)
    if device.type != "cuda":
        return 0
    return max(0, min(8, (os.cpu_count() or 1) // processes - 1))


def _build_loaders(cfg: DictConfig, splits: dict, collate_fn: Any, device: Any) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader, DistributedSampler, Subset

    from torchcamp.trainer import distributed
    from torchcamp.trainer.data import ResumableSampler, SeededSamples, ignore_stop_signals

    rank, world = distributed.rank(), distributed.world_size()
    workers = _num_workers(cfg.data.num_workers, device, world)
    common = {
        "batch_size": cfg.data.batch_size,
        "num_workers": workers,
        # Starting workers every epoch cost more than a short epoch's loading on an H100.
        "persistent_workers": workers > 0,
        "collate_fn": collate_fn,
        "pin_memory": device.type == "cuda",
        "worker_init_fn": ignore_stop_signals,
        # The loaders' own generator seeds their workers: iterating them draws nothing from
        # the global RNG, whose state a checkpoint restores for the model's own draws.
        "generator": torch.Generator().manual_seed(cfg.seed),
    }
    # Every training batch, with its random augmentation, is a function of (seed, epoch,
    # position) whatever num_workers is (see trainer/data.py), so a run resumed at any step sees
    # what an unbroken run sees. DistributedSampler (one replica without DDP) shuffles by
    # (seed, epoch), and under DDP gives every rank as many batches (it pads with repeats).
    if cfg.data.balance == "sampler":  # classes drawn equally often, fixed by (seed, epoch)
        from torchcamp.datasets.balance import balanced_sampler

        sampler = balanced_sampler(splits["train"], cfg.seed, num_replicas=world, rank=rank)
    else:
        sampler = DistributedSampler(
            splits["train"], num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed
        )
    loaders = {
        "train": DataLoader(
            SeededSamples(splits["train"]), sampler=ResumableSampler(sampler, cfg.seed), **common
        )
    }
    for split in ("val", "test"):
        if split in splits:
            # Evaluation shards are not padded: every sample counts once in the reduced metrics.
            shard = (
                splits[split]
                if world == 1
                else Subset(splits[split], range(rank, len(splits[split]), world))
            )
            loaders[split] = DataLoader(shard, shuffle=False, **common)
    return loaders


def _resume_checkpoint(
    cfg: DictConfig, info: RunInfo, meta: dict[str, Any]
) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to resume (``resume=PATH`` or ``auto``) and its state, checked to be of
    this task and model; None to start fresh."""
    from torchcamp.trainer.checkpoint import load_checkpoint, newest_resumable

    if cfg.resume in (None, ""):
        return None
    if cfg.resume != "auto":
        if not Path(cfg.resume).is_file():
            raise UserError(
                f"resume={cfg.resume}: no such checkpoint file "
                "(give the path of a last.pt or best.pt, or resume=auto)"
            )
        found = Path(cfg.resume), load_checkpoint(cfg.resume)
    else:
        found = newest_resumable(cfg.output_root, cfg.task.name, info.overrides)
    if found is None:
        log.info(
            "resume=auto: no earlier run of task=%s with these overrides under %s; starting fresh",
            cfg.task.name,
            cfg.output_root,
        )
        return None
    _check_same_job(found[0], found[1].get("meta") or {}, meta)
    return found


def _download_once(task: Any, root: Path, task_name: str) -> None:
    """``data.download=true``: let the task fetch its data unless it is already there."""
    from torchcamp.trainer import distributed

    if not hasattr(task, "download"):  # the RMB photos come with the course, not from a URL
        log.warning("data.download=true: task=%s has no public download; ignored", task_name)
        return
    try:
        task.build_datasets(root, seed=0)
        return  # already on disk
    except UserError:
        pass
    if distributed.rank() == 0:
        log.info("data.download=true: fetching the data set into %s", root)
        task.download(root)
    distributed.barrier()


def _flatten(resolved: dict) -> dict[str, Any]:
    """Every value of the config as ``{"optimizer.lr": 0.01, ...}`` (TensorBoard's HParams)."""
    flat: dict[str, Any] = {}

    def visit(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key not in ("_target_", "_partial_"):
                    visit(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = node if isinstance(node, (int, float, str, bool)) else str(node)

    visit(resolved, "")
    return flat


def _launch_ddp(cfg: DictConfig, info: RunInfo) -> dict[str, Any]:
    """Start one process per device for ``device=ddp`` and return rank 0's metrics."""
    from torchcamp.trainer import devices, distributed

    cuda = devices.use_cuda(cfg.device.accelerator)
    gpus = devices.choose_gpus(cfg.device.gpus) if cuda else []
    nprocs = devices.num_processes(cfg.device.devices, gpus, cuda)
    if cuda:  # each rank then uses cuda:<local rank> among the chosen GPUs
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus[:nprocs])
    log.info(
        "device=ddp: starting %d processes (%s)",
        nprocs,
        "GPUs " + str(gpus[:nprocs]) if cuda else "CPU, gloo",
    )
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    container = OmegaConf.to_container(cfg, resolve=True)
    stopped = (
        "every rank stopped at the same step boundary, and rank 0 wrote last.pt there "
        f"({info.run_dir / 'checkpoints'})"
    )
    try:
        result = distributed.launch(_ddp_worker, (container, info), nprocs)
    except SignalException as stop:  # this process was signalled and passed it on to the ranks
        raise TrainingInterrupted(
            f"stopped by {signal.Signals(stop.sigval).name}: {stopped}"
        ) from stop
    except ChildFailedError as failed:  # the ranks were signalled themselves
        if any(f.exitcode != EXIT_INTERRUPTED for f in failed.failures.values()):
            raise
        raise TrainingInterrupted(f"stopped by a signal: {stopped}") from failed
    if "error" in result:
        raise UserError(result["error"])
    return result


def _ddp_worker(container: dict, info: RunInfo) -> dict[str, Any]:
    """One DDP rank, in a process the elastic launcher started (no Hydra here)."""
    import multiprocessing

    import torch.distributed as dist

    if "fork" in multiprocessing.get_all_start_methods():
        # The launcher spawned this process, and spawned processes pass `spawn` on to their
        # DataLoader workers, which would then import torch afresh every epoch (seconds each).
        multiprocessing.set_start_method("fork", force=True)
    # Ctrl-C in a terminal signals its whole process group; the launcher passes it on to the
    # ranks too, and a rank that saw it twice would quit at once instead of stopping at a step
    # boundary. In a group of their own, the ranks get it once, from the launcher.
    os.setpgrp()
    rank = int(os.environ.get("RANK", 0))
    handlers = [logging.StreamHandler(sys.stdout)]
    if rank == 0:
        handlers.append(logging.FileHandler(info.run_dir / "train.log"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s",
        handlers=handlers,
        force=True,
    )
    try:
        return train(OmegaConf.create(container), info)
    except UserError as error:
        return {"error": str(error)}
    except TrainingInterrupted as stop:
        # Leave at once: a rank that returns waits for the launcher to read its result, which
        # a launcher shutting the ranks down after a signal never does (it kills them 30 s on).
        log.warning("%s", stop)
        dist.destroy_process_group()
        logging.shutdown()
        os._exit(EXIT_INTERRUPTED)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@hydra.main(version_base="1.3", config_path="pkg://torchcamp.conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    from hydra.types import RunMode

    from torchcamp.trainer import distributed

    info = RunInfo.from_hydra()
    try:
        validate(cfg)
        if cfg.device.strategy == "ddp" and not distributed.launched_externally():
            metrics = _launch_ddp(cfg, info)
        else:  # one process, or one rank that torchrun / SLURM started
            metrics = train(cfg, info)
    except TrainingInterrupted as stop:  # ends a sweep too: whoever sent the signal wants that
        if HydraConfig.get().mode == RunMode.MULTIRUN:  # Hydra's job-end callback will not run
            from torchcamp.trainer.sweep import write_summary

            write_summary(Path(HydraConfig.get().sweep.dir))
        print(f"stopped: {stop}. Continue with the same command and resume=auto", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as error:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            if not isinstance(error, UserError):
                raise  # a bug: its traceback is what a report needs
            print(f"error: {_user_message(error)}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)
        # One failing job does not end a sweep: summary.csv marks it failed, with its error,
        # and the sweep's exit code says some failed.
        _record_failed_job(info.run_dir, error)
        return float("nan")  # what Optuna's sweeper takes as a failed trial
    # A sweeper (e.g. Optuna) optimises what the task function returns.
    value = metrics.get(cfg.trainer.monitor)
    return float(value) if isinstance(value, (int, float)) else None


def _record_failed_job(run_dir: Path, error: Exception) -> None:
    """A sweep job's error in its log (a traceback if it is a bug) and its ``metrics.json``."""
    message = (
        _user_message(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
    )
    message = " ".join(message.split())  # one line in summary.csv
    if isinstance(error, UserError):
        log.error("job failed: %s", message)
    else:
        log.exception("job failed: %s", message)
    print(f"error: job {run_dir.name} failed: {message}", file=sys.stderr)
    _write_metrics({"status": "failed", "error": message}, [run_dir], is_main=True)


def _user_message(error: UserError) -> str:
    """The message of a UserError; one raised in a DataLoader worker arrives re-raised with the
    worker's traceback in its text ("Caught UserError in DataLoader worker..."): keep its own
    last line."""
    text = str(error)
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        return last.split("Error: ", 1)[-1]
    return text


def main() -> None:
    """Console entry point for ``train``."""
    # Let Hydra's own errors (unknown option or key, bad override) reach us instead of being
    # printed with a stack trace and exit code 1; we print one line and exit with 2.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    from torchcamp.trainer import sweep

    try:
        if any(arg in ("--help", "-h") for arg in sys.argv[1:]):
            _print_help([arg for arg in sys.argv[1:] if not arg.startswith("-")])
        else:
            _hydra_main()
    except (HydraException, OmegaConfBaseException) as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:  # a second Ctrl-C (or one before training started)
        print(
            "interrupted: checkpoints written so far are intact; resume=auto continues from the "
            "newest",
            file=sys.stderr,
        )
        sys.exit(130)  # the shell's code for SIGINT
    if sweep.failed_jobs:
        print(
            f"error: sweep jobs {', '.join(sweep.failed_jobs)} failed: see summary.csv in the "
            "sweep directory",
            file=sys.stderr,
        )
        sys.exit(EXIT_SWEEP_FAILED)


HELP = """train: compose a training run from config groups and run it (torchcamp).

  train [group=option ...] [key=value ...]     e.g. train task=rmb optimizer=adam optimizer.lr=3e-4
  train -m key=a,b [...]                       a sweep: one job per combination
  train --cfg job [overrides]                  the composed config, without training
  train --hydra-help                           Hydra's own flags

== Configuration groups ==
Compose your configuration from those groups (group=option)

{groups}

== Config ==
Override anything in the config (foo.bar=value)

{config}"""


def _print_help(overrides: list[str]) -> None:
    """``train --help``: the groups and their options, and the config these overrides compose.

    Hydra's own ``--help`` re-composes the whole config once per group option to list them
    (about 0.7 s here); reading the option files' names takes milliseconds.
    """
    from importlib.resources import files

    from hydra import compose, initialize_config_module

    conf = files("torchcamp.conf")
    groups = sorted(
        (
            group.name,
            sorted(f.name[: -len(".yaml")] for f in group.iterdir() if f.name.endswith(".yaml")),
        )
        for group in conf.iterdir()
        if group.is_dir() and group.name not in ("hydra", "__pycache__")
    )
    listing = "\n".join(f"{name}: {', '.join(options)}" for name, options in groups)
    with initialize_config_module("torchcamp.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    print(HELP.format(groups=listing, config=OmegaConf.to_yaml(cfg)))


def _one_line(error: BaseException) -> str:
    """Hydra's messages span lines (options, search path); keep what names the problem."""
    options = getattr(error, "options", None)
    missing = getattr(error, "missing_cfg_file", None)
    if options and missing and "/" in missing:
        group, name = missing.rsplit("/", 1)
        return f"unknown {group} option '{name}': choose one of {', '.join(options)}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(error).__name__


if __name__ == "__main__":
    main()
