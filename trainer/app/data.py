"""A run's data from its settings: the task's datasets by split (read, rendered or downloaded),
the decode cache, and the DataLoaders (seeded and resumable, sharded under DDP)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from torchcamp.datasets.balance import balanced_sampler
from torchcamp.tasks.contract import Task
from torchcamp.trainer import distributed
from torchcamp.trainer.app import builders
from torchcamp.trainer.app.settings import Settings
from torchcamp.trainer.data import ResumableSampler, SeededSamples, ignore_stop_signals
from torchcamp.trainer.errors import USER_ERRORS, UserError

log = logging.getLogger("torchcamp")


def build_datasets(
    settings: Settings, task: Task, synthetic_root: Path
) -> tuple[dict[str, Any], dict[str, str]]:
    """The task's datasets by split, and notes for the logs. With ``data.synthetic`` rank 0
    renders the stand-in data set into ``synthetic_root`` first; with ``data.download`` it
    fetches a missing one into ``data.root``. The task's own ``data.*`` keys and the built
    ``transforms`` go to its ``build_datasets``."""
    data = settings.data
    notes: dict[str, str] = {}
    root = Path(data.root).expanduser()
    options = dict(data.options)
    transforms = build_transforms(settings.transforms)
    if transforms is not None:
        options["transforms"] = transforms
    if data.synthetic:
        if task.make_synthetic_data is None:
            raise UserError(
                f"task={settings.task.name} has no synthetic stand-in data: set data.root to "
                "real data and data.synthetic=false"
            )
        root = synthetic_root
        if distributed.rank() == 0:  # the other ranks wait and read the same files
            task.make_synthetic_data(root, settings.seed)
            notes["data/synthetic"] = (
                f"data.synthetic=true: training on a rendered stand-in data set in {root}, not "
                "on real data; its figures say nothing about the real task"
            )
            log.warning(notes["data/synthetic"])
        distributed.barrier()
    elif data.download:
        _download_once(task, root, settings.task.name, options)
    splits = task.build_datasets(
        root,
        seed=settings.seed,
        augment=data.augment,
        skip_corrupt=data.skip_corrupt,
        **options,
    )
    return _without_empty_splits(dict(splits), settings.task.name), notes


def _without_empty_splits(splits: dict[str, Any], task_name: str) -> dict[str, Any]:
    """The splits with samples: an empty val or test split is left out with a warning (it has
    nothing to score, and its metrics would divide by zero); an empty or missing train split
    is a UserError."""
    if "train" not in splits or len(splits["train"]) == 0:
        raise UserError(
            f"task={task_name} gave no training samples: check data.root and the task's data"
        )
    for name in [name for name, dataset in splits.items() if len(dataset) == 0]:
        # An image folder's classes too small for data.val_fraction: round(0.1 * 4) = 0.
        log.warning(
            "task=%s: the %s split is empty; training without it (image folders: raise "
            "data.%s_fraction, or give split folders or a CSV)",
            task_name,
            name,
            name,
        )
        del splits[name]
    return splits


def build_transforms(node: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``transforms`` group built: ``{"train": ..., "eval": ...}``, or None without one."""
    if not node:
        return None
    return {
        split: builders.call(f"transforms.{split}", builders.instantiate, spec)
        for split, spec in node.items()
    }


def _download_once(task: Task, root: Path, task_name: str, options: dict[str, Any]) -> None:
    """``data.download=true``: let the task fetch its data unless it is already there."""
    if task.download is None:  # the RMB photos come with the course, not from a URL
        log.warning("data.download=true: task=%s has no public download; ignored", task_name)
        return
    try:
        task.build_datasets(root, seed=0, **options)
        return  # already on disk
    except USER_ERRORS:
        pass
    if distributed.rank() == 0:
        log.info("data.download=true: fetching the data set into %s", root)
        task.download(root)
    distributed.barrier()


def cache_decoded(splits: dict[str, Any], budget_mb: float) -> float:
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


def num_workers(setting: int | str, device: torch.device, processes: int) -> int:
    """``data.num_workers``; ``auto`` is 0 on the CPU, where the model is the bottleneck (loading
    hymenoptera ran 40x faster than ResNet18 trained, and workers would take the model's
    cores), and on CUDA one per core up to 8 (the best of 0 to 16 on an H100 with 16 cores)."""
    if setting != "auto":
        return int(setting)
    if device.type != "cuda":
        return 0
    return max(0, min(8, (os.cpu_count() or 1) // processes - 1))


def build_loaders(
    settings: Settings, splits: dict[str, Any], collate_fn: Any, device: torch.device
) -> dict[str, DataLoader]:
    """A DataLoader per split. Every training batch, with its random augmentation, is a function
    of (seed, epoch, position) whatever ``num_workers`` is (see trainer/data.py), so a run resumed
    at any step sees what an unbroken run sees."""
    data, seed = settings.data, settings.seed
    rank, world = distributed.rank(), distributed.world_size()
    workers = num_workers(data.num_workers, device, world)
    common = {
        "batch_size": data.batch_size,
        "num_workers": workers,
        # Starting workers every epoch cost more than a short epoch's loading on an H100.
        "persistent_workers": workers > 0,
        "collate_fn": collate_fn,
        "pin_memory": device.type == "cuda",
        "worker_init_fn": ignore_stop_signals,
        # The loaders' own generator seeds their workers: iterating them draws nothing from
        # the global RNG, whose state a checkpoint restores for the model's own draws.
        "generator": torch.Generator().manual_seed(seed),
    }
    # DistributedSampler (one replica without DDP) shuffles by (seed, epoch), and under DDP
    # gives every rank as many batches (it pads with repeats).
    overfit = bool(settings.overfit_batches)  # the same first batches every epoch
    if data.balance == "sampler" and not overfit:  # classes equally often, fixed by (seed, epoch)
        sampler = balanced_sampler(splits["train"], seed, num_replicas=world, rank=rank)
    else:
        sampler = DistributedSampler(
            splits["train"], num_replicas=world, rank=rank, shuffle=not overfit, seed=seed
        )
    loaders = {
        "train": DataLoader(
            SeededSamples(splits["train"]), sampler=ResumableSampler(sampler, seed), **common
        )
    }
    # trainer.overfit_batches validates on the very batches it trains on: their loss must
    # fall to ~0 in eval mode too.
    evaluated = {"val": splits["train"]} if overfit else {}
    for split in ("val", "test"):
        if split in splits:
            # Evaluation shards are not padded: every sample counts once in the reduced metrics.
            dataset = evaluated.get(split, splits[split])
            shard = dataset if world == 1 else Subset(dataset, range(rank, len(dataset), world))
            loaders[split] = DataLoader(shard, shuffle=False, **common)
    return loaders
