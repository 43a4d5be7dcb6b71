"""task=hymenoptera: the ImageFolder layout, ResNet18 and its weights, the finetune presets."""

from __future__ import annotations

import shutil
import urllib.error
from types import SimpleNamespace

import pytest
import torch
import torchvision
from conftest import preset_datasets
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from PIL import Image

from torchcamp.datasets.errors import DataError
from torchcamp.datasets.hymenoptera import render_synthetic_hymenoptera
from torchcamp.tasks import hymenoptera
from torchcamp.tasks.models import LeNet, resnet18
from torchcamp.trainer.app import builders
from torchcamp.trainer.checkpoint import load_weights, read_weights
from torchcamp.trainer.errors import UserError

SMALL = (
    "task=hymenoptera",
    "data.synthetic=true",
    "data.image_size=64",
    "trainer.max_epochs=1",
)


def test_layout_reads_any_image_format_as_rgb(tmp_path):
    render_synthetic_hymenoptera(tmp_path, seed=0, per_class=4)
    datasets = preset_datasets("hymenoptera", tmp_path, "data.image_size=64")
    assert set(datasets) == {"train", "val"}  # the tutorial's train/ and val/ folders
    assert datasets["train"].classes == ("ants", "bees")
    assert [len(datasets[name]) for name in ("train", "val")] == [4 + 1 + 4, 2 + 2]  # + the GIF
    train = datasets["train"].samples
    suffixes = {path.suffix for path, _ in train}
    assert suffixes == {".jpg", ".gif"}  # the palette GIF is read, as in the real set
    gif_index = next(i for i, (p, _) in enumerate(train) if p.suffix == ".gif")
    assert Image.open(train[gif_index][0]).mode == "P"
    image, label = datasets["train"][gif_index]
    assert image.shape == (3, 64, 64) and label == 0
    assert datasets["val"][0][0].shape == (3, 64, 64)


def test_missing_data_names_the_path_and_the_source(tmp_path):
    with pytest.raises(
        DataError, match=r"no hymenoptera_data/ in data\.root=.*hymenoptera_data\.zip"
    ):
        preset_datasets("hymenoptera", tmp_path)
    render_synthetic_hymenoptera(tmp_path, seed=0, per_class=4)
    shutil.rmtree(tmp_path / "hymenoptera_data" / "val")
    with pytest.raises(DataError, match=r"hymenoptera_data/train needs one validation folder"):
        preset_datasets("hymenoptera", tmp_path)


@pytest.mark.slow
def test_cli_trains_resnet18_and_lenet_on_hymenoptera(run_in_process):
    metrics = run_in_process(*SMALL).metrics
    assert {"val/acc", "val/macro_acc"} <= set(metrics) and metrics["global_step"] == 4
    metrics = run_in_process(*SMALL, "model=lenet").metrics  # a 32x32 model at another size
    assert metrics["global_step"] == 4


@pytest.mark.slow
def test_cli_trains_resnet18_on_rmb(run_in_process):
    metrics = run_in_process(
        "task=rmb", "model=resnet18", "data.synthetic=true", "trainer.max_epochs=1"
    ).metrics
    assert metrics["global_step"] == 4


def test_weights_path_loads_a_state_dict_with_another_head(tmp_path):
    imagenet_shaped = torchvision.models.resnet18(weights=None)  # 1000-class head
    for legacy in (False, True):  # the course's resnet18-5c106cde.pth is the legacy format
        path = tmp_path / f"resnet18_{legacy}.pth"
        torch.save(imagenet_shaped.state_dict(), path, _use_new_zipfile_serialization=not legacy)
        model = resnet18(num_classes=2)
        fresh_head = model.fc.weight.detach().clone()
        load_weights(model, read_weights(path), str(path), fresh_head=True)
        torch.testing.assert_close(model.conv1.weight, imagenet_shaped.conv1.weight)
        assert torch.equal(model.fc.weight, fresh_head)  # 1000 -> 2: the head keeps its init


def test_weights_path_that_does_not_fit_is_one_clear_error(tmp_path):
    path = tmp_path / "lenet.pth"
    torch.save(LeNet(num_classes=2).state_dict(), path)
    with pytest.raises(UserError, match=r"does not fit ResNet.*conv1\.weight"):
        load_weights(resnet18(num_classes=2), read_weights(path), str(path), fresh_head=True)
    with pytest.raises(UserError, match="no such file"):
        read_weights(tmp_path / "absent.pth")


@pytest.mark.slow
def test_weights_path_through_the_cli(tmp_path, run_in_process):
    path = tmp_path / "start.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    result = run_in_process(*SMALL, f"model.weights_path={path}")
    assert "loaded model weights from" in (result.run_dir / "train.log").read_text()


def test_offline_imagenet_weights_give_one_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline, raising=False)
    with pytest.raises(UserError, match=r"IMAGENET1K_V1: cannot download .*model\.weights_path"):
        resnet18(num_classes=2, weights="IMAGENET1K_V1")
    with pytest.raises(UserError, match=r"IMAGENET_v9 is not a weights name .* for resnet18"):
        resnet18(num_classes=2, weights="IMAGENET_v9")


def build_preset(preset: str):
    with initialize_config_module(config_module="torchcamp.conf", version_base="1.3"):
        cfg = compose("config", [f"finetune={preset}", "task=hymenoptera", "model.weights=null"])
    node = OmegaConf.to_container(cfg.model, resolve=True)
    two_classes = SimpleNamespace(classes=("ants", "bees"))
    model = builders.build_model(node, hymenoptera.TASK, two_classes)
    return model, builders.build_optimizer(
        OmegaConf.to_container(cfg.optimizer, resolve=True), model
    )


def test_frozen_preset_trains_only_the_head():
    model, optimizer = build_preset("frozen")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 2


def test_backbone_lr_preset_gives_the_backbone_a_tenth_of_the_lr():
    model, optimizer = build_preset("backbone_lr")
    lrs = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for param in group["params"]:
            lrs[names[id(param)]] = group["lr"]
    assert lrs["fc.weight"] == pytest.approx(0.001) and lrs["fc.bias"] == pytest.approx(0.001)
    assert lrs["conv1.weight"] == pytest.approx(0.0001)
    assert lrs["layer4.1.bn2.bias"] == pytest.approx(0.0001)
    assert len(lrs) == len(list(model.parameters()))


def test_full_preset_asks_for_imagenet_weights():
    with initialize_config_module(config_module="torchcamp.conf", version_base="1.3"):
        cfg = compose("config", ["finetune=full", "task=hymenoptera"])
    assert cfg.model.weights == "IMAGENET1K_V1" and cfg.model.freeze == []


def test_the_course_recipe_is_the_preset():
    with initialize_config_module(config_module="torchcamp.conf", version_base="1.3"):
        cfg = compose("config", ["task=hymenoptera"])
    assert cfg.optimizer.lr == 0.001 and cfg.optimizer.momentum == 0.9
    assert cfg.scheduler.step_size == 7 and cfg.scheduler.gamma == 0.1
    assert cfg.data.batch_size == 16 and cfg.trainer.max_epochs == 25
    with initialize_config_module(config_module="torchcamp.conf", version_base="1.3"):
        cfg = compose("config", ["task=hymenoptera", "scheduler=cosine"])
    assert "step_size" not in cfg.scheduler  # another scheduler gets none of step's keys
