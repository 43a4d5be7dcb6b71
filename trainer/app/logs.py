"""The log's format and where it goes, for every command and every DDP rank."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

# Hydra's own job-logging format, so train.log reads the same however a process was started.
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


class LogFile(logging.FileHandler):
    """``train.log``: a FileHandler that a full disk does not turn into a traceback a record.

    Python's handlers print "--- Logging error ---" and a traceback on stderr for every
    record they fail to write. This one, at its first ``OSError`` (a full disk, a read-only
    file system), closes the file, says so once in the log's other handlers (the console)
    and writes nothing more to it; the run goes on, and a checkpoint that cannot be written
    either stops it. Hydra's job logging uses it too (``hydra.job_logging`` in the config).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):  # a bad format string: a bug, reported as Python does
            super().handleError(record)
            return
        self.failed = True
        stream, self.stream = self.stream, None
        with contextlib.suppress(OSError):  # its unwritten buffer fails again; the file closes
            stream.close()
        # Under this handler's lock (an RLock): the record reaches the other handlers, and
        # this one drops it (failed).
        logging.getLogger("torchcamp").warning(
            "could not write %s (%s): the log goes on on the console only",
            self.baseFilename,
            error.strerror or error,
        )


def configure_logging(
    level: int = logging.INFO, stream: TextIO = sys.stdout, file: Path | None = None
) -> None:
    """Log at ``level`` to ``stream`` (and to ``file``), for processes Hydra did not set up:
    DDP ranks, ``evaluate`` and ``predict``."""
    handlers: list[logging.Handler] = [logging.StreamHandler(stream)]
    if file is not None:
        handlers.append(LogFile(file))
    logging.basicConfig(level=level, format=LOG_FORMAT, handlers=handlers, force=True)


@contextmanager
def also_logging_to(path: Path | None) -> Iterator[None]:
    """Append this process's log to ``path`` too, while the block runs (None: nothing)."""
    if path is None:
        yield
        return
    handler = LogFile(path)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
