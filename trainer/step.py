"""One training or evaluation step of the Trainer: the batch onto the device, the task's step
under autocast (with the regularizer's penalty), the finite-loss check, backward and the
optimizer steps. :class:`TrainingStep` is a part of :class:`~torchcamp.trainer.trainer.Trainer`
kept in its own file; it works on the Trainer's state (``model``, ``optimization``, ...).

This runs on every batch, so it avoids work a plain loop would not do: no copy to the device
on the CPU, no dict copies of a single-part step's outputs.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from torchcamp.trainer.errors import NonFiniteLossError
from torchcamp.trainer.optimization import SINGLE
from torchcamp.trainer.params import without_grad
from torchcamp.trainer.utils import move_to_device, to_channels_last


class TrainingStep:
    """The Trainer's per-batch work (see the module's docstring)."""

    def _train_step(
        self, batch: Any, window_starts: bool, window_size: int, steps_now: bool
    ) -> dict[str, torch.Tensor]:
        """Forward and backward for every part (one, or a GAN's D then G) on one micro-batch of
        an accumulation window; each optimizer steps at the window's end."""
        batch = self._to_device(batch)
        # DDP all-reduces gradients on every backward; only the window's last one needs it.
        # (Looked up only then: a module's missing attribute costs an exception.)
        no_sync = None if steps_now else getattr(self.model, "no_sync", None)
        out: dict[str, torch.Tensor] = {}
        for phase, optimizer in self.optimizers.items():
            if window_starts:
                optimizer.zero_grad(set_to_none=True)
            sync = nullcontext() if no_sync is None else no_sync()
            held_fixed = self.optimization.held_fixed[phase]
            with without_grad(held_fixed) if held_fixed else nullcontext(), sync:
                phase_out = self._forward(batch, training=True, phase=phase)
                loss = self._check_finite(phase_out["loss"], phase)
                if window_size > 1:  # the window's gradient is the mean of its micro-batches'
                    loss = loss / window_size
                self.optimization.backward(loss)
            if steps_now:
                self.optimization.step(optimizer, self._nonfinite)
            out = self._named(phase, phase_out, out)
        if steps_now:
            self.optimization.update_scaler(self.global_step + 1)
            self._after_optimizer_step()
        return out

    def _forward(
        self, batch: Any, training: bool, model: nn.Module | None = None, phase: str = SINGLE
    ) -> dict[str, Any]:
        """The task's step on a batch already on the device, under autocast."""
        # `is None`, not `or`: a compiled module has no truth value (it asks for len()).
        model = self.model if model is None else model
        with self.optimization.autocast():
            if self.phased:
                out = self.step_fn(model, batch, self.loss_fn, phase=phase)
            else:
                out = self.step_fn(model, batch, self.loss_fn)
            if training and self.regularizer is not None:
                penalty = self.regularizer.penalty(self.module)
                if penalty is not None:
                    out = {**out, "reg_loss": penalty, "loss": out["loss"] + penalty}
        return out

    def _to_device(self, batch: Any) -> Any:
        """``batch`` on the Trainer's device (a CPU run's batches are there already), in NHWC
        memory order under ``channels_last``."""
        if self.device.type != "cpu":
            batch = move_to_device(batch, self.device)
        return to_channels_last(batch) if self.channels_last else batch

    def _check_finite(self, loss: torch.Tensor, phase: str) -> torch.Tensor:
        """``loss``, or stop at a NaN/Inf loss before it reaches the weights; under fp16 the
        GradScaler skips such steps itself (counted in ``Optimization.update_scaler``), and
        where :attr:`finite_check_on_device` it is flagged on the device (read later)."""
        if self.optimization.scaler.is_enabled():
            return loss
        if self.finite_check_on_device:
            bad = (~torch.isfinite(loss.detach())).float()
            self._nonfinite = bad if self._nonfinite is None else self._nonfinite.maximum(bad)
            return loss
        if not math.isfinite(loss.item()):
            part = f"the loss (part {phase})" if self.phased else "the loss"
            raise self._nonfinite_error(
                f"{part} is {loss.item()} at optimizer step {self.global_step + 1}"
            )
        return loss

    def _raise_if_nonfinite(self) -> None:
        """Where :attr:`finite_check_on_device`: stop if a loss since the last check was not
        finite (the steps since then changed nothing)."""
        if self._nonfinite is not None and self._nonfinite.item():
            raise self._nonfinite_error(
                f"a loss was not finite by optimizer step {self.global_step} (read every "
                "trainer.log_every_n_steps steps; the steps from it on were skipped)"
            )

    def _nonfinite_error(self, what: str) -> NonFiniteLossError:
        return NonFiniteLossError(
            f"{what} (epoch {self.epoch + 1}): usually a learning rate too high (optimizer.lr), "
            "exploding gradients (set trainer.gradient_clip_val), a log of 0 or a division by "
            "zero in the loss, or bad input data. The weights before this step are in "
            "checkpoints/last_good.pt; trainer.detect_anomaly=true names the operation"
        )

    def _named(self, phase: str, out: Any, into: dict[str, Any]) -> Any:
        """``into`` with a phase's outputs added, its ``loss`` renamed ``loss_<phase>``
        (``loss_D``, ``loss_G``); a single-part step's outputs are returned as they are."""
        if not self.phased:
            return out
        into.update({f"loss_{phase}" if k == "loss" else k: v for k, v in out.items()})
        return into

    def _closure_step(self, batch: Any) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        # The optimizer calls the closure many times (line search): copy the batch over once.
        batch = self._to_device(batch)

        def compute_loss() -> torch.Tensor:
            out.update(self._forward(batch, training=True))
            return out["loss"]

        self.optimization.step_with_closure(compute_loss, list(self.model.parameters()))
        self._after_optimizer_step()
        return out

    def _after_optimizer_step(self) -> None:
        self.global_step += 1
        if self.regularizer is not None:
            self.regularizer.after_step(self.module)  # constraints such as max_norm
        self.optimization.end_step()
