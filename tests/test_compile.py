"""``trainer.compile`` through the commands, for a classifier, ``names`` and ``dcgan``: training
with validation, resuming, and ``evaluate``/``predict`` from the compiled run's checkpoint.

Compiled with torch.compile's eager backend: the run goes through TorchDynamo and the compiled
module's wrapper (where ``model or self.model`` asked the module for its truth value and
crashed) without Inductor generating C++ for every test, which takes about 50 s on 2 cores
for LeNet (``trainer.compile=true`` is measured in the README, not here).
"""

from __future__ import annotations

import json
import sys

import pytest
from conftest import train_in_process

COMPILED = "trainer.compile={backend:eager}"
TASKS = {
    "rmb": ("task=rmb", "data.batch_size=32"),
    # One-cycle's length is fixed by max_epochs, and this test resumes into a longer run.
    "names": ("task=names", "data.batch_size=64", "scheduler=none"),
    "dcgan": ("task=dcgan", "model.ngf=8", "model.ndf=8", "data.batch_size=32"),
}


def command(monkeypatch, capsys, entry: str, *args: str) -> tuple[int, str, str]:
    """``evaluate``/``predict`` in this process, as the console script runs it."""
    from torchcamp.trainer.app import cli

    monkeypatch.setattr(sys, "argv", [entry, *args])
    try:
        getattr(cli, f"{entry}_main")()
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_a_compiled_run_validates_resumes_evaluates_and_predicts(
    task, monkeypatch, capsys, tmp_path
):
    common = (*TASKS[task], "data.synthetic=true", COMPILED)
    first = tmp_path / "first"
    first.mkdir()
    code, run_dir = train_in_process(monkeypatch, first, *common, "trainer.max_epochs=1")
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if task != "dcgan":  # dcgan has no held-out data
        assert "val/loss" in metrics and "test/acc" in metrics

    last = run_dir / "checkpoints" / "last.pt"
    second = tmp_path / "second"
    second.mkdir()
    code, resumed_dir = train_in_process(
        monkeypatch, second, *common, "trainer.max_epochs=2", f"resume={last}"
    )
    assert code == 0, capsys.readouterr().err
    resumed = json.loads((resumed_dir / "metrics.json").read_text())
    assert resumed["status"] == "resumed" and resumed["epoch"] == 2

    best = run_dir / "checkpoints" / "best.pt"  # the continued run's, in its own directory
    if task != "dcgan":
        data = ("data.synthetic=false", f"data.root={run_dir / 'synthetic_data'}")
        code, out, err = command(monkeypatch, capsys, "evaluate", f"ckpt={best}", *data)
        assert code == 0, err
        evaluated = json.loads(out[out.index("{") : out.rindex("}") + 1])
        assert evaluated["test/loss"] == pytest.approx(resumed["test/loss"], abs=1e-6)

    if task == "rmb":
        inputs = f"inputs={next((run_dir / 'synthetic_data').rglob('*.jpg'))}"
    else:
        inputs = {"names": "inputs=[Nakamura,Smith]", "dcgan": "predict.num_images=4"}[task]
    out_dir = f"predict.output_dir={tmp_path / 'predicted'}"
    code, out, err = command(monkeypatch, capsys, "predict", f"ckpt={best}", inputs, out_dir)
    assert code == 0, err
    printed = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(printed) == {"rmb": 1, "names": 2, "dcgan": 4 + 1}[task]  # dcgan: + grid.png
