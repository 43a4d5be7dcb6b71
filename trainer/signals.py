"""Stop a run cleanly when it is asked to: a scheduler's preemption or a user's Ctrl-C.

SIGTERM (sent by SLURM, Kubernetes, ``kill``), SIGUSR1 (SLURM's ``--signal`` warning before the
time limit) and a first SIGINT (Ctrl-C) only set a flag; the Trainer sees it at the next
optimizer-step boundary, writes ``last.pt`` and stops, and the CLI exits with code 3 so a job
script can requeue itself and continue with ``resume=auto``. A second Ctrl-C quits at once:
checkpoints are written to a temporary file and renamed, so an interrupted write leaves the
previous one intact.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


@contextmanager
def stop_at_step_boundary(trainer: Any) -> Iterator[None]:
    """While the block runs, a stop signal sets ``trainer.stop_requested`` to its name; a
    second SIGINT raises KeyboardInterrupt. Handlers are put back afterwards."""
    if threading.current_thread() is not threading.main_thread():  # Python allows no handlers
        yield
        return

    def request_stop(signum: int, frame: Any) -> None:
        if trainer.stop_requested is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt  # the second Ctrl-C: now
            return
        trainer.stop_requested = signal.Signals(signum).name
        log.warning(
            "%s: stopping after the current optimizer step, with a checkpoint to continue from "
            "(Ctrl-C again to quit at once)",
            trainer.stop_requested,
        )

    previous = {signum: signal.signal(signum, request_stop) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
