"""Hydra callback that writes ``summary.csv`` in a multirun's sweep directory."""

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

log = logging.getLogger(__name__)


class SweepSummary(Callback):
    """One row per job: its number, overrides, status and final metrics.

    Read from the job directories when the sweep ends, so it also works with launchers that run
    jobs in other processes. A job without ``metrics.json`` did not finish: status ``failed``.
    """

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        # Rewritten after every job, so a sweep that is stopped half-way still has its summary.
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN:
            self._write(Path(hydra_cfg.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._write(Path(config.hydra.sweep.dir))
        log.info("sweep summary: %s", Path(config.hydra.sweep.dir) / "summary.csv")

    @staticmethod
    def _write(sweep_dir: Path) -> None:
        rows = [_job_row(job_dir) for job_dir in _job_dirs(sweep_dir)]
        if not rows:
            return
        metric_names = sorted({key for row in rows for key in row} - {"job", "overrides", "status"})
        path = sweep_dir / "summary.csv"
        with open(path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=["job", "overrides", "status", *metric_names])
            writer.writeheader()
            writer.writerows(rows)


def _job_dirs(sweep_dir: Path) -> list[Path]:
    jobs = [path for path in sweep_dir.iterdir() if (path / ".hydra" / "overrides.yaml").exists()]
    return sorted(jobs, key=lambda path: (len(path.name), path.name))


def _job_row(job_dir: Path) -> dict[str, Any]:
    overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
    row: dict[str, Any] = {
        "job": job_dir.name,
        "overrides": " ".join(overrides),
        "status": "failed",
    }
    metrics_path = job_dir / "metrics.json"
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        row |= {key: value for key, value in metrics.items() if not isinstance(value, (dict, list))}
    return row
