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

Training ends after ``Limits.max_epochs``, or earlier: when a callback sets ``should_stop``
(early stopping, after an epoch) or when ``Limits.max_time`` seconds of training have passed
(at the next optimizer step, counted across resumes); either way the test split is scored
after it. ``Limits.*_batches`` run part of each epoch (a count or a share of the batches).
Every epoch leaves a row in ``history`` (metrics.csv), which checkpoints carry.

The settings come in groups (trainer/options.py); the per-batch step is in trainer/step.py,
the run's position and its checkpoint in trainer/state.py.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from itertools import islice
from typing import Any

import torch
from torch import nn
from tqdm import tqdm  # not tqdm.auto, whose bar calls iter(loader): a 2nd set of workers

from torchcamp.trainer import distributed
from torchcamp.trainer.callbacks import (
    Callback,
    callback_methods,
    run_callbacks,
)
from torchcamp.trainer.checkpoint import load_weights
from torchcamp.trainer.data import epoch_batches, limited_batches
from torchcamp.trainer.errors import NonFiniteLossError, TrainingInterrupted, UserError
from torchcamp.trainer.extras import ExtrasBudget
from torchcamp.trainer.metrics import EpochSums, Evaluator, batch_size, format_metrics
from torchcamp.trainer.optimization import Optimization
from torchcamp.trainer.options import Compute, Limits, Monitor, Reporting, Stepping
from torchcamp.trainer.params import check_optimizers_fit, log_parameters
from torchcamp.trainer.regularizers import Regularizer
from torchcamp.trainer.state import RunState
from torchcamp.trainer.status import RunStatus
from torchcamp.trainer.step import TrainingStep
from torchcamp.trainer.utils import set_rng_state

log = logging.getLogger(__name__)

StepFn = Callable[..., Mapping[str, Any]]
# The groups' defaults (frozen: one instance serves every Trainer).
LIMITS, COMPUTE, STEPPING, MONITOR, REPORTING = (
    Limits(),
    Compute(),
    Stepping(),
    Monitor(),
    Reporting(),
)


class Trainer(RunState, TrainingStep):
    """Trains ``model`` with ``step_fn`` and reports epoch metrics as ``{"train/loss": ...}``.

    Its settings come in groups (trainer/options.py), each defaulting to the Trainer's
    defaults: ``limits`` (epochs, time, batches per split), ``compute`` (precision,
    channels_last, compile), ``stepping`` (accumulation, clipping, the schedulers' interval),
    ``monitor`` (the best metric) and ``reporting`` (log interval, bars, the extras' budget).
    It sets no process-wide torch switch (cuDNN, anomaly detection): the process does.
    """

    def __init__(
        self,
        model: nn.Module,
        step_fn: StepFn,
        optimizer: torch.optim.Optimizer | Mapping[str, torch.optim.Optimizer],
        loss_fn: Callable,
        *,
        device: torch.device | str = "cpu",
        scheduler: Any = None,
        regularizer: Regularizer | None = None,
        callbacks: Iterable[Callback] = (),
        summarize_fn: Callable[[dict[str, torch.Tensor]], dict[str, float]] | None = None,
        make_evaluator: Callable[[], Evaluator] | None = None,
        limits: Limits = LIMITS,
        compute: Compute = COMPUTE,
        stepping: Stepping = STEPPING,
        monitor: Monitor = MONITOR,
        reporting: Reporting = REPORTING,
    ) -> None:
        self.device = torch.device(device)
        self.limits, self.stepping = limits, stepping
        self._place_model(model, compute)
        if isinstance(loss_fn, nn.Module):
            loss_fn.to(self.device)  # class weights and other buffers
        self.step_fn, self.loss_fn, self.regularizer = step_fn, loss_fn, regularizer
        self.optimization = Optimization(
            optimizer,
            scheduler,
            scheduler_interval=stepping.scheduler_interval,
            precision=compute.precision,
            device_type=self.device.type,
            gradient_clip_val=stepping.gradient_clip_val,
        )
        self.optimizers = self.optimization.optimizers  # by part, stepped in this order
        self.phased = self.optimization.phased
        # What callbacks read of the settings, under the names they always had.
        self.max_epochs, self.log_every_n_steps = limits.max_epochs, reporting.log_every_n_steps
        self.monitor, self.monitor_mode = monitor.metric, monitor.mode
        self.callbacks = list(callbacks)  # run_callbacks calls them in `order`
        # Bars only where a person watches: a log file or CI gets one line per epoch instead.
        self.progress = reporting.progress and sys.stdout.isatty()
        # The time the callbacks' periodic extras (views, histograms, pictures) may take: a
        # share of the training time (trainer/extras.py).
        self.extras = ExtrasBudget(reporting.extras_budget)
        # A step may return count tensors (e.g. a confusion matrix): summed over the epoch and
        # the ranks, kept here per split, and turned into metrics by `summarize_fn`.
        self.summarize_fn, self.make_evaluator = summarize_fn, make_evaluator
        self.epoch_counts: dict[str, dict[str, torch.Tensor]] = {}
        self._reset_progress()
        # On a GPU, reading the loss on the host every step (to stop at a NaN) would make the
        # CPU wait for the GPU to finish the step. With optimizers that can skip a step on the
        # device (fused ones), a non-finite loss is flagged there instead, turns every later
        # step into a no-op, and is read at the next logging point or the epoch's end; the
        # run stops with the weights from before it all the same.
        on_gpu = self.device.type == "cuda"
        self.finite_check_on_device = on_gpu and self.optimization.skips_on_device
        self._nonfinite: torch.Tensor | None = None  # 1.0 once a loss was not finite
        check_optimizers_fit(
            self.model, self.optimizers, stepping.accumulate_grad_batches, compute.precision
        )

    def _place_model(self, model: nn.Module, compute: Compute) -> None:
        """``model`` on the device (NHWC under ``channels_last``), compiled if asked.

        ``model`` may be wrapped (DistributedDataParallel, DataParallel, torch.compile): it
        runs the steps; ``module`` is the bare model that is summarised and saved, so a
        checkpoint of a compiled run loads into a plain model and the other way round.
        NHWC: faster convolutions on tensor cores and oneDNN; inputs follow in ``_to_device``.
        """
        self.channels_last = compute.channels_last
        memory_format = torch.channels_last if compute.channels_last else torch.preserve_format
        self.model = model.to(self.device, memory_format=memory_format)
        self.module = distributed.unwrap(model)
        if compute.compile:
            options = {} if compute.compile is True else compute.compile
            self.model = torch.compile(self.model, **options)

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
        num_batches = limited_batches(len(loader), self.limits.train_batches)
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
        accumulate = 1 if needs_closure else self.stepping.accumulate_grad_batches
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

    def _time_is_up(self) -> bool:
        max_time = self.limits.max_time
        return max_time is not None and self.fit_seconds >= max_time

    def _stop(self, reason: str) -> None:
        """End training at this step boundary (or epoch's end) for ``reason``."""
        self.should_stop, self.stop_reason = True, reason
        if reason == RunStatus.TIME_LIMIT:
            log.info(
                "time limit: %.1f s of training reached trainer.max_time=%g s at optimizer step "
                "%d (epoch %d, batch %d); resume=auto continues with a larger trainer.max_time",
                self.fit_seconds,
                self.limits.max_time,
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
        num_batches = limited_batches(len(loader), self.limits.batches(prefix))
        batches = islice(loader, num_batches) if num_batches < len(loader) else loader
        bar = tqdm(batches, desc=prefix, total=num_batches, leave=False, disable=not self.progress)
        for batch in bar:
            batch = self._to_device(batch)
            out: dict[str, Any] = {}
            for phase in self.optimizers:
                out = self._named(phase, self._forward(batch, False, model, phase), out)
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


def epoch_metrics(row: Mapping[str, float]) -> dict[str, float]:
    """An epoch's ``train/*``, ``val/*`` (and other split) metrics from its history row."""
    return {
        key: value
        for key, value in row.items()
        if "/" in key and not key.startswith(("lr/", "time/"))
    }
