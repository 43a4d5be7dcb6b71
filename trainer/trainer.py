"""The generic training loop: fit -> train_one_epoch -> evaluate.

The Trainer receives plain objects (a model, loaders, an optimizer, ...) and a task's
``step(model, batch, loss_fn) -> {"loss": tensor, other scalars}``. It owns what every task
shares: device placement, AMP, gradient accumulation, clipping, schedulers, the best-metric
bookkeeping, and the state a checkpoint needs. Extras (TensorBoard, checkpoint files) are
callbacks.

A task that trains parts of its model against each other (a GAN's discriminator ``D`` and
generator ``G``) passes one optimizer per part, ``{"D": ..., "G": ...}``: on every batch the
Trainer calls ``step(model, batch, loss_fn, phase="D")`` and then ``phase="G"``, each with
only that part's parameters taking gradients, and keeps AMP, accumulation, clipping,
scheduling and checkpointing for every optimizer, so the task writes no optimizer code at all.

Training ends after ``max_epochs``, or earlier: when a callback sets ``should_stop`` (early
stopping, after an epoch) or when ``max_time`` seconds of training have passed (at the next
optimizer step, counted across resumes); either way the test split is scored after it.
``limit_*_batches`` run part of each epoch (a count or a share of the batches). Every epoch
leaves a row in ``history`` (metrics.csv), which checkpoints carry.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from itertools import islice
from typing import Any

import torch
from torch import nn
from tqdm import tqdm  # not tqdm.auto, whose bar calls iter(loader): a 2nd set of workers

from torchcamp.trainer import distributed
from torchcamp.trainer.callbacks import (
    Callback,
    callback_methods,
    callback_states,
    load_callback_states,
    run_callbacks,
)
from torchcamp.trainer.checkpoint import load_weights
from torchcamp.trainer.data import epoch_batches, limited_batches
from torchcamp.trainer.errors import NonFiniteLossError, TrainingInterrupted, UserError
from torchcamp.trainer.extras import ExtrasBudget
from torchcamp.trainer.metrics import EpochSums, Evaluator, batch_size, format_metrics
from torchcamp.trainer.optimization import SINGLE, Optimization
from torchcamp.trainer.params import check_optimizers_fit, log_parameters, without_grad
from torchcamp.trainer.regularizers import Regularizer
from torchcamp.trainer.status import RunStatus
from torchcamp.trainer.utils import (
    get_rng_state,
    move_to_device,
    set_backend_flags,
    set_rng_state,
    to_channels_last,
)

log = logging.getLogger(__name__)

StepFn = Callable[..., Mapping[str, Any]]


class Trainer:
    """Trains ``model`` with ``step_fn`` and reports epoch metrics as ``{"train/loss": ...}``."""

    def __init__(
        self,
        model: nn.Module,
        step_fn: StepFn,
        optimizer: torch.optim.Optimizer | Mapping[str, torch.optim.Optimizer],
        loss_fn: Callable,
        *,
        device: torch.device | str = "cpu",
        scheduler: Any = None,
        scheduler_interval: str = "epoch",
        regularizer: Regularizer | None = None,
        precision: str = "32",
        max_epochs: int = 1,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
        log_every_n_steps: int = 10,
        monitor: str | None = "val/loss",
        monitor_mode: str = "min",
        callbacks: Iterable[Callback] = (),
        progress: bool = True,
        summarize_fn: Callable[[dict[str, torch.Tensor]], dict[str, float]] | None = None,
        make_evaluator: Callable[[], Evaluator] | None = None,
        channels_last: bool = False,
        compile: bool | Mapping[str, Any] = False,
        deterministic: bool = False,
        cudnn_benchmark: bool = False,
        detect_anomaly: bool = False,
        max_time: float | None = None,
        limit_train_batches: int | float | None = None,
        limit_val_batches: int | float | None = None,
        limit_test_batches: int | float | None = None,
        extras_budget: float = 0.01,
    ) -> None:
        set_backend_flags(deterministic, cudnn_benchmark, detect_anomaly)
        self.device = torch.device(device)
        # `model` may be wrapped (DistributedDataParallel, DataParallel, torch.compile): it runs
        # the steps; `module` is the bare model that is summarised and saved, so a checkpoint
        # of a compiled run loads into a plain model and the other way round.
        # NHWC: faster convolutions on tensor cores and oneDNN; inputs follow in `_to_device`.
        self.channels_last = channels_last
        memory_format = torch.channels_last if channels_last else torch.preserve_format
        self.model = model.to(self.device, memory_format=memory_format)
        self.module = distributed.unwrap(model)
        if compile:
            self.model = torch.compile(self.model, **({} if compile is True else compile))
        if isinstance(loss_fn, nn.Module):
            loss_fn.to(self.device)  # class weights and other buffers
        self.step_fn, self.loss_fn, self.regularizer = step_fn, loss_fn, regularizer
        self.optimization = Optimization(
            optimizer,
            scheduler,
            scheduler_interval=scheduler_interval,
            precision=precision,
            device_type=self.device.type,
            gradient_clip_val=gradient_clip_val,
        )
        self.optimizers = self.optimization.optimizers  # by part, stepped in this order
        self.phased = self.optimization.phased
        self.max_epochs = max_epochs
        self.max_time = max_time  # seconds of training, counted across resumes
        self.limits = {
            "train": limit_train_batches,
            "val": limit_val_batches,
            "test": limit_test_batches,
        }
        self.accumulate_grad_batches = accumulate_grad_batches
        self.log_every_n_steps = log_every_n_steps
        self.monitor, self.monitor_mode = monitor, monitor_mode
        self.callbacks = list(callbacks)  # run_callbacks calls them in `order`
        # Bars only where a person watches: a log file or CI gets one line per epoch instead.
        self.progress = progress and sys.stdout.isatty()
        self.epoch = 0  # epochs completed
        self.global_step = 0  # optimizer steps taken
        # Batches of the current epoch already trained on: a checkpoint written mid-epoch (always
        # at the end of an optimizer step) continues from here, with the epoch's sums so far.
        self.batch_in_epoch = 0
        self.batches_per_epoch: int | None = None
        self._train_sums = EpochSums()
        # Set (to the signal's name) by a signal handler: stop at the next optimizer step.
        self.stop_requested: str | None = None
        self._resumed_rng: dict[str, Any] | None = None  # restored when fit starts
        self.best: float | None = None
        self.is_best = False  # did the last evaluation set a new best?
        # Training time (first training batch to now), counted across resumes: `fit_seconds`.
        self._seconds_before = 0.0  # of the runs this one continues
        self._fit_started: float | None = None
        # One row per epoch (epoch, step, its metrics, lr, seconds): metrics.csv and the curves.
        self.history: list[dict[str, float]] = []
        # The time the callbacks' periodic extras (views, histograms, pictures) may take: a
        # share of the training time (trainer/extras.py).
        self.extras = ExtrasBudget(extras_budget)
        # Set by a callback (early stopping) or the time limit: training ends after this step
        # (time limit) or epoch (early stopping), then the test split is scored as usual.
        self.should_stop = False
        self.stop_reason: str | None = None  # "early_stopped" | "time_limit"
        # A step may return count tensors (e.g. a confusion matrix): summed over the epoch and
        # the ranks, kept here per split, and turned into metrics by `summarize_fn`.
        self.summarize_fn = summarize_fn
        self.epoch_counts: dict[str, dict[str, torch.Tensor]] = {}
        self.make_evaluator = make_evaluator
        # On a GPU, reading the loss on the host every step (to stop at a NaN) would make the
        # CPU wait for the GPU to finish the step. With optimizers that can skip a step on the
        # device (fused ones), a non-finite loss is flagged there instead, turns every later
        # step into a no-op, and is read at the next logging point or the epoch's end; the
        # run stops with the weights from before it all the same.
        self.finite_check_on_device = (
            self.device.type == "cuda" and self.optimization.skips_on_device
        )
        self._nonfinite: torch.Tensor | None = None  # 1.0 once a loss was not finite
        check_optimizers_fit(self.model, self.optimizers, accumulate_grad_batches, precision)

    # ---- the loop -------------------------------------------------------------------------

    def fit(
        self,
        train_loader: Iterable,
        val_loader: Iterable | None = None,
        test_loader: Iterable | None = None,
        test_weights: Callable[[], Mapping[str, torch.Tensor] | None] | None = None,
    ) -> dict[str, float]:
        """Train from ``self.epoch`` to ``max_epochs``, validating after each epoch, then test.

        ``test_weights()`` gives the weights to test with (the best epoch's, say); None, or a
        call that returns None, tests the weights training ended with. Under DDP the test
        weights are rank 0's. Returns the last epoch's metrics plus ``best/<monitor>`` and
        ``test/<name>``.
        """
        log_parameters(self.module, self.optimizers, self.phased)
        run_callbacks(self.callbacks, "on_fit_start", self)
        if self._resumed_rng is not None:
            # Restored last, after everything that set the run up, so the next batch draws
            # exactly what it drew in the run that wrote the checkpoint.
            set_rng_state(self._resumed_rng)
            self._resumed_rng = None
        self._fit_started = None  # set on the first training batch
        if self._time_is_up():
            self._stop(RunStatus.TIME_LIMIT)
        while self.epoch < self.max_epochs and not self.should_stop:
            self._fit_one_epoch(train_loader, val_loader)
        self._seconds_before, self._fit_started = self.fit_seconds, None  # the clock stops
        run_callbacks(self.callbacks, "on_train_end", self)  # e.g. last.pt of a mid-epoch stop
        metrics = epoch_metrics(self.history[-1]) if self.history else {}
        if self.best is not None:
            metrics[f"best/{self.monitor}"] = self.best
        if test_loader is not None:
            weights = test_weights() if test_weights is not None else None
            if weights is not None:
                load_weights(self.module, weights, "the test weights")
            # Other ranks may not see rank 0's files (nodes without a shared disk).
            distributed.broadcast_module(self.module)
            metrics |= self.evaluate(test_loader, "test")
        run_callbacks(self.callbacks, "on_fit_end", self, metrics)
        return metrics

    def _fit_one_epoch(self, train_loader: Iterable, val_loader: Iterable | None) -> None:
        """Train (the rest of) an epoch, validate, record it, and let the callbacks see it; an
        epoch cut short by the time limit ends at its last optimizer step instead."""
        started = time.perf_counter()
        try:
            metrics = self.train_one_epoch(train_loader)
            self._raise_if_nonfinite()
        except NonFiniteLossError:
            run_callbacks(self.callbacks, "on_nonfinite_loss", self)  # save the last good
            raise
        if self.batch_in_epoch < self.batches_per_epoch:  # stopped mid-epoch: no epoch to log
            return
        if val_loader is not None:
            metrics |= self.evaluate(val_loader, "val")
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        self._update_best(metrics)
        self.optimization.end_epoch(metrics, self.monitor)
        self.history.append(self._history_row(metrics, time.perf_counter() - started))
        log.info("epoch %d/%d  %s", self.epoch, self.max_epochs, format_metrics(metrics))
        run_callbacks(self.callbacks, "on_epoch_end", self, metrics)
        if distributed.is_distributed() and distributed.any_rank(self.should_stop):
            # Every rank sees the same reduced metrics, so they decide alike; this makes sure.
            self.should_stop, self.stop_reason = True, self.stop_reason or RunStatus.EARLY_STOPPED
        self._stop_if_requested()  # last.pt of this epoch is written: nothing more to save

    def _history_row(self, metrics: Mapping[str, float], seconds: float) -> dict[str, float]:
        """The epoch's row of metrics.csv: its number and step, metrics, lr(s) and seconds."""
        lrs = {
            f"lr/{name}" if self.phased else "lr": optimizer.param_groups[0]["lr"]
            for name, optimizer in self.optimizers.items()
        }
        return {
            "epoch": self.epoch,
            "step": self.global_step,
            **metrics,
            **lrs,
            "time/epoch_seconds": round(seconds, 4),
        }

    def train_one_epoch(self, loader: Iterable) -> dict[str, float]:
        """One pass over ``loader`` (the rest of it, in an epoch resumed part-way); returns the
        epoch means as ``train/<name>``."""
        self.model.train()
        num_batches = limited_batches(len(loader), self.limits["train"])
        start = self.batch_in_epoch
        self._check_same_epoch_length(num_batches)
        batches = epoch_batches(loader, self.epoch, start)
        if num_batches < len(loader):
            batches = islice(batches, num_batches - start)
        bar = tqdm(
            batches,
            desc=f"train {self.epoch + 1}",
            initial=start,
            total=num_batches,
            leave=False,
            disable=not self.progress,
        )
        needs_closure = self.optimization.needs_closure
        accumulate = 1 if needs_closure else self.accumulate_grad_batches
        step_end_hooks = callback_methods(self.callbacks, "on_train_step_end")
        for batch_idx, batch in enumerate(bar, start):
            if self._fit_started is None:
                self._fit_started = time.perf_counter()
            window_start = batch_idx - batch_idx % accumulate
            # The last window of an epoch may be shorter than k: average over what it has.
            window_size = min(accumulate, num_batches - window_start)
            steps_now = batch_idx + 1 == window_start + window_size
            if needs_closure:
                out = self._closure_step(batch)
            else:
                out = self._train_step(batch, batch_idx == window_start, window_size, steps_now)
            self._train_sums.add(out, weight=batch_size(batch))
            self.batch_in_epoch = batch_idx + 1
            if self.progress:
                self._show_losses(bar, out)
            if steps_now:  # a step boundary: where checkpoints are written and stops happen
                if self._nonfinite is not None and self.global_step % self.log_every_n_steps == 0:
                    self._raise_if_nonfinite()
                for hook in step_end_hooks:
                    hook(self, out)
                self._stop_if_requested()
                if self.should_stop:  # the time limit: this step is the last
                    break
        if self.batch_in_epoch < num_batches:  # the epoch goes on after a resume: keep its sums
            return {}
        sums, self._train_sums = self._train_sums, EpochSums()
        return self._epoch_metrics(sums, "train")

    def _show_losses(self, bar: tqdm, out: Mapping[str, torch.Tensor]) -> None:
        """The losses and lr in the bar's postfix, read (a host sync on a GPU) only when the
        bar is about to be redrawn (every ``mininterval`` seconds), not on every step."""
        if time.time() - bar.last_print_t < bar.mininterval:
            return
        losses = {k: f"{v.item():.4f}" for k, v in out.items() if k.startswith("loss")}
        bar.set_postfix(**losses, lr=f"{self.lr:.3g}", refresh=False)

    def _check_same_epoch_length(self, num_batches: int) -> None:
        if self.batch_in_epoch and num_batches != self.batches_per_epoch:
            raise UserError(
                f"the checkpoint stopped after batch {self.batch_in_epoch} of an epoch of "
                f"{self.batches_per_epoch} batches, and this run's epochs have {num_batches}: "
                "resume with the same data and data.batch_size"
            )
        self.batches_per_epoch = num_batches

    def _stop_if_requested(self) -> None:
        """At a step boundary: if a signal asked to stop (on any rank), save and stop; if the
        time limit is reached (on any rank), stop training after this step."""
        requested, time_up = self.stop_requested is not None, self._time_is_up()
        if distributed.is_distributed():  # every rank stops at the same step, or DDP hangs
            requested, time_up = distributed.any_rank_each(requested, time_up)
        if time_up and not requested and not self.should_stop:
            self._stop(RunStatus.TIME_LIMIT)
        if not requested:
            return
        run_callbacks(self.callbacks, "on_interrupt", self)
        raise TrainingInterrupted(
            f"stopped by {self.stop_requested or 'another rank'} at optimizer step "
            f"{self.global_step} (epoch {self.epoch + 1}, batch {self.batch_in_epoch})"
        )

    @property
    def fit_seconds(self) -> float:
        """Seconds of training so far, from the first training batch, across resumes."""
        if self._fit_started is None:
            return self._seconds_before
        return self._seconds_before + time.perf_counter() - self._fit_started

    def _time_is_up(self) -> bool:
        return self.max_time is not None and self.fit_seconds >= self.max_time

    def _stop(self, reason: str) -> None:
        """End training at this step boundary (or epoch's end) for ``reason``."""
        self.should_stop, self.stop_reason = True, reason
        if reason == RunStatus.TIME_LIMIT:
            log.info(
                "time limit: %.1f s of training reached trainer.max_time=%g s at optimizer step "
                "%d (epoch %d, batch %d); resume=auto continues with a larger trainer.max_time",
                self.fit_seconds,
                self.max_time,
                self.global_step,
                self.epoch + (self.batch_in_epoch > 0),
                self.batch_in_epoch,
            )

    @torch.no_grad()
    def evaluate(self, loader: Iterable, prefix: str = "val") -> dict[str, float]:
        """Run ``step_fn`` over ``loader`` without gradients; returns ``<prefix>/<name>`` means.

        Under DDP each rank evaluates its shard with the bare model (no collectives per batch,
        so shards of different lengths cannot hang) and the sums are reduced at the end.
        """
        model = self.module if distributed.is_distributed() else self.model
        model.eval()
        means = EpochSums()
        evaluator = self.make_evaluator() if self.make_evaluator is not None else None
        num_batches = limited_batches(len(loader), self.limits.get(prefix))
        batches = islice(loader, num_batches) if num_batches < len(loader) else loader
        bar = tqdm(batches, desc=prefix, total=num_batches, leave=False, disable=not self.progress)
        for batch in bar:
            batch = self._to_device(batch)
            out: dict[str, Any] = {}
            for phase in self.optimizers:
                out |= self._named(phase, self._forward(batch, False, model=model, phase=phase))
            if evaluator is not None:
                evaluator.update(out)
            means.add(out, weight=batch_size(batch))
        metrics = self._epoch_metrics(means, prefix)
        if evaluator is not None:
            metrics |= {f"{prefix}/{k}": v for k, v in evaluator.compute().items()}
        return metrics

    def _epoch_metrics(self, means: EpochSums, prefix: str) -> dict[str, float]:
        """Scalar means, plus what the task's ``summarize`` makes of the summed count tensors."""
        metrics = means.result(prefix)
        counts = means.counts()
        self.epoch_counts[prefix] = counts
        if counts and self.summarize_fn is not None:
            metrics |= {f"{prefix}/{k}": v for k, v in self.summarize_fn(counts).items()}
        return metrics

    # ---- one step -------------------------------------------------------------------------

    def _train_step(
        self, batch: Any, window_starts: bool, window_size: int, steps_now: bool
    ) -> dict[str, torch.Tensor]:
        """Forward and backward for every part (one, or a GAN's D then G) on one micro-batch of
        an accumulation window; each optimizer steps at the window's end."""
        batch = self._to_device(batch)
        # DDP all-reduces gradients on every backward; only the window's last one needs it.
        no_sync = getattr(self.model, "no_sync", None)
        out: dict[str, torch.Tensor] = {}
        for phase, optimizer in self.optimizers.items():
            if window_starts:
                optimizer.zero_grad(set_to_none=True)
            sync = nullcontext() if steps_now or no_sync is None else no_sync()
            held_fixed = self.optimization.held_fixed[phase]
            with without_grad(held_fixed) if held_fixed else nullcontext(), sync:
                phase_out = self._forward(batch, training=True, phase=phase)
                loss = self._check_finite(phase_out["loss"], phase)
                if window_size > 1:  # the window's gradient is the mean of its micro-batches'
                    loss = loss / window_size
                self.optimization.backward(loss)
            if steps_now:
                self.optimization.step(optimizer, self._nonfinite)
            out |= self._named(phase, phase_out)
        if steps_now:
            self.optimization.update_scaler(self.global_step + 1)
            self._after_optimizer_step()
        return out

    def _forward(
        self, batch: Any, training: bool, model: nn.Module | None = None, phase: str = SINGLE
    ) -> dict[str, Any]:
        """The task's step on a batch already on the device, under autocast."""
        phase_arg = {"phase": phase} if self.phased else {}
        with self.optimization.autocast():
            # `is None`, not `or`: a compiled module has no truth value (it asks for len()).
            model = self.model if model is None else model
            out = dict(self.step_fn(model, batch, self.loss_fn, **phase_arg))
            penalty = (
                self.regularizer.penalty(self.module) if training and self.regularizer else None
            )
            if penalty is not None:
                out["reg_loss"] = penalty
                out["loss"] = out["loss"] + penalty
        return out

    def _to_device(self, batch: Any) -> Any:
        batch = move_to_device(batch, self.device)
        return to_channels_last(batch) if self.channels_last else batch

    def _check_finite(self, loss: torch.Tensor, phase: str) -> torch.Tensor:
        """``loss``, or stop at a NaN/Inf loss before it reaches the weights; under fp16 the
        GradScaler skips such steps itself (counted in :meth:`_update_scaler`), and where
        :attr:`finite_check_on_device` it is flagged on the device (read later)."""
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

    def _named(self, phase: str, out: Mapping[str, Any]) -> dict[str, Any]:
        """A phase's outputs, its ``loss`` renamed ``loss_<phase>`` (``loss_D``, ``loss_G``)."""
        if not self.phased:
            return dict(out)
        return {f"loss_{phase}" if k == "loss" else k: v for k, v in out.items()}

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

    # ---- bookkeeping ----------------------------------------------------------------------

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The first (for most tasks the only) optimizer."""
        return self.optimization.optimizer

    @property
    def scheduler(self) -> Any:
        """The first optimizer's scheduler, or None."""
        return self.optimization.scheduler

    @property
    def skipped_steps(self) -> int:
        """fp16: optimizer steps the GradScaler skipped (inf/NaN gradients)."""
        return self.optimization.skipped_steps

    @property
    def lr(self) -> float:
        """The learning rate of the first optimizer's first parameter group."""
        return self.optimizer.param_groups[0]["lr"]

    def _update_best(self, metrics: Mapping[str, float]) -> None:
        value = metrics.get(self.monitor)
        self.is_best = False
        if value is None or math.isnan(value):
            return
        better = max if self.monitor_mode == "max" else min
        if self.best is None or better(value, self.best) != self.best:
            self.best, self.is_best = value, True

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly, from the end of the last optimizer
        step: weights, optimizers, schedulers, scaler, position in the epoch and the epoch's
        sums so far, best metric, RNG states, callbacks' states."""
        return {
            "model": self.module.state_dict(),
            **self.optimization.state_dict(),  # optimizers, schedulers, scaler, skipped_steps
            "epoch": self.epoch,
            "global_step": self.global_step,
            "batch_in_epoch": self.batch_in_epoch,
            "batches_per_epoch": self.batches_per_epoch,
            "train_sums": self._train_sums.state_dict(),
            "best": self.best,
            "fit_seconds": self.fit_seconds,
            "extras_seconds": dict(self.extras.spent),
            "history": self.history,
            "rng": get_rng_state(),
            "callbacks": callback_states(self.callbacks),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved; training continues where it stopped (the RNG
        states are restored when :meth:`fit` starts)."""
        load_weights(self.module, state["model"], "the checkpoint")
        self.optimization.load_state_dict(state)
        self.epoch, self.global_step, self.best = (
            state["epoch"],
            state["global_step"],
            state["best"],
        )
        self.batch_in_epoch = state.get("batch_in_epoch", 0)
        self.batches_per_epoch = state.get("batches_per_epoch")
        self._train_sums.load_state_dict(state.get("train_sums") or {}, self.device)
        self._seconds_before = state.get("fit_seconds", 0.0)
        self.extras.spent = dict(state.get("extras_seconds") or {})
        self.history = [dict(row) for row in state.get("history", [])]
        load_callback_states(self.callbacks, state.get("callbacks") or {})
        self._resumed_rng = state["rng"]


def epoch_metrics(row: Mapping[str, float]) -> dict[str, float]:
    """An epoch's ``train/*``, ``val/*`` (and other split) metrics from its history row."""
    return {
        key: value
        for key, value in row.items()
        if "/" in key and not key.startswith(("lr/", "time/"))
    }
