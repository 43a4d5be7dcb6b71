"""Seed spread: the same recipe over 5 seeds on the real data, mean ± std of val and test accuracy.

    python benchmarks/seed_spread.py                                    # --data /work/shared/data
    python benchmarks/seed_spread.py --seeds 1,2,3 --hymenoptera-epochs 2 --image-size 112

Runs, each as one ``train -m`` sweep in a subprocess (the real CLI, as a user types it):
``train -m task=rmb data.root=DATA seed=1,2,3,4,5`` (the course's recipe: LeNet, 10 epochs,
32 px) and ``train -m task=hymenoptera data.root=DATA seed=1,2,3,4,5 trainer.max_epochs=3``
(ResNet18 from scratch, a short recipe: 3 of the course's 25 epochs, 224 px unless
``--image-size``). The seed changes the weights' initialisation, the shuffle order and the
augmentation; the split stays (rmb: ``RMB_data_split.csv``; hymenoptera: its train/val folders).
The table comes from each sweep's ``summary_grouped.csv`` (mean, sample std, n) and, for the
min–max columns, its ``summary.csv``: val acc is the last epoch's, test acc is scored with the
best epoch's weights (``best.pt`` by ``val/acc``); hymenoptera has no test split.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def recipes(args: argparse.Namespace) -> list[tuple[str, str, list[str]]]:
    """(task, recipe in words, the sweep's overrides) for each sweep."""
    size = [f"data.image_size={args.image_size}"] if args.image_size else []
    hymenoptera = f"ResNet18 from scratch, {args.hymenoptera_epochs} epochs, "
    hymenoptera += f"{args.image_size or 224} px"
    return [
        ("rmb", "LeNet, the course's 10 epochs, 32 px", []),
        (
            "hymenoptera",
            hymenoptera,
            [f"trainer.max_epochs={args.hymenoptera_epochs}", *size],
        ),
    ]


def run_sweep(task: str, overrides: list[str], data: Path, seeds: str, sweep_dir: Path) -> float:
    """``train -m task=TASK data.root=DATA seed=SEEDS OVERRIDES`` into ``sweep_dir``; returns
    its wall seconds. A failed job (exit 4) still leaves its summaries; other errors stop."""
    args = ["-m", f"task={task}", f"data.root={data.resolve()}", f"seed={seeds}", *overrides]
    print(f"train {' '.join(args)}", flush=True)
    command = [sys.executable, "-m", "torchcamp.trainer.app.cli", *args]
    command += ["trainer.progress=false", f"hydra.sweep.dir={sweep_dir}"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=sweep_dir.parent, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 4):
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return wall


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def mean_std(group: dict[str, str], metric: str) -> str:
    """``0.912 ± 0.013`` (``–`` when no job has the metric)."""
    mean, std = group.get(f"{metric}_mean"), group.get(f"{metric}_std")
    if not mean:
        return "–"
    return f"{float(mean):.3f}" + (f" ± {float(std):.3f}" if std else "")


def min_max(jobs: list[dict[str, str]], metric: str) -> str:
    values = [float(job[metric]) for job in jobs if job.get(metric)]
    return f"{min(values):.3f}–{max(values):.3f}" if values else "–"


def table_row(task: str, recipe: str, sweep_dir: Path, wall: float) -> str:
    """The markdown row of one sweep (all its jobs one group: they differ only in seed)."""
    (group,) = read_csv(sweep_dir / "summary_grouped.csv")
    jobs = read_csv(sweep_dir / "summary.csv")
    n = group["n"] + (f" ({group['n_failed']} failed)" if group["n_failed"] != "0" else "")
    cells = [
        f"`{task}`",
        recipe,
        n,
        mean_std(group, "val/acc"),
        min_max(jobs, "val/acc"),
        mean_std(group, "test/acc"),
        min_max(jobs, "test/acc"),
        f"{wall:.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--seeds", default="1,2,3,4,5", help="the sweep's seed=... values")
    parser.add_argument("--hymenoptera-epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=None, help="hymenoptera's (224)")
    parser.add_argument("--out", type=Path, default=None, help="keep the sweeps here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        out = (args.out or Path(temporary)).resolve()
        out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        rows = []
        for task, recipe, overrides in recipes(args):
            sweep_dir = out / task
            wall = run_sweep(task, overrides, args.data, args.seeds, sweep_dir)
            rows.append(table_row(task, recipe, sweep_dir, wall))
        total = time.perf_counter() - started
    print(f"\nseeds {args.seeds}, 2 sweeps, {total:.0f} s in all\n")
    print(
        "| task | recipe | n | val acc mean ± std | val acc min–max | test acc mean ± std "
        "| test acc min–max | sweep s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
