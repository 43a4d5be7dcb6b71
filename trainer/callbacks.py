"""Extras around the training loop, as a small sorted callback list (fastai's ``run_cbs``).

Events, in the order the Trainer fires them:
``on_fit_start(trainer)``, ``on_train_step_end(trainer, outputs)`` after each optimizer step,
``on_epoch_end(trainer, metrics)`` after validation, ``on_test_start(trainer)`` and
``on_fit_end(trainer, metrics)`` with the final metrics (test included);
``on_nonfinite_loss(trainer)`` when a NaN/Inf loss stops the run; ``on_interrupt(trainer)``
when a signal stops it at a step boundary.

A callback with state to carry across a resume defines ``state_dict()`` and
``load_state_dict(state)``; the Trainer stores it in the checkpoint under the class's name.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchcamp.trainer import distributed
from torchcamp.trainer.checkpoint import BackgroundWriter, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

HISTOGRAM_BINS = 64


class Callback:
    """Base class: override the events you need. Lower ``order`` runs first."""

    order = 0


def run_callbacks(callbacks: Iterable[Callback], event: str, *args: Any) -> None:
    """Call ``event`` on every callback that defines it, in ``order``."""
    for callback in sorted(callbacks, key=lambda cb: cb.order):
        method = getattr(callback, event, None)
        if method is not None:
            method(*args)


class ModelCheckpoint(Callback):
    """Writes ``last.pt`` every epoch (and every ``every_n_steps`` optimizer steps, and when a
    signal stops the run) and ``best.pt`` on a new best monitored metric.

    ``extra`` (the resolved config, run metadata) is stored in every checkpoint beside the
    Trainer's state. Files are written on a background thread (:class:`BackgroundWriter`)
    while training goes on; ``best.pt`` is a hard link to the ``last.pt`` of its epoch.
    Before testing, the best weights are loaded back, as Lightning's ``ckpt_path="best"`` does.
    """

    # After the loggers: what they wrote up to a checkpoint's step is on disk before it is.
    order = 20

    def __init__(
        self,
        dirpath: str | Path,
        extra: Mapping[str, Any] | None = None,
        save: bool = True,
        every_n_steps: int | None = None,
    ) -> None:
        self.dirpath = Path(dirpath)
        self.extra = dict(extra or {})
        self.save = save  # under DDP only rank 0 writes; every rank takes part in loading
        self.every_n_steps = every_n_steps
        self._saved_step: int | None = None  # the global step last.pt holds
        self.writer = BackgroundWriter()

    @property
    def last_path(self) -> Path:
        return self.dirpath / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.dirpath / "best.pt"

    def on_train_step_end(self, trainer, outputs: Mapping[str, torch.Tensor]) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._save_last(trainer)

    def on_interrupt(self, trainer) -> None:
        if self._saved_step != trainer.global_step:
            self._save_last(trainer)
        self.writer.wait()  # on disk before the process exits
        if self.save:
            log.warning("checkpoint to continue from: %s", self.last_path)

    def _save_last(self, trainer, also_best: bool = False) -> None:
        if self.save:
            links = [self.best_path] if also_best else []
            self.writer.save(trainer.state_dict() | self.extra, self.last_path, links)
        self._saved_step = trainer.global_step

    def on_epoch_end(self, trainer, metrics: Mapping[str, float]) -> None:
        # Without a monitored metric there is no "best": the newest weights stand in for it.
        self._save_last(trainer, also_best=trainer.is_best or trainer.best is None)

    def on_nonfinite_loss(self, trainer) -> None:
        # The weights are still those of the last finite step: keep them for inspection.
        self.writer.wait()
        if self.save:
            path = self.dirpath / "last_good.pt"
            save_checkpoint(trainer.state_dict() | self.extra, path)
            log.warning("non-finite loss: the last good state is in %s", path)

    def on_test_start(self, trainer) -> None:
        self.writer.wait()
        if self.save and self.best_path.exists():
            state = load_checkpoint(self.best_path, map_location=trainer.device)
            trainer.module.load_state_dict(state["model"])
        # Other ranks may not see rank 0's files (nodes without a shared disk): copy its weights.
        distributed.broadcast_module(trainer.module)

    def on_fit_end(self, trainer, metrics: Mapping[str, float]) -> None:
        self.writer.wait()


class TensorBoardLogger(Callback):
    """Scalars, histograms and hyperparameters under ``log_dir``, stepped by optimizer steps.

    Per optimizer step (every ``trainer.log_every_n_steps``): ``train/<name>_step`` and the lr
    of every parameter group. Per epoch: the epoch metrics, a histogram of every parameter
    and its gradient, and the task's images (``images_fn(model) -> {tag: uint8 [3, H, W]}``,
    also saved as ``<image_dir>/<tag>/epoch_NNN.png``). At the end: the run's hyperparameters
    with its final metrics (HParams tab).
    """

    order = 10

    def __init__(
        self,
        log_dir: str | Path,
        hparams: Mapping[str, Any] | None = None,
        notes: Mapping[str, str] | None = None,
        class_names: Sequence[str] | None = None,
        images_fn: Callable[[torch.nn.Module], Mapping[str, torch.Tensor]] | None = None,
        image_dir: str | Path | None = None,
        flush_every_n_steps: int | None = None,
    ) -> None:
        self.log_dir = Path(log_dir)
        # ModelCheckpoint's every_n_steps: what was logged is on disk before a checkpoint of
        # that step can be (a run killed later and resumed from it then misses no step).
        self.flush_every_n_steps = flush_every_n_steps
        self.images_fn = images_fn
        self.image_dir = Path(image_dir) if image_dir is not None else None
        self.class_names = list(class_names or [])
        self.hparams = dict(hparams or {})
        self.notes = dict(notes or {})
        self.writer = None
        self._epoch_metric_names: set[str] = set()

    def on_fit_start(self, trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # A resumed run continues the same event files: what a killed run logged after its
        # checkpoint's step is hidden (purged), and is logged again as training redoes it.
        purge_step = trainer.global_step + 1 if trainer.global_step else None
        self.writer = SummaryWriter(self.log_dir, purge_step=purge_step)
        if not trainer.global_step:
            for tag, text in self.notes.items():
                self.writer.add_text(tag, text, 0)

    def on_train_step_end(self, trainer, outputs: Mapping[str, torch.Tensor]) -> None:
        step = trainer.global_step
        if step % trainer.log_every_n_steps == 0:
            # Counts (a confusion matrix) are summed per epoch instead; the lrs are those each
            # parameter group just stepped with.
            scalars = {f"train/{n}_step": v.detach() for n, v in outputs.items() if v.ndim == 0}
            self._add_scalars(scalars | {f"lr/{g}": lr for g, lr in trainer.step_lrs.items()}, step)
        if self.flush_every_n_steps and step % self.flush_every_n_steps == 0:
            self.writer.flush()

    def on_epoch_end(self, trainer, metrics: Mapping[str, float]) -> None:
        step = trainer.global_step
        self._add_scalars({"epoch": trainer.epoch, **metrics}, step)
        self._epoch_metric_names.update(metrics)
        for name, param in trainer.module.named_parameters():
            self._histogram(f"params/{name}", param, step)
            if param.grad is not None:
                self._histogram(f"grads/{name}", param.grad, step)
        if self.images_fn is not None:
            self._log_images(trainer.module, trainer.epoch, step)
        self.writer.flush()

    def _add_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        """All of ``scalars`` as one event: a third of the cost of an add_scalar for each."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        if scalars:
            values = [Summary.Value(tag=n, simple_value=float(v)) for n, v in scalars.items()]
            self.writer.file_writer.add_summary(Summary(value=values), step)

    def _log_images(self, model: torch.nn.Module, epoch: int, step: int) -> None:
        from PIL import Image

        for tag, image in self.images_fn(model).items():
            self.writer.add_image(tag, image, step)
            if self.image_dir is not None:
                path = self.image_dir / tag / f"epoch_{epoch:03d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)

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

    def on_interrupt(self, trainer) -> None:
        self.writer.close()  # a resumed run appends to these files

    def on_fit_end(self, trainer, metrics: Mapping[str, float]) -> None:
        from torch.utils.tensorboard.summary import hparams

        # Written into this run's own event file (SummaryWriter.add_hparams would start a new
        # sub-run), so the HParams tab lines each run up with its final scalars.
        # test/ and best/ are new at this point.
        new = {n: v for n, v in metrics.items() if n not in self._epoch_metric_names}
        self._add_scalars(new, trainer.global_step)
        for split, counts in trainer.epoch_counts.items():
            if "confusion" in counts:  # rows: true class, columns: predicted
                image = confusion_image(counts["confusion"], self.class_names)
                self.writer.add_image(f"{split}/confusion_matrix", image, trainer.global_step)
        experiment, session_start, session_end = hparams(self.hparams, dict(metrics))
        for summary in (experiment, session_start, session_end):
            self.writer.file_writer.add_summary(summary)
        self.writer.close()


def confusion_image(
    matrix: torch.Tensor, class_names: Sequence[str], cell: int = 28
) -> torch.Tensor:
    """A confusion matrix as a ``[3, H, W]`` uint8 image: rows true, columns predicted.

    Each row is normalised (so a cell is the share of that class predicted as the column) and
    drawn in shades of blue with its percentage; class names label the rows.
    """
    from PIL import Image, ImageDraw

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
