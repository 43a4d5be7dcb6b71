"""``device=ddp`` started by ``train`` itself: one process per device, each running the run."""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

from torchcamp.trainer import devices, distributed
from torchcamp.trainer.app.logs import configure_logging
from torchcamp.trainer.app.run_dir import RunDirectory
from torchcamp.trainer.app.settings import Settings
from torchcamp.trainer.errors import (
    EXIT_INTERRUPTED,
    EXIT_WRITE_FAILED,
    USER_ERRORS,
    TrainingInterrupted,
    UserError,
    WriteFailed,
)
from torchcamp.trainer.files import failed_path, is_storage_error, os_error_of, write_failed

log = logging.getLogger("torchcamp")


RunFn = Callable[[Settings], dict[str, Any]]


def launch_ddp(settings: Settings, run_fn: RunFn) -> dict[str, Any]:
    """Start one process per device for ``device=ddp``, each calling ``run_fn(settings)`` (a
    module-level function: it travels to the ranks pickled); returns rank 0's metrics."""
    cuda = devices.use_cuda(settings.device.accelerator)
    gpus = devices.choose_gpus(settings.device.gpus) if cuda else []
    nprocs = devices.num_processes(settings.device.devices, gpus, cuda)
    if cuda:  # each rank then uses cuda:<local rank> among the chosen GPUs
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus[:nprocs])
    log.info(
        "device=ddp: starting %d processes (%s)",
        nprocs,
        "GPUs " + str(gpus[:nprocs]) if cuda else "CPU, gloo",
    )
    stopped = (
        "every rank stopped at the same step boundary, and rank 0 wrote last.pt there "
        f"({RunDirectory(settings.run_dir).checkpoints})"
    )
    try:
        result = distributed.launch(_ddp_worker, (settings, run_fn), nprocs)
    except SignalException as stop:  # this process was signalled and passed it on to the ranks
        raise TrainingInterrupted(
            f"stopped by {signal.Signals(stop.sigval).name}: {stopped}"
        ) from stop
    except ChildFailedError as failed:
        failures = failed.failures.values()
        unwritten = [f.message for f in failures if f.exitcode == EXIT_WRITE_FAILED]
        if unwritten:  # a rank could not write a file (see _leave_at_once)
            raise WriteFailed(unwritten[0] or "a rank could not write a file of the run") from None
        # The ranks were signalled themselves?
        if any(f.exitcode != EXIT_INTERRUPTED for f in failures):
            raise
        raise TrainingInterrupted(f"stopped by a signal: {stopped}") from failed
    if "error" in result:
        raise UserError(result["error"])
    return result


def _ddp_worker(settings: Settings, run_fn: RunFn) -> dict[str, Any]:
    """One DDP rank, in a process the elastic launcher started (no Hydra here)."""
    if "fork" in multiprocessing.get_all_start_methods():
        # The launcher spawned this process, and spawned processes pass `spawn` on to their
        # DataLoader workers, which would then import torch afresh every epoch (seconds each).
        multiprocessing.set_start_method("fork", force=True)
    # Ctrl-C in a terminal signals its whole process group; the launcher passes it on to the
    # ranks too, and a rank that saw it twice would quit at once instead of stopping at a step
    # boundary. In a group of their own, the ranks get it once, from the launcher.
    os.setpgrp()
    rank = int(os.environ.get("RANK", 0))
    configure_logging(
        logging.INFO if rank == 0 else logging.WARNING,
        sys.stdout,
        RunDirectory(settings.run_dir).log_file if rank == 0 else None,
    )
    try:
        return run_fn(settings)
    except WriteFailed as error:
        _leave_at_once(error)
    except USER_ERRORS as error:
        return {"error": str(error)}
    except TrainingInterrupted as stop:
        # Leave at once: a rank that returns waits for the launcher to read its result, which
        # a launcher shutting the ranks down after a signal never does (it kills them 30 s on).
        log.warning("%s", stop)
        dist.destroy_process_group()
        logging.shutdown()
        os._exit(EXIT_INTERRUPTED)
    except Exception as error:
        if not is_storage_error(error):
            raise
        cause = os_error_of(error)
        _leave_at_once(write_failed(failed_path(cause), cause))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _leave_at_once(error: WriteFailed) -> NoReturn:
    """End this rank with :data:`EXIT_WRITE_FAILED`, its error where the launcher reads it.

    Rank 0 alone writes files, so the other ranks may be waiting for it in a collective (the
    next gradient all-reduce), and a rank that returned would wait with them for the
    launcher. This one leaves at once instead: the launcher sees it fail, ends the others and
    raises the error (see :func:`launch_ddp`).
    """
    log.error("%s", error)
    _leave_error_message(str(error))
    logging.shutdown()
    os._exit(EXIT_WRITE_FAILED)


def _leave_error_message(message: str) -> None:
    """``message`` in the error file the elastic launcher gave this rank
    (``TORCHELASTIC_ERROR_FILE``), where it reads a failed rank's message from; on a disk that
    is full too, the launcher says that a rank could not write a file, without the details."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        with contextlib.suppress(OSError), open(path, "w") as file:
            json.dump({"message": message, "timestamp": int(time.time())}, file)
