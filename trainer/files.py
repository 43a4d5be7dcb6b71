"""Writing a run's files so that a failed write loses nothing.

Every file a run rewrites (checkpoints, ``metrics.csv``, ``metrics.json``, pictures,
``split.csv``) is written to ``<name>.tmp`` beside it and renamed over it: a full disk, a
read-only file system or a kill mid-write leaves the previous file as it was, and a failed
write removes its temporary. The failure is a :class:`WriteFailed` naming the file and the
operating system's reason, which the CLI prints as one line (exit 5).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from torchcamp.trainer.errors import WriteFailed

# Errors that end any command with EXIT_WRITE_FAILED wherever they come from (Hydra's own
# files, a library's): the disk is full or read-only, and the run can go on once it is not.
STORAGE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})

_RESUME = "run the same command with resume=auto"
_REMEDIES = {
    errno.ENOSPC: f"Free disk space, then {_RESUME}",
    errno.EDQUOT: f"Free space within your disk quota, then {_RESUME}",
    errno.EROFS: f"Make the file system writable, then {_RESUME}",
}


@contextmanager
def written_atomically(path: str | Path, sync: bool = False) -> Iterator[Path]:
    """Yield the temporary path to write ``path``'s new contents to; when the block ends, it
    is renamed over ``path`` (after an fsync with ``sync``: a checkpoint must outlive a power
    cut, a picture need not).

    If anything fails, the temporary is removed and ``path`` is as it was. An ``OSError``,
    also one a library wrapped in its own exception (``torch.save`` raises a RuntimeError),
    becomes a :class:`WriteFailed` naming ``path``; anything else is raised as it is.
    """
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")  # the same folder: the rename is atomic
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield temporary
        if sync:
            _fsync(temporary)
        os.replace(temporary, path)
    except BaseException as error:  # a second Ctrl-C too: no temporary left behind
        with contextlib.suppress(OSError):  # never made (a read-only file system)
            temporary.unlink(missing_ok=True)
        cause = os_error_of(error)
        if cause is None or isinstance(error, WriteFailed):
            raise
        raise write_failed(path, cause) from error


def write_text_atomically(path: str | Path, text: str) -> None:
    """Replace ``path``'s contents with ``text`` (UTF-8), atomically (see
    :func:`written_atomically`)."""
    with written_atomically(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def link_or_copy(source: Path, target: Path) -> None:
    """Make ``target`` the same file as ``source``: a hard link (free: ``source`` is replaced
    by a rename, never rewritten in place), or a copy where links are not supported; renamed
    into place, so ``target`` is never half a file."""
    if target.exists() and os.path.samefile(source, target):
        return  # already; and rename(2) onto a link of the same file would leave the temporary
    with written_atomically(target) as temporary:
        temporary.unlink(missing_ok=True)  # left by a run killed mid-link
        try:
            os.link(source, temporary)
        except OSError:  # no hard links on this file system (FAT, some network ones)
            shutil.copyfile(source, temporary)


def write_failed(path: str | Path | None, error: OSError, kept: str = "") -> WriteFailed:
    """The one-line error for ``path`` that could not be written: the file, the operating
    system's reason, what is still intact (``kept``), and what to do."""
    where = str(path) if path is not None else "a file"
    reason = error.strerror or str(error)
    intact = f"; {kept}" if kept else ""
    remedy = _REMEDIES.get(error.errno, f"Once it can be written, {_RESUME}")
    return WriteFailed(f"could not write {where} ({reason}){intact}. {remedy}", path, error)


def os_error_of(error: BaseException) -> OSError | None:
    """``error`` if it is an ``OSError``; else the ``OSError`` it was raised from or while
    handling (``torch.save``'s RuntimeError around a failed ``write``); else None."""
    for candidate in (error, error.__cause__, error.__context__):
        if isinstance(candidate, OSError):
            return candidate
    return None


def failed_path(error: OSError) -> str | None:
    """The file ``error`` is about: its ``filename``, else the file open for writing in the
    innermost frame of its traceback that has one (a full disk fails a ``write`` or the
    ``close`` that flushes it, and those errors name no file: Hydra's ``.hydra/config.yaml``,
    a library's); None if neither."""
    if error.filename is not None:
        return os.fsdecode(error.filename)
    frames = []
    traceback = error.__traceback__
    while traceback is not None:
        frames.append(traceback.tb_frame)
        traceback = traceback.tb_next
    for frame in reversed(frames):  # innermost first
        for value in frame.f_locals.values():
            name, mode = getattr(value, "name", None), getattr(value, "mode", "")
            if isinstance(value, io.IOBase) and isinstance(name, str) and set(mode) & set("wax+"):
                return name
    return None


def is_storage_error(error: BaseException) -> bool:
    """Is ``error`` a full disk, an exceeded quota or a read-only file system?"""
    cause = os_error_of(error)
    return cause is not None and cause.errno in STORAGE_ERRORS


def _fsync(path: Path) -> None:
    """Flush ``path``'s contents to the disk (an fsync on any descriptor of the file does)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
