"""A run's status: how it ended, as ``metrics.json``, a sweep's summary and MLflow's ``status``
tag write it. The Trainer sets two of them (``stop_reason``), the CLI the others."""

from __future__ import annotations

from enum import Enum


class RunStatus(str, Enum):
    """A run's status; a ``str``, so it is written, compared and printed as its value."""

    COMPLETED = "completed"  # trained all its epochs
    RESUMED = "resumed"  # trained all its epochs, continuing a checkpoint
    EARLY_STOPPED = "early_stopped"  # its monitored metric stopped improving (or went non-finite)
    TIME_LIMIT = "time_limit"  # trainer.max_time ran out; resume=auto continues it
    SKIPPED = "skipped"  # finished by an earlier run of the same sweep job
    INTERRUPTED = "interrupted"  # stopped by a signal; resume=auto continues it
    FAILED = "failed"  # an error ended it
    UNFINISHED = "unfinished"  # a sweep job without metrics.json: killed
    RUNNING = "running"  # an MLflow run still training
    EVALUATED = "evaluated"  # the metrics of the evaluate command

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


# A run that trained all its epochs: resume=auto has nothing left to do for the same epochs.
TRAINED_ALL_EPOCHS = frozenset({RunStatus.COMPLETED, RunStatus.RESUMED})
# A run whose metrics.json holds a finished run's final metrics (a sweep averages those).
FINISHED = TRAINED_ALL_EPOCHS | {RunStatus.EARLY_STOPPED, RunStatus.TIME_LIMIT, RunStatus.SKIPPED}
