"""Hydra callback that writes ``summary.csv``, ``summary_grouped.csv`` and ``comparison.png``
in a multirun's sweep directory."""

from __future__ import annotations

import csv
import json
import logging
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from torchcamp.trainer.app.run_dir import RunDirectory
from torchcamp.trainer.callbacks.csv_logger import read_metrics_csv
from torchcamp.trainer.status import FINISHED, RunStatus

log = logging.getLogger(__name__)

# The jobs of the last sweep that failed (their numbers), for the CLI's exit code.
failed_jobs: list[str] = []
# Jobs refused because their directory holds another run (whose metrics.json stays as it is).
refused_jobs: list[str] = []

# Overrides that repeat a job rather than change it: summary_grouped.csv averages over them.
REPEAT_KEYS = frozenset({"seed", "data.fold"})
METRIC_PREFIXES = ("train/", "val/", "test/", "best/")


class SweepSummary(Callback):
    """One row per job: its number, overrides, status and final metrics.

    Read from the job directories when the sweep ends, so it also works with launchers that run
    jobs in other processes. Statuses, from each job's ``metrics.json``: ``completed``;
    ``resumed`` (completed, continuing an interrupted run of the same overrides); ``skipped``
    (finished by an earlier run of the sweep, whose directory ``run_dir`` names);
    ``interrupted`` (stopped by a signal, resumable); ``failed`` (with its ``error``).
    A job without ``metrics.json`` was killed: ``unfinished``. Beside it,
    ``summary_grouped.csv`` averages the jobs that differ only in ``seed`` and ``data.fold``
    (see :func:`group_jobs`), logged at the end when some group has more than one job.
    """

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        # Rewritten after every job, so a sweep that is stopped half-way still has its summary.
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN:
            write_summary(Path(hydra_cfg.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = write_summary(sweep_dir)
        failed = [
            row["job"] for row in rows if row["status"] in (RunStatus.FAILED, RunStatus.UNFINISHED)
        ]
        failed_jobs[:] = failed + [job for job in refused_jobs if job not in failed]
        refused_jobs.clear()
        log.info("sweep summary: %s", sweep_dir / "summary.csv")
        monitor = OmegaConf.select(config, "trainer.monitor")
        for line in grouped_lines(sweep_dir / "summary_grouped.csv", monitor):
            log.info("%s", line)


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    """(Re)write ``sweep_dir/summary.csv``, ``summary_grouped.csv`` and ``comparison.png``
    from the job directories; returns the summary's rows."""
    job_dirs = _job_dirs(sweep_dir)
    rows = [_job_row(job_dir) for job_dir in job_dirs]
    if not rows:
        return rows
    draw_comparison(sweep_dir, job_dirs, [row["overrides"] or row["job"] for row in rows])
    _write_csv(sweep_dir / "summary.csv", rows, ["job", "overrides", "status"])
    # Written for every sweep, repeats or not: a script reads one file of one shape.
    groups = group_jobs(job_dirs, rows)
    _write_csv(
        sweep_dir / "summary_grouped.csv", groups, ["group", "n", "n_failed", "best_run_dir"]
    )
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]], first: list[str]) -> None:
    """``rows`` under a header of ``first``, then every other key sorted; a missing value is
    an empty cell."""
    rest = sorted({key for row in rows for key in row} - set(first))
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=[*first, *rest])
        writer.writeheader()
        writer.writerows(rows)


def group_jobs(job_dirs: Sequence[Path], rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per group of jobs whose overrides differ only in ``seed`` and ``data.fold``
    (``rows``: the jobs' summary rows, in the order of ``job_dirs``), in the order of each
    group's first job.

    ``group``: the overrides the group's jobs share and some other job lacks (``(all)`` when
    there are none); ``n``: its finished jobs, which are averaged; ``n_failed``: the others;
    ``best_run_dir``: the run with the best ``best/<trainer.monitor>``; then ``<metric>_mean``
    and ``<metric>_std`` (sample std; empty for fewer than two values) of every final
    ``train/``, ``val/``, ``test/`` and ``best/`` metric.
    """
    kept = [[o for o in _overrides(job) if _override_key(o) not in REPEAT_KEYS] for job in job_dirs]
    shared = set.intersection(*(set(overrides) for overrides in kept))
    members: dict[tuple[str, ...], list[int]] = {}
    for index, overrides in enumerate(kept):
        members.setdefault(tuple(sorted(overrides)), []).append(index)
    groups = []
    for indices in members.values():
        label = " ".join(o for o in kept[indices[0]] if o not in shared) or "(all)"
        jobs = [(job_dirs[i], rows[i]) for i in indices]
        groups.append(_group_row(label, jobs))
    return groups


def _override_key(override: str) -> str:
    """The key an override sets: ``+seed=1`` -> ``seed``."""
    return override.split("=", 1)[0].lstrip("+~")


def _group_row(label: str, jobs: list[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    """A group's row of summary_grouped.csv (see :func:`group_jobs`)."""
    # Jobs with another status are counted in n_failed, not averaged.
    finished = [(job, row) for job, row in jobs if row["status"] in FINISHED]
    group: dict[str, Any] = {
        "group": label,
        "n": len(finished),
        "n_failed": len(jobs) - len(finished),
        "best_run_dir": _best_run_dir(finished),
    }
    names = {key for _, row in finished for key in row if key.startswith(METRIC_PREFIXES)}
    for name in sorted(names):
        values = [row[name] for _, row in finished if _is_number(row.get(name))]
        if values:
            group[f"{name}_mean"] = statistics.fmean(values)
            group[f"{name}_std"] = _sample_std(values) if len(values) > 1 else ""
    return group


def _sample_std(values: list[float]) -> float:
    """The std with ddof=1 (``statistics.stdev`` raises on a NaN; this gives NaN)."""
    mean = statistics.fmean(values)
    return math.sqrt(sum((value - mean) ** 2 for value in values) / (len(values) - 1))


def _best_run_dir(finished: list[tuple[Path, dict[str, Any]]]) -> str:
    """The run directory (``run_dir``: a skipped job's is the earlier run's) of the job with
    the best ``best/<monitor>``; "" when no job has one. The group's jobs differ only in seed
    and fold, so the first one's config says what the monitor is."""
    if not finished:
        return ""
    monitor, mode = _monitor(finished[0][0])
    scored = [
        (row[f"best/{monitor}"], row.get("run_dir") or str(job))
        for job, row in finished
        if monitor
        and _is_number(row.get(f"best/{monitor}"))
        and not math.isnan(row[f"best/{monitor}"])
    ]
    if not scored:
        return ""
    pick = max if mode == "max" else min
    return pick(scored, key=lambda scored_run: scored_run[0])[1]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def grouped_lines(path: Path, monitor: str | None) -> list[str]:
    """``summary_grouped.csv`` for the log, one line a group: ``mean ± std (n)`` of the
    monitored metric, its best, and test's accuracy-like metrics. Nothing when no group holds
    more than one job (summary.csv already says it all)."""
    if not path.exists():
        return []
    with open(path, newline="") as file:
        groups = list(csv.DictReader(file))
    if all(int(g["n"]) + int(g["n_failed"]) < 2 for g in groups):
        return []
    shown = _shown_metrics(list(groups[0]), monitor)
    lines = [f"sweep groups, mean ± std (n) over {' and '.join(sorted(REPEAT_KEYS))}: {path}"]
    for g in groups:
        cells = [f"{name} {_mean_std(g, name)}" for name in shown if g.get(f"{name}_mean")]
        failed = f"; {g['n_failed']} failed" if int(g["n_failed"]) else ""
        lines.append(f"  {g['group']}: {', '.join(cells) or 'no finished job'}{failed}")
    return lines


def _shown_metrics(columns: list[str], monitor: str | None) -> list[str]:
    """The monitor, its best and its test twin (val/acc: best/val/acc, test/acc), then the
    other accuracy-like test metrics, as far as the columns have them."""
    wanted = [monitor, f"best/{monitor}", f"test/{monitor.split('/', 1)[-1]}"] if monitor else []
    wanted += [c.removesuffix("_mean") for c in columns if c.startswith("test/") and "acc" in c]
    return [name for name in dict.fromkeys(wanted) if f"{name}_mean" in columns]


def _mean_std(group: dict[str, str], name: str) -> str:
    """``0.9125 ± 0.0132 (5)``, without ``± ...`` for a single value."""
    mean, std = float(group[f"{name}_mean"]), group[f"{name}_std"]
    spread = f" ± {float(std):.4g}" if std else ""
    return f"{mean:.4g}{spread} ({group['n']})"


def draw_comparison(sweep_dir: Path, job_dirs: list[Path], labels: list[str]) -> None:
    """``comparison.png``: each job's val curve of the monitored metric (the first job's
    ``trainer.monitor``), labelled by its overrides; nothing while no job has such a curve."""
    monitor, mode = _monitor(job_dirs[0])
    jobs = [
        (label, read_metrics_csv(RunDirectory(job).metrics_csv))
        for label, job in zip(labels, job_dirs, strict=True)
    ]
    if not monitor or not any(rows for _, rows in jobs):
        return
    from torchcamp.trainer.plots import draw_sweep_comparison  # matplotlib: only when drawing

    draw_sweep_comparison(jobs, monitor, sweep_dir / "comparison.png", mode)


def _job_dirs(sweep_dir: Path) -> list[Path]:
    jobs = [path for path in sweep_dir.iterdir() if RunDirectory(path).hydra_overrides.exists()]
    return sorted(jobs, key=lambda path: (len(path.name), path.name))


def _monitor(job_dir: Path) -> tuple[str | None, str]:
    """The job's ``trainer.monitor`` and ``trainer.monitor_mode``, from its config."""
    config = yaml.safe_load(RunDirectory(job_dir).hydra_config.read_text()) or {}
    trainer = config.get("trainer") or {}
    return trainer.get("monitor"), trainer.get("monitor_mode", "min")


def _overrides(job_dir: Path) -> list[str]:
    """The job's command-line overrides, as Hydra recorded them."""
    return yaml.safe_load(RunDirectory(job_dir).hydra_overrides.read_text()) or []


def _job_row(job_dir: Path) -> dict[str, Any]:
    row: dict[str, Any] = {
        "job": job_dir.name,
        "overrides": " ".join(_overrides(job_dir)),
        "status": RunStatus.UNFINISHED,
    }
    metrics_path = RunDirectory(job_dir).metrics_file
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        row |= {key: value for key, value in metrics.items() if not isinstance(value, (dict, list))}
    return row
