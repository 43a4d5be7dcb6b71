"""Checkpoint files during training, in the run's ``checkpoints/`` folder:

- ``last.pt``: the newest state, written after an epoch when the training it would save is
  worth the write (see :meth:`ModelCheckpoint.worth_writing`: at least every
  ``SAVE_INTERVAL_SECONDS`` of training, sooner when writing is cheap), at the end of training
  (the last epoch, early stopping, a time limit), on a signal, and every ``every_n_steps``
  optimizer steps when set; ``resume=auto`` reads it;
- ``epoch_007-val_loss_0.1234.pt``: the ``save_top_k`` best epochs by ``trainer.monitor``
  (its name with ``/`` as ``_``), older ones removed as better ones come;
- ``best.pt``: the best of those (the newest epoch's where no metric is monitored);
- ``epoch_010.pt``: every ``every_n_epochs`` epochs, never removed;
- ``step_0001200.pt``: the newest ``keep_step_checkpoints`` of the ``every_n_steps`` writes;
- ``last_good.pt``: the state before a non-finite loss stopped the run.

Each file but ``last_good.pt`` is a hard link to the ``last.pt`` written at its epoch or step
(``last.pt`` is replaced by a rename, never rewritten, so a link keeps its content). A best
epoch whose ``last.pt`` is not worth writing yet is kept in memory and written to its own file
(``best.pt`` linked to it) with the next checkpoint, at the latest when training ends or stops.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from torchcamp.trainer.callbacks import Callback, run_callbacks
from torchcamp.trainer.checkpoint import (
    BackgroundWriter,
    WriteJob,
    cpu_copy,
    link_or_copy,
    load_checkpoint,
    save_checkpoint,
)
from torchcamp.trainer.errors import UserError

log = logging.getLogger(__name__)

# The files that come and go with the top-k and step lists (not epoch_010.pt snapshots).
RETAINED_FILE = re.compile(r"epoch_\d+-.+\.pt|step_\d+\.pt")

# last.pt is written after an epoch once this much training would otherwise be lost to a crash,
# or sooner when the write costs at most trainer.extras_budget of the training it saves.
SAVE_INTERVAL_SECONDS = 5.0


class ModelCheckpoint(Callback):
    """Writes ``last.pt`` and links the kept checkpoints to it (see the module's docstring).

    ``extra`` (the resolved config, run metadata) is stored in every checkpoint beside the
    Trainer's state. Files are written on a background thread (:class:`BackgroundWriter`)
    while training goes on; a file that falls out of the top k (or step list) is removed by
    the write that replaces it, after the new file and its links are on disk. The top-k and
    step lists are part of the callback's state, so a resumed run keeps the files an
    unbroken run would. :meth:`best_weights` reads the best weights back (for testing with
    them).
    """

    # After the loggers: what they wrote up to a checkpoint's step is on disk before it is.
    order = 20

    def __init__(
        self,
        dirpath: str | Path,
        extra: Mapping[str, Any] | None = None,
        save: bool = True,
        every_n_steps: int | None = None,
        save_top_k: int = 1,
        every_n_epochs: int | None = None,
        keep_step_checkpoints: int = 0,
    ) -> None:
        check_settings(
            every_n_steps=every_n_steps,
            save_top_k=save_top_k,
            every_n_epochs=every_n_epochs,
            keep_step_checkpoints=keep_step_checkpoints,
        )
        self.dirpath = Path(dirpath)
        self.extra = dict(extra or {})
        self.save = save  # under DDP only rank 0 writes; every rank takes part in loading
        self.every_n_steps = every_n_steps
        self.save_top_k = save_top_k
        self.every_n_epochs = every_n_epochs
        self.keep_step_checkpoints = keep_step_checkpoints
        self.top_k: list[dict[str, Any]] = []  # {"epoch", "value", "file"}, best first
        self.step_files: list[str] = []  # oldest first
        self._links: list[str] = []  # the files linked to the last.pt being written
        self._restored = False
        self._saved_step: int | None = None  # the global step last.pt holds
        self._saved_seconds = 0.0  # trainer.fit_seconds when it was written
        self._write_seconds: float | None = None  # what the last write took from training
        self._pending_best: WriteJob | None = None  # a best epoch not on disk yet
        self.writer = BackgroundWriter()

    @property
    def last_path(self) -> Path:
        return self.dirpath / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.dirpath / "best.pt"

    def state_dict(self) -> dict[str, Any]:
        return {
            "top_k": [dict(entry) for entry in self.top_k],
            "step_files": list(self.step_files),
            "links": list(self._links),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.top_k = [dict(entry) for entry in state.get("top_k", [])]
        self.step_files = list(state.get("step_files", []))
        self._links = list(state.get("links", []))
        self._restored = True

    def on_fit_start(self, trainer) -> None:
        if self.save_top_k == 0:
            log.info(
                "callbacks.checkpoint.save_top_k=0: no best.pt; the test split is scored with "
                "the last weights"
            )
        if self._restored and self.save:
            self._match_files()

    def _match_files(self) -> None:
        """After a resume, make ``dirpath`` hold exactly the files the restored lists name."""
        if self.last_path.exists():  # continued in its own directory: the state is last.pt's
            # Linked again: a run stopped between writing last.pt and linking it left them
            # missing or stale (best.pt still the previous best).
            for name in self._links:
                link_or_copy(self.last_path, self.dirpath / name)
        # Listed and absent: the files of the run the checkpoint came from, in another folder.
        self.top_k = [e for e in self.top_k if (self.dirpath / e["file"]).exists()]
        self.step_files = [name for name in self.step_files if (self.dirpath / name).exists()]
        listed = {entry["file"] for entry in self.top_k} | set(self.step_files)
        for path in self.dirpath.glob("*.pt"):
            # Evicted by a write the run stopped before finishing, or written after the state.
            if RETAINED_FILE.fullmatch(path.name) and path.name not in listed:
                log.info("removing %s: not among the checkpoints of the state resumed", path)
                path.unlink()

    def on_train_step_end(self, trainer, outputs: Mapping[str, torch.Tensor]) -> None:
        if not (self.every_n_steps and trainer.global_step % self.every_n_steps == 0):
            return
        links, remove = [], []
        if self.keep_step_checkpoints:
            keep = self.keep_step_checkpoints
            self.step_files.append(f"step_{trainer.global_step:07d}.pt")
            links = [self.dirpath / self.step_files[-1]]
            remove = [self.dirpath / name for name in self.step_files[:-keep]]
            self.step_files = self.step_files[-keep:]
        self._save_last(trainer, links, remove)

    def on_epoch_end(self, trainer, metrics: Mapping[str, float]) -> None:
        links, remove = self._rank_epoch(trainer, metrics)
        # Without a monitored metric there is no "best": the newest weights stand in for it.
        if self.save_top_k != 0 and (trainer.is_best or trainer.best is None):
            links.append(self.best_path)
        snapshot = bool(self.every_n_epochs and trainer.epoch % self.every_n_epochs == 0)
        if snapshot:
            links.append(self.dirpath / f"epoch_{trainer.epoch:03d}.pt")
        if snapshot or self.save_top_k not in (0, 1) or self.worth_writing(trainer):
            self._save_last(trainer, links, remove)
        elif trainer.is_best and links:  # a new best (save_top_k=1): in memory till a write
            self._keep_best(trainer, links, remove)

    def worth_writing(self, trainer) -> bool:
        """Whether ``last.pt`` is written after this epoch: at the end of training; after
        ``SAVE_INTERVAL_SECONDS`` of training since the last write; or when the last write
        took at most ``trainer.extras_budget`` of the training since then (so a write that
        costs 10 ms is made about every second of training at 1%; the first epoch's write
        measures it)."""
        if trainer.epoch >= trainer.max_epochs or trainer.should_stop:
            return True
        since = trainer.fit_seconds - self._saved_seconds
        if since >= SAVE_INTERVAL_SECONDS or self._write_seconds is None:
            return True
        # What the training thread spent, and the writer's thread (its CPU time: on a machine
        # whose cores training keeps busy, time taken from training too).
        cost = self._write_seconds + self.writer.cpu_seconds
        return cost <= trainer.extras.fraction * since

    def _keep_best(self, trainer, links: Sequence[Path], remove: Sequence[Path]) -> None:
        """Keep this epoch's state in memory for its top-k file and ``best.pt``; it replaces
        an earlier best not written yet (whose file is then never made)."""
        run_callbacks(trainer.callbacks, "on_save_checkpoint", trainer)
        earlier_remove = self._pending_best.remove if self._pending_best else []
        path, *others = links
        self._pending_best = WriteJob(
            cpu_copy(trainer.state_dict() | self.extra), path, others, [*earlier_remove, *remove]
        )

    def _rank_epoch(self, trainer, metrics: Mapping[str, float]) -> tuple[list[Path], list[Path]]:
        """Put this epoch in the top k if its monitored value earns it a place: (the file to
        link, if it does; the files of the epochs it pushes out)."""
        value = metrics.get(trainer.monitor) if trainer.monitor else None
        if self.save_top_k == 0 or value is None or math.isnan(value):
            return [], []
        metric = trainer.monitor.replace("/", "_")
        name = f"epoch_{trainer.epoch:03d}-{metric}_{value:.4f}.pt"
        entry = {"epoch": trainer.epoch, "value": float(value), "file": name}
        sign = -1 if trainer.monitor_mode == "max" else 1
        # Best first; on a tie the earlier epoch ranks higher, as the Trainer's best does.
        ranked = sorted([*self.top_k, entry], key=lambda e: (sign * e["value"], e["epoch"]))
        k = len(ranked) if self.save_top_k == -1 else self.save_top_k
        self.top_k, evicted = ranked[:k], ranked[k:]
        links = [self.dirpath / name] if entry in self.top_k else []
        return links, [self.dirpath / e["file"] for e in evicted if e is not entry]

    def on_interrupt(self, trainer) -> None:
        if self._saved_step != trainer.global_step:
            self._save_last(trainer)
        self.writer.wait()  # on disk before the process exits
        if self.save:
            log.warning("checkpoint to continue from: %s", self.last_path)

    def on_train_end(self, trainer) -> None:
        # Training stopped mid-epoch (a time limit): last.pt is to hold the step it stopped at.
        if self._saved_step != trainer.global_step:
            self._save_last(trainer)
        self.writer.wait()

    def _save_last(self, trainer, links: Sequence[Path] = (), remove: Sequence[Path] = ()) -> None:
        """Write ``last.pt`` (and a best epoch kept in memory, first), timing what it takes
        from training."""
        started = time.perf_counter()
        run_callbacks(trainer.callbacks, "on_save_checkpoint", trainer)
        self._links = [path.name for path in links]  # in the state: a resume finishes them
        earlier, self._pending_best = self._pending_best, None
        if earlier is not None and self.best_path in links:  # a newer best: it is never written
            earlier, remove = None, [*earlier.remove, *remove]
        if self.save:
            state = trainer.state_dict() | self.extra
            self.writer.save(state, self.last_path, links, remove, [earlier] if earlier else [])
        self._saved_step, self._saved_seconds = trainer.global_step, trainer.fit_seconds
        self._write_seconds = time.perf_counter() - started

    def on_nonfinite_loss(self, trainer) -> None:
        # The weights are still those of the last finite step: keep them for inspection.
        self._write_pending_best()
        self.writer.wait()
        if self.save:
            path = self.dirpath / "last_good.pt"
            save_checkpoint(trainer.state_dict() | self.extra, path)
            log.warning("non-finite loss: the last good state is in %s", path)

    def _write_pending_best(self) -> None:
        """Write a best epoch kept in memory (a run that fails on, keeping its best)."""
        pending, self._pending_best = self._pending_best, None
        if pending is not None and self.save:
            self.writer.write([pending])

    def best_weights(self) -> dict[str, torch.Tensor] | None:
        """The model weights in ``best.pt`` once every pending write is done; None where this
        process writes no files (DDP ranks other than 0), no best was saved, or
        ``save_top_k=0`` keeps none."""
        self.writer.wait()
        if not (self.save and self.save_top_k != 0 and self.best_path.exists()):
            return None
        return load_checkpoint(self.best_path)["model"]

    def on_fit_end(self, trainer, metrics: Mapping[str, float]) -> None:
        self.writer.wait()


def check_settings(**values: Any) -> None:
    """A one-line :class:`UserError` naming the first ``callbacks.checkpoint.*`` value out of
    range (``values``: :data:`SETTINGS`' keys) and what to give instead."""
    for key, value in values.items():
        accepts, allowed = SETTINGS[key]
        if not accepts(value):
            shown = "null" if value is None else value
            raise UserError(f"callbacks.checkpoint.{key}={shown} is not allowed: use {allowed}")
    if values["keep_step_checkpoints"] and values["every_n_steps"] is None:
        raise UserError(
            f"callbacks.checkpoint.keep_step_checkpoints={values['keep_step_checkpoints']} "
            "keeps every_n_steps checkpoints, and callbacks.checkpoint.every_n_steps is null: "
            "set it (e.g. callbacks.checkpoint.every_n_steps=500) or keep_step_checkpoints=0"
        )


def _at_least(low: int) -> Any:
    return lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= low


SETTINGS = {  # key: (accepts, what to give instead)
    "every_n_steps": (
        lambda v: v is None or _at_least(1)(v),
        "null (at the end of each epoch only) or an integer >= 1",
    ),
    "save_top_k": (
        _at_least(-1),
        "-1 (every epoch), 0 (none, and no best.pt) or the number of best epochs to keep",
    ),
    "every_n_epochs": (
        lambda v: v is None or _at_least(1)(v),
        "null (no snapshots) or an integer >= 1",
    ),
    "keep_step_checkpoints": (
        _at_least(0),
        "0 (last.pt only) or the number of step checkpoints to keep",
    ),
}
