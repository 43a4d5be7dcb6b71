"""Catalogue behaviour on hand-made problems: LBFGS, schedulers, parameter groups, constraints."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from torchcamp.tasks.classification import classification_step
from torchcamp.tasks.models import LeNet
from torchcamp.trainer.app import builders
from torchcamp.trainer.app.validation import INITS
from torchcamp.trainer.callbacks import Callback
from torchcamp.trainer.errors import UserError
from torchcamp.trainer.options import Limits, Monitor, Reporting, Stepping
from torchcamp.trainer.params import freeze
from torchcamp.trainer.regularizers import MaxNorm
from torchcamp.trainer.trainer import Trainer

QUIET = Reporting(progress=False)


def regression_step(model, batch, loss_fn):
    inputs, targets = batch
    return {"loss": loss_fn(model(inputs), targets)}


class StepRecorder(Callback):
    """Records each optimizer step's lrs (as used) and runs an optional check."""

    def __init__(self, check=None):
        self.lrs: list[list[float]] = []
        self.epoch_lrs: list[float] = []
        self.check = check

    def on_train_step_end(self, trainer, outputs):
        self.lrs.append(list(trainer.optimization.step_lrs.values()))
        if self.check is not None:
            self.check(trainer)

    def on_epoch_end(self, trainer, metrics):
        self.epoch_lrs.append(trainer.optimizer.param_groups[0]["lr"])


def classification_data(n=48, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(
        torch.randn(n, 6, generator=generator), torch.randint(0, 3, (n,), generator=generator)
    )


@pytest.mark.slow
def test_lbfgs_converges_on_a_least_squares_problem():
    torch.manual_seed(0)
    inputs = torch.randn(64, 5)
    true_weight = torch.tensor([[1.5, -2.0, 0.5, 3.0, -1.0]])
    targets = inputs @ true_weight.T + 0.25
    model = nn.Linear(5, 1)
    optimizer = builders.build_optimizer(
        {
            "_target_": "torch.optim.LBFGS",
            "_partial_": True,
            "lr": 1.0,
            "max_iter": 20,
            "line_search_fn": "strong_wolfe",
        },
        model,
    )
    five_epochs = Limits(max_epochs=5)
    trainer = Trainer(
        model, regression_step, optimizer, nn.MSELoss(), limits=five_epochs, reporting=QUIET
    )
    assert trainer.optimization.needs_closure
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=64)  # full batch
    metrics = trainer.fit(loader)
    assert metrics["train/loss"] < 1e-8
    torch.testing.assert_close(model.weight.detach(), true_weight, atol=1e-4, rtol=0)
    torch.testing.assert_close(model.bias.detach(), torch.tensor([0.25]), atol=1e-4, rtol=0)


def test_lbfgs_refuses_accumulation():
    model = nn.Linear(2, 1)
    with pytest.raises(UserError, match="cannot accumulate"):
        Trainer(
            model,
            regression_step,
            torch.optim.LBFGS(model.parameters()),
            nn.MSELoss(),
            stepping=Stepping(accumulate_grad_batches=2),
        )


def test_sparse_adam_trains_a_sparse_embedding():
    model = nn.Sequential(nn.EmbeddingBag(10, 3, mode="mean", sparse=True))
    optimizer = torch.optim.SparseAdam(model.parameters(), lr=0.1)
    data = TensorDataset(torch.randint(0, 10, (32, 4)), torch.randint(0, 3, (32,)))
    before = model[0].weight.detach().clone()
    trainer = Trainer(model, classification_step, optimizer, nn.CrossEntropyLoss(), reporting=QUIET)
    trainer.fit(DataLoader(data, batch_size=8))
    assert trainer.global_step == 4 and not torch.equal(before, model[0].weight)


def test_plateau_lowers_the_lr_when_the_monitored_metric_stalls():
    def stalled_step(model, batch, loss_fn):
        out = classification_step(model, batch, loss_fn)
        return {"loss": out["loss"], "acc": torch.tensor(0.5)}  # val/acc never improves

    model = nn.Linear(6, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    node = {
        "_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau",
        "_partial_": True,
        "mode": "max",
        "factor": 0.5,
        "patience": 1,
        "interval": "epoch",
    }
    scheduler, interval = builders.build_scheduler(node, optimizer, 6, 5)
    recorder = StepRecorder()
    trainer = Trainer(
        model,
        stalled_step,
        optimizer,
        nn.CrossEntropyLoss(),
        scheduler=scheduler,
        stepping=Stepping(scheduler_interval=interval),
        limits=Limits(max_epochs=5),
        monitor=Monitor("val/acc", "max"),
        callbacks=[recorder],
        reporting=QUIET,
    )
    loader = DataLoader(classification_data(), batch_size=8)
    trainer.fit(loader, loader)
    # Epoch 1 sets the best; epochs 2-3 stall for patience=1 -> halve after 3, and after 5.
    assert recorder.epoch_lrs == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


@pytest.mark.parametrize(("accumulate", "batches"), [(1, 6), (3, 7), (4, 6)])
def test_onecycle_ends_exactly_at_its_final_lr(accumulate, batches):
    model = nn.Linear(6, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(classification_data(n=8 * batches), batch_size=8)
    node = {
        "_target_": "torch.optim.lr_scheduler.OneCycleLR",
        "_partial_": True,
        "max_lr": 0.1,
        "total_steps": None,
        "div_factor": 25.0,
        "final_div_factor": 1e4,
        "cycle_momentum": False,
        "interval": "step",
    }
    per_epoch = builders.steps_per_epoch(loader, accumulate)
    scheduler, interval = builders.build_scheduler(node, optimizer, per_epoch, 3)
    recorder = StepRecorder()
    trainer = Trainer(
        model,
        classification_step,
        optimizer,
        nn.CrossEntropyLoss(),
        scheduler=scheduler,
        stepping=Stepping(accumulate_grad_batches=accumulate, scheduler_interval=interval),
        limits=Limits(max_epochs=3),
        callbacks=[recorder],
        reporting=QUIET,
    )
    trainer.fit(loader)
    assert len(recorder.lrs) == 3 * math.ceil(batches / accumulate) == scheduler.total_steps
    assert recorder.lrs[0][0] == pytest.approx(0.1 / 25)
    assert recorder.lrs[-1][0] == pytest.approx(0.1 / 25 / 1e4)
    assert max(lr for (lr,) in recorder.lrs) == pytest.approx(0.1, rel=0.05)


def test_param_groups_get_the_configured_lr_and_weight_decay():
    model = LeNet(num_classes=2)
    node = {
        "_target_": "torch.optim.SGD",
        "_partial_": True,
        "lr": 0.1,
        "weight_decay": 1e-3,
        "no_decay_bias_norm": True,
        "param_groups": [
            {"match": r"^conv", "lr_mult": 0.1},
            {"match": "fc3", "lr_mult": 0.0, "weight_decay": 0.5},
        ],
    }
    optimizer = builders.build_optimizer(node, model)
    settings = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for param in group["params"]:
            settings[names[id(param)]] = (group["lr"], group["weight_decay"])
    assert settings["conv1.weight"] == pytest.approx((0.01, 1e-3))
    assert settings["conv2.bias"] == pytest.approx((0.01, 0.0))
    assert settings["fc3.weight"] == pytest.approx((0.0, 0.5))
    assert settings["fc3.bias"] == pytest.approx((0.0, 0.0))
    assert settings["fc1.weight"] == pytest.approx((0.1, 1e-3))
    assert settings["fc1.bias"] == pytest.approx((0.1, 0.0))
    assert len(settings) == 10


def test_a_rule_that_matches_nothing_is_an_error():
    node = {
        "_target_": "torch.optim.SGD",
        "_partial_": True,
        "lr": 0.1,
        "param_groups": [{"match": "backbone"}],
    }
    with pytest.raises(UserError, match="finds no parameter"):
        builders.build_optimizer(node, LeNet(num_classes=2))


def test_frozen_parameters_do_not_change_and_the_rest_do():
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    assert freeze(model, [r"^0\."]) == ["0.weight", "0.bias"]
    before = copy.deepcopy(model.state_dict())
    optimizer = builders.build_optimizer(
        {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.5}, model
    )
    Trainer(model, classification_step, optimizer, nn.CrossEntropyLoss(), reporting=QUIET).fit(
        DataLoader(classification_data(), batch_size=8)
    )
    after = model.state_dict()
    assert torch.equal(before["0.weight"], after["0.weight"])
    assert torch.equal(before["0.bias"], after["0.bias"])
    assert not torch.equal(before["2.weight"], after["2.weight"])


def test_max_norm_holds_after_every_step():
    max_val = 0.5
    violations = []

    def check(trainer):
        for param in trainer.model.parameters():
            if param.ndim == 2:
                violations.append(param.norm(dim=1).max().item() > max_val + 1e-5)

    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=5.0)  # big steps push rows past the limit
    Trainer(
        model,
        classification_step,
        optimizer,
        nn.CrossEntropyLoss(),
        limits=Limits(max_epochs=2),
        regularizer=MaxNorm(max_val=max_val),
        callbacks=[StepRecorder(check)],
        reporting=QUIET,
    ).fit(DataLoader(classification_data(), batch_size=8))
    assert len(violations) == 2 * 6 * 2 and not any(violations)


@pytest.mark.slow
def test_scheduler_state_survives_resume(run_in_process):
    common = ("data.synthetic=true", "device=cpu", "scheduler=onecycle", "optimizer=adam")
    straight = run_in_process(*common, "trainer.max_epochs=2")
    first = run_in_process(*common, "trainer.max_epochs=1", "scheduler.total_steps=8")
    resumed = run_in_process(
        *common, "trainer.max_epochs=2", f"resume={first.run_dir}/checkpoints/last.pt"
    )
    a = torch.load(straight.run_dir / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(first.run_dir / "checkpoints" / "last.pt", weights_only=True)  # continued
    a_sched, b_sched = a["schedulers"]["model"], b["schedulers"]["model"]
    assert a_sched == b_sched and a_sched["_step_count"] == 9
    assert a["optimizers"]["model"]["param_groups"] == b["optimizers"]["model"]["param_groups"]
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert json.loads((resumed.run_dir / "metrics.json").read_text())["global_step"] == 8


@pytest.mark.slow
def test_resume_with_a_different_onecycle_length_is_refused(run_in_process):
    common = ("data.synthetic=true", "scheduler=onecycle")
    first = run_in_process(*common, "trainer.max_epochs=1")
    result = run_in_process(
        *common, "trainer.max_epochs=2", f"resume={first.run_dir}/checkpoints/last.pt", check=False
    )
    assert result.returncode == 2
    assert "total_steps=4" in result.stderr and "this run needs 8" in result.stderr


def test_a_binary_loss_on_a_many_class_task_names_the_losses_that_fit():
    from torchcamp.tasks import rmb

    node = {
        "_target_": "torch.nn.BCELoss",
        "adapt": {"input": "sigmoid", "target": "one_hot"},
        "binary_only": True,
    }
    with pytest.raises(UserError, match=r"loss=bce fits two-class tasks only.*18 classes") as error:
        builders.build_loss(node, "bce", rmb.TASK, num_classes=18)
    assert "cross_entropy" in str(error.value) and "bce_with_logits" not in str(error.value)


@pytest.mark.parametrize("scheme", [scheme for scheme in INITS if scheme != "default"])
def test_init_schemes_reinitialise_weights_and_zero_biases(scheme):
    from torchcamp.trainer.params import init_weights

    torch.manual_seed(0)
    model = LeNet(num_classes=2)
    for module in model.modules():
        if hasattr(module, "bias") and module.bias is not None:
            nn.init.constant_(module.bias, 0.3)
    before = copy.deepcopy(model.state_dict())
    init_weights(model, scheme, std=0.01)
    after = model.state_dict()
    for name in after:
        if name.endswith("bias"):
            assert torch.count_nonzero(after[name]) == 0, name
        else:
            assert not torch.equal(before[name], after[name]), name
    if scheme == "normal":
        assert after["fc1.weight"].std().item() == pytest.approx(0.01, rel=0.1)
    if scheme == "orthogonal":
        weight = after["fc2.weight"]  # 84 x 120: orthonormal rows
        torch.testing.assert_close(weight @ weight.T, torch.eye(84), atol=1e-5, rtol=0)


def test_on_a_gpu_sgd_adam_and_adamw_are_fused_unless_the_config_chooses():
    """Fused on CUDA: the Trainer can then skip a NaN step on the device (no host read per
    step); the decision alone, as there is no GPU here (the skip is tested in test_trainer)."""
    from torchcamp.trainer.app.builders import fused_on_gpu, instantiate
    from torchcamp.trainer.optimization import Optimization

    sgd = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1, "momentum": 0.9}
    assert fused_on_gpu(sgd, "cuda")["fused"] is True
    assert fused_on_gpu({**sgd, "_target_": "torch.optim.AdamW"}, "cuda")["fused"] is True
    assert "fused" not in fused_on_gpu(sgd, "cpu")
    assert "fused" not in fused_on_gpu({**sgd, "foreach": True}, "cuda")  # a choice made
    assert fused_on_gpu({**sgd, "fused": False}, "cuda")["fused"] is False
    assert "fused" not in fused_on_gpu({**sgd, "_target_": "torch.optim.Adagrad"}, "cuda")
    optimizer = instantiate(fused_on_gpu(sgd, "cuda"))([torch.nn.Parameter(torch.ones(2))])
    assert Optimization(optimizer).skips_on_device
