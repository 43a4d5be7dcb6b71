"""Where a training step spends its time: ``torch.profiler`` over a few optimizer steps.

The trace is written as one Chrome-trace JSON file, ``<output_dir>/trace.json``, which
Perfetto (https://ui.perfetto.dev) and ``chrome://tracing`` open: PyTorch deprecated its
TensorBoard profiler plugin, so a plain file that any trace viewer reads is what lasts. The
operators that took the most time are also logged as a table, so a glance at the log answers
the usual question ("is it the data, the model or the optimizer?") without a viewer.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, schedule

from torchcamp.trainer.callbacks import Callback
from torchcamp.trainer.errors import UserError
from torchcamp.trainer.files import written_atomically

log = logging.getLogger(__name__)

TRACE_NAME = "trace.json"


class Profiler(Callback):
    """Profiles optimizer steps ``wait + warmup + 1`` to ``wait + warmup + active``.

    The first ``wait`` steps are skipped (start-up: the first batches, lazy initialisation,
    cuDNN's autotuning), the next ``warmup`` are profiled and thrown away (the profiler's own
    start-up cost), and the ``active`` ones after them are recorded: CPU operators with their
    input shapes, plus CUDA kernels when the run is on a GPU. When the window is over (or
    training stops before that), the profiler stops, ``<output_dir>/trace.json`` is written
    and the ``row_limit`` operators with the most self time are logged.

    Each window covers what happens between two optimizer steps as the Trainer sees them:
    loading the batch, forward, backward, the step; and, when the window spans an epoch's end,
    that epoch's validation.
    """

    def __init__(
        self,
        output_dir: str | Path,
        wait: int = 1,
        warmup: int = 2,
        active: int = 3,
        row_limit: int = 15,
    ) -> None:
        if wait < 0 or warmup < 0 or active < 1:
            raise UserError(
                f"callbacks.profiler: wait={wait}, warmup={warmup}, active={active}: wait and "
                "warmup must be >= 0 and active >= 1 (optimizer steps)"
            )
        self.output_dir = Path(output_dir)
        self.trace_path = self.output_dir / TRACE_NAME
        self.wait, self.warmup, self.active = wait, warmup, active
        self.row_limit = row_limit
        self.profiler: profile | None = None
        self.with_cuda = False
        self.steps = 0  # optimizer steps seen since the profiler started
        self.exported = False
        self.finished = False

    def on_fit_start(self, trainer) -> None:
        if self.profiler is not None:  # fit called again: one window per callback
            return
        # CUDA kernels only when the model runs on the GPU: on a CPU run the CUDA columns
        # would be all zeros, and sorting by them would order the table by nothing.
        self.with_cuda = torch.cuda.is_available() and trainer.device.type == "cuda"
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.with_cuda else [])
        self.profiler = profile(
            activities=activities,
            schedule=schedule(wait=self.wait, warmup=self.warmup, active=self.active, repeat=1),
            on_trace_ready=self._export,
            record_shapes=True,
            with_stack=False,
            profile_memory=False,
        )
        # start/stop rather than a `with` block: the window spans many callback events.
        self.profiler.start()

    def on_train_step_end(self, trainer, outputs) -> None:
        if self.finished or self.profiler is None:
            return
        self.steps += 1  # first: the schedule may export inside step(), reading it
        self.profiler.step()  # the schedule moves on per step; it exports the trace itself
        if self.steps >= self.wait + self.warmup + self.active:
            self.finish()

    def on_train_end(self, trainer) -> None:
        self.finish()

    def on_fit_end(self, trainer, metrics) -> None:
        self.finish()

    def on_interrupt(self, trainer) -> None:
        self.finish()

    def on_nonfinite_loss(self, trainer) -> None:
        self.finish()  # what led up to the NaN may be worth a look

    def finish(self) -> None:
        """Stop the profiler, write the trace and log the table (once; later calls do nothing)."""
        if self.finished or self.profiler is None:
            return
        self.finished = True
        recorded = self._recorded_steps()
        # Stopping inside the active window makes torch export what it has (on_trace_ready);
        # older versions did not, which the `exported` check below makes up for.
        self.profiler.stop()
        if recorded == 0:
            log.warning(
                "profiler: no trace written: the run took %d optimizer step(s), and recording "
                "starts after step %d (callbacks.profiler.wait=%d + warmup=%d); lower "
                "callbacks.profiler.wait/warmup/active or train on more batches",
                self.steps,
                self.wait + self.warmup,
                self.wait,
                self.warmup,
            )
            return
        if not self.exported:
            self._export(self.profiler)
        if recorded < self.active:
            log.warning(
                "profiler: training stopped after %d of the %d active steps "
                "(callbacks.profiler.active); the trace holds those",
                recorded,
                self.active,
            )

    def _recorded_steps(self) -> int:
        """Optimizer steps in the trace: the first ``wait + warmup`` are not (see the class)."""
        return min(max(self.steps - self.wait - self.warmup, 0), self.active)

    def _export(self, prof: profile) -> None:
        """Write the Chrome trace (through a temporary file: never a half one) and log the
        operators with the most self time."""
        if self._recorded_steps() == 0:
            # Stopped right as the window opened: it holds no step, only what came after the
            # last one (validation, saving), which would pass for a step's profile.
            return
        self.exported = True
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with written_atomically(self.trace_path) as temporary:
            prof.export_chrome_trace(str(temporary))
        log.info(
            "profiler: trace written to %s; open it in https://ui.perfetto.dev "
            "(or chrome://tracing)",
            self.trace_path,
        )
        sort_by = "self_cuda_time_total" if self.with_cuda else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=sort_by, row_limit=self.row_limit)
        log.info("profiler: operators by %s\n%s", sort_by, table)
