"""Checkpoint files: the format (atomic writes, checksums, safe loads) and the one loader of
model weights into a model, whatever file they come from."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchcamp.trainer.errors import UserError, WriteFailed, first_line
from torchcamp.trainer.files import link_or_copy, write_failed, written_atomically

# 2: optimizers and schedulers by part ({"model": ...}, a GAN's {"D": ..., "G": ...}).
CHECKPOINT_FORMAT = 2

log = logging.getLogger(__name__)


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file, fsync, then rename.

    A crash or a full disk mid-write leaves the previous file intact; a failed write is a
    :class:`WriteFailed` that names the file and the previous one's epoch (the run stops
    rather than train on without checkpoints).
    """
    path = Path(path)
    state = {"format": CHECKPOINT_FORMAT, **state}
    state["checksum"] = state_checksum(state)
    try:
        # A file object, not the path: torch then writes through Python, and a full disk's
        # OSError (its errno, its reason) comes with the RuntimeError torch raises.
        with written_atomically(path, sync=True) as temporary, open(temporary, "wb") as file:
            torch.save(state, file)
    except WriteFailed as failed:
        if failed.os_error is None:
            raise
        raise write_failed(path, failed.os_error, _kept(path)) from failed.os_error


def _kept(path: Path) -> str:
    """What a failed write of ``path`` leaves: the previous file, with its epoch and step."""
    try:  # mmap: the header and two numbers are read, not the weights
        previous = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        held = f" (epoch {previous['epoch']}, step {previous.get('global_step', 0)})"
    except FileNotFoundError:
        return f"no {path.name} was written before it"
    except Exception:  # not a checkpoint of ours, or unreadable: say only that it is there
        held = ""
    return f"the previous {path.name} is intact{held}"


@dataclass
class WriteJob:
    """A checkpoint to write: ``state`` (on the CPU) to ``path``, ``links`` pointed at it, then
    the files in ``remove`` deleted."""

    state: dict[str, Any]
    path: Path
    links: Sequence[Path] = ()
    remove: Sequence[Path] = ()


class BackgroundWriter:
    """Writes checkpoints on a thread while training goes on, one at a time.

    :meth:`save` copies the state to the CPU (the weights change with the next step) and
    returns; the write itself (checksum, ``torch.save``, fsync, rename: a third of a second for
    ResNet18 with its optimizer state) overlaps the next steps. :meth:`wait` returns once the
    pending write is on disk, and raises its error if it failed, so a full disk still stops the
    run, one checkpoint later. The thread is not a daemon: a write under way when the run ends
    (or fails) is finished, not cut off. Files a write makes obsolete (an evicted top-k
    checkpoint) are removed by that write, once the new file and its links are on disk.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.cpu_seconds = 0.0  # CPU time the last finished write took on its thread

    def save(
        self,
        state: dict[str, Any],
        path: Path,
        links: Sequence[Path] = (),
        remove: Sequence[Path] = (),
        earlier: Sequence[WriteJob] = (),
    ) -> None:
        """Write ``state`` to ``path``, point each of ``links`` at the same file, then delete
        the files in ``remove``; a write that fails deletes nothing. The ``earlier`` writes (of
        states already copied with :func:`cpu_copy`) are done first, on the same thread."""
        self.wait()
        self.write([*earlier, WriteJob(cpu_copy(state), path, links, remove)])

    def write(self, jobs: Sequence[WriteJob]) -> None:
        """Write ``jobs`` (states already on the CPU), in order, on the thread."""
        self.wait()
        self._thread = threading.Thread(target=self._write, args=(jobs,), name="checkpoint-writer")
        self._thread.start()

    def _write(self, jobs: Sequence[WriteJob]) -> None:
        lower_priority()
        started = time.thread_time()
        try:
            for job in jobs:
                save_checkpoint(job.state, job.path)
                for link in job.links:
                    link_or_copy(job.path, link)
                # Only now: until the new file is on disk, the old ones are the run's checkpoints.
                for old in job.remove:
                    Path(old).unlink(missing_ok=True)
        except BaseException as error:  # raised in the training thread by wait()
            self._error = error
        self.cpu_seconds = time.thread_time() - started

    def wait(self) -> None:
        """Block until the pending write is done; raise its error, if any."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error


def lower_priority() -> None:
    """Give the calling thread the lowest CPU priority (Linux: nice 19 for this thread only).

    The writer's checksum and serialisation (about 0.1 s of CPU for ResNet18 with its
    optimizer state) would otherwise take a core from training's own threads while both want
    it; at nice 19 it runs in what they leave idle. Elsewhere it is a no-op.
    """
    # Not Linux/BSD (no setpriority), or not allowed: the default priority.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def cpu_copy(value: Any) -> Any:
    """``value`` with every tensor copied to the CPU (containers rebuilt, the rest shared)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, Mapping):
        return {key: cpu_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(cpu_copy(item) for item in value)
    return value


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: tensors and primitives, never code.

    RNG states must stay on the CPU, so everything is loaded there unless asked otherwise;
    ``load_state_dict`` moves weights and optimizer state to the model's device.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"checkpoint not found: {path} (give resume= an existing .pt file, or auto)"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise UserError(f"cannot read checkpoint {path}: {first_line(error)}") from error
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise UserError(f"{path} is not a torchcamp checkpoint (no model/epoch entries)")
    if "checksum" in state and state.pop("checksum") != state_checksum(state):
        raise UserError(
            f"checkpoint {path} is corrupt (its contents do not match the checksum written with "
            "it): resume from another checkpoint, e.g. best.pt, or resume=auto"
        )
    if state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(
            f"{path} is a format-{state.get('format')} checkpoint and this torchcamp reads format "
            f"{CHECKPOINT_FORMAT}: start a new run (its weights load with model.weights_path)"
        )
    return state


def state_checksum(state: Mapping[str, Any]) -> str:
    """SHA-256 over every tensor's bytes (with dtype and shape) and every other value's repr,
    in a fixed order: a flipped bit in a file that still unpacks is caught on load."""
    digest = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            flat = value.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
            digest.update(memoryview(flat.view(torch.uint8).numpy()))  # no copy of the bytes
        elif isinstance(value, Mapping):
            for key in sorted(value, key=repr):
                digest.update(repr(key).encode())
                feed(value[key])
        elif isinstance(value, (list, tuple)):
            for item in value:
                feed(item)
        else:
            digest.update(repr(value).encode())

    feed(state)
    return digest.hexdigest()


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The model weights in a file: a plain state dict (zip or legacy format), a torchcamp
    checkpoint, or a training script's ``{"state_dict": ...}``; tensors only, never code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"weights file {path}: no such file") from None
    except Exception as error:
        raise UserError(f"weights file {path}: cannot read it ({first_line(error)})") from error
    for wrapper in ("state_dict", "model"):  # torchcamp checkpoints and common training scripts
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, Mapping):
        raise UserError(f"weights file {path} holds no state dict")
    return dict(state)


def load_weights(
    model: nn.Module, weights: Mapping[str, torch.Tensor], source: str, fresh_head: bool = False
) -> None:
    """Load ``weights`` into ``model``: the one place weights meet a model (resume, evaluate,
    predict, ``model.weights_path``).

    The policy, in full: a ``module.`` prefix (a wrapped model's) is dropped; a missing
    ``num_batches_tracked`` buffer is accepted (a detector rebuilt with BatchNorm2d where it
    trained with FrozenBatchNorm2d computes the same in eval mode); with ``fresh_head`` the
    classifier head (:func:`head_layers`) may be missing or of another shape, as when ImageNet or
    COCO weights meet a two-class task, and keeps its fresh initialisation. Any other
    difference is a :class:`UserError` naming ``source`` and the first differing keys.
    """
    weights = dict(weights)
    nn.modules.utils.consume_prefix_in_state_dict_if_present(weights, "module.")
    own = model.state_dict()
    head = tuple(f"{name}." for name in head_layers(model)) if fresh_head else ()
    mismatched = [k for k in weights if k in own and weights[k].shape != own[k].shape]
    missing = [k for k in own if k not in weights and not k.endswith(".num_batches_tracked")]
    problems = [
        *(f"size mismatch for {k}" for k in mismatched if not k.startswith(head)),
        *(f"missing {k}" for k in missing if not k.startswith(head)),
        *(f"unexpected {k}" for k in weights if k not in own),
    ]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise UserError(
            f"{source} does not fit {type(model).__name__}: {', '.join(problems[:3])}{more}"
        )
    model.load_state_dict({k: v for k, v in weights.items() if k not in mismatched}, strict=False)


def head_layers(model: nn.Module) -> list[str]:
    """The classifier head: the last ``nn.Linear`` (ResNet's ``fc``), with the Linears beside it
    when it sits in a predictor module of its own (Faster R-CNN's ``cls_score``, ``bbox_pred``)."""
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        return []
    parent = linears[-1].rpartition(".")[0]
    if not parent:
        return linears[-1:]
    return [name for name in linears if name.rpartition(".")[0] == parent]
