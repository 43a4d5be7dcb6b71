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
from test_pennfudan import FAST_DETECTOR

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("task", "model", "optimizer", "scheduler", "loss", "regularizer", "transforms", "device")
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]
# Options that must refuse this task at start, with the words their message must contain.
REFUSED = {
    ("optimizer", "sparse_adam"): "needs sparse gradients",
    ("loss", "none"): "loss=none gives none",  # for models that compute their own losses
}
# Options that need other keys to run here, in 4 optimizer steps as the rest.
# Character models read (indices, lengths) from a text task; DCGAN and the detectors need
# their own tasks (96 drawn faces; 11 of 16 drawn street scenes, the rest held out); the image
# folder's drawn shapes are 72 training images (24 of each of 3 classes).
DCGAN = ("task=dcgan", "data.batch_size=24")
DETECTION = ("task=pennfudan", "data.batch_size=3", *FAST_DETECTOR)
EXTRA = {
    **{("model", m): ("task=names",) for m in ("rnn_cell", "rnn", "gru", "lstm")},
    ("task", "dcgan"): DCGAN,
    ("task", "imagefolder"): ("data.batch_size=18", "data.image_size=64"),
    ("task", "hymenoptera"): ("data.image_size=64",),
    ("model", "dcgan"): DCGAN,
    ("task", "pennfudan"): DETECTION,
    ("model", "fasterrcnn_mobilenet_v3_large_320_fpn"): DETECTION,
    ("model", "fasterrcnn_resnet50_fpn"): DETECTION,
}
if not torch.cuda.is_available():
    REFUSED[("device", "cuda")] = "CUDA is not available"
    EXTRA[("device", "ddp")] = ("device.devices=2",)  # `all` counts GPUs


# Groups whose options do not meet the TensorBoard views and checkpoints: train them bare,
# which halves each run (the model and task options, which do meet them, keep them).
BARE = {"optimizer", "scheduler", "loss", "regularizer"}

# Options that need a fixture's override: model=custom names a module the test writes.
FIXTURE_EXTRA = {("model", "custom"): "custom_model"}


@pytest.mark.slow
@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_trains_a_few_steps(request, monkeypatch, tmp_path, capsys, group, option):
    fixture = FIXTURE_EXTRA.get((group, option))
    code, run_dir = train_in_process(
        monkeypatch,
        tmp_path,
        f"{group}={option}",
        *EXTRA.get((group, option), ()),
        *([request.getfixturevalue(fixture)] if fixture else []),
        "data.synthetic=true",
        "trainer.max_epochs=1",
        *(["callbacks=none"] if group in BARE else []),
    )
    if (group, option) in REFUSED:
        assert code == 2
        assert REFUSED[(group, option)] in capsys.readouterr().err
        return
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # 64 synthetic training images in batches of 16 (or as EXTRA says), split over DDP ranks.
    assert metrics["global_step"] == 4 // metrics["world_size"]
    assert all(v == v for v in metrics.values() if isinstance(v, float)), metrics  # no NaN
    config = (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert f"{group}={option}" in config
