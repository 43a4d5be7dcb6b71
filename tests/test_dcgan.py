"""``task=dcgan``: the course's nets, two optimizers driven by the Trainer (phases), and runs
through the CLI on drawn faces (and on a real image folder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA, train_in_process
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from torchcamp.tasks import dcgan
from torchcamp.trainer.checkpoint import load_checkpoint
from torchcamp.trainer.errors import UserError
from torchcamp.trainer.options import Compute, Reporting, Stepping
from torchcamp.trainer.params import without_grad
from torchcamp.trainer.trainer import Trainer

SMALL = ("task=dcgan", "data.synthetic=true", "model.ngf=8", "model.ndf=8", "data.batch_size=32")


def test_nets_have_the_course_shapes_and_initialisation():
    torch.manual_seed(0)
    model = dcgan.DCGAN(nz=100, ngf=64, ndf=64)
    fake = model.generator(torch.randn(2, 100, 1, 1))
    assert fake.shape == (2, 3, 64, 64) and fake.abs().max() <= 1  # Tanh
    assert model.discriminator(fake).shape == (2,)  # one probability per image
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    weights = torch.cat([m.weight.detach().flatten() for m in convs])
    assert abs(float(weights.mean())) < 1e-3
    assert float(weights.std()) == pytest.approx(0.02, rel=0.05)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert float(torch.cat([m.weight.detach() for m in norms]).mean()) == pytest.approx(1, abs=0.01)
    assert all(torch.all(m.bias == 0) for m in norms)


def test_label_smoothing_moves_the_targets():
    loss = dcgan.AdversarialLoss(nn.BCELoss(), label_smoothing=0.1)
    scores = torch.tensor([0.9, 0.9])
    assert loss(scores, real=True) == pytest.approx(nn.BCELoss()(scores, torch.full((2,), 0.9)))
    assert loss(scores, real=False) == pytest.approx(nn.BCELoss()(scores, torch.full((2,), 0.1)))


def make_gan_trainer(accumulate: int) -> tuple[Trainer, dcgan.DCGAN]:
    torch.manual_seed(0)
    model = dcgan.DCGAN(nz=8, ngf=4, ndf=4)
    optimizers = {
        name: torch.optim.SGD(part.parameters(), lr=0.1)
        for name, part in dcgan.parts(model).items()
    }
    loss = dcgan.AdversarialLoss(nn.BCELoss())
    return Trainer(
        model,
        dcgan.step,
        optimizers,
        loss,
        stepping=Stepping(accumulate_grad_batches=accumulate),
        reporting=Reporting(progress=False),
    ), model


def reference_gan_steps(model: dcgan.DCGAN, batches: list[torch.Tensor], accumulate: int) -> None:
    """The course's loop by hand: D's loss trains D only, G's loss trains G only."""
    loss = dcgan.AdversarialLoss(nn.BCELoss())
    parts = dcgan.parts(model)
    optimizers = {name: torch.optim.SGD(p.parameters(), lr=0.1) for name, p in parts.items()}
    for start in range(0, len(batches), accumulate):
        window = batches[start : start + accumulate]
        for opt in optimizers.values():
            opt.zero_grad()
        for real in window:
            for phase in ("D", "G"):
                out = dcgan.step(model, real, loss, phase)
                params = list(parts[phase].parameters())
                grads = torch.autograd.grad(out["loss"] / len(window), params, allow_unused=True)
                for param, grad in zip(params, grads, strict=True):
                    if grad is not None:
                        param.grad = grad if param.grad is None else param.grad + grad
                if real is window[-1]:
                    optimizers[phase].step()


@pytest.mark.slow
@pytest.mark.parametrize("accumulate", [1, 2])
def test_trainer_phases_match_the_hand_written_gan_loop(accumulate):
    images = torch.rand(5 * 4, 3, 64, 64) * 2 - 1
    trainer, model = make_gan_trainer(accumulate)
    trainer.train_one_epoch(DataLoader(list(images), batch_size=4))

    torch.manual_seed(0)
    reference = dcgan.DCGAN(nz=8, ngf=4, ndf=4)
    reference.train()
    # The same global RNG draws as the Trainer: a DataLoader iterator (without a generator of
    # its own) takes a base seed from it.
    batches = list(DataLoader(list(images), batch_size=4))
    reference_gan_steps(reference, batches, accumulate)
    # Same noise draws in the same order: the weights agree to float rounding.
    expected = reference.state_dict()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], msg=name)
    assert trainer.global_step == (5 if accumulate == 1 else 3)


def test_generator_phase_leaves_no_gradient_in_the_discriminator():
    trainer, model = make_gan_trainer(accumulate=1)
    real = torch.rand(4, 3, 64, 64) * 2 - 1
    with without_grad(trainer.optimization.held_fixed["G"]):
        trainer.optimization.scaler.scale(
            dcgan.step(model, real, trainer.loss_fn, "G")["loss"]
        ).backward()
    assert all(p.grad is None for p in model.discriminator.parameters())
    assert all(p.grad is not None for p in model.generator.parameters())
    assert all(p.requires_grad for p in model.parameters())  # restored afterwards


@pytest.mark.slow
def test_train_dcgan_logs_both_losses_samples_and_checkpoints_both_optimizers(
    monkeypatch, tmp_path
):
    code, run_dir = train_in_process(
        monkeypatch, tmp_path, *SMALL, "trainer.max_epochs=2", "task.optimizers.G.lr=0.001",
        "trainer.precision=bf16-mixed", "trainer.gradient_clip_val=5", "scheduler=step",
        "loss.adapt.label_smoothing=0.1",
    )  # fmt: skip
    assert code == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"train/loss_D", "train/loss_G", "train/D_x", "train/D_G_z"} <= set(metrics)
    assert metrics["global_step"] == 6  # 96 drawn faces in batches of 32, twice
    for epoch in (1, 2):
        with Image.open(run_dir / "samples" / f"epoch_{epoch:03d}.png") as grid:
            assert grid.size == (8 * 66 + 2, 8 * 66 + 2)  # 8x8 images of 64 px, 2 px padding
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert set(state["optimizers"]) == set(state["schedulers"]) == {"D", "G"}
    assert state["optimizers"]["G"]["param_groups"][0]["initial_lr"] == 0.001
    assert state["optimizers"]["D"]["param_groups"][0]["initial_lr"] == 0.0002
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["epoch"] == 2  # no monitor: best.pt is the last epoch


def final_state(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")


@pytest.mark.slow
def test_two_epochs_equal_one_plus_resume_for_both_optimizers(monkeypatch, tmp_path):
    args = (*SMALL, "scheduler=step", "scheduler.step_size=1")
    for run in "abc":
        (tmp_path / run).mkdir()
    _, straight = train_in_process(monkeypatch, tmp_path / "a", *args, "trainer.max_epochs=2")
    _, first = train_in_process(monkeypatch, tmp_path / "b", *args, "trainer.max_epochs=1")
    code, _ = train_in_process(
        monkeypatch, tmp_path / "c", *args, "trainer.max_epochs=2",
        f"resume={first}/checkpoints/last.pt",
    )  # fmt: skip
    assert code == 0
    a, b = final_state(straight), final_state(first)  # the run continued in its directory
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for part in ("D", "G"):
        for key, value in a["optimizers"][part]["state"].items():
            for field, tensor in value.items():
                assert torch.equal(tensor, b["optimizers"][part]["state"][key][field]), field
        assert a["schedulers"][part] == b["schedulers"][part]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+task.optimizers.X.lr=0.1", "task.optimizers has X, and this task's parts are D, G"),
        ("loss.adapt.label_smoothing=0.6", "loss.adapt.label_smoothing=0.6"),
        ("optimizer=sgd", "unexpected keyword argument 'betas' (drop it with ~optimizer.betas)"),
    ],
)
def test_dcgan_mistakes_are_one_line(monkeypatch, tmp_path, capsys, override, message):
    code, _ = train_in_process(monkeypatch, tmp_path, *SMALL, "trainer.max_epochs=1", override)
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.realdata
def test_dcgan_one_short_epoch_on_a_real_image_folder(monkeypatch, tmp_path):
    folder = SHARED_DATA / "hymenoptera_data" / "train"  # any folder of images will do
    if not folder.is_dir():
        pytest.skip(f"real data not found at {folder}")
    code, run_dir = train_in_process(
        monkeypatch, tmp_path, "task=dcgan", f"data.root={folder}", "trainer.max_epochs=1",
        "model.ngf=16", "model.ndf=16",
    )  # fmt: skip
    assert code == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 4  # 245 images (the GIF too) in batches of 64
    assert (run_dir / "samples" / "epoch_001.png").is_file()


def test_a_closure_optimizer_cannot_drive_several_parts():
    model = dcgan.DCGAN(nz=8, ngf=4, ndf=4)
    optimizers = {
        "D": torch.optim.LBFGS(model.discriminator.parameters()),
        "G": torch.optim.SGD(model.generator.parameters(), lr=0.1),
    }
    with pytest.raises(UserError, match="LBFGS steps with a closure, which a task with several"):
        Trainer(model, dcgan.step, optimizers, dcgan.AdversarialLoss(nn.BCELoss()))


@pytest.mark.slow
def test_dcgan_under_ddp_with_accumulation(run_cli):
    # Each phase leaves the other part without gradients: DDP must be told to expect that, and
    # each rank must draw its own noise (else both ranks train on the same fakes).
    result = run_cli(
        *SMALL, "device=ddp", "device.devices=2", "device.accelerator=cpu", "data.batch_size=16",
        "trainer.accumulate_grad_batches=2", "trainer.max_epochs=1",
    )  # fmt: skip
    assert result.metrics["world_size"] == 2
    assert result.metrics["global_step"] == 2  # 96 faces / (2 ranks x 16) = 3 batches a rank
    assert (result.run_dir / "samples" / "epoch_001.png").is_file()


def test_each_rank_draws_its_own_noise(monkeypatch):
    from torchcamp.trainer import distributed

    model = dcgan.DCGAN(nz=8, ngf=4, ndf=4)
    draws = []
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        torch.manual_seed(0)  # every rank holds the same global RNG state
        draws.append(model._noise(4, torch.device("cpu")))
    assert not torch.equal(draws[0], draws[1])


def test_one_grad_scaler_skips_both_steps_on_overflow_and_backs_off_once():
    # fp16 autocast with a GradScaler runs on the CPU too, so the scaler logic is tested here;
    # the CLI still asks for CUDA for 16-mixed.
    torch.manual_seed(0)
    model = dcgan.DCGAN(nz=8, ngf=4, ndf=4)
    optimizers = {n: torch.optim.SGD(p.parameters(), lr=0.1) for n, p in dcgan.parts(model).items()}
    trainer = Trainer(
        model,
        dcgan.step,
        optimizers,
        dcgan.AdversarialLoss(nn.BCELoss()),
        compute=Compute(precision="16-mixed"),
        reporting=Reporting(progress=False),
    )
    trainer.optimization.scaler = torch.amp.GradScaler(
        "cpu", init_scale=2.0**100
    )  # every gradient overflows
    before = {k: v.clone() for k, v in model.state_dict().items() if "weight" in k}
    trainer.train_one_epoch(DataLoader(list(torch.rand(4, 3, 64, 64) * 2 - 1), batch_size=4))
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in before)  # D and G skipped
    assert (
        trainer.optimization.scaler.get_scale() == 2.0**99
    )  # one back-off for the step, not one per part
    assert trainer.global_step == 1
