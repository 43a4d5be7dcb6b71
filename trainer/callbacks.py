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

import io
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchcamp.trainer import distributed, visualize
from torchcamp.trainer.checkpoint import BackgroundWriter, load_checkpoint, save_checkpoint
from torchcamp.trainer.errors import UserError
from torchcamp.trainer.utils import move_to_device

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

    At the start: the run's hyperparameters (HParams tab). Per optimizer step (every
    ``trainer.log_every_n_steps``): ``train/<name>_step`` and the lr of every parameter group.
    Per epoch: the epoch metrics, a histogram of every parameter and its gradient, the train
    and val confusion matrices of a classifier (``confusion_matrix``), and the task's images
    (``images_fn(model) -> {tag: uint8 [3, H, W]}``, also saved as
    ``<image_dir>/<tag>/epoch_NNN.png``). At the end: the final metrics (test, best) and the
    test confusion matrix.
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
        confusion_matrix: bool = True,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.confusion_matrix = confusion_matrix
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
        self._add_hparams_summary("start")

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
        self._log_confusion(trainer, ("train", "val"))
        if self.images_fn is not None:
            self._log_images(trainer.module, trainer.epoch, step)
        self.writer.flush()

    def add_image(self, tag: str, image: torch.Tensor, step: int) -> None:
        """A uint8 ``[3, H, W]`` image, PNG-encoded at zlib level 1: SummaryWriter.add_image's
        level 6 was half the time of the per-epoch views (photos shrink little more at 6)."""
        from PIL import Image
        from tensorboard.compat.proto.summary_pb2 import Summary

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
        from tensorboard.compat.proto.summary_pb2 import Summary

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
        from torch.utils.tensorboard.summary import hparams

        _, session_start, session_end = hparams(self.hparams, {})
        self.writer.file_writer.add_summary(session_start if part == "start" else session_end)

    def _log_images(self, model: torch.nn.Module, epoch: int, step: int) -> None:
        from PIL import Image

        for tag, image in self.images_fn(model).items():
            self.add_image(tag, image, step)
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
        # test/ and best/ are new at this point; the HParams tab shows each scalar's last value.
        new = {n: v for n, v in metrics.items() if n not in self._epoch_metric_names}
        self._add_scalars(new, trainer.global_step)
        self._log_confusion(trainer, ("test",))  # train and val: after every epoch
        self._add_hparams_summary("end")
        self.writer.close()


class ModelViewsLogger(Callback):
    """What the model has learned, in TensorBoard beside :class:`TensorBoardLogger`'s scalars
    (the ``trainer.log`` switches; drawn by :mod:`torchcamp.trainer.visualize`).

    At the start of a run: ``train/input_batch``, a training batch as the model sees it
    (``train_images``, de-normalised with ``mean`` and ``std``), and the model's graph traced
    on ``graph_inputs`` (a tracing failure is one warning). After every epoch:
    ``kernels/<kernel_layer>``; ``feature_maps/<feature_layer>`` for the first of the fixed
    ``images`` (normalised, as the model takes them); ``grad_cam/<grad_cam_layer>`` over all of
    them. A view whose argument is None is left out, and so is Grad-CAM once the model turns
    out to give no class scores (a GAN's discriminator). ``forward(model, images)`` runs the
    model on images, where ``model(images)`` does not.
    """

    order = 11  # after TensorBoardLogger, which opens the event file this writes to

    def __init__(
        self,
        tensorboard: TensorBoardLogger,
        *,
        train_images: torch.Tensor | Sequence[torch.Tensor] | None = None,
        graph_inputs: Sequence[Any] | None = None,
        images: torch.Tensor | Sequence[torch.Tensor] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        forward: visualize.Forward | None = None,
        kernel_layer: str | None = None,
        feature_layer: str | None = None,
        grad_cam_layer: str | None = None,
    ) -> None:
        self.tensorboard = tensorboard
        self.train_images, self.graph_inputs, self.images = train_images, graph_inputs, images
        self.mean, self.std = mean, std
        self.task_forward = forward
        self.forward = forward or visualize.call_model
        self.kernel_layer = kernel_layer
        self.feature_layer = feature_layer
        self.grad_cam_layer = grad_cam_layer

    def on_fit_start(self, trainer) -> None:
        self._check_layers(trainer.module, trainer.device)
        if trainer.global_step:  # a run that goes on has these in its event files already
            return
        if self.train_images is not None:
            grid = visualize.input_grid(self.train_images, self.mean, self.std)
            self.tensorboard.add_image("train/input_batch", grid, 0)
        if self.graph_inputs is not None:
            self._add_graph(trainer.module, trainer.device)

    def _check_layers(self, model: torch.nn.Module, device: torch.device) -> None:
        """A chosen layer without feature maps (a Linear) fails now, not after an epoch of
        training: one image is run up to the layer (and no further)."""
        if self.images is None:
            return
        image = move_to_device(self.images[0], device)
        chosen = {"feature_layer": self.feature_layer, "grad_cam_layer": self.grad_cam_layer}
        for setting, name in chosen.items():
            if name is None:
                continue
            layer = visualize.find_layer(model, name)
            try:
                visualize.feature_maps(model, layer, image, self.forward)
            except UserError as error:
                raise UserError(f"trainer.log.{setting}={name}: {error}") from None

    def on_epoch_end(self, trainer, metrics: Mapping[str, float]) -> None:
        self._log_views(trainer.module, trainer.device, trainer.global_step)
        # On disk before this epoch's checkpoint, as TensorBoardLogger's own (resume purges
        # what comes after the checkpoint's step only).
        self.tensorboard.writer.flush()

    def _log_views(self, model: torch.nn.Module, device: torch.device, step: int) -> None:
        if self.kernel_layer is not None:
            weight = visualize.find_layer(model, self.kernel_layer).weight
            self.tensorboard.add_image(
                f"kernels/{self.kernel_layer}", visualize.kernel_grid(weight), step
            )
        if self.images is None:
            return
        images = move_to_device(self.images, device)
        if self.feature_layer is not None:
            layer = visualize.find_layer(model, self.feature_layer)
            grid = visualize.feature_map_grid(model, layer, images[0], self.forward)
            self.tensorboard.add_image(f"feature_maps/{self.feature_layer}", grid, step)
        if self.grad_cam_layer is not None:
            layer = visualize.find_layer(model, self.grad_cam_layer)
            heatmaps = visualize.grad_cam(model, layer, images, forward=self.forward)
            if heatmaps is None:  # no class scores to explain, now or later
                self.grad_cam_layer = None
                return
            shown = visualize.denormalize(images, self.mean, self.std)
            grid = visualize.grad_cam_grid(shown, heatmaps)
            self.tensorboard.add_image(f"grad_cam/{self.grad_cam_layer}", grid, step)

    def _add_graph(self, model: torch.nn.Module, device: torch.device) -> None:
        """add_graph traces the model (torch.jit.trace), which not every model allows (Python
        control flow on values, detection's lists of dicts): then one warning, and the run goes
        on without a graph."""
        import warnings

        module = model
        if self.task_forward is not None:
            module = visualize.ImagesForward(model, self.task_forward)
        inputs = tuple(move_to_device(list(self.graph_inputs), device))
        try:
            with warnings.catch_warnings(), visualize.evaluating(model), torch.no_grad():
                warnings.simplefilter("ignore")  # the tracer's remarks on Python control flow
                # Traced here without torch's check, which traces and runs the model twice more
                # (most of add_graph's time); add_graph takes a traced module as it is.
                traced = torch.jit.trace(module, inputs, check_trace=False)
                self.tensorboard.writer.add_graph(traced, inputs)
        except Exception as error:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            log.warning(
                "TensorBoard graph left out: %s cannot be traced (%s); trainer.log.graph=false "
                "skips it",
                type(model).__name__,
                reason,
            )


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
