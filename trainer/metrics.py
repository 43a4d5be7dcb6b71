"""Epoch bookkeeping for the Trainer: sums of step outputs, batch sizes, log lines."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from torchcamp.trainer import distributed


class Evaluator(Protocol):
    """A metric over a whole evaluation pass that batch means cannot give (detection mAP):
    fed every step's outputs, computed once at the end (over all ranks under DDP)."""

    def update(self, outputs: Mapping[str, Any]) -> None: ...

    def compute(self) -> dict[str, float]: ...


@dataclass(frozen=True)
class Counts:
    """A step output counted over the epoch instead of summed: ``cells`` (integer indices into
    a tensor of ``shape``, flattened) each add one to their cell. A confusion matrix is
    ``Counts(labels * classes + predictions, (classes, classes))``: the epoch's matrix is one
    ``bincount`` over every step's cells, where a per-step matrix would cost a ``bincount`` and
    an addition every step. ``summarize`` gets the counted tensor of ``shape``."""

    cells: torch.Tensor
    shape: tuple[int, ...]

    def tensor(self) -> torch.Tensor:
        """The counted tensor of ``shape`` (this step's counts alone)."""
        return torch.bincount(self.cells, minlength=math.prod(self.shape)).view(self.shape)


class EpochSums:
    """Running sums of a step's outputs over an epoch.

    Scalars (loss, accuracy) become batch-size-weighted means; tensors of one or more dimensions
    are summed as they are, and :class:`Counts` counted (both for ``summarize``, e.g. a
    confusion matrix). A step only appends its (detached) outputs to a list: they are summed
    together, in one stacked reduction on their own device, every ``FOLD_EVERY`` steps and when
    the sums are read. So a step launches no kernel and waits for no host copy just to be
    averaged (a ``bincount`` on a GPU reads its input's maximum: once per fold, not per step),
    and memory stays bounded.
    """

    FOLD_EVERY = 256

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count_sums: dict[str, torch.Tensor] = {}
        self.weight = 0
        # name -> (values, batch sizes) not yet summed, or for Counts (cells, shape); a name
        # may be missing from some steps.
        self._pending: dict[str, tuple[list[torch.Tensor], Any]] = {}
        self._pending_steps = 0

    def add(self, out: Mapping[str, Any], weight: int) -> None:
        """Add one batch's outputs, skipping non-tensors (detections meant for an evaluator)."""
        for name, value in out.items():
            if isinstance(value, torch.Tensor):
                values, weights = self._pending.setdefault(name, ([], []))
                values.append(value.detach() if value.requires_grad else value)
                weights.append(weight)
            elif isinstance(value, Counts):
                self._pending.setdefault(name, ([], value.shape))[0].append(value.cells)
        self.weight += weight
        self._pending_steps += 1
        if self._pending_steps >= self.FOLD_EVERY:
            self._fold()

    def _fold(self) -> None:
        """Sum the pending outputs into ``sums`` (float64: a long epoch keeps every batch's
        digits; products of a float32 and a batch size are exact in it, so the result does
        not depend on where the folds fall) and ``count_sums``."""
        for name, (values, weights) in self._pending.items():
            if isinstance(weights, tuple):  # Counts: (cells..., the counted tensor's shape)
                cells = torch.cat(values)
                total = torch.bincount(cells, minlength=math.prod(weights)).view(weights)
                sums = self.count_sums
                sums[name] = sums[name] + total if name in sums else total
                continue
            stacked = torch.stack(values)
            if stacked.ndim == 1:
                sizes = torch.tensor(weights, dtype=torch.float64).to(stacked.device)
                total, sums = (stacked.double() * sizes).sum(), self.sums
            else:
                total, sums = stacked.sum(dim=0), self.count_sums
            sums[name] = sums[name] + total if name in sums else total
        self._pending.clear()
        self._pending_steps = 0

    def state_dict(self) -> dict[str, Any]:
        """The sums so far (for a checkpoint written mid-epoch), on the CPU."""
        self._fold()
        return {
            "sums": {n: v.cpu() for n, v in self.sums.items()},
            "count_sums": {n: t.cpu() for n, t in self.count_sums.items()},
            "weight": self.weight,
        }

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device) -> None:
        """Continue from :meth:`state_dict`'s sums (empty: start from zero)."""
        self.sums = {n: v.to(device) for n, v in (state.get("sums") or {}).items()}
        self.count_sums = {n: t.to(device) for n, t in (state.get("count_sums") or {}).items()}
        self.weight = state.get("weight", 0)
        self._pending.clear()
        self._pending_steps = 0

    def result(self, prefix: str) -> dict[str, float]:
        """The means over all ranks' samples (one all-reduce under DDP)."""
        self._fold()
        names = sorted(self.sums)
        totals = torch.tensor([float(self.weight), *[float(self.sums[n]) for n in names]])
        weight, *sums = distributed.all_reduce_sum(totals).tolist()
        return {
            f"{prefix}/{n}": total / max(weight, 1.0) for n, total in zip(names, sums, strict=True)
        }

    def counts(self) -> dict[str, torch.Tensor]:
        """The summed count tensors, over all ranks, on the CPU."""
        self._fold()
        return {n: distributed.all_reduce_sum(t).cpu() for n, t in sorted(self.count_sums.items())}


def logged_step_scalars(
    outputs: Mapping[str, Any], step_lrs: Mapping[str, float]
) -> dict[str, torch.Tensor | float]:
    """What a logger records at a logging step, the same for every logger: each 0-d output as
    ``train/<name>_step`` (detached, still on its device) and each parameter group's lr as
    ``lr/<group>`` (the one it just stepped with)."""
    scalars: dict[str, torch.Tensor | float] = {
        f"train/{name}_step": value.detach()
        for name, value in outputs.items()
        if isinstance(value, torch.Tensor) and value.ndim == 0
    }
    return scalars | {f"lr/{group}": lr for group, lr in step_lrs.items()}


def read_numbers(values: Sequence[torch.Tensor | float]) -> list[float]:
    """``values`` (0-d tensors on one device, and numbers) as floats, the tensors copied to
    the host in one read."""
    tensors = [v.float() for v in values if isinstance(v, torch.Tensor)]
    read = iter(torch.stack(tensors).tolist() if tensors else [])
    return [next(read) if isinstance(v, torch.Tensor) else float(v) for v in values]


def batch_size(batch: Any) -> int:
    """Samples in a batch: the length of its first element (inputs), or of the batch itself."""
    first = batch[0] if isinstance(batch, (list, tuple)) else batch
    return len(first) if hasattr(first, "__len__") else 1


def format_metrics(metrics: Mapping[str, float]) -> str:
    return "  ".join(f"{name}={value:.4f}" for name, value in metrics.items())
