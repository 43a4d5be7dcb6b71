"""The Trainer's settings, grouped by what they decide: how long (:class:`Limits`), how the model
computes (:class:`Compute`), how gradients become steps (:class:`Stepping`), which metric is the
run's best (:class:`Monitor`) and what it reports (:class:`Reporting`).

Each is a small frozen dataclass whose defaults are the Trainer's; the CLI builds them from the
``trainer:`` config keys (``trainer/app/assembly.py``), a script passes the ones it changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The precisions a run can train at: full float32, bfloat16 autocast, float16 autocast with
# loss scaling (CUDA only). The config's rules (trainer/app/validation.py) use this one list.
PRECISIONS = ("32", "bf16-mixed", "16-mixed")


@dataclass(frozen=True)
class Limits:
    """How much to train: ``max_epochs``, ``max_time`` seconds of training (counted across
    resumes; None: no limit), and per split a count or a share of its batches (None: all)."""

    max_epochs: int = 1
    max_time: float | None = None
    train_batches: int | float | None = None
    val_batches: int | float | None = None
    test_batches: int | float | None = None

    def batches(self, split: str) -> int | float | None:
        """The limit on ``split``'s batches (``train``, ``val``, ``test``; others: none)."""
        return getattr(self, f"{split}_batches", None)


@dataclass(frozen=True)
class Compute:
    """How the model computes: ``precision`` (one of :data:`PRECISIONS`), NHWC memory order
    (``channels_last``), and ``torch.compile`` (True, or its keyword arguments)."""

    precision: str = "32"
    channels_last: bool = False
    compile: bool | Mapping[str, Any] = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")


@dataclass(frozen=True)
class Stepping:
    """How gradients become optimizer steps: batches accumulated per step, the global gradient
    norm clipped to (None: off), and whether schedulers step per ``epoch`` or per ``step``."""

    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    scheduler_interval: str = "epoch"


@dataclass(frozen=True)
class Monitor:
    """The metric that makes an epoch the best (best.pt, ReduceLROnPlateau): its name (None:
    none) and whether lower (``min``) or higher (``max``) is better."""

    metric: str | None = "val/loss"
    mode: str = "min"


@dataclass(frozen=True)
class Reporting:
    """What the run shows and logs: optimizer steps between per-step log points, progress
    bars (only ever on a terminal), and the share of training time the callbacks' periodic
    extras may take (trainer/extras.py)."""

    log_every_n_steps: int = 10
    progress: bool = True
    extras_budget: float = 0.01
