"""Sweeps that survive: a failing job does not end the sweep, and re-running the same command
with resume=auto skips finished jobs, resumes the interrupted one and runs the rest."""

from __future__ import annotations

import csv
import signal
from pathlib import Path

# Job 2 fails (a negative learning rate) whenever it runs.
SWEEP = [
    "-m",
    "optimizer.lr=0.01,0.02,-1",
    "data.synthetic=true",
    "data.batch_size=4",
    "trainer.max_epochs=2",
    "callbacks.checkpoint.every_n_steps=1",
    "resume=auto",
]


def summary(sweep_dir: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((sweep_dir / "summary.csv").open()))


def test_rerunning_an_interrupted_sweep_with_resume_auto_finishes_it(tmp_path, background_cli):
    # First pass: job 0 finishes, job 1 is preempted (SIGTERM) part-way.
    process = background_cli.start(tmp_path, *SWEEP, "hydra.sweep.dir=outputs/first")
    job1_last = tmp_path / "outputs" / "first" / "1" / "checkpoints" / "last.pt"
    background_cli.signal_at_step(process, job1_last, 3, signal.SIGTERM)
    _out, err = process.communicate(timeout=120)
    assert process.returncode == 3, err
    rows = summary(tmp_path / "outputs" / "first")
    assert [(row["job"], row["status"]) for row in rows] == [
        ("0", "completed"),
        ("1", "interrupted"),
    ]

    # The same command again, in a new dated sweep directory (as Hydra's default names them):
    # resume=auto searches, so job 0 is not trained again, job 1 continues where it stopped,
    # job 2 fails without stopping the sweep, and the exit code says a job failed.
    dated = "hydra.sweep.dir=outputs/second/${now:%H-%M-%S-%f}"
    process = background_cli.start(tmp_path, *SWEEP, dated)
    _out, err = process.communicate(timeout=300)
    assert process.returncode == 4, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: sweep jobs 2 failed")
    (second,) = (tmp_path / "outputs" / "second").iterdir()
    rows = summary(second)
    assert [(row["job"], row["status"]) for row in rows] == [
        ("0", "skipped"),
        ("1", "resumed"),
        ("2", "failed"),
    ]
    assert rows[0]["run_dir"].endswith("first/0") and rows[1]["run_dir"].endswith("first/1")
    assert "optimizer.lr=-1 is not allowed" in rows[2]["error"]
    assert rows[1]["global_step"] == rows[0]["global_step"] == "32"
    assert not (second / "0" / "checkpoints").exists()  # nothing retrained
