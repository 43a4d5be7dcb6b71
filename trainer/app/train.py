"""Training a run: :func:`train` for a composed config (the ``train`` command, a notebook, a
test), :func:`run_training` for one process's part of it (one DDP rank each).

A run's life, in order: settings read once; the process set up (device, seed, DDP group); the
checkpoint to resume read and checked before any work; the run directory picked (a run's own
``last.pt`` continues that run) and locked; the run assembled; fit; the test split scored with
the best epoch's weights; ``metrics.json`` written.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from torchcamp.tasks.contract import describe_training_data
from torchcamp.tasks.models.custom import code_locations, use_recorded_code
from torchcamp.trainer import distributed
from torchcamp.trainer.app.assembly import RunContext, build_context, build_trainer, load_task
from torchcamp.trainer.app.callbacks import build_callbacks
from torchcamp.trainer.app.ddp import launch_ddp
from torchcamp.trainer.app.logs import also_logging_to
from torchcamp.trainer.app.process import setup_process
from torchcamp.trainer.app.run_dir import (
    RunDirectory,
    RunDirectoryTaken,
    check_directory_free,
    comparable_overrides,
    newest_resumable,
    write_metrics,
)
from torchcamp.trainer.app.settings import Settings, read_settings
from torchcamp.trainer.app.signatures import check_targets
from torchcamp.trainer.callbacks import run_callbacks
from torchcamp.trainer.callbacks.checkpointing import ModelCheckpoint
from torchcamp.trainer.checkpoint import load_checkpoint
from torchcamp.trainer.errors import USER_ERRORS, TrainingInterrupted, UserError, first_line
from torchcamp.trainer.files import is_storage_error
from torchcamp.trainer.inference import check_same_data
from torchcamp.trainer.signals import stop_at_step_boundary
from torchcamp.trainer.status import RunStatus
from torchcamp.trainer.trainer import Trainer

log = logging.getLogger("torchcamp")

Checkpoint = tuple[Path, dict[str, Any]]  # a checkpoint's path and its loaded state


def train(cfg: DictConfig, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Train as the composed ``cfg`` says and return the final metrics.

    ``cfg`` comes from Hydra: the ``train`` command, or its compose API in a notebook or a test
    (``compose("config", overrides=[...])``). The run's directory is Hydra's output directory,
    else ``run_dir``, else ``<output_root>/DATE/TIME``. Under ``device=ddp`` it starts one
    process per device, unless torchrun or SLURM started this one as a rank.
    """
    settings = read_settings(cfg, run_dir)
    if settings.fast_dev_run and settings.resume is not None:
        raise UserError(
            "debug=fast_dev_run (trainer.fast_dev_run=true) runs one batch in a fresh run and "
            f"removes its files: drop resume={settings.resume}"
        )
    key = "hydra.sweep.dir" if settings.sweep else "hydra.run.dir"
    check_directory_free(settings.run_dir, settings.resume, key)
    # Found once, before any rank starts: the ranks then read the same file.
    resume = resume_checkpoint(settings, run_meta(settings))
    settings = replace(settings, resume=str(resume[0]) if resume else None)
    check_targets(settings, load_task(settings))
    if settings.device.strategy == "ddp" and not distributed.launched_externally():
        return launch_ddp(settings, run_training)
    return run_training(settings, resume)


def run_meta(settings: Settings) -> dict[str, Any]:
    """What every checkpoint records about the run besides its state: the task, the group
    choices, the command line's overrides (``resume=auto`` matches them) and where the user's
    own modules were imported from (``evaluate`` elsewhere imports them from there)."""
    model_target = str(settings.model.get("_target_") or "").rpartition(".")[0]
    modules = {"task.module": settings.task.module, "model._target_": model_target}
    return {
        "task": settings.task.name,
        "choices": settings.choices,
        "overrides": settings.overrides,
        "code": code_locations(modules, settings.run_dir),
    }


def run_training(settings: Settings, resume: Checkpoint | None = None) -> dict[str, Any]:
    """This process's part of the run (under DDP, one rank's; only rank 0 writes files).
    ``resume``: the checkpoint ``settings.resume`` names, where the caller has read it."""
    device, gpus = setup_process(settings)
    is_main = distributed.rank() == 0
    if resume is None and settings.resume is not None:  # a DDP rank: the file train() found
        resume = read_resume(Path(settings.resume))
    own = RunDirectory(settings.run_dir)
    continued = RunDirectory.continued_by(resume[0] if resume else None)
    directory = continued or own
    # The code locations relative to the directory the run lives in (a continued run's own).
    meta = run_meta(replace(settings, run_dir=directory.path))
    with _held_by_this_run(directory, is_main):
        if continued is not None:
            finished = continued.finished_metrics(
                resume[1]["epoch"], settings.trainer["max_epochs"]
            )
            if finished is not None:
                log.info(
                    "%s finished this run already (epoch %d); nothing to train. Start a new run "
                    "with resume=null, or raise trainer.max_epochs",
                    continued.path,
                    finished["epoch"],
                )
                metrics = finished | {"status": RunStatus.SKIPPED, "run_dir": str(continued.path)}
                if is_main and not _same_directory(continued, own):  # keep the run's own record
                    write_metrics(metrics, [own.path])
                return metrics
            log.info(
                "continuing the run in %s (its checkpoints, TensorBoard files, log)", directory.path
            )
        # Hydra logs to this invocation's train.log: a run continued elsewhere gets its own too.
        elsewhere = continued is not None and not _same_directory(continued, own)
        with also_logging_to(directory.log_file if elsewhere and is_main else None):
            try:
                return _fit(settings, directory, own, resume, meta, device, gpus)
            finally:
                if settings.fast_dev_run and is_main:
                    directory.remove_outputs(keep=directory.fast_dev_run_keeps)


def _same_directory(a: RunDirectory, b: RunDirectory) -> bool:
    return a.path.resolve() == b.path.resolve()


def _fit(
    settings: Settings,
    directory: RunDirectory,
    own: RunDirectory,
    resume: Checkpoint | None,
    meta: dict[str, Any],
    device: Any,
    gpus: list[int],
) -> dict[str, Any]:
    """Assemble the run in ``directory``, fit, test with the best weights, write the metrics
    (also into this invocation's own directory)."""
    run = build_context(settings, directory, meta, device)
    if resume is not None:  # the weights might load, and every metric would be wrong
        saved = resume[1].get("meta", {}).get("data")
        check_same_data(resume[0], saved, describe_training_data(run.task, run.splits["train"]))
    callbacks = build_callbacks(settings.callbacks, run)
    trainer = build_trainer(run, gpus, callbacks)
    if resume is not None:
        restore(trainer, *resume)
    written = {directory.path.resolve(), own.path.resolve()} if run.is_main else set()
    summary = {
        "run_dir": str(directory.path),
        "resumed_from": str(resume[0]) if resume else None,
    }
    try:
        metrics = _fit_and_test(trainer, run, callbacks)
    except TrainingInterrupted:
        stopped = {"epoch": trainer.epoch, "global_step": trainer.global_step}
        write_metrics(summary | stopped | {"status": RunStatus.INTERRUPTED}, written)
        raise
    except BaseException as error:
        # Fit ended without on_fit_end or on_interrupt: the callbacks' on_exception(trainer,
        # error) lets an experiment tracker (callbacks/mlflow_logger.py) mark its run failed.
        run_callbacks(callbacks, "on_exception", trainer, error)
        raise
    metrics |= {
        "epoch": trainer.epoch,
        "global_step": trainer.global_step,
        "skipped_steps": trainer.skipped_steps,  # fp16 steps the GradScaler skipped
        "time/fit_seconds": round(trainer.fit_seconds, 3),
        "task": settings.task.name,
        "synthetic": settings.data.synthetic,
        "data/skipped_corrupt": sum(len(getattr(ds, "skipped", [])) for ds in run.splits.values()),
        "data/cached_mb": round(run.cached_mb, 1),
        "data_report": run.data_report,
        "world_size": distributed.world_size(),
        **summary,
        # early_stopped | time_limit (resumable with a larger trainer.max_time) | completed
        "status": trainer.stop_reason or (RunStatus.RESUMED if resume else RunStatus.COMPLETED),
    }
    write_metrics(metrics, written)
    return metrics


def _fit_and_test(trainer: Trainer, run: RunContext, callbacks: list[Any]) -> dict[str, Any]:
    """Fit, then score the test split with the best epoch's weights, as Lightning's
    ``ckpt_path="best"`` (without a checkpoint callback: the weights training ended with). An
    error in the first epoch is one line (:func:`_first_epoch_error`)."""
    checkpoints = next((cb for cb in callbacks if isinstance(cb, ModelCheckpoint)), None)
    test_weights = checkpoints.best_weights if checkpoints is not None else None
    loaders, first_epoch = run.loaders, trainer.epoch
    try:
        with stop_at_step_boundary(trainer):
            return trainer.fit(
                loaders["train"], loaders.get("val"), loaders.get("test"), test_weights=test_weights
            )
    except (*USER_ERRORS, TrainingInterrupted):
        raise
    except Exception as error:
        if is_storage_error(error):
            raise  # a full disk, not a value from the config: the CLI names the file (exit 5)
        # Still in the first epoch, or at its end (the epoch count is already up when the
        # schedulers and callbacks run, and no batch of the next has been trained)?
        in_first = trainer.epoch == first_epoch or (
            trainer.epoch == first_epoch + 1 and trainer.batch_in_epoch == 0
        )
        if not in_first:
            raise  # an epoch went through: a bug, not a value the config gave
        directory = run.directory if run.is_main else None
        raise _first_epoch_error(error, run.settings, directory) from error


def _first_epoch_error(
    error: Exception, settings: Settings, directory: RunDirectory | None
) -> UserError:
    """An error in a run's first epoch comes, as a rule, from a value that a constructor
    accepted and the object could not use (``scheduler.step_size=0`` fails at the epoch's end):
    one line naming the command line's overrides, the traceback in the run's train.log."""
    where = ""
    if directory is not None:
        with open(directory.log_file, "a") as log_file:
            traceback.print_exception(error, file=log_file)
        where = f"; the traceback is in {directory.log_file}"
    overrides = " ".join(o for o in settings.overrides if not o.startswith("hydra.")) or "none"
    return UserError(
        f"the first epoch failed with {type(error).__name__}: {first_line(error)} (a value from "
        f"the config that an object accepted and could not use? this run's overrides: "
        f"{overrides}){where}"
    )


@contextmanager
def _held_by_this_run(directory: RunDirectory, is_main: bool) -> Iterator[None]:
    """Rank 0 locks the run directory (see :meth:`RunDirectory.lock`); every rank is refused
    together when another process holds it."""
    with ExitStack() as stack:
        refused = None
        if is_main:
            try:
                stack.enter_context(directory.lock())
            except UserError as error:
                refused = error
        if distributed.any_rank(refused is not None):
            raise refused or UserError(f"run {directory.path} is held by another process")
        yield


def resume_checkpoint(settings: Settings, meta: dict[str, Any]) -> Checkpoint | None:
    """The checkpoint to resume and its state, checked to be of this task and model; None to
    start fresh. ``resume=PATH`` is that file. ``resume=auto`` is the run in this run's own
    directory when it holds one (a named ``hydra.run.dir``, a sweep's job directory), else, for
    Hydra's dated directories only, the newest matching run under ``output_root``."""
    resume = settings.resume
    if resume is None:
        return None
    if resume != "auto":
        if not Path(resume).is_file():
            raise UserError(
                f"resume={resume}: no such checkpoint file "
                "(give the path of a last.pt or best.pt, or resume=auto)"
            )
        return read_resume(Path(resume), meta)
    own = RunDirectory(settings.run_dir)
    if own.last_checkpoint.is_file():
        found = read_resume(own.last_checkpoint, meta)
        _check_same_overrides(found, settings.overrides)
        return found
    if not settings.dated_run_dir:
        log.info(
            "resume=auto: %s holds no checkpoint to continue; starting a new run there",
            settings.run_dir,
        )
        return None
    found = newest_resumable(settings.output_root, settings.task.name, settings.overrides)
    if found is None:
        log.info(
            "resume=auto: no earlier run of task=%s with these overrides under %s; starting fresh",
            settings.task.name,
            settings.output_root,
        )
        return None
    _check_same_job(found[0], found[1].get("meta") or {}, meta)
    return found


def read_resume(path: Path, meta: dict[str, Any] | None = None) -> Checkpoint:
    """A checkpoint to continue, read, checked against this run's task and model (``meta``),
    and the folders its run imported the user's own modules from made available here."""
    state = load_checkpoint(path)
    saved = state.get("meta") or {}
    if meta is not None:
        _check_same_job(path, saved, meta)
    use_recorded_code(saved.get("code") or [], path)
    return path, state


def _check_same_overrides(found: Checkpoint, overrides: list[str]) -> None:
    """``resume=auto`` continues a run in its own directory only with the command that started
    it (``resume``, ``trainer.max_time`` and ``trainer.extras_budget`` aside); another lr in the
    same ``hydra.run.dir`` would mix two experiments in one run."""
    path, state = found
    saved = comparable_overrides((state.get("meta") or {}).get("overrides") or [])
    wanted = comparable_overrides(overrides)
    if saved != wanted:
        theirs = " ".join(sorted(saved - wanted)) or "none"
        ours = " ".join(sorted(wanted - saved)) or "none"
        raise RunDirectoryTaken(
            f"resume=auto: {path.parent.parent} holds a run of other overrides (that run's: "
            f"{theirs}; this command's: {ours}): continue it with its own overrides, continue it "
            f"with these (resume={path}), or start this run in another directory"
        )


def _check_same_job(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """A checkpoint of another task or model: one line naming both, before any state is read."""

    def describe(meta: dict[str, Any]) -> str:
        return f"task={meta.get('task')} model={(meta.get('choices') or {}).get('model')}"

    if describe(saved) != describe(current):
        raise UserError(
            f"checkpoint {path} is {describe(saved)}; this run is {describe(current)}: resume "
            "with the checkpoint's task and model, or start from its weights with "
            "model.weights_path=... and resume=null"
        )


def restore(trainer: Trainer, path: Path, state: dict[str, Any]) -> None:
    """Continue ``trainer`` from the checkpoint's state; one that does not fit this run (another
    schedule length, other weights) is a one-line error."""
    saved_total = next(iter(state["schedulers"].values()), {}).get("total_steps")
    total = getattr(trainer.scheduler, "total_steps", None)
    if saved_total is not None and total is not None and saved_total != total:
        raise UserError(
            f"checkpoint {path} has a schedule of total_steps={saved_total} optimizer steps and "
            f"this run needs {total}: resume with the checkpoint's trainer.max_epochs, or set "
            f"scheduler.total_steps={saved_total}"
        )
    try:
        trainer.load_state_dict(state)
    except (UserError, RuntimeError, ValueError, KeyError) as error:
        raise UserError(
            f"checkpoint {path} does not fit this run "
            f"({first_line(error)}); resume with the same task and model"
        ) from error
    log.info("resumed from %s at epoch %d, step %d", path, trainer.epoch, trainer.global_step)
