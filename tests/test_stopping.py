"""Ending a run before its last epoch: early stopping (callbacks.early_stopping) and the time
limit (trainer.max_time). Exactness across kills is in test_resume_exact.py and, under DDP,
test_distributed.py."""

from __future__ import annotations

import csv
import json
import math
from types import SimpleNamespace

import pytest

from torchcamp.trainer.app.validation import parse_duration
from torchcamp.trainer.callbacks.early_stopping import EarlyStopping
from torchcamp.trainer.checkpoint import load_checkpoint
from torchcamp.trainer.errors import UserError

QUICK = ("data.synthetic=true", "callbacks=[checkpoint,metrics_csv,early_stopping]")


def feed(callback: EarlyStopping, values: list[float], monitor: str = "val/loss"):
    """Epoch ends with these monitored values, as the Trainer calls them; the stub trainer."""
    trainer = SimpleNamespace(epoch=0, should_stop=False, stop_reason=None)
    for value in values:
        trainer.epoch += 1
        callback.on_epoch_end(trainer, {monitor: value})
        if trainer.should_stop:
            break
    return trainer


@pytest.mark.parametrize(
    ("mode", "min_delta", "values", "stopped_at", "best"),
    [
        ("min", 0.0, [1.0, 0.9, 0.9, 0.95, 0.8], 4, 0.9),  # equal is no improvement
        ("min", 0.15, [1.0, 0.9, 0.86, 0.8], 3, 1.0),  # steps from the best under 0.15
        ("max", 0.0, [0.5, 0.6, 0.6, 0.7], None, 0.7),
        ("max", 0.0, [0.5, math.nan, math.nan], 3, 0.5),  # NaN never improves
    ],
)
def test_early_stopping_follows_lightnings_rule(mode, min_delta, values, stopped_at, best):
    callback = EarlyStopping("val/loss", patience=2, min_delta=min_delta, mode=mode)
    trainer = feed(callback, values)
    assert callback.stopped_epoch == (stopped_at or 0)
    assert trainer.should_stop == (stopped_at is not None)
    assert trainer.stop_reason == ("early_stopped" if stopped_at else None)
    assert callback.best == best


def test_early_stopping_state_carries_the_counters_over():
    straight = EarlyStopping("val/loss", patience=3)
    feed(straight, [1.0, 1.1, 1.2, 1.3])
    first = EarlyStopping("val/loss", patience=3)
    feed(first, [1.0, 1.1])
    second = EarlyStopping("val/loss", patience=3)
    second.load_state_dict(first.state_dict())
    trainer = SimpleNamespace(epoch=2, should_stop=False, stop_reason=None)
    for value in (1.2, 1.3):
        trainer.epoch += 1
        second.on_epoch_end(trainer, {"val/loss": value})
    assert second.state_dict() == straight.state_dict() and second.stopped_epoch == 4
    # A run killed after it stopped (before its end) stops again as soon as it starts.
    third = EarlyStopping("val/loss", patience=3)
    third.load_state_dict(second.state_dict())
    restarted = SimpleNamespace(should_stop=False, stop_reason=None)
    third.on_fit_start(restarted)
    assert restarted.should_stop and restarted.stop_reason == "early_stopped"


def test_early_stopping_on_a_metric_the_run_lacks_is_one_line():
    with pytest.raises(UserError, match=r"monitor=val/auc is not a metric .*val/loss"):
        feed(EarlyStopping("val/auc"), [1.0])


@pytest.mark.slow
def test_an_early_stopped_run_says_so_and_is_not_trained_again(run_in_process, tmp_path):
    args = (
        *QUICK,
        "trainer.max_epochs=6",
        "callbacks.early_stopping.patience=1",
        "callbacks.early_stopping.min_delta=2",  # no accuracy improves by 2: stops at epoch 2
        "resume=auto",
        f"output_root={tmp_path}",
    )
    result = run_in_process(*args)
    metrics = result.metrics
    assert metrics["status"] == "early_stopped" and metrics["epoch"] == 2
    assert "test/acc" in metrics and "best/val/acc" in metrics  # tested with the best weights
    log = (result.run_dir / "train.log").read_text()
    assert "early stopping at epoch 2: val/acc has not improved by more than min_delta=2" in log
    assert "the best was" in log
    # resume=auto in its directory finds it finished: nothing to train, its record kept.
    again = run_in_process(*args, f"hydra.run.dir={result.run_dir}")
    assert "finished this run already (epoch 2)" in again.stdout
    assert again.metrics == metrics


@pytest.mark.slow
def test_early_stopping_is_off_by_default_and_its_keys_are_checked(run_in_process):
    result = run_in_process("data.synthetic=true", "callbacks=[early_stopping]")
    assert result.metrics["status"] == "completed" and result.metrics["epoch"] == 10
    bad = run_in_process(*QUICK, "callbacks.early_stopping.patience=0", check=False)
    assert bad.returncode == 2
    assert "callbacks.early_stopping.patience=0 is not allowed" in bad.stderr


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("00:45:00", 2700), ("1:02:00:30", 93630), (90, 90), (0.5, 0.5), ("45:00", None), ("x", None)],
)
def test_max_time_takes_seconds_or_lightnings_durations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.slow
def test_time_limit_stops_tests_and_resumes_with_a_larger_limit(run_in_process, tmp_path):
    job = (*QUICK, "trainer.max_epochs=40", "resume=auto", f"output_root={tmp_path}")
    first = run_in_process(*job, "trainer.max_time=00:00:01")
    stopped = first.metrics
    assert stopped["status"] == "time_limit" and stopped["time/fit_seconds"] >= 1
    assert 0 < stopped["global_step"] < 40 * 4 and "test/acc" in stopped
    last = load_checkpoint(first.run_dir / "checkpoints" / "last.pt")
    assert last["global_step"] == stopped["global_step"]  # last.pt holds where it stopped
    assert "time limit:" in (first.run_dir / "train.log").read_text()
    # The same limit again: counted across resumes, it is used up, so no step is trained.
    job = (*job, f"hydra.run.dir={first.run_dir}")  # the same command again: the same run
    again = run_in_process(*job, "trainer.max_time=00:00:01")
    assert json.loads((first.run_dir / "metrics.json").read_text())["status"] == "time_limit"
    assert again.metrics["global_step"] == stopped["global_step"]
    # A larger limit continues the same run (max_time is not part of what resume=auto matches).
    run_in_process(*job, "trainer.max_time=600")
    finished = json.loads((first.run_dir / "metrics.json").read_text())
    assert finished["status"] == "resumed" and finished["epoch"] == 40
    assert finished["time/fit_seconds"] > stopped["time/fit_seconds"]
    with open(first.run_dir / "metrics.csv", newline="") as file:
        epochs = [int(row["epoch"]) for row in csv.DictReader(file)]
    assert epochs == list(range(1, 41))  # every epoch once


@pytest.mark.slow
def test_a_bad_max_time_is_one_line(run_in_process):
    result = run_in_process("data.synthetic=true", "trainer.max_time=45min", check=False)
    assert result.returncode == 2
    assert "trainer.max_time=45min is not allowed: use null, seconds" in result.stderr


USER_STOPPER = '''
class StopAfter:
    """A user's callback, as the README describes: it ends training after `epochs` epochs."""

    def __init__(self, epochs):
        self.epochs, self.ended = epochs, []

    def on_epoch_end(self, trainer, metrics):
        if trainer.epoch >= self.epochs:
            trainer.should_stop = True

    def on_train_end(self, trainer):
        print(f"train ended at epoch {trainer.epoch}")
'''


@pytest.mark.slow
def test_a_users_callback_outside_the_repository_can_end_training(run_in_process, tmp_path):
    import sys

    (tmp_path / "mystopper.py").write_text(USER_STOPPER)  # the working directory of the run
    try:
        result = run_in_process(
            "data.synthetic=true",
            "callbacks=[checkpoint]",
            "+callbacks.stopper._target_=mystopper.StopAfter",
            "+callbacks.stopper.epochs=2",
        )
    finally:
        sys.modules.pop("mystopper", None)
    assert result.metrics["epoch"] == 2 and "test/acc" in result.metrics
    assert "train ended at epoch 2" in result.stdout
