"""The generic training loop: fit -> train_one_epoch -> evaluate.

The Trainer receives plain objects (a model, loaders, an optimizer, ...) and a task's
``step(model, batch, loss_fn) -> {"loss": tensor, other scalars}``. It owns what every task
shares: device placement, AMP, gradient accumulation, clipping, schedulers, the best-metric
bookkeeping, and the state a checkpoint needs. Extras (TensorBoard, checkpoint files) are
callbacks.
"""

from __future__ import annotations

import inspect
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from torchcamp.trainer import distributed
from torchcamp.trainer.callbacks import Callback, run_callbacks
from torchcamp.trainer.errors import UserError
from torchcamp.trainer.metrics import EpochSums, batch_size, format_metrics
from torchcamp.trainer.params import check_optimizer_fits
from torchcamp.trainer.regularizers import Regularizer
from torchcamp.trainer.utils import get_rng_state, move_to_device, set_rng_state

log = logging.getLogger(__name__)

StepFn = Callable[[nn.Module, Any, Callable], Mapping[str, torch.Tensor]]
PRECISIONS = ("32", "bf16-mixed", "16-mixed")


class Trainer:
    """Trains ``model`` with ``step_fn`` and reports epoch metrics as ``{"train/loss": ...}``."""

    def __init__(
        self,
        model: nn.Module,
        step_fn: StepFn,
        optimizer: torch.optim.Optimizer,
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
        monitor: str = "val/loss",
        monitor_mode: str = "min",
        callbacks: Iterable[Callback] = (),
        progress: bool = True,
        summarize_fn: Callable[[dict[str, torch.Tensor]], dict[str, float]] | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.device = torch.device(device)
        # `model` may be wrapped (DistributedDataParallel, DataParallel): it runs the training
        # steps; `module` is the bare model that is evaluated, summarised and saved.
        self.model = model.to(self.device)
        self.module = distributed.unwrap(model)
        if isinstance(loss_fn, nn.Module):
            loss_fn.to(self.device)  # class weights and other buffers
        self.step_fn, self.loss_fn, self.regularizer = step_fn, loss_fn, regularizer
        self.optimizer, self.scheduler = optimizer, scheduler
        self.scheduler_interval = scheduler_interval
        self.precision = precision
        self.max_epochs = max_epochs
        self.accumulate_grad_batches = accumulate_grad_batches
        self.gradient_clip_val = gradient_clip_val
        self.log_every_n_steps = log_every_n_steps
        self.monitor, self.monitor_mode = monitor, monitor_mode
        self.callbacks = list(callbacks)  # run_callbacks calls them in `order`
        # Bars only where a person watches: a log file or CI gets one line per epoch instead.
        self.progress = progress and sys.stdout.isatty()
        # fp16 needs loss scaling to keep small gradients from underflowing; bf16 does not.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "16-mixed")
        self.epoch = 0  # epochs completed
        self.global_step = 0  # optimizer steps taken
        self.best: float | None = None
        self.is_best = False  # did the last evaluation set a new best?
        self.fit_seconds = 0.0  # first training batch to the end of the last validation
        self._fit_started: float | None = None
        self.step_lrs: list[float] = []  # each group's lr in the last optimizer step
        # A step may return count tensors (e.g. a confusion matrix): summed over the epoch and
        # the ranks, kept here per split, and turned into metrics by `summarize_fn`.
        self.summarize_fn = summarize_fn
        self.epoch_counts: dict[str, dict[str, torch.Tensor]] = {}
        # LBFGS and friends re-evaluate the loss themselves: step(closure) is mandatory.
        step_params = inspect.signature(optimizer.step).parameters
        self.needs_closure = "closure" in step_params and (
            step_params["closure"].default is inspect.Parameter.empty
        )
        check_optimizer_fits(
            self.model, optimizer, self.needs_closure, accumulate_grad_batches, precision
        )

    # ---- the loop -------------------------------------------------------------------------

    def fit(
        self,
        train_loader: Iterable,
        val_loader: Iterable | None = None,
        test_loader: Iterable | None = None,
    ) -> dict[str, float]:
        """Train from ``self.epoch`` to ``max_epochs``, validating after each epoch, then test.

        Returns the last epoch's metrics plus ``best/<monitor>`` and ``test/<name>``.
        """
        self._log_summary()
        run_callbacks(self.callbacks, "on_fit_start", self)
        metrics: dict[str, float] = {}
        self._fit_started = None  # set on the first training batch
        while self.epoch < self.max_epochs:
            sampler = getattr(train_loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):
                # The shuffle order is a function of (seed, epoch), so a resumed run sees the
                # same batches as an uninterrupted one.
                sampler.set_epoch(self.epoch)
            metrics = self.train_one_epoch(train_loader)
            if val_loader is not None:
                metrics |= self.evaluate(val_loader, "val")
            self.epoch += 1
            self._update_best(metrics)
            if self._fit_started is not None:
                self.fit_seconds = time.perf_counter() - self._fit_started
            if self.scheduler is not None and self.scheduler_interval == "epoch":
                self._epoch_scheduler_step(metrics)
            log.info("epoch %d/%d  %s", self.epoch, self.max_epochs, format_metrics(metrics))
            run_callbacks(self.callbacks, "on_epoch_end", self, metrics)
        if self.best is not None:
            metrics[f"best/{self.monitor}"] = self.best
        if test_loader is not None:
            run_callbacks(self.callbacks, "on_test_start", self)
            metrics |= self.evaluate(test_loader, "test")
        run_callbacks(self.callbacks, "on_fit_end", self, metrics)
        return metrics

    def train_one_epoch(self, loader: Iterable) -> dict[str, float]:
        """One pass over ``loader``; returns the epoch means as ``train/<name>``."""
        self.model.train()
        num_batches = len(loader)
        accumulate = self.accumulate_grad_batches
        means = EpochSums()
        bar = tqdm(loader, desc=f"train {self.epoch + 1}", leave=False, disable=not self.progress)
        for batch_idx, batch in enumerate(bar):
            if self._fit_started is None:
                self._fit_started = time.perf_counter()
            if self.needs_closure:
                out = self._closure_step(batch)
                run_callbacks(self.callbacks, "on_train_step_end", self, out)
                means.add(out, weight=batch_size(batch))
                continue
            window_start = batch_idx - batch_idx % accumulate
            # The last window of an epoch may be shorter than k: average over what it has.
            window_size = min(accumulate, num_batches - window_start)
            if batch_idx == window_start:
                self.optimizer.zero_grad(set_to_none=True)
            steps_now = batch_idx + 1 == window_start + window_size
            # DDP all-reduces gradients on every backward; only the window's last one needs it.
            no_sync = getattr(self.model, "no_sync", None)
            with nullcontext() if steps_now or no_sync is None else no_sync():
                out = self._forward(batch, training=True)
                self.scaler.scale(out["loss"] / window_size).backward()
            if steps_now:
                self._optimizer_step()
                run_callbacks(self.callbacks, "on_train_step_end", self, out)
            means.add(out, weight=batch_size(batch))
            if self.progress:
                bar.set_postfix(loss=f"{out['loss'].item():.4f}", lr=f"{self.lr:.3g}")
        return self._epoch_metrics(means, "train")

    @torch.no_grad()
    def evaluate(self, loader: Iterable, prefix: str = "val") -> dict[str, float]:
        """Run ``step_fn`` over ``loader`` without gradients; returns ``<prefix>/<name>`` means.

        Under DDP each rank evaluates its shard with the bare model (no collectives per batch,
        so shards of different lengths cannot hang) and the sums are reduced at the end.
        """
        model = self.module if distributed.is_distributed() else self.model
        model.eval()
        means = EpochSums()
        for batch in tqdm(loader, desc=prefix, leave=False, disable=not self.progress):
            means.add(self._forward(batch, training=False, model=model), weight=batch_size(batch))
        return self._epoch_metrics(means, prefix)

    def _epoch_metrics(self, means: EpochSums, prefix: str) -> dict[str, float]:
        """Scalar means, plus what the task's ``summarize`` makes of the summed count tensors."""
        metrics = means.result(prefix)
        counts = means.counts()
        self.epoch_counts[prefix] = counts
        if counts and self.summarize_fn is not None:
            metrics |= {f"{prefix}/{k}": v for k, v in self.summarize_fn(counts).items()}
        return metrics

    # ---- one step -------------------------------------------------------------------------

    def _forward(
        self, batch: Any, training: bool, model: nn.Module | None = None
    ) -> dict[str, torch.Tensor]:
        batch = move_to_device(batch, self.device)
        with self._autocast():
            out = dict(self.step_fn(model or self.model, batch, self.loss_fn))
            penalty = (
                self.regularizer.penalty(self.module) if training and self.regularizer else None
            )
            if penalty is not None:
                out["reg_loss"] = penalty
                out["loss"] = out["loss"] + penalty
        return out

    def _optimizer_step(self) -> None:
        if self.gradient_clip_val is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not scaled ones
            nn.utils.clip_grad_norm_(self.model.parameters(), self.gradient_clip_val)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._after_optimizer_step()

    def _closure_step(self, batch: Any) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        # The optimizer calls the closure many times (line search): copy the batch over once.
        batch = move_to_device(batch, self.device)

        def closure() -> torch.Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            out.update(self._forward(batch, training=True))
            out["loss"].backward()
            if self.gradient_clip_val is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.gradient_clip_val)
            return out["loss"]

        self.optimizer.step(closure)
        self._after_optimizer_step()
        return out

    def _after_optimizer_step(self) -> None:
        self.global_step += 1
        self.step_lrs = [group["lr"] for group in self.optimizer.param_groups]
        if self.regularizer is not None:
            self.regularizer.after_step(self.module)  # constraints such as max_norm
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()

    def _epoch_scheduler_step(self, metrics: Mapping[str, float]) -> None:
        if not isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step()
        elif self.monitor in metrics:
            self.scheduler.step(metrics[self.monitor])
        else:
            raise UserError(
                f"scheduler=plateau watches trainer.monitor={self.monitor}, which this run does "
                f"not report; use one of {', '.join(sorted(metrics))}"
            )

    def _autocast(self):
        if self.precision == "32":
            return nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16-mixed" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    # ---- bookkeeping ----------------------------------------------------------------------

    @property
    def lr(self) -> float:
        """The learning rate of the first parameter group."""
        return self.optimizer.param_groups[0]["lr"]

    def _update_best(self, metrics: Mapping[str, float]) -> None:
        value = metrics.get(self.monitor)
        self.is_best = False
        if value is None or math.isnan(value):
            return
        better = max if self.monitor_mode == "max" else min
        if self.best is None or better(value, self.best) != self.best:
            self.best, self.is_best = value, True

    def _log_summary(self) -> None:
        total = sum(p.numel() for p in self.module.parameters())
        trainable = sum(p.numel() for p in self.module.parameters() if p.requires_grad)
        name = type(self.module).__name__
        frozen = total - trainable
        log.info(f"model {name}: {total:,} parameters, {trainable:,} trainable, {frozen:,} frozen")
        for index, group in enumerate(self.optimizer.param_groups):
            count = sum(p.numel() for p in group["params"])
            log.info(
                f"param group {index} {group.get('name', '')}: {len(group['params'])} tensors, "
                f"{count:,} parameters, lr={group['lr']:.3g}, "
                f"weight_decay={group.get('weight_decay', 'n/a')}"
            )

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run: weights, optimizer, scheduler, progress, RNG."""
        return {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best": self.best,
            "rng": get_rng_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved; training continues at the next epoch."""
        weights = dict(state["model"])
        # Checkpoints written from a wrapped model by other tools carry a `module.` prefix.
        nn.modules.utils.consume_prefix_in_state_dict_if_present(weights, "module.")
        self.module.load_state_dict(weights)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.global_step, self.best = (
            state["epoch"],
            state["global_step"],
            state["best"],
        )
        set_rng_state(state["rng"])
