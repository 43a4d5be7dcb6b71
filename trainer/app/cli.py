"""The console scripts ``train``, ``evaluate``, ``predict`` and ``export-model``: parse the command
line, call the public functions that do the work, and map errors to exit codes, here and only
here.

Exit codes: 0 done; 1 a bug (its traceback); 2 a mistake in the config, data or files (one
line says which); 3 stopped by a signal, resumable; 4 a sweep finished and some of its jobs
failed; 5 a file could not be written (a full disk, a quota, a read-only file system; one line
names it), resumable once it can be; 130 a second Ctrl-C. Torch is imported only once there is
work to do, so ``--help`` and ``train --cfg job`` answer at once.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from torchcamp.trainer.app import help as help_text
from torchcamp.trainer.app import sweep
from torchcamp.trainer.app.logs import configure_logging
from torchcamp.trainer.app.messages import one_line, user_message
from torchcamp.trainer.app.run_dir import (
    RunDirectory,
    RunDirectoryTaken,
    check_directory_free,
    write_metrics,
)
from torchcamp.trainer.errors import (
    EXIT_INTERRUPTED,
    EXIT_SWEEP_FAILED,
    EXIT_USER_ERROR,
    EXIT_WRITE_FAILED,
    USER_ERRORS,
    TrainingInterrupted,
    UserError,
    WriteFailed,
)
from torchcamp.trainer.files import failed_path, is_storage_error, os_error_of, write_failed
from torchcamp.trainer.status import RunStatus

log = logging.getLogger("torchcamp")


def _import_from_working_directory() -> None:
    """Let ``task.module``, ``model._target_`` and callbacks name modules in the working
    directory, as ``python -m`` finds them (a console script's path starts at its own bin)."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())


def main() -> None:
    """Console entry point for ``train``."""
    _import_from_working_directory()
    # Let Hydra's own errors (unknown option or key, bad override) reach us instead of being
    # printed with a stack trace and exit code 1; we print one line and exit with 2.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    args = sys.argv[1:]
    if any(arg in ("--help", "-h") for arg in args):
        exit_on_errors(help_text.print_train_help, [a for a in args if a not in ("--help", "-h")])
        return
    sweep.failed_jobs.clear()  # a process may run several commands: a notebook, the tests
    sweep.refused_jobs.clear()
    exit_on_errors(_hydra_main)
    if sweep.failed_jobs:
        print(
            f"error: sweep jobs {', '.join(sweep.failed_jobs)} failed: see summary.csv in the "
            "sweep directory",
            file=sys.stderr,
        )
        sys.exit(EXIT_SWEEP_FAILED)


def evaluate_main() -> None:
    """Console entry point for ``evaluate``."""
    _inference_command(help_text.EVALUATE, ("ckpt", "output_dir"), "evaluate")


def predict_main() -> None:
    """Console entry point for ``predict``."""
    _inference_command(help_text.PREDICT, ("ckpt", "inputs", "predict"), "predict")


def export_main() -> None:
    """Console entry point for ``export-model`` (not ``export``: the shell's builtin of that
    name would run instead)."""
    _inference_command(help_text.EXPORT, help_text.EXPORT_OPTIONS, "export", module="export")


@hydra.main(version_base="1.3", config_path="pkg://torchcamp.conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    """One job: train, and return what a sweeper (Optuna) optimises. Errors are mapped here,
    inside the job (an exception leaving it would make Hydra print its own report)."""
    from torchcamp.trainer.app.train import train  # torch: only once there is work to do

    if HydraConfig.get().mode != RunMode.MULTIRUN:
        metrics = exit_on_errors(train, cfg)
    else:
        metrics = exit_on_errors(_sweep_job, train, cfg)
        if metrics is None:
            return float("nan")  # what Optuna's sweeper takes as a failed trial
    value = metrics.get(cfg.trainer.monitor)
    return float(value) if isinstance(value, (int, float)) else None


def _sweep_job(train: Callable[[DictConfig], dict], cfg: DictConfig) -> dict[str, Any] | None:
    """One job of a sweep. A failing job does not end the sweep: summary.csv marks it failed
    (None), and the exit code says some failed. A signal ends the sweep too: whoever sent it
    wants that."""
    try:
        return train(cfg)
    except TrainingInterrupted:
        sweep.write_summary(Path(HydraConfig.get().sweep.dir))  # Hydra's job-end callback won't
        raise
    except RunDirectoryTaken as error:  # its directory's metrics.json is the other run's
        job = Path(HydraConfig.get().runtime.output_dir)
        print(f"error: job {job.name} failed: {user_message(error)}", file=sys.stderr)
        sweep.refused_jobs.append(job.name)
        return None
    except Exception as error:
        if isinstance(error, WriteFailed) or is_storage_error(error):
            raise  # the next jobs would fail the same way: the sweep stops (exit 5)
        _record_failed_job(Path(HydraConfig.get().runtime.output_dir), error)
        return None


def _inference_command(
    help_: str, own_keys: tuple[str, ...], name: str, module: str = "inference"
) -> None:
    """``evaluate``, ``predict`` or ``export-model``: ``--help``, or split the ``key=value``
    arguments into the command's own options (``own_keys``, as written) and changes to the
    checkpoint's config, for ``<name>_command`` of ``torchcamp.trainer.app.<module>``."""
    _import_from_working_directory()
    args = sys.argv[1:]
    if any(arg in ("--help", "-h") for arg in args):
        print(help_)
        return
    configure_logging(logging.INFO, sys.stderr)  # stdout is for the records and metrics

    def command() -> None:
        # torch: only once there is work to do
        commands = importlib.import_module(f"torchcamp.trainer.app.{module}")

        own, overrides = {}, []
        for arg in args:
            key, equals, value = arg.partition("=")
            if not equals or not key:
                raise UserError(f"{arg!r} is not key=value: see --help")
            if key.split(".")[0] in own_keys:
                own[key] = value
            else:
                overrides.append(arg)
        getattr(commands, f"{name}_command")(own, overrides)

    exit_on_errors(command)


def exit_on_errors(command: Callable[..., Any], *args: Any) -> Any:
    """``command(*args)``; a mistake the user can fix ends in one line and exit 2, a stop by a
    signal in exit 3, a file that could not be written (a full disk, wherever it happened:
    ours, Hydra's, a library's) in one line and exit 5, a second Ctrl-C in 130. Anything else
    is a bug: its traceback, exit 1."""
    try:
        return command(*args)
    except WriteFailed as error:
        _fail(str(error), EXIT_WRITE_FAILED)
    except USER_ERRORS as error:
        _fail(user_message(error))
    except (HydraException, OmegaConfBaseException) as error:
        _fail(one_line(error))
    except (ValueError, TypeError) as error:
        if not _raised_in_hydra(error):
            raise
        # Hydra refuses some overrides with plain errors that name no key (group=null).
        arguments = " ".join(arg for arg in sys.argv[1:] if "=" in arg)
        _fail(f"cannot compose the config from {arguments}: {one_line(error)}")
    except TrainingInterrupted as stop:
        print(f"stopped: {stop}. Continue with the same command and resume=auto", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:  # a second Ctrl-C (or one before training started)
        print(
            "interrupted: checkpoints written so far are intact; resume=auto continues from the "
            "newest",
            file=sys.stderr,
        )
        sys.exit(130)  # the shell's code for SIGINT
    except BrokenPipeError:  # stdout's reader has had enough (predict ... | head): stop quietly
        # Point stdout at /dev/null, or flushing it at exit fails once more, with a message.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except Exception as error:
        if not is_storage_error(error):
            raise
        cause = os_error_of(error)
        _fail(str(write_failed(failed_path(cause), cause)), EXIT_WRITE_FAILED)


class RunDirectoryGuard(Callback):
    """Hydra callback: :func:`check_directory_free` before Hydra creates the run's directory
    and writes its ``.hydra/`` files and log into it (too late once the job runs). A multirun
    is refused whole when any job directory under its ``hydra.sweep.dir`` holds a run, unless
    it is ``resume=auto``. Hydra turns an exception in a callback into a warning and goes on,
    so a refusal ends the process here: one line, exit 2.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        resume = OmegaConf.select(config, "resume")
        exit_on_errors(check_directory_free, Path(config.hydra.run.dir), resume)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if OmegaConf.select(config, "resume") == "auto" or not sweep_dir.is_dir():
            return
        taken = [run.path for run in RunDirectory.under(sweep_dir) if run.held_run()]
        if taken:
            jobs = ", ".join(str(d.relative_to(sweep_dir)) for d in taken)
            _fail(
                f"{sweep_dir} already holds the runs of a sweep (job directories {jobs}): "
                "continue that sweep with resume=auto, start this one in another directory "
                f"(hydra.sweep.dir=...), or delete {sweep_dir} to start over there"
            )


def _raised_in_hydra(error: BaseException) -> bool:
    """Was ``error`` raised inside Hydra itself (composing the config), not in our code?"""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and f"{os.sep}hydra{os.sep}" in frames[-1].filename


def _fail(message: str, code: int = EXIT_USER_ERROR) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _record_failed_job(run_dir: Path, error: Exception) -> None:
    """A sweep job's error in its log (a traceback if it is a bug) and its ``metrics.json``."""
    is_user_error = isinstance(error, USER_ERRORS)
    message = user_message(error) if is_user_error else f"{type(error).__name__}: {error}"
    message = " ".join(message.split())  # one line in summary.csv
    if is_user_error:
        log.error("job failed: %s", message)
    else:
        log.exception("job failed: %s", message)
    print(f"error: job {run_dir.name} failed: {message}", file=sys.stderr)
    write_metrics({"status": RunStatus.FAILED, "error": message}, [run_dir])


if __name__ == "__main__":
    main()
