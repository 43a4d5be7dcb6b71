"""``export-model`` through the Task contract: a user's own task, in a folder outside the
repository, declares what its model reads (``export_inputs``) and is exported and checked as
the course's tasks are; a task that declares nothing is refused in one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import train_in_process
from test_export import run_export

REPO = Path(__file__).resolve().parents[1]

LINES_PY = '''
"""Which side of a plane three features lie on (a task of a user's own)."""

import torch
from torch import nn
from torch.utils.data import TensorDataset

from torchcamp.tasks import ModelInputs, Task


def build_datasets(root, *, seed, augment=True, skip_corrupt=False):
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(seed))
    y = (x @ torch.tensor([1.0, -2.0, 0.5]) > 0).long()
    return {"train": TensorDataset(x[:48], y[:48]), "val": TensorDataset(x[48:], y[48:])}


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 2)

    def forward(self, features):
        return self.layer(features)  # a score per class, as export-model checks it


def build_model(model_factory, train_set):
    return model_factory()


def step(model, batch, loss_fn):
    features, target = batch
    return {"loss": loss_fn(model(features), target)}


def export_inputs(options):
    return ModelInputs(
        names=("features",),
        dynamic=({0: "batch"},),
        random_items=lambda n: [(torch.randn(3), 0) for _ in range(n)],
        describe=lambda example: {"features": ["a", "b", "c"]},
    )


TASK = Task(build_datasets=build_datasets, build_model=build_model, step=step%s)
'''

LINES_YAML = """# @package _global_
defaults:
  - override /model: custom
  - override /loss: cross_entropy
  - override /optimizer: adam
task:
  name: lines
  module: lines
model:
  _target_: lines.Linear
data:
  root: .
"""


def train_own_task(monkeypatch, folder: Path, exportable: bool) -> Path:
    """Train the task written into ``folder`` for one epoch; its best.pt."""
    assert REPO not in folder.parents
    (folder / "lines.py").write_text(LINES_PY % (", export_inputs=export_inputs" * exportable))
    (folder / "configs" / "task").mkdir(parents=True)
    (folder / "configs" / "task" / "lines.yaml").write_text(LINES_YAML)
    monkeypatch.delitem(sys.modules, "lines", raising=False)
    own = (
        "--config-dir",
        "configs",
        "task=lines",
        "trainer.max_epochs=1",
        "callbacks=[checkpoint]",
    )
    code, run_dir = train_in_process(monkeypatch, folder, *own)
    assert code == 0
    return run_dir / "checkpoints" / "best.pt"


def test_a_users_own_task_that_declares_its_inputs_is_exported(tmp_path, monkeypatch, capsys):
    best = train_own_task(monkeypatch, tmp_path, exportable=True)
    capsys.readouterr()
    output = tmp_path / "lines.pt2"
    code, out, err = run_export(
        monkeypatch, capsys, f"ckpt={best}", "format=exported_program", f"output={output}"
    )
    assert code == 0, err
    assert out.startswith(f"exported {output} (format=exported_program)")
    described = json.loads(output.with_name("lines.pt2.json").read_text())
    assert described["task"] == "lines"
    assert described["inputs"] == [{"name": "features", "shape": ["batch", 3], "dtype": "float32"}]
    assert described["features"] == ["a", "b", "c"]  # what the task says about its inputs
    assert "preprocessing" not in described  # no transforms group
    assert described["verification"]["verified"] is True
    assert described["verification"]["inputs"] == "the run's val, train data (data.root=.)"


def test_a_task_that_declares_nothing_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    best = train_own_task(monkeypatch, tmp_path, exportable=False)
    capsys.readouterr()
    code, _, err = run_export(monkeypatch, capsys, f"ckpt={best}", "format=torchscript")
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and "Traceback" not in err
    assert errors == [
        "error: task=lines is not supported by export-model, which exports the image "
        "classifiers (task=imagefolder, rmb, hymenoptera) and task=names"
    ]
