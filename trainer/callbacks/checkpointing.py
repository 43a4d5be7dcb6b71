"""Checkpoint files during training: ``last.pt``, ``best.pt``, ``last_good.pt``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from torchcamp.trainer.callbacks import Callback, run_callbacks
from torchcamp.trainer.checkpoint import BackgroundWriter, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


class ModelCheckpoint(Callback):
    """Writes ``last.pt`` every epoch (and every ``every_n_steps`` optimizer steps, and when a
    signal stops the run) and ``best.pt`` on a new best monitored metric.

    ``extra`` (the resolved config, run metadata) is stored in every checkpoint beside the
    Trainer's state. Files are written on a background thread (:class:`BackgroundWriter`)
    while training goes on; ``best.pt`` is a hard link to the ``last.pt`` of its epoch.
    :meth:`best_weights` reads the best weights back (for testing with them).
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
        run_callbacks(trainer.callbacks, "on_save_checkpoint", trainer)
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

    def best_weights(self) -> dict[str, torch.Tensor] | None:
        """The model weights in ``best.pt`` once every pending write is done; None where this
        process writes no files (DDP ranks other than 0) or no best was saved."""
        self.writer.wait()
        if not (self.save and self.best_path.exists()):
            return None
        return load_checkpoint(self.best_path)["model"]

    def on_fit_end(self, trainer, metrics: Mapping[str, float]) -> None:
        self.writer.wait()
