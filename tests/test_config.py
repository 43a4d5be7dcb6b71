"""Every option of every config group composes, validates and builds its object."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import OmegaConf

from torchcamp.trainer.config import validate

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("task", "model", "optimizer", "scheduler", "loss", "regularizer", "device")
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]


def compose_with(*overrides: str):
    with initialize_config_module(config_module="torchcamp.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=False)


def test_every_group_has_options():
    for group in GROUPS:
        assert any(g == group for g, _ in OPTIONS), f"conf/{group}/ has no options"


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_builds(group, option):
    cfg = compose_with(f"{group}={option}")
    validate(cfg)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    node = OmegaConf.to_container(cfg[group]) if cfg[group] is not None else None
    if group == "optimizer":
        optimizer = instantiate(cfg.optimizer)(params=model.parameters())
        assert isinstance(optimizer, torch.optim.Optimizer)
    elif group == "scheduler" and node:
        node.pop("interval", None)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = instantiate(node)(optimizer)
        assert hasattr(scheduler, "step")
    elif group == "loss":
        loss = instantiate(cfg.loss)(torch.randn(2, 3), torch.tensor([0, 2]))
        assert loss.ndim == 0
    elif group == "regularizer" and node:
        penalty = instantiate(cfg.regularizer)(model)
        assert penalty.item() > 0
    elif group == "model":
        net = instantiate(cfg.model)(num_classes=2)
        assert net(torch.randn(1, 3, 32, 32)).shape == (1, 2)
    elif group == "task":
        assert cfg.task.name == option


def test_empty_options_compose_to_nothing():
    cfg = compose_with("scheduler=none", "regularizer=none")
    assert not cfg.scheduler and not cfg.regularizer


def test_task_preset_sets_course_defaults_but_command_line_wins():
    cfg = compose_with("task=rmb")
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
