"""Hydra callback that writes ``summary.csv`` and ``comparison.png`` in a multirun's sweep
directory."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from torchcamp.trainer.callbacks.csv_logger import read_metrics_csv

log = logging.getLogger(__name__)

# The jobs of the last sweep that failed (their numbers), for the CLI's exit code.
failed_jobs: list[str] = []


class SweepSummary(Callback):
    """One row per job: its number, overrides, status and final metrics.

    Read from the job directories when the sweep ends, so it also works with launchers that run
    jobs in other processes. Statuses, from each job's ``metrics.json``: ``completed``;
    ``resumed`` (completed, continuing an interrupted run of the same overrides); ``skipped``
    (finished by an earlier run of the sweep, whose directory ``run_dir`` names);
    ``interrupted`` (stopped by a signal, resumable); ``failed`` (with its ``error``).
    A job without ``metrics.json`` was killed: ``unfinished``.
    """

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        # Rewritten after every job, so a sweep that is stopped half-way still has its summary.
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN:
            write_summary(Path(hydra_cfg.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        rows = write_summary(Path(config.hydra.sweep.dir))
        failed_jobs[:] = [row["job"] for row in rows if row["status"] in ("failed", "unfinished")]
        log.info("sweep summary: %s", Path(config.hydra.sweep.dir) / "summary.csv")


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    """(Re)write ``sweep_dir/summary.csv`` and ``comparison.png`` from the job directories;
    returns the summary's rows."""
    job_dirs = _job_dirs(sweep_dir)
    rows = [_job_row(job_dir) for job_dir in job_dirs]
    if not rows:
        return rows
    draw_comparison(sweep_dir, job_dirs, [row["overrides"] or row["job"] for row in rows])
    first = ["job", "overrides", "status"]
    metric_names = sorted({key for row in rows for key in row} - set(first))
    with open(sweep_dir / "summary.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=[*first, *metric_names])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def draw_comparison(sweep_dir: Path, job_dirs: list[Path], labels: list[str]) -> None:
    """``comparison.png``: each job's val curve of the monitored metric (the first job's
    ``trainer.monitor``), labelled by its overrides; nothing while no job has such a curve."""
    config = yaml.safe_load((job_dirs[0] / ".hydra" / "config.yaml").read_text()) or {}
    trainer = config.get("trainer") or {}
    monitor, mode = trainer.get("monitor"), trainer.get("monitor_mode", "min")
    jobs = [
        (label, read_metrics_csv(job / "metrics.csv"))
        for label, job in zip(labels, job_dirs, strict=True)
    ]
    if not monitor or not any(rows for _, rows in jobs):
        return
    from torchcamp.trainer.plots import draw_sweep_comparison  # matplotlib: only when drawing

    draw_sweep_comparison(jobs, monitor, sweep_dir / "comparison.png", mode)


def _job_dirs(sweep_dir: Path) -> list[Path]:
    jobs = [path for path in sweep_dir.iterdir() if (path / ".hydra" / "overrides.yaml").exists()]
    return sorted(jobs, key=lambda path: (len(path.name), path.name))


def _job_row(job_dir: Path) -> dict[str, Any]:
    overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
    row: dict[str, Any] = {
        "job": job_dir.name,
        "overrides": " ".join(overrides),
        "status": "unfinished",
    }
    metrics_path = job_dir / "metrics.json"
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        row |= {key: value for key, value in metrics.items() if not isinstance(value, (dict, list))}
    return row
