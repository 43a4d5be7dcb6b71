"""metrics.csv, curves.png, confusion_matrix.png and a sweep's comparison.png. (metrics.csv
after kills: test_resume_exact.py; the drawing itself: test_plots.py.)"""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest
from PIL import Image

from torchcamp.trainer.callbacks.csv_logger import CSVLogger, read_metrics_csv


@pytest.mark.slow
def test_metrics_csv_and_the_pictures_of_a_run(run_in_process):
    result = run_in_process("data.synthetic=true", "trainer.max_epochs=3")
    with open(result.run_dir / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]
    assert [row["step"] for row in rows] == ["4", "8", "12"]
    columns = list(rows[0])
    assert columns[:2] == ["epoch", "step"]
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "lr", "time/epoch_seconds"} <= set(
        columns
    )
    assert float(rows[-1]["val/acc"]) == result.metrics["val/acc"]
    for picture in ("curves.png", "confusion_matrix.png"):
        with Image.open(result.run_dir / picture) as image:
            assert image.format == "PNG" and min(image.size) > 200


def test_metrics_csv_is_rewritten_from_the_checkpoints_history(tmp_path):
    """A resumed run's file holds its checkpoint's epochs, whatever the killed run wrote."""
    path = tmp_path / "metrics.csv"
    logger = CSVLogger(path)
    rows = [{"epoch": e, "step": 4 * e, "train/loss": 1 / e} for e in (1, 2, 3)]
    logger.on_epoch_end(SimpleNamespace(history=rows), {})
    logger.on_fit_start(SimpleNamespace(history=rows[:1]))  # resumed from epoch 1's checkpoint
    assert [row["epoch"] for row in read_metrics_csv(path)] == [1.0]
    logger.on_fit_start(SimpleNamespace(history=[]))  # from a step in epoch 1: no epoch yet
    assert not path.exists()
    # A column that appears late (val from epoch 2 on) is in the header; earlier rows: empty.
    logger.on_epoch_end(SimpleNamespace(history=[rows[0], rows[1] | {"val/loss": 0.5}]), {})
    read = read_metrics_csv(path)
    assert read[1]["val/loss"] == 0.5 and read[0]["val/loss"] != read[0]["val/loss"]  # NaN


@pytest.mark.slow
def test_a_sweep_gets_a_picture_comparing_its_jobs(tmp_path, run_in_process):
    sweep_dir = tmp_path / "sweep"
    run_in_process(
        "-m",
        "data.synthetic=true",
        "trainer.max_epochs=2",
        "callbacks=[metrics_csv]",
        "optimizer.lr=0.01,0.05",
        f"hydra.sweep.dir={sweep_dir}",
    )
    with open(sweep_dir / "summary.csv", newline="") as file:
        assert [row["status"] for row in csv.DictReader(file)] == ["completed", "completed"]
    with Image.open(sweep_dir / "comparison.png") as image:
        assert image.format == "PNG"
