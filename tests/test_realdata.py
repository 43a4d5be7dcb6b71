"""Training on the real course data in ../shared/data (skipped where it is absent)."""

from __future__ import annotations

import pytest


@pytest.mark.realdata
def test_rmb_lenet_reaches_course_accuracy(run_cli, shared_data):
    result = run_cli("task=rmb", f"data.root={shared_data}", "trainer.max_epochs=10", timeout=600)
    metrics = result.metrics
    assert metrics["synthetic"] is False and metrics["epoch"] == 10
    assert metrics["best/val/acc"] >= 0.95, metrics
