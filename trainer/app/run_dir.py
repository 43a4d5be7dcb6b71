"""A run's life on disk: the directory's layout, which run a checkpoint continues, finding
the run to resume, ``metrics.json``, and the lock that lets one process train a run at a time.

Layout of a run directory (Hydra's ``hydra.run.dir``, by default ``outputs/DATE/TIME``)::

    .hydra/            the composed config and the command line's overrides (Hydra's)
    train.log          the log
    checkpoints/       last.pt, best.pt (a hard link to the best epoch's), last_good.pt, the
                       kept epochs and steps (see callbacks/checkpointing.py)
    tb/                TensorBoard event files
    metrics.json       the final metrics and the run's status
    metrics.csv        one row per epoch; curves.png, confusion_matrix.png: their pictures
    split.csv          an image folder's split, file by file
    profile/           debug=profile's trace.json
    synthetic_data/    the rendered stand-in data of data.synthetic=true
    <tag>/epoch_NNN.png  a task's images (dcgan's samples, pennfudan's detections)
    .lock              who trains the run now (pid, host); see :meth:`RunDirectory.lock`
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from torchcamp.trainer.errors import UserError
from torchcamp.trainer.files import write_text_atomically
from torchcamp.trainer.status import TRAINED_ALL_EPOCHS, RunStatus

log = logging.getLogger("torchcamp")


@dataclass(frozen=True)
class RunDirectory:
    """One run's directory and the files torchcamp keeps in it."""

    path: Path

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tb"

    @property
    def log_file(self) -> Path:
        return self.path / "train.log"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.json"

    @property
    def synthetic_data(self) -> Path:
        return self.path / "synthetic_data"

    @property
    def metrics_csv(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def curves(self) -> Path:
        return self.path / "curves.png"

    @property
    def confusion_matrix(self) -> Path:
        return self.path / "confusion_matrix.png"

    @property
    def profile(self) -> Path:
        return self.path / "profile"

    @property
    def hydra(self) -> Path:
        """Hydra's: the composed ``config.yaml`` and the command line's ``overrides.yaml``."""
        return self.path / ".hydra"

    @property
    def hydra_config(self) -> Path:
        return self.hydra / "config.yaml"

    @property
    def hydra_overrides(self) -> Path:
        return self.hydra / "overrides.yaml"

    @property
    def lock_file(self) -> Path:
        return self.path / ".lock"

    @property
    def artifacts(self) -> list[tuple[Path, str | None]]:
        """The files an experiment tracker keeps of a finished run: ``(path, folder)``."""
        return [
            (self.metrics_csv, None),
            (self.curves, None),
            (self.confusion_matrix, None),
            (self.hydra_config, "hydra"),
            (self.hydra_overrides, "hydra"),
        ]

    @property
    def fast_dev_run_keeps(self) -> tuple[str, ...]:
        """What ``fast_dev_run`` leaves of a run (:meth:`remove_outputs`): the log, the metrics
        and Hydra's files."""
        return tuple(p.name for p in (self.log_file, self.metrics_file, self.hydra))

    @classmethod
    def under(cls, folder: Path) -> list[RunDirectory]:
        """The run directories in ``folder`` and below it (those with Hydra's folder)."""
        return [cls(hydra.parent) for hydra in sorted(folder.glob("**/.hydra"))]

    @classmethod
    def continued_by(cls, checkpoint: Path | None) -> RunDirectory | None:
        """The run a checkpoint continues: a run's own ``checkpoints/last.pt`` goes on in that
        run (same checkpoints, TensorBoard event files, log); any other checkpoint (best.pt, a
        copied file) starts a new run from its state (None)."""
        if checkpoint is None:
            return None
        run = cls(checkpoint.resolve().parent.parent)
        own = (checkpoint.name, checkpoint.parent.name) == (
            run.last_checkpoint.name,
            run.checkpoints.name,
        )
        return run if own and run.hydra.is_dir() else None

    def finished_metrics(self, epoch: int, max_epochs: int) -> dict[str, Any] | None:
        """The final metrics, if this run finished: all ``max_epochs`` trained (its checkpoint
        is at ``epoch``), or stopped early by its early-stopping callback."""
        try:
            metrics = json.loads(self.metrics_file.read_text())
        except (OSError, ValueError):
            return None
        status = metrics.get("status")
        finished = status == RunStatus.EARLY_STOPPED or (
            status in TRAINED_ALL_EPOCHS and epoch >= max_epochs
        )
        return metrics if finished else None

    def held_run(self) -> str | None:
        """What shows that this directory holds a run already, for a message (its checkpoint
        files, its ``metrics.json`` and status); None when it holds none. A run killed before
        its first checkpoint left neither: nothing of it is worth keeping from a new run."""
        files = sorted(p.name for p in self.checkpoints.glob("*.pt"))
        held = []
        if files:
            more = f" and {len(files) - 3} more" if len(files) > 3 else ""
            held.append(f"checkpoints/{', '.join(files[:3])}{more}")
        if self.metrics_file.is_file():
            try:
                status = json.loads(self.metrics_file.read_text()).get("status")
            except (OSError, ValueError, AttributeError):
                status = None
            held.append(f"metrics.json, status {status}" if status else "metrics.json")
        return "; ".join(held) or None

    def remove_outputs(self, keep: Sequence[str]) -> None:
        """Remove every file and folder of the run but those named in ``keep``."""
        if not self.path.is_dir():  # the run failed before it wrote anything
            return
        for path in self.path.iterdir():
            if path.name in keep:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        log.info("fast_dev_run: removed the run's files; kept %s", ", ".join(keep))

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run for this process while the block runs; another process that tries is
        refused with a :class:`UserError` naming the holder.

        Two processes continuing one run (a requeued job while the old one still exits,
        ``resume=auto`` typed twice) would write the same checkpoints and event files. The
        lock is ``fcntl.flock`` on ``.lock``: the kernel drops it when its process ends however
        it ends, so a killed run never leaves a stale lock behind.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self._held_by(fd) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
            _held_locks.add(fd)
            try:
                yield
            finally:
                _held_locks.discard(fd)
        finally:
            os.close(fd)

    def check_not_held(self) -> None:
        """Refuse (:class:`UserError`) when another process holds :meth:`lock`; takes nothing."""
        try:
            fd = os.open(self.lock_file, os.O_RDONLY)
        except OSError:  # no lock file: no run has trained here
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._held_by(fd) from None
        finally:
            os.close(fd)  # drops the shared lock, if taken

    def _held_by(self, fd: int) -> UserError:
        holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "another process"
        return UserError(
            f"run {self.path} is being trained by {holder}: one process trains a run at a "
            "time. Wait for it to end (or stop it), then resume=auto"
        )


# The lock fds this process holds. A forked child (a DataLoader worker) would share the lock
# and keep it after this process is killed, until it noticed and exited itself: the child
# closes its copies at once, so the lock lives and dies with this process alone.
_held_locks: set[int] = set()


def _release_in_child() -> None:
    for fd in _held_locks:
        os.close(fd)
    _held_locks.clear()


os.register_at_fork(after_in_child=_release_in_child)


class RunDirectoryTaken(UserError):
    """A new run was asked for in a directory that holds another run."""


def check_directory_free(run_dir: Path, resume: str | None, key: str = "hydra.run.dir") -> None:
    """Refuse a new run in ``run_dir`` when it holds another run's checkpoints or metrics, and
    any run there while another process trains it (:meth:`RunDirectory.lock`): one line naming
    what is there and the ways on, before anything is written. ``resume=auto`` may
    continue the run there (train.py checks that it is the same experiment), and so may
    ``resume=`` its own ``last.pt``; any other resume would start a new run over it."""
    directory = RunDirectory(Path(run_dir).resolve())
    directory.check_not_held()
    if resume == "auto":
        return
    continued = RunDirectory.continued_by(Path(resume)) if resume else None
    if continued is not None and continued.path == directory.path:
        return
    held = directory.held_run()
    if held:
        raise RunDirectoryTaken(
            f"{run_dir} already holds a run ({held}): continue it with resume=auto, start this "
            f"one in another directory ({key}=...), or delete {run_dir} to start over there"
        )


def write_metrics(metrics: dict[str, Any], run_dirs: Iterable[Path]) -> None:
    """``metrics.json`` in each of ``run_dirs`` (the run's, and this invocation's when it
    continued an earlier run: a sweep's summary reads its jobs' own directories)."""
    for run_dir in run_dirs:
        # Renamed into place: a full disk leaves the previous metrics.json whole (a finished
        # run's is what tells resume=auto that it finished).
        path = RunDirectory(run_dir).metrics_file
        write_text_atomically(path, json.dumps(metrics, indent=2) + "\n")
        log.info("metrics: %s", path)


def newest_resumable(
    output_root: str | Path, task_name: str, overrides: Sequence[str]
) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable ``checkpoints/last.pt`` under ``output_root`` from the same
    experiment, with its loaded state (so the caller does not read it twice); a truncated or
    corrupt newer one is skipped with a warning.

    The same experiment means the same task and the same command-line overrides, ignoring
    ``resume`` itself (read from each run's ``.hydra/`` files).
    """
    from torchcamp.trainer.checkpoint import load_checkpoint  # torch: not for --help

    wanted = comparable_overrides(overrides)
    candidates = []
    for last in Path(output_root).glob("**/checkpoints/last.pt"):
        run = RunDirectory(last.parent.parent)
        try:
            run_overrides = yaml.safe_load(run.hydra_overrides.read_text()) or []
            run_config = yaml.safe_load(run.hydra_config.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        run_task = (run_config.get("task") or {}).get("name")
        if run_task == task_name and comparable_overrides(run_overrides) == wanted:
            candidates.append(last)
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            return path, load_checkpoint(path)
        except UserError as error:
            log.warning("resume=auto: skipping %s: %s", path, error)
    return None


def find_resume_checkpoint(
    output_root: str | Path, task_name: str, overrides: Sequence[str]
) -> Path | None:
    """The path :func:`newest_resumable` finds, or None."""
    found = newest_resumable(output_root, task_name, overrides)
    return found[0] if found else None


# Keys that do not make another experiment: the run to continue, the training-time budget
# (a run stopped by its time limit continues with a larger one), how often the views and
# pictures are drawn, and the folder runs are kept in (a run moved elsewhere is the same run).
NOT_THE_EXPERIMENT = ("resume", "trainer.max_time", "trainer.extras_budget", "output_root")


def comparable_overrides(overrides: Sequence[str]) -> frozenset[str]:
    """The overrides that make an experiment: all but :data:`NOT_THE_EXPERIMENT`'s keys."""
    return frozenset(
        o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in NOT_THE_EXPERIMENT
    )
