"""The Trainer in-process, on tiny hand-made data: accumulation, AMP, clipping, schedulers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from torchcamp.tasks.classification import classification_step, summarize
from torchcamp.trainer.callbacks import Callback
from torchcamp.trainer.options import Compute, Limits, Monitor, Reporting, Stepping
from torchcamp.trainer.trainer import Trainer


def make_data(n: int = 32, features: int = 6, classes: int = 3, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, features, generator=generator)
    labels = torch.randint(0, classes, (n,), generator=generator)
    return TensorDataset(inputs, labels)


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)  # no BatchNorm: batch composition must not matter
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def make_trainer(model: nn.Module, **kwargs) -> Trainer:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    kwargs.setdefault("reporting", Reporting(progress=False))
    kwargs.setdefault("summarize_fn", summarize)  # accuracy: from the summed confusion counts
    return Trainer(model, classification_step, optimizer, nn.CrossEntropyLoss(), **kwargs)


@pytest.mark.parametrize("k", [2, 4])
def test_k_micro_batches_equal_one_big_batch(k):
    data = make_data(n=8 * k)
    small, big = make_model(), make_model()
    make_trainer(small, stepping=Stepping(accumulate_grad_batches=k)).train_one_epoch(
        DataLoader(data, batch_size=8)
    )
    make_trainer(big).train_one_epoch(DataLoader(data, batch_size=8 * k))
    for p_small, p_big in zip(small.parameters(), big.parameters(), strict=True):
        torch.testing.assert_close(p_small, p_big, rtol=1e-5, atol=1e-6)


def test_last_partial_window_still_steps_and_is_averaged_over_its_batches():
    # 5 batches with k=2: windows [0,1], [2,3], [4]. The last window is one batch on its own.
    data = make_data(n=40)
    model = make_model()
    trainer = make_trainer(model, stepping=Stepping(accumulate_grad_batches=2))
    trainer.train_one_epoch(DataLoader(data, batch_size=8))
    assert trainer.global_step == 3

    reference = make_model()
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    for window in ([0, 1], [2, 3], [4]):
        optimizer.zero_grad()
        for index in window:
            inputs, labels = data[index * 8 : (index + 1) * 8]
            (nn.functional.cross_entropy(reference(inputs), labels) / len(window)).backward()
        optimizer.step()
    for p_trainer, p_reference in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p_trainer, p_reference)


def test_per_step_scheduler_counts_optimizer_steps_not_batches():
    model = make_model()
    trainer = make_trainer(
        model, stepping=Stepping(accumulate_grad_batches=4, scheduler_interval="step")
    )
    trainer.optimization.schedulers["model"] = torch.optim.lr_scheduler.StepLR(
        trainer.optimizer, 1, gamma=0.5
    )
    trainer.train_one_epoch(DataLoader(make_data(n=64), batch_size=8))  # 8 batches -> 2 steps
    assert trainer.global_step == 2
    assert trainer.lr == pytest.approx(0.5 * 0.5**2)


def test_gradient_clipping_bounds_the_update():
    model = make_model()
    before = copy.deepcopy(model)
    trainer = make_trainer(model, stepping=Stepping(gradient_clip_val=1e-3))
    trainer.train_one_epoch(DataLoader(make_data(n=8), batch_size=8))
    delta = torch.cat(
        [(a - b).flatten() for a, b in zip(model.parameters(), before.parameters(), strict=True)]
    )
    # One SGD step of lr 0.5 on a gradient whose norm was clipped to 1e-3.
    assert delta.norm().item() == pytest.approx(0.5 * 1e-3, rel=1e-3)


def test_bf16_autocast_on_cpu():
    model = make_model()
    trainer = make_trainer(model, compute=Compute(precision="bf16-mixed"))
    seen = []

    def step(model, batch, loss_fn):
        out = classification_step(model, batch, loss_fn)
        seen.append(model[0](batch[0]).dtype)
        return out

    trainer.step_fn = step
    metrics = trainer.fit(
        DataLoader(make_data(), batch_size=8), DataLoader(make_data(), batch_size=8)
    )
    assert seen and all(dtype == torch.bfloat16 for dtype in seen)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert next(model.parameters()).dtype == torch.float32  # weights stay fp32


def test_grad_scaler_is_only_enabled_for_fp16():
    assert not make_trainer(
        make_model(), compute=Compute("bf16-mixed")
    ).optimization.scaler.is_enabled()
    assert not make_trainer(make_model(), compute=Compute("32")).optimization.scaler.is_enabled()


def test_best_metric_and_callbacks_in_order():
    events = []

    class Recorder(Callback):
        def __init__(self, name, order):
            self.name, self.order = name, order

        def on_epoch_end(self, trainer, metrics):
            events.append((self.name, trainer.epoch, trainer.is_best))

    model = make_model()
    trainer = make_trainer(
        model,
        limits=Limits(max_epochs=3),
        monitor=Monitor("val/acc", "max"),
        callbacks=[Recorder("late", 5), Recorder("early", -5)],
    )
    data = DataLoader(make_data(), batch_size=8)
    metrics = trainer.fit(data, data)
    assert [name for name, _, _ in events] == ["early", "late"] * 3
    assert events[0][2] is True  # the first evaluation is always a new best
    assert metrics["best/val/acc"] == trainer.best >= metrics["val/acc"]


def test_state_dict_round_trip_restores_progress_and_rng():
    model = make_model()
    trainer = make_trainer(model, limits=Limits(max_epochs=1))
    trainer.fit(DataLoader(make_data(), batch_size=8))
    state = trainer.state_dict()
    expected = torch.rand(3)
    other = make_trainer(make_model(seed=1))
    other.load_state_dict(state)
    assert other.epoch == 1 and other.global_step == 4
    other.fit(DataLoader(make_data(), batch_size=8))  # nothing left to train
    assert torch.equal(torch.rand(3), expected)  # RNG restored to the checkpoint's state
    for a, b in zip(other.model.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_count_tensors_are_summed_and_summarized():
    from torchcamp.tasks.classification import summarize

    # 3 classes; the model is untrained, so compare against counts made by hand.
    data = make_data(n=24)
    model = make_model()
    trainer = make_trainer(model, summarize_fn=summarize)
    metrics = trainer.evaluate(DataLoader(data, batch_size=5), "val")
    confusion = trainer.epoch_counts["val"]["confusion"]
    with torch.no_grad():
        predictions = model(data.tensors[0]).argmax(dim=1)
    labels = data.tensors[1]
    expected = torch.zeros(3, 3, dtype=torch.long)
    for label, prediction in zip(labels.tolist(), predictions.tolist(), strict=True):
        expected[label, prediction] += 1
    assert torch.equal(confusion, expected)
    recalls = [expected[c, c] / expected[c].sum() for c in range(3) if expected[c].sum() > 0]
    assert metrics["val/macro_acc"] == pytest.approx(float(sum(recalls) / len(recalls)))
    assert metrics["val/acc"] == pytest.approx(float((predictions == labels).float().mean()))


@pytest.mark.slow
def test_a_nonfinite_loss_stops_the_run_and_keeps_the_last_good_weights(
    monkeypatch, tmp_path, capsys
):
    from conftest import train_in_process

    from torchcamp.trainer.checkpoint import load_checkpoint

    # SGD at lr 1e12: the first step is finite and blows the weights up; the next loss is not.
    code, run_dir = train_in_process(
        monkeypatch, tmp_path, "task=rmb", "data.synthetic=true", "optimizer.lr=1e12",
        "trainer.max_epochs=1", "scheduler=none",
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "error: the loss is nan at optimizer step" in err or "error: the loss is inf" in err
    assert "trainer.gradient_clip_val" in err and "last_good.pt" in err
    state = load_checkpoint(run_dir / "checkpoints" / "last_good.pt")
    assert state["global_step"] >= 1
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_on_a_gpu_a_nonfinite_loss_is_read_late_and_the_steps_after_it_change_nothing(tmp_path):
    """The check GPUs get with fused optimizers (no host sync per step), run on the CPU: a NaN
    loss at step 3 is flagged on the device and read at step 5 (log_every_n_steps); steps 3 to
    5 were skipped, so the run stops with step 2's weights, kept in last_good.pt."""
    from torchcamp.trainer.callbacks.checkpointing import ModelCheckpoint
    from torchcamp.trainer.checkpoint import load_checkpoint
    from torchcamp.trainer.errors import NonFiniteLossError

    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, fused=True)
    seen = []

    def step(model, batch, loss_fn):
        out = classification_step(model, batch, loss_fn)
        if len(seen) == 2:  # the third step's loss
            out["loss"] = out["loss"] * float("nan")
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return out

    trainer = Trainer(
        model, step, optimizer, nn.CrossEntropyLoss(),
        reporting=Reporting(log_every_n_steps=5, progress=False),
        callbacks=[ModelCheckpoint(tmp_path)], summarize_fn=summarize,
    )  # fmt: skip
    assert trainer.optimization.skips_on_device and not trainer.finite_check_on_device
    trainer.finite_check_on_device = True  # as on CUDA
    with pytest.raises(NonFiniteLossError, match="by optimizer step 5"):
        trainer.fit(DataLoader(make_data(n=64), batch_size=8))
    assert len(seen) == 5  # read at step 5, not before
    after_step_2 = seen[2]
    for name, value in model.state_dict().items():
        assert torch.equal(value, after_step_2[name]), name
    kept = load_checkpoint(tmp_path / "last_good.pt")["model"]
    assert all(torch.equal(kept[name], after_step_2[name]) for name in kept)


def test_fp16_counts_the_steps_the_scaler_skips(caplog):
    model = make_model()
    trainer = make_trainer(model, compute=Compute(precision="16-mixed"))
    trainer.optimization.scaler = torch.amp.GradScaler(
        "cpu", init_scale=2.0**100
    )  # the first step overflows
    trainer.train_one_epoch(DataLoader(make_data(n=16), batch_size=8))
    assert trainer.skipped_steps >= 1 and trainer.global_step == 2
    assert "fp16: optimizer step 1 skipped" in caplog.text


def test_a_compiled_channels_last_model_saves_and_resumes_as_a_plain_model():
    def conv_model(seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(16, 3, 6, 6, generator=generator)
    data = TensorDataset(images, torch.randint(0, 3, (16,), generator=generator))
    seen = []

    def step(model, batch, loss_fn):
        seen.append(batch[0].is_contiguous(memory_format=torch.channels_last))
        return classification_step(model, batch, loss_fn)

    model = conv_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    # The eager backend: the same wrapping as inductor's, without minutes of C++ compiling.
    trainer = Trainer(
        model,
        step,
        optimizer,
        nn.CrossEntropyLoss(),
        reporting=Reporting(progress=False),
        compute=Compute(channels_last=True, compile={"backend": "eager"}),
    )
    trainer.fit(DataLoader(data, batch_size=8))
    assert all(seen) and isinstance(trainer.model, torch._dynamo.eval_frame.OptimizedModule)
    assert model.state_dict()["0.weight"].is_contiguous(memory_format=torch.channels_last)
    state = trainer.state_dict()
    assert list(state["model"]) == list(conv_model().state_dict())  # no `_orig_mod.` prefix
    plain = make_trainer(conv_model(seed=1))
    plain.load_state_dict(state)
    for a, b in zip(plain.module.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_building_a_trainer_leaves_the_process_wide_torch_switches_as_they_were():
    # They are the process's (set where it is set up, trainer/app/process.py): a Trainer built
    # to evaluate must not change them, whatever they are.
    def switches():
        return (
            torch.backends.cudnn.benchmark,
            torch.backends.cudnn.deterministic,
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.is_anomaly_enabled(),
            torch.get_float32_matmul_precision(),
        )

    before = switches()
    flipped = (not before[0], not before[1], not before[2], True, not before[4], "medium")
    try:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = flipped[:2]
        torch.use_deterministic_algorithms(flipped[2], warn_only=True)
        torch.autograd.set_detect_anomaly(flipped[4])
        torch.set_float32_matmul_precision("medium")
        for settings in ({}, {"compute": Compute("bf16-mixed", channels_last=True)}):
            make_trainer(make_model(), **settings)
            assert switches() == flipped
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[:2]
        torch.use_deterministic_algorithms(before[2], warn_only=before[3])
        torch.autograd.set_detect_anomaly(before[4])
        torch.set_float32_matmul_precision(before[5])
    assert switches() == before


def test_the_process_setup_sets_the_switches_the_trainer_keys_ask_for(tmp_path):
    from conftest import preset_settings

    from torchcamp.trainer.app.process import setup_process

    switches = ("deterministic", "cudnn_benchmark", "detect_anomaly")
    before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    anomaly = torch.is_anomaly_enabled()
    try:
        setup_process(
            preset_settings("rmb", tmp_path, "device=cpu", *(f"trainer.{s}=true" for s in switches))
        )
        assert torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
        assert torch.are_deterministic_algorithms_enabled() and torch.is_anomaly_enabled()
        setup_process(preset_settings("rmb", tmp_path, "device=cpu"))  # the defaults: off
        assert not torch.backends.cudnn.benchmark and not torch.is_anomaly_enabled()
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.autograd.set_detect_anomaly(anomaly)
