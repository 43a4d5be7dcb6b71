"""The log's format and where it goes, for every command and every DDP rank."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

# Hydra's own job-logging format, so train.log reads the same however a process was started.
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


def configure_logging(
    level: int = logging.INFO, stream: TextIO = sys.stdout, file: Path | None = None
) -> None:
    """Log at ``level`` to ``stream`` (and to ``file``), for processes Hydra did not set up:
    DDP ranks, ``evaluate`` and ``predict``."""
    handlers: list[logging.Handler] = [logging.StreamHandler(stream)]
    if file is not None:
        handlers.append(logging.FileHandler(file))
    logging.basicConfig(level=level, format=LOG_FORMAT, handlers=handlers, force=True)


@contextmanager
def also_logging_to(path: Path | None) -> Iterator[None]:
    """Append this process's log to ``path`` too, while the block runs (None: nothing)."""
    if path is None:
        yield
        return
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
