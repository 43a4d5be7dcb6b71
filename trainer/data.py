"""Training data that a checkpoint can stop and restart exactly.

Two pieces make the batches (and their random augmentation) of any step a function of
``(seed, epoch, position)`` alone, so a run resumed mid-epoch sees exactly what an unbroken
run sees, with any ``num_workers``:

- :class:`ResumableSampler` wraps the shuffling sampler (whose order is already fixed by
  ``(seed, epoch)``), can start an epoch after the batches a checkpoint had consumed, and
  hands out keys ``(seed, epoch, index)`` instead of bare indices;
- :class:`SeededSamples` loads sample ``index`` with python's, numpy's and torch's global
  RNGs seeded from that key, so its augmentation does not depend on which worker loads it or
  on what that worker loaded before (DataLoader workers' own seeds change with the number of
  workers and would change again after skipping batches).
"""

from __future__ import annotations

import random
import signal
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

SampleKey = tuple[int, int, int]  # (seed, epoch, index)


class ResumableSampler(Sampler[SampleKey]):
    """Keys ``(seed, epoch, index)`` in the order of ``sampler``; :meth:`skip` leaves out the
    first samples of the next pass (once), for an epoch resumed part-way."""

    def __init__(self, sampler: Sampler[int], seed: int) -> None:
        self.sampler, self.seed = sampler, seed
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch``: the inner sampler reshuffles (DistributedSampler and the
        balanced sampler are functions of (seed, epoch))."""
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def skip(self, count: int) -> None:
        """Leave out the first ``count`` samples of the next pass only."""
        self._skip = count

    def __iter__(self) -> Iterator[SampleKey]:
        skip, self._skip = self._skip, 0
        for index in islice(iter(self.sampler), skip, None):
            yield self.seed, self.epoch, int(index)

    def __len__(self) -> int:
        return max(len(self.sampler) - self._skip, 0)


class SeededSamples(Dataset):
    """``dataset`` indexed by :class:`ResumableSampler`'s keys: each sample is loaded with the
    global RNGs seeded from its key, and the caller's RNG states are restored afterwards (with
    ``num_workers=0`` the main process loads, and its RNG drives dropout)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: SampleKey) -> Any:
        seed, epoch, index = key
        with seeded_rngs(sample_seed(seed, epoch, index)):
            return self.dataset[index]


def epoch_batches(loader: Iterable, epoch: int, start: int = 0) -> Iterable:
    """``loader``'s batches for ``epoch``, from batch ``start`` on (a resumed epoch)."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        # The shuffle order is a function of (seed, epoch), so a resumed run sees the same
        # batches as an unbroken one.
        sampler.set_epoch(epoch)
    if start == 0:
        return loader
    if hasattr(sampler, "skip"):  # ResumableSampler: the skipped samples are not even loaded
        sampler.skip(start * loader.batch_size)
        return loader
    return islice(loader, start, None)


def limited_batches(num_batches: int, limit: int | float | None) -> int:
    """How many of an epoch's ``num_batches`` to run under Lightning's ``limit_*_batches``:
    all for None, at most ``limit`` for an int, that share (at least one) for a float."""
    if limit is None:
        return num_batches
    if isinstance(limit, float):
        return max(1, int(num_batches * limit)) if num_batches else 0
    return min(num_batches, limit)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 32-bit seed for one sample of one epoch (numpy's SeedSequence hashing)."""
    sequence = np.random.SeedSequence([seed % 2**32, epoch, index])
    return int(sequence.generate_state(1)[0])


@contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Seed python's, numpy's and torch's CPU RNGs for the block.

    Python's and torch's states are restored afterwards: in the main process (``num_workers=0``)
    they also drive the model (dropout), which must not depend on how samples were loaded.
    Numpy's is left as the sample set it (saving and restoring it costs ~70 us a sample, and
    torchcamp's training draws nothing from it); it is deterministic either way.
    """
    python_state = random.getstate()
    torch_state = torch.default_generator.get_state()
    random.seed(seed)
    np.random.seed(seed)
    # Not torch.manual_seed: that also seeds every accelerator's generator (~80 us).
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(python_state)
        torch.default_generator.set_state(torch_state)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: workers leave Ctrl-C (SIGINT, sent to every process of
    the terminal's group) and SLURM's SIGUSR1 warning to the main process, which stops at the
    next step boundary and may need more batches to get there.

    SIGTERM keeps its default: Python's multiprocessing stops leftover workers with it when
    the main process exits, and a worker ignoring it would hang that exit.
    """
    for signum in (signal.SIGINT, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)
