"""Checkpoint files: atomic writes, safe loads, and finding the run to resume."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from torchcamp.trainer.errors import UserError

# 2: optimizers and schedulers by part ({"model": ...}, a GAN's {"D": ..., "G": ...}).
CHECKPOINT_FORMAT = 2

log = logging.getLogger(__name__)


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file, fsync, then rename.

    A crash or a full disk mid-write leaves the previous file intact; a failed write is a
    :class:`UserError` that says so (the run stops rather than train on without checkpoints).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    state = {"format": CHECKPOINT_FORMAT, **state}
    state["checksum"] = state_checksum(state)
    try:
        with open(temporary, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
    except (OSError, RuntimeError) as error:  # ENOSPC arrives as either, depending on torch
        temporary.unlink(missing_ok=True)
        kept = f"the previous {path.name} is intact" if path.exists() else "none was written"
        raise UserError(
            f"could not write checkpoint {path} ({str(error).strip().splitlines()[0]}); "
            f"{kept}. Free disk space, then resume=auto"
        ) from error
    except BaseException:  # a second Ctrl-C mid-write: the previous file stays, no litter
        temporary.unlink(missing_ok=True)
        raise
    temporary.replace(path)


class BackgroundWriter:
    """Writes checkpoints on a thread while training goes on, one at a time.

    :meth:`save` copies the state to the CPU (the weights change with the next step) and
    returns; the write itself (checksum, ``torch.save``, fsync, rename: a third of a second for
    ResNet18 with its optimizer state) overlaps the next steps. :meth:`wait` returns once the
    pending write is on disk, and raises its error if it failed, so a full disk still stops the
    run, one checkpoint later. The thread is not a daemon: a write under way when the run ends
    (or fails) is finished, not cut off.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, state: dict[str, Any], path: Path, links: Sequence[Path] = ()) -> None:
        """Write ``state`` to ``path``, then point each of ``links`` at the same file."""
        self.wait()
        snapshot = cpu_copy(state)
        self._thread = threading.Thread(
            target=self._write, args=(snapshot, path, links), name="checkpoint-writer"
        )
        self._thread.start()

    def _write(self, state: dict[str, Any], path: Path, links: Sequence[Path]) -> None:
        try:
            save_checkpoint(state, path)
            for link in links:
                link_or_copy(path, link)
        except BaseException as error:  # raised in the training thread by wait()
            self._error = error

    def wait(self) -> None:
        """Block until the pending write is done; raise its error, if any."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error


def cpu_copy(value: Any) -> Any:
    """``value`` with every tensor copied to the CPU (containers rebuilt, the rest shared)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, Mapping):
        return {key: cpu_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(cpu_copy(item) for item in value)
    return value


def link_or_copy(source: Path, target: Path) -> None:
    """Make ``target`` the same file as ``source``: a hard link (free: ``source`` is replaced by
    a rename, never rewritten in place), or a copy where links are not supported."""
    temporary = target.with_suffix(target.suffix + ".tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        shutil.copyfile(source, temporary)
    temporary.replace(target)


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
        first_line = (
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        )
        raise UserError(f"cannot read checkpoint {path}: {first_line}") from error
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
            digest.update(flat.view(torch.uint8).numpy().tobytes())
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


def find_resume_checkpoint(
    output_root: str | Path, task_name: str, overrides: Sequence[str]
) -> Path | None:
    """The path :func:`newest_resumable` finds, or None."""
    found = newest_resumable(output_root, task_name, overrides)
    return found[0] if found else None


def newest_resumable(
    output_root: str | Path, task_name: str, overrides: Sequence[str]
) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable ``checkpoints/last.pt`` under ``output_root`` from the same
    experiment, with its loaded state (so the caller does not read it twice); a truncated or
    corrupt newer one is skipped with a warning.

    The same experiment means the same task and the same command-line overrides, ignoring
    ``resume`` itself (read from each run's ``.hydra/`` files).
    """
    wanted = _comparable(overrides)
    candidates = []
    for last in Path(output_root).glob("**/checkpoints/last.pt"):
        hydra_dir = last.parent.parent / ".hydra"
        try:
            run_overrides = yaml.safe_load((hydra_dir / "overrides.yaml").read_text()) or []
            run_config = yaml.safe_load((hydra_dir / "config.yaml").read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        run_task = (run_config.get("task") or {}).get("name")
        if run_task == task_name and _comparable(run_overrides) == wanted:
            candidates.append(last)
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            return path, load_checkpoint(path)
        except UserError as error:
            log.warning("resume=auto: skipping %s: %s", path, error)
    return None


def _comparable(overrides: Sequence[str]) -> frozenset[str]:
    return frozenset(o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "resume")
