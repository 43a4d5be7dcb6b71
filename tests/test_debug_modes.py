"""The ``debug`` group: fast_dev_run, limit, overfit (profile: test_profiler.py), and the
Trainer's limit_*_batches they are made of."""

from __future__ import annotations

import pytest

from torchcamp.trainer.data import limited_batches

# rmb's stand-in data: 64 training images, 8 val, 8 test.
SYNTHETIC = "data.synthetic=true"


@pytest.mark.parametrize(
    ("num_batches", "limit", "expected"),
    [(10, None, 10), (10, 3, 3), (10, 30, 10), (10, 0.25, 2), (10, 0.01, 1), (10, 1.0, 10)],
)
def test_limits_are_a_count_or_a_share(num_batches, limit, expected):
    assert limited_batches(num_batches, limit) == expected


@pytest.mark.slow
def test_fast_dev_run_runs_one_batch_of_each_split_and_keeps_only_the_log(run_in_process):
    result = run_in_process(SYNTHETIC, "debug=fast_dev_run", "data.batch_size=4")
    metrics = result.metrics
    assert metrics["epoch"] == 1 and metrics["global_step"] == 1
    assert "val/acc" in metrics and "test/acc" in metrics
    assert sorted(path.name for path in result.run_dir.iterdir()) == [
        ".hydra",
        "metrics.json",
        "train.log",
    ]
    # Every callback ran before its files went: the checkpoint, TensorBoard, the pictures.
    assert "fast_dev_run: removed the run's files" in (result.run_dir / "train.log").read_text()


@pytest.mark.slow
def test_fast_dev_run_will_not_remove_a_resumed_runs_files(run_in_process, tmp_path):
    result = run_in_process(SYNTHETIC, "debug=fast_dev_run", "resume=auto", check=False)
    assert result.returncode == 2
    assert "drop resume=auto" in result.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_limit_runs_a_count_or_a_share_of_each_epoch(run_in_process):
    # 64 training images in batches of 4: 16 batches; a share of 0.25 is 4 of them.
    shared = run_in_process(
        SYNTHETIC,
        "debug=limit",
        "data.batch_size=4",
        "trainer.max_epochs=2",
        "callbacks=none",
        "trainer.limit_train_batches=0.25",
    )
    assert shared.metrics["global_step"] == 2 * 4
    counted = run_in_process(
        SYNTHETIC,
        "data.batch_size=4",
        "trainer.max_epochs=2",
        "callbacks=none",
        "trainer.limit_train_batches=3",
    )
    assert counted.metrics["global_step"] == 2 * 3


@pytest.mark.slow
def test_overfit_drives_the_loss_of_the_same_batches_to_zero(run_in_process):
    result = run_in_process(SYNTHETIC, "debug=overfit", "trainer.max_epochs=30", "callbacks=none")
    metrics = result.metrics
    assert metrics["global_step"] == 30 * 2  # 2 batches an epoch
    # Validated on those very batches (no augmentation): both losses are ~0.
    assert metrics["train/loss"] < 0.01 and metrics["val/loss"] < 0.01
    assert metrics["val/acc"] == 1.0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.limit_train_batches=0", "trainer.limit_train_batches=0 is not allowed"),
        ("trainer.limit_val_batches=1.5", "trainer.limit_val_batches=1.5 is not allowed"),
        ("trainer.overfit_batches=-1", "trainer.overfit_batches=-1 is not allowed"),
    ],
)
def test_bad_limits_are_one_line(run_in_process, override, message):
    result = run_in_process(SYNTHETIC, override, check=False)
    assert result.returncode == 2 and message in result.stderr
