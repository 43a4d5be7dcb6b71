"""Sweeps (trainer/app/sweep.py): a failing job does not end the sweep, re-running the same
command with resume=auto skips finished jobs, resumes the interrupted one and runs the rest; and
summary_grouped.csv, where jobs that differ only in seed and data.fold are averaged (mean, sample
std, n, n_failed, the best run), on hand-made job directories and one real sweep."""

from __future__ import annotations

import csv
import json
import signal
import statistics
from pathlib import Path

import pytest
import yaml

from torchcamp.trainer.app.sweep import grouped_lines, write_summary

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


@pytest.mark.slow
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


# ---- summary_grouped.csv: repeats that differ only in seed and data.fold, averaged ----------


def make_job(
    sweep: Path,
    number: int,
    overrides: list[str],
    metrics: dict | None,
    monitor: str = "val/acc",
    mode: str = "max",
) -> Path:
    """A job directory as Hydra and train leave it: ``.hydra/overrides.yaml``,
    ``.hydra/config.yaml`` (only the trainer's monitor) and ``metrics.json`` (None: killed)."""
    job = sweep / str(number)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    config = {"trainer": {"monitor": monitor, "monitor_mode": mode}}
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps({"run_dir": str(job)} | metrics))
    return job


def finished(acc: float, test_acc: float, status: str = "completed") -> dict:
    return {"status": status, "val/acc": acc, "best/val/acc": acc, "test/acc": test_acc}


def read_groups(sweep: Path) -> dict[str, dict[str, str]]:
    with open(sweep / "summary_grouped.csv", newline="") as file:
        return {row["group"]: row for row in csv.DictReader(file)}


def test_repeats_are_averaged_and_failed_jobs_counted_not_averaged(tmp_path):
    sweep = tmp_path / "sweep"
    adam = [0.90, 0.80, 0.95]
    for i, acc in enumerate(adam):
        make_job(sweep, i, ["epochs=2", f"seed={i}", "optimizer=adam"], finished(acc, acc - 0.1))
    make_job(sweep, 3, ["epochs=2", "seed=3", "optimizer=adam"], {"status": "failed", "error": "x"})
    make_job(sweep, 4, ["epochs=2", "seed=4", "optimizer=adam"], None)  # killed: unfinished
    # +seed= is a seed too; a skipped job counts with its metrics and its earlier run_dir.
    make_job(sweep, 5, ["epochs=2", "+seed=0", "optimizer=sgd"], finished(0.7, 0.6))
    skipped = finished(0.6, 0.5, "skipped") | {"run_dir": "outputs/earlier/6"}
    make_job(sweep, 6, ["epochs=2", "+seed=1", "optimizer=sgd"], skipped)
    make_job(sweep, 7, ["epochs=2", "seed=2", "optimizer=sgd"], {"status": "interrupted"})

    rows = write_summary(sweep)
    assert [row["status"] for row in rows][3:5] == ["failed", "unfinished"]  # summary.csv as ever
    groups = read_groups(sweep)
    assert list(groups) == ["optimizer=adam", "optimizer=sgd"]  # epochs=2 is everyone's
    adam_row, sgd_row = groups["optimizer=adam"], groups["optimizer=sgd"]
    assert (adam_row["n"], adam_row["n_failed"]) == ("3", "2")
    assert float(adam_row["val/acc_mean"]) == pytest.approx(statistics.mean(adam))
    assert float(adam_row["val/acc_std"]) == pytest.approx(statistics.stdev(adam))  # ddof=1
    assert float(adam_row["test/acc_mean"]) == pytest.approx(statistics.mean(adam) - 0.1)
    assert adam_row["best_run_dir"] == str(sweep / "2")  # the highest best/val/acc
    assert (sgd_row["n"], sgd_row["n_failed"]) == ("2", "1")
    assert float(sgd_row["best/val/acc_mean"]) == pytest.approx(0.65)
    assert sgd_row["best_run_dir"] == str(sweep / "5")
    assert "status_mean" not in adam_row and "run_dir_mean" not in adam_row

    lines = grouped_lines(sweep / "summary_grouped.csv", "val/acc")
    assert lines[1].startswith("  optimizer=adam: val/acc 0.8833 ± 0.07638 (3), best/val/acc ")
    assert "test/acc 0.7833 ± 0.07638 (3); 2 failed" in lines[1]


def test_folds_and_seeds_make_one_group_and_the_monitor_mode_is_read(tmp_path):
    sweep = tmp_path / "sweep"
    losses = {(1, 0): 0.5, (1, 1): 0.3, (2, 0): 0.4, (2, 1): 0.6}
    for i, ((seed, fold), loss) in enumerate(losses.items()):
        overrides = [f"seed={seed}", "data.folds=2", f"data.fold={fold}"]
        metrics = {"status": "early_stopped", "val/loss": loss, "best/val/loss": loss}
        make_job(sweep, i, overrides, metrics, monitor="val/loss", mode="min")
    write_summary(sweep)
    (group,) = read_groups(sweep).values()
    assert (group["group"], group["n"], group["n_failed"]) == ("(all)", "4", "0")
    assert group["best_run_dir"] == str(sweep / "1")  # the lowest loss: monitor_mode=min
    assert float(group["val/loss_std"]) == pytest.approx(statistics.stdev(losses.values()))


def test_a_sweep_without_repeats_still_gets_the_file_but_no_log_block(tmp_path):
    sweep = tmp_path / "sweep"
    for i, lr in enumerate((0.1, 0.01)):
        make_job(sweep, i, [f"optimizer.lr={lr}", "seed=7"], finished(0.5 + lr, 0.5))
    write_summary(sweep)
    groups = read_groups(sweep)
    assert list(groups) == ["optimizer.lr=0.1", "optimizer.lr=0.01"]
    assert [g["n"] for g in groups.values()] == ["1", "1"]
    assert groups["optimizer.lr=0.1"]["val/acc_std"] == ""  # no spread from one job
    assert grouped_lines(sweep / "summary_grouped.csv", "val/acc") == []


@pytest.mark.slow
def test_a_real_sweep_over_folds(tmp_path, run_in_process):
    sweep = tmp_path / "sweep"
    result = run_in_process(
        "-m", "data.synthetic=true", "trainer.max_epochs=1", "callbacks=none",
        "data.folds=2", "data.fold=range(2)", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    (group,) = read_groups(sweep).values()
    assert (group["group"], group["n"], group["n_failed"]) == ("(all)", "2", "0")
    assert group["best_run_dir"].startswith(str(sweep)) and group["test/acc_std"]
    assert "sweep groups, mean ± std (n) over data.fold and seed" in result.stdout
    # Each job's split.csv holds its fold: the two folds validate on disjoint halves.
    vals = []
    for job in ("0", "1"):
        with open(sweep / job / "split.csv", newline="") as file:
            vals.append({row["file"] for row in csv.DictReader(file) if row["split"] == "val"})
    assert vals[0] and not vals[0] & vals[1]
