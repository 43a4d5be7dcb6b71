"""The exception types for mistakes a user can fix, and the CLI's exit codes."""

from typing import Any

from torchcamp.datasets.errors import DataError


def first_line(error: BaseException) -> str:
    """An exception's message cut to its first line (its type's name when it has none), for
    the one-line errors the CLI prints."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def first_sentence(error: BaseException) -> str:
    """What an error says, in a clause: its first sentence (MLflow's go on with advice and
    response bodies, HTML pages included), at most 300 characters."""
    return first_line(error).split(". ")[0].removesuffix(".")[:300]


class UserError(Exception):
    """A problem with the user's config, data or files.

    The CLI prints its message as one line and exits with code 2, without a traceback.
    The message names the problem and the fix.
    """


# What the CLI shows as one line (exit 2): the app's own, and the data readers' (datasets/
# imports nothing of the trainer, so it has its own type).
USER_ERRORS = (UserError, DataError)


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite: the run stops (a checkpoint of the last good state is
    written first), and the message names the step and the usual causes."""


class WriteFailed(UserError):
    """A file of the run could not be written: a full disk, a quota, a read-only file system.

    What was written before is intact (every file is written beside its final name, then
    renamed over it). The CLI prints the message as one line and exits with
    :data:`EXIT_WRITE_FAILED`: ``resume=auto`` continues the run once the file can be written.
    ``path`` is the file (None: unknown), ``os_error`` the error the operating system gave.
    """

    def __init__(self, message: str, path: Any = None, os_error: OSError | None = None) -> None:
        super().__init__(message)
        self.path, self.os_error = path, os_error


class TrainingInterrupted(Exception):
    """A signal (SIGTERM, SIGINT, SIGUSR1) stopped training at a step boundary, after the
    checkpoint to continue from was written: the CLI exits with :data:`EXIT_INTERRUPTED`."""


# The CLI's exit codes (also in docs/guide/resume.md).
EXIT_USER_ERROR = 2  # a mistake in the config, data or files; one line on stderr says which
EXIT_INTERRUPTED = 3  # stopped by a signal with a checkpoint written: continue with resume=auto
EXIT_SWEEP_FAILED = 4  # a multirun finished, and some of its jobs failed (see summary.csv)
EXIT_WRITE_FAILED = 5  # a file could not be written (disk full, read-only): resume=auto once it can
