"""TensorBoard: scalars, histograms, hyperparameters, confusion matrices and a task's images."""

from __future__ import annotations

import contextlib
import io
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
import torch
from PIL import Image, ImageDraw
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer import event_file_writer, record_writer
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from torchcamp.trainer.callbacks import Callback, best_effort
from torchcamp.trainer.extras import EpochSchedule
from torchcamp.trainer.files import written_atomically
from torchcamp.trainer.metrics import logged_step_scalars, read_numbers

HISTOGRAM_BINS = 64
# Per-step scalars are written as events at least this often (and after every epoch).
STEP_SCALARS_EVERY_SECONDS = 10.0


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C of ``data`` (what each event record carries), in C."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# TensorBoard's record writer computes that checksum in pure Python: 15 us per scalar event,
# 3.6 ms per 30 KB image, in its writer thread, holding the GIL while training runs. The same
# function in C (byte-for-byte the same checksum, tested) makes logging nearly free.
record_writer.masked_crc32c = masked_crc32c

_event_writer_run = event_file_writer._AsyncWriterThread.run


def _run_keeping_os_errors(self: event_file_writer._AsyncWriterThread) -> None:
    """TensorBoard's writer thread, quiet about a failed write (a full disk): its ``run`` keeps
    the error for the training thread, whose next write raises it (reported there once: see
    :func:`~torchcamp.trainer.callbacks.best_effort`), then re-raises it in the thread too,
    where Python would print its traceback. That second raise is dropped; others go on."""
    with contextlib.suppress(OSError):
        _event_writer_run(self)


event_file_writer._AsyncWriterThread.run = _run_keeping_os_errors


class TensorBoardLogger(Callback):
    """Scalars, histograms and hyperparameters under ``log_dir``, stepped by optimizer steps.

    At the start: the run's hyperparameters (HParams tab). Per optimizer step (every
    ``trainer.log_every_n_steps``): ``train/<name>_step`` and the lr of every parameter group.
    Per epoch: the epoch metrics. On the time budget (:mod:`torchcamp.trainer.extras`: first
    and last epoch, then as their cost allows, or every ``every_n_epochs``): a histogram of
    every parameter and its gradient, the train and val confusion matrices of a classifier
    (``confusion_matrix``), and the task's images (``images_fn(model) -> {tag: uint8 [3, H,
    W]}``, also saved as ``<image_dir>/<tag>/epoch_NNN.png``). At the end: the final metrics
    (test, best) and the test confusion matrix.

    Training does without all of it: a failed write (a full disk) is one warning, and the run
    goes on without TensorBoard (:func:`~torchcamp.trainer.callbacks.best_effort`).
    """

    order = 10
    outputs = "TensorBoard and the task's epoch images"

    def __init__(
        self,
        log_dir: str | Path,
        hparams: Mapping[str, Any] | None = None,
        notes: Mapping[str, str] | None = None,
        class_names: Sequence[str] | None = None,
        images_fn: Callable[[torch.nn.Module], Mapping[str, torch.Tensor]] | None = None,
        image_dir: str | Path | None = None,
        confusion_matrix: bool = True,
        every_n_epochs: int | None = None,
    ) -> None:
        self.log_dir = self.output_dir = Path(log_dir)
        self.schedule = EpochSchedule("tensorboard", every_n_epochs)
        self.confusion_matrix = confusion_matrix
        self.images_fn = images_fn
        self.image_dir = Path(image_dir) if image_dir is not None else None
        self.class_names = list(class_names or [])
        self.hparams = dict(hparams or {})
        self.notes = dict(notes or {})
        self.writer = None
        self._epoch_metric_names: set[str] = set()
        self._step_scalars: list[tuple[int, dict[str, Any]]] = []  # (step, scalars) to write
        self._written_at = time.monotonic()

    @best_effort
    def on_fit_start(self, trainer) -> None:
        # A resumed run continues the same event files: what a killed run logged after its
        # checkpoint's step is hidden (purged), and is logged again as training redoes it. A
        # new run where an attempt that left no checkpoint logged hides all of that attempt's.
        purge_step = trainer.global_step + 1 if trainer.global_step else None
        if purge_step is None and any(self.log_dir.glob("events.out.tfevents.*")):
            purge_step = 0
        self.writer = SummaryWriter(self.log_dir, purge_step=purge_step)
        if not trainer.global_step:
            for tag, text in self.notes.items():
                self.writer.add_text(tag, text, 0)
        self._add_hparams_summary("start")

    @best_effort
    def on_train_step_end(self, trainer, outputs: Mapping[str, torch.Tensor]) -> None:
        step = trainer.global_step
        if step % trainer.log_every_n_steps == 0:
            # Counts (a confusion matrix) are summed per epoch instead; the lrs are those each
            # parameter group just stepped with.
            scalars = logged_step_scalars(outputs, trainer.optimization.step_lrs)
            self._step_scalars.append((step, scalars))
            if time.monotonic() - self._written_at >= STEP_SCALARS_EVERY_SECONDS:
                self._write_step_scalars()

    def _write_step_scalars(self) -> None:
        """The per-step scalars kept since the last write, as events. Kept as tensors until
        then: written every STEP_SCALARS_EVERY_SECONDS, after each epoch and before each
        checkpoint, they cost one host read for them all (not one per step on a GPU), and the
        event writer's thread does not contend with training for Python at every step."""
        pending, self._step_scalars = self._step_scalars, []
        if pending:
            values = [v for _, scalars in pending for v in scalars.values()]
            numbers = iter(read_numbers(values))
            for step, scalars in pending:
                self._add_scalars({name: next(numbers) for name in scalars}, step)
        self._written_at = time.monotonic()

    @best_effort
    def on_save_checkpoint(self, trainer) -> None:
        # What was logged is on disk before a checkpoint of this step is (a run killed later
        # and resumed from it then misses no step, and repeats none: see purge_step).
        self._write_step_scalars()
        self.writer.flush()

    @best_effort
    def on_epoch_end(self, trainer, metrics: Mapping[str, float]) -> None:
        self._write_step_scalars()
        self._add_scalars({"epoch": trainer.epoch, **metrics}, trainer.global_step)
        self._epoch_metric_names.update(metrics)
        self.schedule.run_if_due(trainer, lambda: self._log_extras(trainer))
        self.writer.flush()

    @best_effort
    def on_train_end(self, trainer) -> None:
        # Stopped early (early stopping, a time limit): the weights training ends with.
        self.schedule.run_at_end(trainer, lambda: self._log_extras(trainer))

    def _log_extras(self, trainer) -> None:
        """The histograms, confusion matrices and task images (on the time budget)."""
        step = trainer.global_step
        for name, param in trainer.module.named_parameters():
            self._histogram(f"params/{name}", param, step)
            if param.grad is not None:
                self._histogram(f"grads/{name}", param.grad, step)
        self._log_confusion(trainer, ("train", "val"))
        if self.images_fn is not None:
            self._log_images(trainer.module, trainer.epoch, step)

    @best_effort
    def add_image(self, tag: str, image: torch.Tensor, step: int) -> None:
        """A uint8 ``[3, H, W]`` image, PNG-encoded at zlib level 1: SummaryWriter.add_image's
        level 6 was half the time of the per-epoch views (photos shrink little more at 6)."""
        channels, height, width = image.shape
        buffer = io.BytesIO()
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, "PNG", compress_level=1)
        png = Summary.Image(
            height=height, width=width, colorspace=channels, encoded_image_string=buffer.getvalue()
        )
        self.writer.file_writer.add_summary(
            Summary(value=[Summary.Value(tag=tag, image=png)]), step
        )

    def _add_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        """All of ``scalars`` as one event: a third of the cost of an add_scalar for each."""
        if scalars:
            values = [Summary.Value(tag=n, simple_value=float(v)) for n, v in scalars.items()]
            self.writer.file_writer.add_summary(Summary(value=values), step)

    def _log_confusion(self, trainer, splits: Iterable[str]) -> None:
        """The confusion matrices of ``splits`` (rows: true class, columns: predicted), for a
        task whose step counts one (a classifier)."""
        for split in splits:
            counts = trainer.epoch_counts.get(split, {})
            if self.confusion_matrix and "confusion" in counts:
                image = confusion_image(counts["confusion"], self.class_names)
                self.add_image(f"{split}/confusion_matrix", image, trainer.global_step)

    def _add_hparams_summary(self, part: str) -> None:
        """The HParams plugin's session ``start`` (the hyperparameters) or ``end`` (the status),
        in this run's own event file (SummaryWriter.add_hparams would start a new sub-run).

        No experiment summary: TensorBoard takes the first run's as the whole table's, so the
        hyperparameters only other jobs of a sweep have (adam's betas beside sgd's momentum)
        would not be shown; without one it joins every run's hyperparameters, and lines them up
        with the last value of each scalar (the final metrics).
        """
        _, session_start, session_end = hparams(self.hparams, {})
        self.writer.file_writer.add_summary(session_start if part == "start" else session_end)

    def _log_images(self, model: torch.nn.Module, epoch: int, step: int) -> None:
        for tag, image in self.images_fn(model).items():
            self.add_image(tag, image, step)
            if self.image_dir is not None:
                path = self.image_dir / tag / f"epoch_{epoch:03d}.png"
                with written_atomically(path) as temporary:
                    Image.fromarray(image.permute(1, 2, 0).numpy()).save(temporary, "PNG")

    def _histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        """``values`` in HISTOGRAM_BINS equal buckets, counted where they are (on the GPU).

        SummaryWriter.add_histogram copies every value to numpy and sorts it into ~1500 buckets
        (a third of a LeNet epoch); TensorBoard redraws any histogram with 30 buckets anyway.
        """
        values = values.detach().float().flatten()
        low, high = torch.aminmax(values)
        stats = torch.stack([low, high, values.sum(), values.square().sum()]).tolist()
        if not all(map(math.isfinite, stats)):  # a diverged run keeps its scalars
            return
        low, high, total, total_squares = stats
        if low == high:
            limits, counts = [high], [values.numel()]
        else:
            counts = torch.histc(values, HISTOGRAM_BINS, low, high).tolist()
            limits = torch.linspace(low, high, HISTOGRAM_BINS + 1)[1:].tolist()
        self.writer.add_histogram_raw(
            tag, low, high, values.numel(), total, total_squares, limits, counts, step
        )

    @best_effort
    def on_interrupt(self, trainer) -> None:
        self._write_step_scalars()
        self.writer.flush()  # raises what the writer's thread failed to write; close() would not
        self.writer.close()  # a resumed run appends to these files

    @best_effort
    def on_fit_end(self, trainer, metrics: Mapping[str, float]) -> None:
        # test/ and best/ are new at this point; the HParams tab shows each scalar's last value.
        new = {n: v for n, v in metrics.items() if n not in self._epoch_metric_names}
        self._write_step_scalars()  # a time limit's last steps
        self._add_scalars(new, trainer.global_step)
        self._log_confusion(trainer, ("test",))  # train and val: after every epoch
        self._add_hparams_summary("end")
        self.writer.flush()  # raises what the writer's thread failed to write; close() would not
        self.writer.close()

    def on_output_failed(self) -> None:
        # Stops the writer's thread (what it still holds is lost with the disk's room).
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()


def confusion_image(
    matrix: torch.Tensor, class_names: Sequence[str], cell: int = 28
) -> torch.Tensor:
    """A confusion matrix as a ``[3, H, W]`` uint8 image: rows true, columns predicted.

    Each row is normalised (so a cell is the share of that class predicted as the column) and
    drawn in shades of blue with its percentage; class names label the rows.
    """
    matrix = matrix.float()
    shares = matrix / matrix.sum(dim=1, keepdim=True).clamp(min=1)
    size = len(matrix)
    names = (
        [str(n) for n in class_names] if len(class_names) == size else [str(i) for i in range(size)]
    )
    margin = 8 + 6 * max(len(n) for n in names)
    image = Image.new("RGB", (margin + size * cell, size * cell), "white")
    draw = ImageDraw.Draw(image)
    for row in range(size):
        draw.text((4, row * cell + cell // 3), names[row], fill="black")
        for col in range(size):
            share = float(shares[row, col])
            shade = int(255 * (1 - share))
            box = (
                margin + col * cell,
                row * cell,
                margin + (col + 1) * cell - 1,
                (row + 1) * cell - 1,
            )
            draw.rectangle(box, fill=(shade, shade, 255))
            if share >= 0.005:
                draw.text(
                    (box[0] + 3, box[1] + cell // 3),
                    f"{100 * share:.0f}",
                    fill="black" if share < 0.5 else "white",
                )
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
