"""Every option of every config group trains through the real entry point (``train``).

Parametrized over the YAML files in ``conf/``, so a new option is tested by adding its file.
Runs in-process (the same ``main`` the console script calls) to stay fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import train_in_process

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("task", "model", "optimizer", "scheduler", "loss", "regularizer", "device")
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]
# Options that must refuse this task at start, with the words their message must contain.
REFUSED = {("optimizer", "sparse_adam"): "needs sparse gradients"}
# Options that need another key to run here.
# Character models read (indices, lengths) from a text task.
EXTRA = {("model", m): ("task=names",) for m in ("rnn_cell", "rnn", "gru", "lstm")}
if not torch.cuda.is_available():
    REFUSED[("device", "cuda")] = "CUDA is not available"
    EXTRA[("device", "ddp")] = ("device.devices=2",)  # `all` counts GPUs


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_trains_a_few_steps(monkeypatch, tmp_path, capsys, group, option):
    code, run_dir = train_in_process(
        monkeypatch,
        tmp_path,
        f"{group}={option}",
        *EXTRA.get((group, option), ()),
        "data.synthetic=true",
        "trainer.max_epochs=1",
    )
    if (group, option) in REFUSED:
        assert code == 2
        assert REFUSED[(group, option)] in capsys.readouterr().err
        return
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # 64 synthetic training images in batches of 16, split over the DDP ranks if any.
    assert metrics["global_step"] == 4 // metrics["world_size"]
    assert all(v == v for v in metrics.values() if isinstance(v, float)), metrics  # no NaN
    config = (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert f"{group}={option}" in config
