"""Every option of every config group (conf/) composes, validates and builds its object; task
presets, the user-facing keys and their defaults. Invalid values: test_validation.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from PIL import Image

from torchcamp.tasks import dcgan, names, pennfudan, rmb
from torchcamp.tasks.models import LeNet
from torchcamp.trainer.app import builders
from torchcamp.trainer.app.data import build_transforms
from torchcamp.trainer.app.validation import validate
from torchcamp.trainer.errors import UserError

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = (
    "task",
    "model",
    "optimizer",
    "scheduler",
    "loss",
    "regularizer",
    "transforms",
    "device",
    "finetune",
)
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]


def compose_with(*overrides: str):
    with initialize_config_module(config_module="torchcamp.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=False)


def test_every_group_has_options():
    for group in GROUPS:
        assert any(g == group for g, _ in OPTIONS), f"conf/{group}/ has no options"


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_builds(request, monkeypatch, group, option):
    extra = []
    if (group, option) == ("model", "custom"):  # the user names their own model
        extra.append(request.getfixturevalue("custom_model"))
        monkeypatch.syspath_prepend(Path.cwd())  # as the CLI puts the working directory
    cfg = compose_with(f"{group}={option}", *extra)
    validate(cfg)
    # `finetune` options write into other groups (@package _global_): no node of their own.
    node = OmegaConf.to_container(cfg[group], resolve=True) if cfg.get(group) is not None else None
    two_classes = SimpleNamespace(classes=("1", "100"))
    model = rmb.TASK.build_model(LeNet, two_classes)
    if group == "model" and node["_target_"].startswith("torchcamp.tasks.models.recurrent."):
        # Character models: sized by a text task's vocabulary, fed (indices, lengths).
        text = SimpleNamespace(classes=("a", "b"), vocab=range(10))
        model = builders.build_model(node, names.TASK, text)
        assert model(torch.tensor([[2, 3, 4]]), torch.tensor([3])).shape == (1, 2)
    elif group == "model" and option == "dcgan":
        gan = builders.build_model(node, dcgan.TASK, SimpleNamespace())
        assert gan.generator(torch.randn(2, 100, 1, 1)).shape == (2, 3, 64, 64)
    elif group == "model" and option.startswith("fasterrcnn"):
        node |= {"min_size": 64, "max_size": 96}  # the shape is what matters here
        two_labels = SimpleNamespace(classes=("bg", "ped"))
        detector = builders.build_model(node, pennfudan.TASK, two_labels)
        assert set(detector.eval()([torch.rand(3, 80, 90)])[0]) == {"boxes", "labels", "scores"}
    elif group == "model":
        model = builders.build_model(node, rmb.TASK, two_classes).eval()  # BatchNorm: batch of 1
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 2)
        if option == "custom":
            assert type(model).__name__ == "TinyNet"
    elif group == "transforms":
        # The option's file is what was picked, whatever the task preset's default.
        chosen = OmegaConf.to_container(cfg.transforms, resolve=False)
        assert chosen == OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml"))
        size = cfg.data.image_size
        built = build_transforms(node)
        assert set(built) == {"train", "eval"}
        photo = Image.new("RGB", (50, 40), (200, 100, 0))
        for transform in built.values():
            image = transform(photo)
            assert image.shape == (3, size, size) and image.dtype == torch.float32
    elif group == "optimizer" and option != "sparse_adam":  # sparse_adam: see test_catalogue
        assert isinstance(builders.build_optimizer(node, model), torch.optim.Optimizer)
    elif group == "scheduler":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler, interval = builders.build_scheduler(node, optimizer, 10, 3)
        assert interval in ("epoch", "step")
        assert (scheduler is None) == (option == "none")
    elif group == "loss" and option == "none":  # for models with their own losses
        with pytest.raises(UserError, match="loss=none gives none"):
            builders.build_loss(node, option, rmb.TASK, num_classes=2)
    elif group == "loss":
        loss_fn = builders.build_loss(node, option, rmb.TASK, num_classes=2)
        loss = loss_fn(torch.randn(4, 2), torch.tensor([0, 1, 1, 0]))
        assert loss.ndim == 0 and torch.isfinite(loss)
    elif group == "regularizer":
        regularizer = builders.build_regularizer(node)
        assert (regularizer is None) == (option == "none")
    elif group == "task":
        assert cfg.task.name == option
    elif group == "finetune":
        assert cfg.model.weights == "IMAGENET1K_V1"


def test_empty_options_compose_to_nothing():
    cfg = compose_with("scheduler=none", "regularizer=none")
    assert not cfg.scheduler and not cfg.regularizer


def test_task_preset_sets_course_defaults_but_command_line_wins():
    cfg = compose_with("task=rmb")
    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert cfg.optimizer.lr == 0.01 and cfg.optimizer.momentum == 0.9
    assert cfg.scheduler.step_size == 10 and cfg.data.batch_size == 16
    cfg = compose_with("task=rmb", "optimizer=adam", "optimizer.lr=0.003", "scheduler=none")
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.lr == 0.003
    assert "momentum" not in cfg.optimizer and not cfg.scheduler


def test_user_facing_keys_exist():
    cfg = compose_with()
    keys = (
        "trainer.max_epochs trainer.precision trainer.accumulate_grad_batches "
        "trainer.gradient_clip_val trainer.log_every_n_steps trainer.monitor "
        "trainer.monitor_mode data.root data.batch_size data.num_workers data.synthetic "
        "seed resume"
    )
    for key in keys.split():
        assert OmegaConf.select(cfg, key, default="<absent>") != "<absent>", key


def test_data_root_follows_environment(monkeypatch):
    monkeypatch.setenv("TORCHCAMP_DATA", "/somewhere/data")
    assert compose_with().data.root == "/somewhere/data"
    monkeypatch.delenv("TORCHCAMP_DATA")
    assert compose_with().data.root == "data"
