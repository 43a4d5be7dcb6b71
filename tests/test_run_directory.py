"""A run directory holds one run: a new run in a named ``hydra.run.dir`` (or sweep directory)
that holds another is refused before anything is written, ``resume=auto`` continues the run in
its own named directory, and finished, early-stopped and time-limited runs behave there as in
Hydra's dated directories; ``resume=auto``'s search among earlier runs (run_dir.py), and a
``resume=PATH`` of another task refused."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from torchcamp.trainer.app.run_dir import find_resume_checkpoint
from torchcamp.trainer.checkpoint import load_checkpoint, save_checkpoint

FAST = ("task=rmb", "data.synthetic=true", "data.batch_size=16", "trainer.max_epochs=1")


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``folder`` with its modification time and bytes."""
    return {
        str(path.relative_to(folder)): (path.stat().st_mtime_ns, path.read_bytes())
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def one_error_line(result) -> str:
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.slow
def test_a_new_run_in_a_directory_holding_a_run_is_refused_and_the_run_untouched(
    run_in_process,
):
    first = run_in_process(*FAST, "hydra.run.dir=runs/exp1")
    before = snapshot(first.run_dir)
    assert "checkpoints/last.pt" in before and ".hydra/config.yaml" in before

    for args in (("optimizer.lr=0.5",), ("resume=runs/exp1/checkpoints/best.pt",), ()):
        refused = run_in_process(*FAST, "hydra.run.dir=runs/exp1", *args, check=False)
        line = one_error_line(refused)
        assert line.startswith("error: runs/exp1 already holds a run (checkpoints/best.pt, ")
        assert "metrics.json, status completed" in line
        assert "resume=auto" in line and "hydra.run.dir=" in line
        assert snapshot(first.run_dir) == before  # not a byte, not a log line, not .hydra/

    # The same command with resume=auto: the finished run is reported, not trained again, and
    # its own metrics.json keeps its status.
    again = run_in_process(*FAST, "hydra.run.dir=runs/exp1", "resume=auto")
    assert "finished this run already" in again.stdout + again.stderr
    assert json.loads((first.run_dir / "metrics.json").read_text())["status"] == "completed"
    assert load_checkpoint(first.run_dir / "checkpoints" / "last.pt")["global_step"] == 4


@pytest.mark.slow
def test_resume_auto_continues_the_run_in_its_named_directory_and_nowhere_else(
    run_in_process, tmp_path
):
    # A time-limited run stops after its first step: resumable, with a larger limit.
    stopped = run_in_process(
        *FAST, "trainer.max_epochs=2", "trainer.max_time=0.001", "hydra.run.dir=runs/exp1"
    )
    assert stopped.metrics["status"] == "time_limit" and stopped.metrics["global_step"] < 8
    # A run with the same overrides in a dated directory under output_root is not taken
    # instead: the named directory is the run's identity.
    run_in_process(*FAST, "trainer.max_epochs=2", f"output_root={tmp_path}")

    continued = run_in_process(
        *FAST, "trainer.max_epochs=2", "trainer.max_time=null", "hydra.run.dir=runs/exp1",
        "resume=auto", f"output_root={tmp_path}",
    )  # fmt: skip
    log = continued.stdout + continued.stderr
    assert f"continuing the run in {stopped.run_dir.resolve()}" in log
    metrics = json.loads((stopped.run_dir / "metrics.json").read_text())
    assert metrics["status"] == "resumed" and metrics["global_step"] == 8
    assert metrics["resumed_from"].endswith("runs/exp1/checkpoints/last.pt")
    assert (stopped.run_dir / "train.log").read_text().count("continuing the run") == 1

    # Other overrides in the same directory would mix two experiments in one run.
    other = run_in_process(
        *FAST, "trainer.max_epochs=2", "optimizer.lr=0.5", "hydra.run.dir=runs/exp1",
        "resume=auto", check=False,
    )  # fmt: skip
    line = one_error_line(other)
    assert (
        "holds a run of other overrides (that run's: none; this command's: optimizer.lr=0.5)"
        in line
    )
    assert "resume=" in line and "checkpoints/last.pt" in line


@pytest.mark.slow
def test_resume_auto_in_an_empty_named_directory_starts_there(run_in_process, tmp_path):
    run_in_process(*FAST, f"output_root={tmp_path}")  # a matching run in a dated directory
    fresh = run_in_process(*FAST, "hydra.run.dir=runs/new", "resume=auto")
    assert "runs/new holds no checkpoint to continue; starting a new run there" in fresh.stdout
    assert fresh.metrics["status"] == "completed" and fresh.metrics["resumed_from"] is None


@pytest.mark.slow
def test_an_early_stopped_run_in_a_named_directory_is_skipped(run_in_process):
    job = (
        *FAST, "trainer.max_epochs=4", "callbacks.early_stopping.patience=1",
        "callbacks.early_stopping.min_delta=2", "hydra.run.dir=runs/es",
    )  # fmt: skip
    first = run_in_process(*job)
    assert first.metrics["status"] == "early_stopped"
    again = run_in_process(*job, "resume=auto")
    assert "finished this run already" in again.stdout
    assert json.loads((first.run_dir / "metrics.json").read_text())["status"] == "early_stopped"


@pytest.mark.slow
def test_a_named_sweep_directory_is_refused_whole_and_continued_with_resume_auto(
    run_in_process, tmp_path
):
    sweep = ("-m", *FAST, "optimizer.lr=0.01,0.02", "hydra.sweep.dir=sweeps/s1")
    run_in_process(*sweep)
    sweep_dir = tmp_path / "sweeps" / "s1"
    before = snapshot(sweep_dir)

    refused = run_in_process(*sweep, check=False)
    line = one_error_line(refused)
    assert line.startswith("error: sweeps/s1 already holds the runs of a sweep (job directories")
    assert "0, 1" in line and "resume=auto" in line and "hydra.sweep.dir=" in line
    assert snapshot(sweep_dir) == before

    again = run_in_process(*sweep, "resume=auto")
    assert again.stdout.count("finished this run already") == 2
    for job in ("0", "1"):
        assert load_checkpoint(sweep_dir / job / "checkpoints" / "last.pt")["global_step"] == 4

    # A changed sweep in the same directory: each job that would continue a run of other
    # overrides fails, the others' runs untouched, and the exit code says jobs failed.
    changed = run_in_process(
        "-m", *FAST, "optimizer.lr=0.02,0.01", "hydra.sweep.dir=sweeps/s1", "resume=auto",
        check=False,
    )  # fmt: skip
    assert changed.returncode == 4, changed.stderr
    assert "error: job 0 failed: resume=auto: " in changed.stderr
    for job in ("0", "1"):
        assert (sweep_dir / job / "metrics.json").read_bytes() == before[f"{job}/metrics.json"][1]


@pytest.mark.slow
def test_under_ddp_a_named_directory_holding_a_run_is_refused_before_any_rank_starts(
    run_in_process,
):
    first = run_in_process(*FAST, "hydra.run.dir=runs/ddp")
    before = snapshot(first.run_dir)
    refused = run_in_process(
        *FAST, "device=ddp", "device.devices=2", "hydra.run.dir=runs/ddp", check=False
    )
    assert "already holds a run" in one_error_line(refused)
    assert "starting 2 processes" not in refused.stdout
    assert snapshot(first.run_dir) == before


def test_the_compose_api_refuses_a_directory_holding_a_run_too(tmp_path, monkeypatch):
    # A notebook's train(cfg, run_dir=...) goes through no Hydra callback: train() checks too.
    from hydra import compose, initialize_config_module

    from torchcamp.trainer.app.run_dir import RunDirectoryTaken
    from torchcamp.trainer.app.train import train

    monkeypatch.chdir(tmp_path)
    overrides = [*FAST, "trainer.progress=false", "callbacks=[checkpoint]"]
    with initialize_config_module("torchcamp.conf", version_base="1.3"):
        cfg = compose("config", overrides)
        train(cfg, run_dir=tmp_path / "run")
        cfg = compose("config", [*overrides, "optimizer.lr=0.5"])
    with pytest.raises(RunDirectoryTaken, match="already holds a run"):
        train(cfg, run_dir=tmp_path / "run")


# ---- resume=auto's search among earlier runs, and resume=PATH's task check ------------------


def fake_run(root, name, task, overrides):
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"task": {"name": task}}))
    save_checkpoint({"model": {}, "epoch": 1}, run / "checkpoints" / "last.pt")
    time.sleep(0.01)  # distinct modification times
    return run / "checkpoints" / "last.pt"


def test_find_resume_checkpoint_matches_task_and_overrides(tmp_path):
    older = fake_run(tmp_path, "1", "rmb", ["optimizer=adam"])
    newer = fake_run(tmp_path, "2", "rmb", ["optimizer=adam", "resume=auto"])
    fake_run(tmp_path, "3", "rmb", ["optimizer=sgd"])
    fake_run(tmp_path, "4", "names", ["optimizer=adam"])
    assert older.exists()
    assert find_resume_checkpoint(tmp_path, "rmb", ["optimizer=adam", "resume=auto"]) == newer
    assert find_resume_checkpoint(tmp_path, "rmb", ["optimizer=rmsprop"]) is None


def test_resume_auto_skips_a_corrupt_newest_checkpoint(tmp_path, caplog):
    older = fake_run(tmp_path, "1", "rmb", ["optimizer=adam"])
    newer = fake_run(tmp_path, "2", "rmb", ["optimizer=adam"])
    newer.write_bytes(newer.read_bytes()[:50])  # a save cut short outside torchcamp's control
    assert find_resume_checkpoint(tmp_path, "rmb", ["optimizer=adam"]) == older
    assert f"resume=auto: skipping {newer}" in caplog.text


@pytest.mark.slow
def test_resuming_another_tasks_checkpoint_names_both(monkeypatch, tmp_path, capsys):
    from conftest import train_in_process

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    code, first = train_in_process(
        monkeypatch, tmp_path / "a", "task=rmb", "data.synthetic=true", "trainer.max_epochs=1"
    )
    assert code == 0
    code, _ = train_in_process(
        monkeypatch, tmp_path / "b", "task=names", "data.synthetic=true",
        f"resume={first}/checkpoints/last.pt",
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "is task=rmb model=lenet; this run is task=names model=gru" in err
