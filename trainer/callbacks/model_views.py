"""What the model has learned, in TensorBoard: input batch, graph, kernels, feature maps,
Grad-CAM (drawn by :mod:`torchcamp.trainer.visualize`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from torchcamp.trainer import visualize
from torchcamp.trainer.callbacks import Callback
from torchcamp.trainer.callbacks.tensorboard import TensorBoardLogger
from torchcamp.trainer.errors import UserError, first_line
from torchcamp.trainer.extras import EpochSchedule
from torchcamp.trainer.utils import move_to_device

log = logging.getLogger(__name__)


class ModelViewsLogger(Callback):
    """What the model has learned, in TensorBoard beside :class:`TensorBoardLogger`'s scalars
    (the ``callbacks.model_views`` switches; drawn by :mod:`torchcamp.trainer.visualize`).

    At the start of a run: ``train/input_batch``, a training batch as the model sees it
    (``train_images``, de-normalised with ``mean`` and ``std``), and the model's graph traced
    on ``graph_inputs`` (a tracing failure is one warning). After an epoch, on the time
    budget (:mod:`torchcamp.trainer.extras`: first and last epoch, then as their cost allows,
    or every ``every_n_epochs``): ``kernels/<kernel_layer>``; ``feature_maps/<feature_layer>``
    for the first of the fixed ``images`` (normalised, as the model takes them);
    ``grad_cam/<grad_cam_layer>`` over all of them. A view whose argument is None is left
    out, and so is Grad-CAM once the model turns out to give no class scores (a GAN's
    discriminator). ``forward(model, images)`` runs the
    model on images, where ``model(images)`` does not. It writes through ``tensorboard``, by
    default the run's :class:`TensorBoardLogger` (found among the Trainer's callbacks).
    """

    order = 11  # after TensorBoardLogger, which opens the event file this writes to

    def __init__(
        self,
        tensorboard: TensorBoardLogger | None = None,
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
        every_n_epochs: int | None = None,
    ) -> None:
        self.tensorboard = tensorboard
        self.schedule = EpochSchedule("model_views", every_n_epochs)
        self.train_images, self.graph_inputs, self.images = train_images, graph_inputs, images
        self.mean, self.std = mean, std
        self.task_forward = forward
        self.forward = forward or visualize.call_model
        self.kernel_layer = kernel_layer
        self.feature_layer = feature_layer
        self.grad_cam_layer = grad_cam_layer

    def on_fit_start(self, trainer) -> None:
        if self.tensorboard is None:
            loggers = [cb for cb in trainer.callbacks if isinstance(cb, TensorBoardLogger)]
            if not loggers:
                raise UserError(
                    "the model_views callback draws into TensorBoard, and this run has no "
                    "tensorboard callback: add it back, or drop model_views with "
                    "~callbacks.model_views"
                )
            self.tensorboard = loggers[0]
        self._check_layers(trainer.module, trainer.device)
        # A run that goes on has these in its event files already; one whose TensorBoard
        # files could not be written (a full disk) goes on without them.
        if trainer.global_step or self.tensorboard.output_failed:
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
                raise UserError(f"callbacks.model_views.{setting}={name}: {error}") from None

    def on_epoch_end(self, trainer, metrics: Mapping[str, float]) -> None:
        self.schedule.run_if_due(trainer, lambda: self._log_views(trainer))

    def on_train_end(self, trainer) -> None:
        # Stopped early (early stopping, a time limit): the weights training ends with.
        self.schedule.run_at_end(trainer, lambda: self._log_views(trainer))

    def _log_views(self, trainer) -> None:
        if self.tensorboard.output_failed:  # nowhere to draw them (see TensorBoardLogger)
            return
        model, device, step = trainer.module, trainer.device, trainer.global_step
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
            log.warning(
                "TensorBoard graph left out: %s cannot be traced (%s); "
                "callbacks.model_views.graph=false skips it",
                type(model).__name__,
                first_line(error),
            )
