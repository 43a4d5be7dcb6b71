"""The docs' "Your own task" example, copied out of docs/extending/task.md into a folder
outside the repository and run as a user runs it: ``train --help`` and ``train`` through the
installed console script, then a resume, evaluate and predict."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import train_in_process

from torchcamp.trainer.app import cli
from torchcamp.trainer.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's console scripts: train, evaluate, predict


def readme_files() -> dict[str, str]:
    """The page's code blocks whose info string names a file: ```python file=regression.py"""
    page = (REPO / "docs" / "extending" / "task.md").read_text()
    blocks = re.findall(r"```\w+ file=(\S+)\n(.*?)```", page, flags=re.DOTALL)
    return dict(blocks)


def write_houses(path: Path, rows: int = 120) -> None:
    rng = random.Random(0)
    lines = ["rooms,age,price"]
    for _ in range(rows):
        rooms, age = rng.uniform(1, 6), rng.uniform(0, 50)
        lines.append(f"{rooms:.3f},{age:.3f},{3 * rooms - 0.05 * age + rng.gauss(0, 0.1):.3f}")
    path.write_text("\n".join(lines) + "\n")


def run(folder: Path, command: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHCAMP_DATA", "PYTHONPATH")}
    completed = subprocess.run(
        [str(BIN / command), *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, f"{command} {args}: {completed.stderr[-2000:]}"
    return completed


@pytest.mark.slow
def test_the_readme_example_trains_evaluates_predicts_and_resumes(tmp_path, monkeypatch, capsys):
    files = readme_files()
    assert set(files) == {"regression.py", "configs/task/regression.yaml"}
    assert REPO not in tmp_path.parents
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    write_houses(tmp_path / "houses.csv")
    own = ["--config-dir", "configs", "task=regression", "trainer.progress=false"]
    help_text = run(tmp_path, "train", "--config-dir", "configs", "task=regression", "--help")
    assert "regression" in next(x for x in help_text.stdout.splitlines() if x.startswith("task:"))
    assert "module: regression" in help_text.stdout  # the config it composes, the user's own

    # The console script, as typed; the commands after it run in this process (the same
    # main functions the console scripts call), which saves starting torch three more times.
    run(tmp_path, "train", *own, "trainer.max_epochs=2", "hydra.run.dir=first")
    first = json.loads((tmp_path / "first" / "metrics.json").read_text())
    assert first["status"] == "completed" and first["epoch"] == 2
    assert {"train/loss", "train/mae", "val/loss", "val/mae"} <= set(first)
    last = tmp_path / "first" / "checkpoints" / "last.pt"
    assert load_checkpoint(last)["meta"]["data"] == {"features": ["rooms", "age"]}

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the commands put the cwd first
    monkeypatch.delitem(sys.modules, "regression", raising=False)

    def command(main, *args: str) -> str:
        monkeypatch.setattr(sys, "argv", [main.__name__, *args])
        main()
        return capsys.readouterr().out

    # A resume from the first run's last.pt continues it to epoch 4, in its own directory.
    resume = [f"resume={last}", "trainer.max_epochs=4", "hydra.run.dir=second"]
    command(cli.main, *own, *resume)
    resumed = json.loads((tmp_path / "second" / "metrics.json").read_text())
    assert resumed["status"] == "resumed" and resumed["epoch"] == 4
    assert resumed["global_step"] == 2 * first["global_step"]

    best = tmp_path / "first" / "checkpoints" / "best.pt"
    evaluated = json.loads(command(cli.evaluate_main, f"ckpt={best}", "output_dir=eval"))
    assert evaluated["status"] == "evaluated" and evaluated["val/mae"] > 0

    (tmp_path / "new.csv").write_text("rooms,age\n3,10\n5,40\n")
    predicted = command(cli.predict_main, f"ckpt={best}", "inputs=new.csv").splitlines()
    records = [json.loads(line) for line in predicted]
    assert [r["features"] for r in records] == [[3.0, 10.0], [5.0, 40.0]]
    assert all(isinstance(r["prediction"], float) for r in records)

    # The run copied to another folder, used from a third one where regression.py is not:
    # the checkpoint says where the run imported it from, and it is imported from there.
    archive, elsewhere = tmp_path.parent / f"{tmp_path.name}-archive", tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "first", archive / "first")
    original = {p: p.read_bytes() for p in (tmp_path / "first").rglob("*") if p.is_file()}
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in (str(tmp_path), "")])
    monkeypatch.delitem(sys.modules, "regression")
    moved = archive / "first" / "checkpoints"
    data = f"data.root={tmp_path / 'houses.csv'}"
    evaluated = json.loads(command(cli.evaluate_main, f"ckpt={moved / 'best.pt'}", data))
    assert evaluated["status"] == "evaluated" and evaluated["checkpoint"].startswith(str(archive))
    (elsewhere / "new.csv").write_text("rooms,age\n3,10\n")
    predicted = command(cli.predict_main, f"ckpt={moved / 'best.pt'}", "inputs=new.csv")
    assert json.loads(predicted)["prediction"] == records[0]["prediction"]
    # ... and continues there, in its new folder (the copy left where it was untouched).
    continued = [f"resume={moved / 'last.pt'}", f"hydra.run.dir={archive / 'first'}"]
    command(cli.main, "--config-dir", str(tmp_path / "configs"), *own[2:], *continued, data,
            "trainer.max_epochs=5")  # fmt: skip
    resumed = json.loads((archive / "first" / "metrics.json").read_text())
    assert resumed["status"] == "resumed" and resumed["epoch"] == 5
    assert {p: p.read_bytes() for p in (tmp_path / "first").rglob("*") if p.is_file()} == original


TINY_TASK = """
import torch
from torch import nn
from torch.utils.data import TensorDataset

from torchcamp.tasks import Task


def build_datasets(root, *, seed, augment=True, skip_corrupt=False, empty="val"):
    x = torch.randn(16, 3)
    sizes = {"train": 12, "val": 4, empty: 0}
    return {name: TensorDataset(x[:n], x[:n, 0]) for name, n in sizes.items()}


def step(model, batch, loss_fn):
    x, y = batch
    return {"loss": loss_fn(model(x).squeeze(1), y)}


TASK = Task(build_datasets=build_datasets, build_model=lambda factory, train: factory(), step=step)
"""
TINY_CONFIG = """# @package _global_
defaults:
  - override /model: custom
  - override /loss: mse
task: {name: tiny, module: tiny}
model: {_target_: torch.nn.Linear, in_features: 3, out_features: 1}
data: {empty: val, batch_size: 4}
"""


@pytest.mark.slow
def test_an_empty_split_of_a_users_task_is_left_out_and_an_empty_train_split_refused(
    tmp_path, monkeypatch, capsys
):
    (tmp_path / "tiny.py").write_text(TINY_TASK)
    (tmp_path / "configs" / "task").mkdir(parents=True)
    (tmp_path / "configs" / "task" / "tiny.yaml").write_text(TINY_CONFIG)
    monkeypatch.delitem(sys.modules, "tiny", raising=False)
    own = ("--config-dir", "configs", "task=tiny", "trainer.max_epochs=1", "trainer.monitor=null")
    code, run_dir = train_in_process(monkeypatch, tmp_path, *own, run_name="empty_val")
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "train/loss" in metrics and not any(key.startswith("val/") for key in metrics)
    assert "the val split is empty" in (run_dir / "train.log").read_text()

    code, _ = train_in_process(monkeypatch, tmp_path, *own, "data.empty=train", run_name="e")
    err = capsys.readouterr().err
    assert code == 2 and "gave no training samples" in err and "Traceback" not in err


COUNTING_TASK = """
import torch
from torch.utils.data import TensorDataset

from torchcamp.tasks import Task
from torchcamp.trainer.metrics import Counts


def build_datasets(root, *, seed, augment=True, skip_corrupt=False):
    x = torch.linspace(-1, 1, 16).unsqueeze(1)
    return {"train": TensorDataset(x, x[:, 0]), "val": TensorDataset(x[:8], x[:8, 0])}


def step(model, batch, loss_fn):
    x, y = batch
    out = model(x).squeeze(1)
    # How often the prediction has the target's sign: a 2 x 2 table, counted over the epoch.
    cells = (y > 0).long() * 2 + (out > 0).long()
    return {"loss": loss_fn(out, y), "signs": Counts(cells, (2, 2))}


def summarize(counts):
    signs = counts["signs"].double()
    return {"sign_agreement": (signs.trace() / signs.sum()).item(), "samples": signs.sum().item()}


TASK = Task(
    build_datasets=build_datasets,
    build_model=lambda factory, train: factory(),
    step=step,
    summarize=summarize,
)
"""
COUNTING_CONFIG = """# @package _global_
defaults:
  - override /model: custom
  - override /loss: mse
task: {name: counting, module: counting}
model: {_target_: torch.nn.Linear, in_features: 1, out_features: 1}
data: {batch_size: 4}
"""


def test_a_users_task_counts_a_table_over_the_epoch_with_counts(tmp_path, monkeypatch, capsys):
    """The step contract's Counts, from a task written outside the repository: the cells of
    every step are counted into the epoch's table and handed to the task's summarize."""
    (tmp_path / "counting.py").write_text(COUNTING_TASK)
    (tmp_path / "configs" / "task").mkdir(parents=True)
    (tmp_path / "configs" / "task" / "counting.yaml").write_text(COUNTING_CONFIG)
    monkeypatch.delitem(sys.modules, "counting", raising=False)
    own = ("--config-dir", "configs", "task=counting", "trainer.max_epochs=2")
    code, run_dir = train_in_process(monkeypatch, tmp_path, *own, "trainer.monitor=val/loss")
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train/samples"] == 16 and metrics["val/samples"] == 8  # every sample once
    assert 0 <= metrics["val/sign_agreement"] <= 1
