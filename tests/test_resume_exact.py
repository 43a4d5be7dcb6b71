"""Runs killed (SIGKILL), preempted (SIGTERM) or interrupted (Ctrl-C) at arbitrary steps and
continued with ``resume=auto`` end bit-identical to an unbroken run: TensorBoard, metrics.csv
and early stopping included.

Each run is a real ``train`` process; the kills land wherever the run is when the test sees
that ``last.pt`` holds the wanted step, so mid-epoch and mid-accumulation-window points come up.
"""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from torchcamp.trainer.checkpoint import load_checkpoint

# Every test kills or signals training runs in subprocesses and resumes them: seconds each.
pytestmark = pytest.mark.slow

# rmb's stand-in data (64 training images, RandomCrop augmentation), 16 batches of 4 an
# epoch, 2 batches per optimizer step: 8 steps an epoch, 24 in all. Early stopping ends the
# run after epoch 3 of 4: with a min_delta no accuracy can beat, epoch 1 sets the best and
# epochs 2 and 3 use up the patience, so a kill in epoch 3 must carry its counters over.
JOB = [
    "data.synthetic=true",
    "data.batch_size=4",
    "trainer.accumulate_grad_batches=2",
    "trainer.max_epochs=4",
    "callbacks.early_stopping.patience=2",
    "callbacks.early_stopping.min_delta=2",
    "trainer.deterministic=true",
    "trainer.log_every_n_steps=1",
    "callbacks.checkpoint.every_n_steps=1",
    "optimizer=adam",
    "scheduler=step",
    "resume=auto",
]
TOTAL_STEPS = 24


def start(cli, tmp_path: Path, name: str, *args: str, job: list[str] = JOB) -> subprocess.Popen:
    """``train`` in the background, its run directory ``tmp_path/name``, runs under
    ``tmp_path`` searched by resume=auto."""
    return cli.start(
        tmp_path, *job, *args, f"output_root={tmp_path}", f"hydra.run.dir={tmp_path / name}"
    )


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory, background_cli) -> Path:
    """One run, never stopped: the reference (with num_workers=0)."""
    tmp_path = tmp_path_factory.mktemp("unbroken")
    process = start(background_cli, tmp_path, "run")
    _out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return tmp_path / "run"


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Bit-identical weights and optimizer state, the same metrics, metrics.csv rows (every
    epoch once) and TensorBoard curves."""
    ours = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    theirs = load_checkpoint(reference / "checkpoints" / "last.pt")
    assert ours["global_step"] == theirs["global_step"] == TOTAL_STEPS
    for name, tensor in theirs["model"].items():
        assert torch.equal(ours["model"][name], tensor), name
    adam_ours, adam_theirs = ours["optimizers"]["model"], theirs["optimizers"]["model"]
    for index, state in adam_theirs["state"].items():
        assert torch.equal(adam_ours["state"][index]["exp_avg_sq"], state["exp_avg_sq"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    expected = json.loads((reference / "metrics.json").read_text())
    scores = [key for key in expected if key.startswith(("train/", "val/", "test/", "best/"))]
    assert scores and all(metrics[key] == expected[key] for key in scores)
    assert tensorboard_curve(run_dir) == tensorboard_curve(reference)
    assert metrics_rows(run_dir) == metrics_rows(reference)
    assert [row["epoch"] for row in metrics_rows(run_dir)] == ["1", "2", "3"]
    assert metrics["status"] == expected["status"] == "early_stopped"


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv's rows without the epoch seconds (the one column that is not exact)."""
    with open(run_dir / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in rows]


def tensorboard_curve(run_dir: Path, tag: str = "train/loss_step") -> list[tuple[int, float]]:
    """The (step, value) points TensorBoard shows for ``tag`` (it applies purge_step)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / "tb"))
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


@pytest.mark.parametrize(
    ("num_workers", "kill_steps"),
    [(0, [3, 9, 17]), (2, [6, 13])],
    ids=["0 workers, 3 kills", "2 workers, 2 kills"],
)
def test_sigkill_at_any_step_then_resume_auto_is_bit_identical(
    tmp_path, unbroken, background_cli, num_workers, kill_steps
):
    workers = f"data.num_workers={num_workers}"
    run_dir = tmp_path / "run"
    for step in kill_steps:  # the same command each time, as a requeued job runs it
        process = start(background_cli, tmp_path, "run", workers)
        last = run_dir / "checkpoints" / "last.pt"
        background_cli.signal_at_step(process, last, step, signal.SIGKILL)
        process.wait(timeout=60)
        assert process.returncode == -signal.SIGKILL
    process = start(background_cli, tmp_path, "run", workers)
    _out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    # Every attempt continued the run in its directory, which holds the whole run.
    assert_same_run(run_dir, unbroken)
    assert "early stopping at epoch 3" in (run_dir / "train.log").read_text()


def test_a_killed_run_moved_to_another_folder_resumes_there_bit_identical(
    tmp_path, unbroken, background_cli
):
    # Nothing in a checkpoint needs the folder it was written in: a run killed in one place,
    # moved (rsync, an archive), continues from its new place under another output_root.
    process = start(background_cli, tmp_path, "here")
    background_cli.signal_at_step(process, tmp_path / "here/checkpoints/last.pt", 9, signal.SIGKILL)
    process.wait(timeout=60)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.move(tmp_path / "here", elsewhere / "run")
    process = start(background_cli, elsewhere, "run")
    _out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert_same_run(elsewhere / "run", unbroken)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_stop_signal_checkpoints_at_a_step_boundary_and_exits_3(
    tmp_path, unbroken, background_cli, signum
):
    """Each signal stops the run resumably; continuing one (SIGTERM) is bit-identical."""
    process = start(background_cli, tmp_path, "stopped")
    run_dir = tmp_path / "stopped"
    background_cli.signal_at_step(process, run_dir / "checkpoints" / "last.pt", 10, signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 3, err
    assert "Traceback" not in out + err
    assert err.strip().splitlines()[-1].startswith(f"stopped: stopped by {signum.name}")
    stopped = json.loads((run_dir / "metrics.json").read_text())
    assert stopped["status"] == "interrupted" and stopped["global_step"] < TOTAL_STEPS
    assert background_cli.saved_step(run_dir / "checkpoints" / "last.pt") == stopped["global_step"]
    if signum != signal.SIGTERM:
        return  # the same state as SIGTERM's: one continued run is enough
    process = start(background_cli, tmp_path, "stopped")
    _out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert_same_run(run_dir, unbroken)


def test_second_ctrl_c_quits_at_once_and_leaves_the_checkpoint_intact(tmp_path, background_cli):
    # ResNet18 at 224 px: the next step boundary is seconds away when the second Ctrl-C comes.
    job = [
        "task=hymenoptera",
        "data.synthetic=true",
        "data.batch_size=8",
        "trainer.accumulate_grad_batches=2",
        "callbacks.checkpoint.every_n_steps=1",
    ]
    process = start(background_cli, tmp_path, "run", job=job)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    background_cli.signal_at_step(process, last, 1, signal.SIGINT)
    # The second only once the first was handled (two sent at once may arrive as one).
    for line in process.stdout:  # the log
        if "SIGINT: stopping after the current optimizer step" in line:
            break
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in out + err
    assert err.strip().splitlines()[-1].startswith("interrupted: ")
    assert load_checkpoint(last)["global_step"] >= 1
    assert not list(last.parent.glob("*.tmp"))
