"""A run's data from its settings: the task's datasets by split (read, rendered or downloaded),
the decode cache, and the DataLoaders (seeded and resumable, sharded under DDP)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from torchcamp.datasets.balance import balanced_sampler
from torchcamp.trainer import distributed
from torchcamp.trainer.app.settings import Settings
from torchcamp.trainer.data import ResumableSampler, SeededSamples, ignore_stop_signals
from torchcamp.trainer.errors import UserError

log = logging.getLogger("torchcamp")


def build_datasets(
    settings: Settings, task: ModuleType, synthetic_root: Path
) -> tuple[dict[str, Any], dict[str, str]]:
    """The task's datasets by split, and notes for the logs. With ``data.synthetic`` rank 0
    renders the stand-in data set into ``synthetic_root`` first; with ``data.download`` it
    fetches a missing one into ``data.root``."""
    data = settings.data
    notes: dict[str, str] = {}
    root = Path(data.root)
    if data.synthetic:
        root = synthetic_root
        if distributed.rank() == 0:  # the other ranks wait and read the same files
            task.make_synthetic_data(root, seed=settings.seed)
            notes["data/synthetic"] = (
                f"data.synthetic=true: training on a rendered stand-in data set in {root}, not "
                "on real data; its figures say nothing about the real task"
            )
            log.warning(notes["data/synthetic"])
        distributed.barrier()
    elif data.download:
        _download_once(task, root, settings.task.name)
    splits = task.build_datasets(
        root,
        seed=settings.seed,
        augment=data.augment,
        skip_corrupt=data.skip_corrupt,
        **settings.task.options,
    )
    return splits, notes


def _download_once(task: ModuleType, root: Path, task_name: str) -> None:
    """``data.download=true``: let the task fetch its data unless it is already there."""
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
    if data.balance == "sampler":  # classes drawn equally often, fixed by (seed, epoch)
        sampler = balanced_sampler(splits["train"], seed, num_replicas=world, rank=rank)
    else:
        sampler = DistributedSampler(
            splits["train"], num_replicas=world, rank=rank, shuffle=True, seed=seed
        )
    loaders = {
        "train": DataLoader(
            SeededSamples(splits["train"]), sampler=ResumableSampler(sampler, seed), **common
        )
    }
    for split in ("val", "test"):
        if split in splits:
            # Evaluation shards are not padded: every sample counts once in the reduced metrics.
            dataset = splits[split]
            shard = dataset if world == 1 else Subset(dataset, range(rank, len(dataset), world))
            loaders[split] = DataLoader(shard, shuffle=False, **common)
    return loaders
