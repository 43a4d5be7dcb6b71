"""Hyperparameter search with the Optuna sweeper (the `search` extra)."""

from __future__ import annotations

import csv

import pytest
import yaml

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs the search extra")


@pytest.mark.slow
def test_optuna_search_finds_a_best_trial(tmp_path, run_in_process):
    run_in_process(
        "-m",
        "hparams_search=rmb_optuna",
        "hydra.sweeper.n_trials=3",
        "data.synthetic=true",
        "trainer.max_epochs=1",
        "hydra.sweep.dir=search",
    )
    sweep = tmp_path / "search"
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {
        "optimizer",
        "optimizer.lr",
        "optimizer.weight_decay",
        "data.batch_size",
    }
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert len(rows) == 3 and all(row["status"] == "completed" for row in rows)
    # The sweeper maximised trainer.monitor (val/acc for rmb): the best value is the best row.
    assert results["best_value"] == max(float(row["val/acc"]) for row in rows)
