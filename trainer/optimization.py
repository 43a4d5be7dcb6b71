"""How gradients become optimizer steps: the optimizers (one, or one per part of a model that
trains parts against each other), their schedulers, mixed precision (autocast, fp16 loss
scaling) and gradient clipping. The Trainer owns one :class:`Optimization` and decides when
to step it; everything about how is here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from torchcamp.trainer.errors import UserError
from torchcamp.trainer.options import PRECISIONS
from torchcamp.trainer.params import needs_closure, other_parts_params

log = logging.getLogger(__name__)

SINGLE = "model"  # the name of the one optimizer of an ordinary task


class Optimization:
    """Optimizers and schedulers by part (``{"model": ...}``, a GAN's ``{"D": ..., "G": ...}``),
    stepped in that order on every batch, with AMP and clipping for each."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer | Mapping[str, torch.optim.Optimizer],
        scheduler: Any = None,
        *,
        scheduler_interval: str = "epoch",
        precision: str = "32",
        device_type: str = "cpu",
        gradient_clip_val: float | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.phased = isinstance(optimizer, Mapping)
        self.optimizers = dict(optimizer) if self.phased else {SINGLE: optimizer}
        if scheduler is None or isinstance(scheduler, Mapping):
            self.schedulers = {k: v for k, v in (scheduler or {}).items() if v is not None}
        else:
            self.schedulers = {SINGLE: scheduler}
        # Held without gradients while each part trains (computed once, not every step).
        self.held_fixed = {
            part: other_parts_params(self.optimizers, part) for part in self.optimizers
        }
        self.scheduler_interval = scheduler_interval
        self.precision, self.device_type = precision, device_type
        self.gradient_clip_val = gradient_clip_val
        # fp16 needs loss scaling to keep small gradients from underflowing; bf16 does not.
        # One scaler serves every optimizer: each is stepped through it, and the scale is
        # updated once per optimizer step of the whole model (PyTorch's AMP recipe).
        self.scaler = torch.amp.GradScaler(device_type, enabled=precision == "16-mixed")
        self.needs_closure = any(map(needs_closure, self.optimizers.values()))
        # Per-step schedulers move the lrs on after each step: the ones it used, kept.
        self._stepped_lrs: dict[str, float] | None = None
        self.skipped_steps = 0  # fp16: optimizer steps the GradScaler skipped (inf/NaN grads)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The first (for most tasks the only) optimizer."""
        return next(iter(self.optimizers.values()))

    @property
    def scheduler(self) -> Any:
        """The first optimizer's scheduler, or None."""
        return self.schedulers.get(next(iter(self.optimizers)))

    def autocast(self):
        """The forward pass's autocast context at this precision."""
        if self.precision == "32":
            return nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16-mixed" else torch.float16
        return torch.autocast(self.device_type, dtype=dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """The loss's gradients, scaled under fp16."""
        (self.scaler.scale(loss) if self.scaler.is_enabled() else loss).backward()

    @property
    def skips_on_device(self) -> bool:
        """Whether every optimizer can be told, by a tensor on the device, to skip its step
        (the fused ones, as GradScaler tells them): no host sync needed to decide."""
        return not self.scaler.is_enabled() and all(
            getattr(optimizer, "_step_supports_amp_scaling", False)
            for optimizer in self.optimizers.values()
        )

    def step(self, optimizer: torch.optim.Optimizer, skip: torch.Tensor | None = None) -> None:
        """Clip and step one optimizer; call :meth:`end_step` once all have stepped. ``skip``
        (a 0-d float tensor, where :attr:`skips_on_device`): the step changes nothing, neither
        weights nor optimizer state, where it is nonzero."""
        if self.gradient_clip_val is not None:
            self.scaler.unscale_(optimizer)  # clip the true gradients, not scaled ones
            params = [p for group in optimizer.param_groups for p in group["params"]]
            nn.utils.clip_grad_norm_(params, self.gradient_clip_val)
        if skip is None:  # without fp16's scaler, the optimizer itself: nothing to check
            if self.scaler.is_enabled():
                self.scaler.step(optimizer)
            else:
                optimizer.step()
            return
        optimizer.found_inf = skip  # what a fused optimizer's kernels read (GradScaler's way)
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf

    def step_with_closure(
        self, compute_loss: Callable[[], torch.Tensor], params: Sequence[nn.Parameter]
    ) -> None:
        """Step an optimizer that re-evaluates the loss itself (LBFGS's line search)."""
        optimizer = self.optimizer

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = compute_loss()
            loss.backward()
            if self.gradient_clip_val is not None:
                nn.utils.clip_grad_norm_(params, self.gradient_clip_val)
            return loss

        optimizer.step(closure)

    def update_scaler(self, step: int) -> None:
        """Once every optimizer has stepped; a lower scale afterwards means they skipped
        optimizer step number ``step``."""
        if not self.scaler.is_enabled():
            return
        scale = self.scaler.get_scale()
        self.scaler.update()
        if self.scaler.get_scale() < scale:
            self.skipped_steps += 1
            log.warning(
                "fp16: optimizer step %d skipped (inf/NaN gradients), loss scale now %g; "
                "%d skipped so far",
                step,
                self.scaler.get_scale(),
                self.skipped_steps,
            )

    def end_step(self) -> None:
        """After an optimizer step: step per-step schedulers."""
        if self.scheduler_interval == "step":
            self._stepped_lrs = self._current_lrs()
            for scheduler in self.schedulers.values():
                scheduler.step()

    @property
    def step_lrs(self) -> dict[str, float]:
        """The lr of every parameter group (``group0``, or ``D/group0`` by part) at the last
        optimizer step: read when asked, not copied on every step."""
        return self._current_lrs() if self._stepped_lrs is None else self._stepped_lrs

    def _current_lrs(self) -> dict[str, float]:
        return {
            f"{name}/group{index}" if self.phased else f"group{index}": group["lr"]
            for name, opt in self.optimizers.items()
            for index, group in enumerate(opt.param_groups)
        }

    def end_epoch(self, metrics: Mapping[str, float], monitor: str | None) -> None:
        """Step per-epoch schedulers; ReduceLROnPlateau watches ``metrics[monitor]``."""
        if self.scheduler_interval != "epoch":
            return
        for scheduler in self.schedulers.values():
            if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step()
            elif monitor in metrics:
                scheduler.step(metrics[monitor])
            else:
                raise UserError(
                    f"scheduler=plateau watches trainer.monitor={monitor}, which this run does "
                    f"not report; use one of {', '.join(sorted(metrics))}"
                )

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "schedulers": {name: sched.state_dict() for name, sched in self.schedulers.items()},
            "scaler": self.scaler.state_dict(),
            "skipped_steps": self.skipped_steps,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if sorted(state["optimizers"]) != sorted(self.optimizers):
            raise ValueError(
                f"it trains {', '.join(state['optimizers'])}, this run {', '.join(self.optimizers)}"
            )
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
            # It stepped in the run that wrote the checkpoint. Torch's schedulers only know of
            # this process's steps: a run resumed at an epoch's last step steps its per-epoch
            # scheduler first, and torch would warn on stderr that it came before the optimizer.
            optimizer._opt_called = True  # type: ignore[attr-defined]
        for name, scheduler in self.schedulers.items():
            if name in state["schedulers"]:
                scheduler.load_state_dict(state["schedulers"][name])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.skipped_steps = state.get("skipped_steps", 0)
