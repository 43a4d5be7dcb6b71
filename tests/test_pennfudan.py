"""``task=pennfudan``: Faster R-CNN through the CLI on drawn street scenes (and the real
photos): summed losses, COCO mAP on the held-out split, drawn detections, clear refusals."""

from __future__ import annotations

import importlib.util
import json
import urllib.error

import pytest
import torch
import torchvision
from conftest import SHARED_DATA, train_in_process
from PIL import Image

from torchcamp.tasks import pennfudan
from torchcamp.tasks.models import fasterrcnn
from torchcamp.trainer.errors import UserError

# Small images, and fewer proposals and sampled boxes than torchvision's defaults (which size
# the box head's work for 800-px photos): a few seconds per run on a CPU.
FAST_DETECTOR = (
    "model.min_size=128",
    "model.max_size=192",
    "+model.box_batch_size_per_image=32",
    "+model.rpn_post_nms_top_n_train=100",
    "+model.rpn_post_nms_top_n_test=50",
    "+model.box_detections_per_img=20",
)
SMALL = ("task=pennfudan", *FAST_DETECTOR, "data.batch_size=4")


@pytest.mark.slow
def test_train_pennfudan_sums_the_losses_and_reports_map(monkeypatch, tmp_path):
    code, run_dir = train_in_process(
        monkeypatch, tmp_path, *SMALL, "data.synthetic=true", "trainer.max_epochs=1",
        "trainer.accumulate_grad_batches=2", "trainer.gradient_clip_val=10",
    )  # fmt: skip
    assert code == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    losses = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
    assert sum(metrics[f"train/{name}"] for name in losses) == pytest.approx(
        metrics["train/loss"], rel=1e-4
    )
    for name in ("map", "map_50", "map_75", "mar_100"):
        assert 0.0 <= metrics[f"val/{name}"] <= 1.0 or metrics[f"val/{name}"] == -1.0
    assert "best/val/map_50" in metrics  # the preset's monitor
    assert metrics["global_step"] == 2  # 11 of 16 drawn scenes, batches of 4, windows of 2
    with Image.open(run_dir / "val_detections" / "epoch_001.png") as grid:
        assert grid.size == (4 * 324 + 4, 248)  # four 240x320 panels, 4 px padding


@pytest.mark.slow
def test_detection_metrics_come_from_the_evaluator():
    evaluator = pennfudan.make_evaluator()
    box = torch.tensor([[10.0, 10.0, 50.0, 90.0]])
    target = {"boxes": box, "labels": torch.tensor([1])}
    perfect = {"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
    evaluator.update({"detections": [perfect], "targets": [target]})
    assert evaluator.compute()["map_50"] == pytest.approx(1.0)
    missed = {"boxes": box + 100, "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
    evaluator = pennfudan.make_evaluator()
    evaluator.update({"detections": [missed], "targets": [target]})
    assert evaluator.compute()["map_50"] == pytest.approx(0.0)


def test_the_box_predictor_fits_the_classes_and_options_reach_the_model():
    builder = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn
    model = fasterrcnn(builder, num_classes=2, min_size=200, max_size=300)
    assert model.roi_heads.box_predictor.cls_score.out_features == 2
    assert model.transform.min_size == (200,) and model.transform.max_size == 300


def test_offline_coco_weights_give_one_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    builder = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn
    with pytest.raises(UserError, match=r"weights COCO_V1: cannot download .*weights_path"):
        fasterrcnn(builder, num_classes=2, weights="COCO_V1")
    with pytest.raises(UserError, match=r"COCO_V9 is not a weights name .* for fasterrcnn"):
        fasterrcnn(builder, num_classes=2, weights="COCO_V9")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("loss=cross_entropy", "Faster R-CNN's own losses"),
        ("data.val_fraction=1.0", "data.val_fraction=1.0: use a fraction"),
    ],
)
def test_pennfudan_mistakes_are_one_line(monkeypatch, tmp_path, capsys, override, message):
    code, _ = train_in_process(monkeypatch, tmp_path, *SMALL, "data.synthetic=true", override)
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.slow
def test_a_missing_detection_extra_is_named_before_training(monkeypatch, tmp_path, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "pycocotools" else real_find_spec(name, *args),
    )
    code, run_dir = train_in_process(monkeypatch, tmp_path, *SMALL, "data.synthetic=true")
    assert code == 2
    assert "pip install 'torchcamp[detection]'" in capsys.readouterr().err
    assert not (run_dir / "checkpoints").exists()


@pytest.mark.slow
@pytest.mark.realdata
def test_pennfudan_short_run_on_the_real_photos(monkeypatch, tmp_path):
    if not (SHARED_DATA / "PennFudanPed").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    # A quarter of the photos for training (the rest held out) at low resolution: a smoke run
    # of the real files through training and COCO evaluation, not a result.
    code, run_dir = train_in_process(
        monkeypatch, tmp_path, *SMALL, f"data.root={SHARED_DATA}", "trainer.max_epochs=1",
        "data.val_fraction=0.75",
    )  # fmt: skip
    assert code == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 11  # 42 training photos in batches of 4
    assert 0.0 <= metrics["val/map_50"] <= 1.0


def test_weights_path_from_a_coco_sized_detector_keeps_a_fresh_head(tmp_path):
    from types import SimpleNamespace

    from torchcamp.trainer.app import builders

    builder = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn
    coco_like = fasterrcnn(builder, num_classes=91)  # the shape of the COCO checkpoints
    path = tmp_path / "coco_like.pth"
    torch.save(coco_like.state_dict(), path)
    node = {
        "_target_": "torchcamp.tasks.models.fasterrcnn",
        "_partial_": True,
        "builder": {"_target_": f"{builder.__module__}.{builder.__name__}", "_partial_": True},
        "weights_path": str(path),
    }
    two_classes = SimpleNamespace(classes=("background", "pedestrian"))
    model = builders.build_model(node, pennfudan.TASK, two_classes)
    assert model.roi_heads.box_predictor.cls_score.out_features == 2
    backbone = "backbone.body.0.0.weight"
    assert torch.equal(model.state_dict()[backbone], coco_like.state_dict()[backbone])


@pytest.mark.slow
def test_pennfudan_under_ddp_gathers_every_ranks_detections(run_cli):
    result = run_cli(
        *SMALL, "data.synthetic=true", "data.batch_size=2", "device=ddp", "device.devices=2",
        "device.accelerator=cpu", "trainer.max_epochs=1",
    )  # fmt: skip
    assert result.metrics["world_size"] == 2
    assert result.metrics["global_step"] == 3  # 11 training scenes over 2 ranks, batches of 2
    assert "val/map_50" in result.metrics
