"""A full disk (or a read-only one) loses nothing: the run stops with one line naming the file
(exit 5), every checkpoint on disk still loads, no half-written file or ``*.tmp`` is left,
and ``resume=auto`` ends the run bit-identical to one that never failed. Pictures and
TensorBoard only warn, once.

The disks are real: small tmpfs mounts (this needs root, as CI and the dev machine have). A
test callback (:data:`DISK_ACTIONS`) fills the disk, or makes the checkpoints read-only, at a
chosen step or epoch of the real ``train`` process, so each failure lands at the same write
every time.
"""

from __future__ import annotations

import errno
import json
import logging
import logging.handlers
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_resume_exact import JOB, assert_same_run, unbroken  # noqa: F401 (a fixture)

from torchcamp.trainer.app.logs import LogFile
from torchcamp.trainer.checkpoint import load_checkpoint
from torchcamp.trainer.errors import WriteFailed
from torchcamp.trainer.files import link_or_copy, write_text_atomically, written_atomically

# Every test runs training in subprocesses on a full or read-only disk: seconds each.
pytestmark = pytest.mark.slow

NO_SPACE = "No space left on device"
DISK_ACTIONS = """
import json
import os
import subprocess
from pathlib import Path


class DiskActions:
    \"\"\"Does what plan.json says at its points ("step 3", "epoch 2", "fit_end"), once each:
    fill the disk, or make the checkpoints folder read-only.\"\"\"

    order = 5  # before the loggers (10) and the checkpoint (20) of the same event

    def __init__(self, plan):
        self.plan = Path(plan)

    def _at(self, point, trainer):
        plan = json.loads(self.plan.read_text())
        if os.environ.get("RANK", "0") != "0" or point not in plan["actions"]:
            return
        action = plan["actions"].pop(point)
        self.plan.write_text(json.dumps(plan))
        if action == "fill":
            with open(plan["filler"], "ab", buffering=0) as file:
                try:
                    while True:
                        file.write(bytes(1 << 16))
                except OSError:  # full
                    pass
        else:  # a read-only bind mount over the checkpoints (the log stays open on the disk)
            checkpoints = next(c for c in trainer.callbacks if hasattr(c, "dirpath"))
            checkpoints.writer.wait()  # between two writes: a rename half done would fail too
            folder = str(checkpoints.dirpath)
            subprocess.run(["mount", "--bind", folder, folder], check=True)
            subprocess.run(["mount", "-o", "remount,bind,ro", folder], check=True)

    def on_train_step_end(self, trainer, outputs):
        self._at(f"step {trainer.global_step}", trainer)

    def on_epoch_end(self, trainer, metrics):
        self._at(f"epoch {trainer.epoch}", trainer)

    def on_fit_end(self, trainer, metrics):
        self._at("fit_end", trainer)
"""


class Disk:
    """A tmpfs mounted at ``path``: filled, grown and made read-only on request."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def fill(self) -> None:
        """Leave no free page (files may still grow into what is left of their last one)."""
        with open(self.filler, "ab", buffering=0) as file:
            try:
                while True:
                    file.write(bytes(1 << 16))
            except OSError as error:
                assert error.errno == errno.ENOSPC

    def remount(self, options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(self.path)], check=True)


@pytest.fixture
def tmpfs(tmp_path) -> Iterator:
    """``tmpfs(path, size)`` mounts a tmpfs of ``size`` at ``path`` (a :class:`Disk`); every
    mount under ``tmp_path`` is unmounted after the test (lazily if it is still busy). Skips
    where mounting is not allowed (not root)."""

    def mount(path: Path, size: str = "16m") -> Disk:
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs to fill (needs root): {done.stderr.strip()}")
        return Disk(path)

    yield mount
    for mounted in reversed(mounts_under(tmp_path)):  # a bind mount before the disk under it
        if subprocess.run(["umount", mounted], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", mounted], check=True)


def mounts_under(folder: Path) -> list[str]:
    """The mount points under ``folder``, in the order they were mounted."""
    points = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    return [point for point in points if point.startswith(f"{folder}/")]


@pytest.fixture
def full_disk_run(tmp_path, tmpfs, background_cli):
    """The resume tests' job (``JOB``: 24 optimizer steps, a checkpoint at each, early stopped
    after epoch 3) on a tmpfs, with the disk actions of ``actions`` (point: "fill" or
    "read_only"). Returns (disk, run): ``run(name, *args)`` runs the same command (and
    ``args``) in ``disk/name`` (the run's named directory: the same name continues it) and
    returns (exit code, stdout, stderr)."""
    disk = tmpfs(tmp_path / "disk")
    (tmp_path / "disk_actions.py").write_text(DISK_ACTIONS)
    plan = tmp_path / "plan.json"

    def setup(actions: dict[str, str]):
        plan.write_text(json.dumps({"filler": str(disk.filler), "actions": actions}))

        def run(name: str, *args: str) -> tuple[int, str, str]:
            process = background_cli.start(
                tmp_path,  # the working directory, where disk_actions.py is
                *JOB,
                *args,
                "+callbacks.disk_actions._target_=disk_actions.DiskActions",
                f"+callbacks.disk_actions.plan={plan}",
                f"output_root={disk.path}",
                f"hydra.run.dir={disk.path / name}",
            )
            out, err = process.communicate(timeout=180)
            return process.returncode, out, err

        return disk, run

    return setup


def assert_stopped_in_one_line(code: int, out: str, err: str, path: Path, reason: str) -> str:
    """Exit 5, and stderr is the one line that names ``path`` and ``reason``; no traceback
    anywhere (a thread's included). Returns the line."""
    assert code == 5, f"exit {code}\n{out[-2000:]}\n{err[-2000:]}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: could not write {path} ({reason})"), lines[0]
    assert lines[0].endswith("then run the same command with resume=auto"), lines[0]
    assert "Traceback" not in out + err and "Logging error" not in out + err
    return lines[0]


def assert_nothing_half_written(disk: Path) -> None:
    """No temporary file anywhere, and every checkpoint loads (its checksum holds)."""
    assert not list(disk.rglob("*.tmp"))
    for path in disk.glob("*/checkpoints/*.pt"):
        load_checkpoint(path)


def test_a_full_disk_at_any_write_stops_the_run_and_resume_auto_finishes_it(
    full_disk_run,
    unbroken,  # noqa: F811 (the fixture imported above)
):
    """One run, its disk full at four points in turn: at the start, at the first checkpoint,
    at metrics.csv (epoch 1) and at a checkpoint mid-epoch 3; after each the disk grows and
    the same command goes on, and the run ends as if nothing had happened."""
    disk, run = full_disk_run({"step 1": "fill", "epoch 1": "fill", "step 20": "fill"})
    # The same command each time, in the run's own directory: (the file it stops at, what it
    # says is intact). The first two leave no checkpoint, so the next attempt starts afresh
    # there (TensorBoard hides what they logged); from the third on, each continues the run.
    expected = [
        (".hydra/config.yaml", None),  # Hydra's own, before any of ours
        ("checkpoints/last.pt", "no last.pt was written before it"),
        ("metrics.csv", None),
        ("checkpoints/last.pt", "the previous last.pt is intact (epoch 2, step "),
    ]
    disk.fill()
    for attempt, (path, kept) in enumerate(expected):
        code, out, err = run("run")
        line = assert_stopped_in_one_line(code, out, err, disk.path / "run" / path, NO_SPACE)
        assert kept is None or f"; {kept}" in line
        assert_nothing_half_written(disk.path)
        disk.remount(f"size={16 * (attempt + 2)}m")  # room again (the filler stays)
    code, _, err = run("run")
    assert code == 0, err
    assert_same_run(disk.path / "run", unbroken)


def test_a_read_only_disk_stops_the_run_and_under_ddp_every_rank(full_disk_run):
    disk, run = full_disk_run({"step 3": "read_only"})
    disk.remount("ro")  # at the start: Hydra cannot make the run directory
    assert_stopped_in_one_line(*run("start"), disk.path / "start", "Read-only file system")
    # Mid-run, under DDP: the checkpoints folder turns read-only at step 3. Rank 0 alone
    # writes, and the other rank waits for it in the next gradient all-reduce: the failed rank
    # leaves at once and the launcher ends the other (no hang). The error is the last line;
    # torch's launcher logs its own lines before it.
    disk.remount("rw")
    code, _, err = run("ddp", "device=ddp", "device.devices=2", "device.accelerator=cpu")
    assert code == 5, err
    last = disk.path / "ddp" / "checkpoints" / "last.pt"
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"error: could not write {last} (Read-only file system); "), err
    assert "; the previous last.pt is intact (epoch 0, step 2)" in line
    assert "Make the file system writable, then run the same command with resume=auto" in line
    assert_nothing_half_written(disk.path)


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_pictures_and_tensorboard_that_cannot_be_written_warn_once(tmp_path, tmpfs, run_in_process):
    run_dir = tmp_path / "run0"
    tmpfs(run_dir / "tb", size="1m").fill()  # TensorBoard's folder is full from the start
    (run_dir / "curves.png").mkdir()  # a folder where the picture goes
    result = run_in_process(
        "data.synthetic=true", "trainer.max_epochs=3", "callbacks.plots.every_n_epochs=1"
    )
    assert result.returncode == 0
    assert result.metrics["status"] == "completed"
    assert (run_dir / "checkpoints" / "last.pt").is_file() and (run_dir / "metrics.csv").is_file()
    warnings = [line for line in result.stdout.splitlines() if "could not write" in line]
    assert len(warnings) == 2, warnings
    tensorboard, curves = sorted(warnings, key=lambda line: "curves.png" in line)
    assert f"could not write {run_dir / 'tb'}" in tensorboard and NO_SPACE in tensorboard
    assert "the run goes on without TensorBoard" in tensorboard
    assert f"could not write {run_dir / 'curves.png'} (Is a directory)" in curves
    # TensorBoard's writer thread failed too, and raised nothing more (filterwarnings above).
    assert "Traceback" not in result.stdout + result.stderr
    assert not list(run_dir.rglob("*.tmp"))


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, tmpfs):
    disk = tmpfs(tmp_path / "disk", size="1m")
    path = disk.path / "metrics.json"
    write_text_atomically(path, "the old contents")
    elsewhere = tmp_path / "elsewhere.pt"  # on another file system: no hard link to it
    elsewhere.write_bytes(bytes(100_000))
    disk.fill()
    with pytest.raises(WriteFailed, match=rf"could not write {path} \({NO_SPACE}\)") as failed:
        write_text_atomically(path, "x" * 100_000)
    assert failed.value.os_error.errno == errno.ENOSPC
    assert path.read_text() == "the old contents"
    assert sorted(p.name for p in disk.path.iterdir()) == ["filler", "metrics.json"]
    # A copy where no link can be made: the same.
    with pytest.raises(WriteFailed, match=NO_SPACE):
        link_or_copy(elsewhere, path)
    assert path.read_text() == "the old contents" and not list(disk.path.glob("*.tmp"))
    # Not an OSError: raised as it is, and still no temporary.
    with pytest.raises(ValueError, match="a bug"), written_atomically(path) as temporary:
        temporary.write_text("")
        raise ValueError("a bug")
    assert not list(disk.path.glob("*.tmp"))


def test_a_full_disk_under_the_log_is_one_warning_not_a_traceback_a_record(
    tmp_path, tmpfs, capsys, monkeypatch
):
    disk = tmpfs(tmp_path / "disk", size="1m")
    file_handler = LogFile(disk.path / "train.log")
    console = logging.handlers.BufferingHandler(capacity=1000)
    logger = logging.getLogger("torchcamp")  # the warning goes there, to the other handlers
    logger.addHandler(file_handler)
    logger.addHandler(console)
    monkeypatch.setattr(logger, "propagate", False)  # not to an earlier in-process run's
    try:
        disk.fill()
        for index in range(50):  # more than the file's last page holds
            logger.warning("record %d %s", index, "x" * 200)
    finally:
        logger.removeHandler(file_handler)
        logger.removeHandler(console)
        file_handler.close()
    failures = [r.getMessage() for r in console.buffer if "could not write" in r.getMessage()]
    assert failures == [
        f"could not write {disk.path / 'train.log'} ({NO_SPACE}): the log goes on on the console "
        "only"
    ]
    assert file_handler.failed and "Logging error" not in capsys.readouterr().err
