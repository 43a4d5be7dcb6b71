"""Epoch bookkeeping for the Trainer: sums of step outputs, batch sizes, log lines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch

from torchcamp.trainer import distributed


class Evaluator(Protocol):
    """A metric over a whole evaluation pass that batch means cannot give (detection mAP):
    fed every step's outputs, computed once at the end (over all ranks under DDP)."""

    def update(self, outputs: Mapping[str, Any]) -> None: ...

    def compute(self) -> dict[str, float]: ...


class EpochSums:
    """Running sums of a step's outputs over an epoch.

    Scalars (loss, accuracy) become batch-size-weighted means; tensors of one or more dimensions
    (counts such as a confusion matrix) are summed as they are. Sums stay on the step's device
    until the epoch ends, so a GPU step never waits for a host copy just to be averaged.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count_sums: dict[str, torch.Tensor] = {}
        self.weight = 0

    def add(self, out: Mapping[str, Any], weight: int) -> None:
        """Add one batch's outputs, skipping non-tensors (detections meant for an evaluator)."""
        for name, value in out.items():
            if not isinstance(value, torch.Tensor):
                continue
            value = value.detach()
            sums = self.sums if value.ndim == 0 else self.count_sums
            if name not in sums:  # float64: a long epoch's sum keeps every batch's digits
                dtype = torch.float64 if value.ndim == 0 else value.dtype
                sums[name] = torch.zeros_like(value, dtype=dtype)
            sums[name].add_(value, alpha=weight if value.ndim == 0 else 1)
        self.weight += weight

    def state_dict(self) -> dict[str, Any]:
        """The sums so far (for a checkpoint written mid-epoch), on the CPU."""
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

    def result(self, prefix: str) -> dict[str, float]:
        """The means over all ranks' samples (one all-reduce under DDP)."""
        names = sorted(self.sums)
        totals = torch.tensor([float(self.weight), *[float(self.sums[n]) for n in names]])
        weight, *sums = distributed.all_reduce_sum(totals).tolist()
        return {
            f"{prefix}/{n}": total / max(weight, 1.0) for n, total in zip(names, sums, strict=True)
        }

    def counts(self) -> dict[str, torch.Tensor]:
        """The summed count tensors, over all ranks, on the CPU."""
        return {n: distributed.all_reduce_sum(t).cpu() for n, t in sorted(self.count_sums.items())}


def batch_size(batch: Any) -> int:
    """Samples in a batch: the length of its first element (inputs), or of the batch itself."""
    first = batch[0] if isinstance(batch, (list, tuple)) else batch
    return len(first) if hasattr(first, "__len__") else 1


def format_metrics(metrics: Mapping[str, float]) -> str:
    return "  ".join(f"{name}={value:.4f}" for name, value in metrics.items())
