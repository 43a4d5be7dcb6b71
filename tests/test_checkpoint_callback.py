"""The checkpoint callback (trainer/callbacks/checkpointing.py): which files ModelCheckpoint
keeps, the top k epochs by the monitored metric with best.pt the top one, epoch snapshots, the
newest step files; removals only after a write is on disk, and the same files after a resume as
without one."""

from __future__ import annotations

import itertools
import math
import os
import re
from pathlib import Path

import pytest
import torch

from torchcamp.trainer import checkpoint
from torchcamp.trainer.callbacks import run_callbacks
from torchcamp.trainer.callbacks.checkpointing import ModelCheckpoint
from torchcamp.trainer.checkpoint import load_checkpoint
from torchcamp.trainer.errors import UserError
from torchcamp.trainer.extras import ExtrasBudget


class StubTrainer:
    """What ModelCheckpoint reads of a Trainer, with monitored values the test chooses."""

    def __init__(
        self, callback: ModelCheckpoint, monitor="val/loss", monitor_mode="min", epoch_seconds=60.0
    ):
        self.callbacks = [callback]
        self.monitor, self.monitor_mode = monitor, monitor_mode
        self.epoch = self.global_step = self.batch_in_epoch = 0
        self.best, self.is_best = None, False
        # Epochs of a minute: last.pt is worth writing after each (short ones: see below).
        self.epoch_seconds, self.fit_seconds = epoch_seconds, 0.0
        self.max_epochs, self.should_stop = 1000, False
        self.extras = ExtrasBudget(0.01)

    def state_dict(self) -> dict:
        return {
            "model": {"w": torch.tensor(float(self.global_step))},
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best": self.best,
            "callbacks": {"ModelCheckpoint": self.callbacks[0].state_dict()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.global_step, self.best = (
            state["epoch"],
            state["global_step"],
            state["best"],
        )
        self.callbacks[0].load_state_dict(state["callbacks"]["ModelCheckpoint"])

    def run_epoch(self, value: float | None, steps: int = 4) -> None:
        """``steps`` optimizer steps, then an epoch end with ``value`` as the monitored metric
        (None: not in the metrics); best and is_best as the Trainer sets them."""
        for _ in range(steps):
            self.global_step += 1
            run_callbacks(self.callbacks, "on_train_step_end", self, {})
        self.epoch += 1
        self.fit_seconds += self.epoch_seconds
        metrics = {} if value is None else {self.monitor: value}
        better = (lambda a, b: a > b) if self.monitor_mode == "max" else (lambda a, b: a < b)
        self.is_best = value is not None and not math.isnan(value)
        self.is_best = self.is_best and (self.best is None or better(value, self.best))
        self.best = value if self.is_best else self.best
        run_callbacks(self.callbacks, "on_epoch_end", self, metrics)

    def fit(self, values: list[float | None], steps: int = 4) -> None:
        run_callbacks(self.callbacks, "on_fit_start", self)
        for value in values:
            self.run_epoch(value, steps)
        run_callbacks(self.callbacks, "on_train_end", self)


def fit(tmp_path: Path, values: list, monitor_mode: str = "min", **settings) -> ModelCheckpoint:
    callback = ModelCheckpoint(tmp_path, **settings)
    StubTrainer(callback, monitor_mode=monitor_mode).fit(values)
    return callback


def kept(directory: Path, pattern: str = r"epoch_\d+-.*\.pt") -> list[str]:
    return sorted(p.name for p in directory.iterdir() if re.fullmatch(pattern, p.name))


def epoch_of(path: Path) -> int:
    return load_checkpoint(path)["epoch"]


@pytest.mark.parametrize(
    ("mode", "values", "expected"),
    [
        # A tie (0.3 at epochs 2 and 4): the earlier epoch stays.
        ("min", [0.5, 0.3, 0.4, 0.3, 0.6, 0.2], ["epoch_002-val_loss_0.3000.pt", "epoch_006-"]),
        ("max", [0.5, 0.7, 0.4, 0.7, 0.6, 0.2], ["epoch_002-val_loss_0.7000.pt", "epoch_004-"]),
    ],
)
def test_top_k_keeps_the_k_best_epochs_and_best_pt_is_the_top_one(tmp_path, mode, values, expected):
    fit(tmp_path, values, monitor_mode=mode, save_top_k=2)
    files = kept(tmp_path)
    assert len(files) == 2 and files[0] == expected[0] and files[1].startswith(expected[1])
    for name in files:  # each file holds the epoch its name says
        assert epoch_of(tmp_path / name) == int(name[6:9])
    top = "epoch_006-val_loss_0.2000.pt" if mode == "min" else expected[0]
    assert os.path.samefile(tmp_path / "best.pt", tmp_path / top)
    assert epoch_of(tmp_path / "last.pt") == 6


def test_save_top_k_minus_one_keeps_every_epoch_but_a_nan_one(tmp_path):
    fit(tmp_path, [0.5, math.nan, 0.4], save_top_k=-1)
    assert kept(tmp_path) == ["epoch_001-val_loss_0.5000.pt", "epoch_003-val_loss_0.4000.pt"]
    assert os.path.samefile(tmp_path / "best.pt", tmp_path / "epoch_003-val_loss_0.4000.pt")


def test_save_top_k_zero_keeps_no_epoch_and_no_best(tmp_path, caplog):
    caplog.set_level("INFO")
    callback = fit(tmp_path, [0.5, 0.4], save_top_k=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert callback.best_weights() is None  # the test split is scored with the last weights
    assert caplog.text.count("save_top_k=0: no best.pt") == 1


def test_without_a_monitored_metric_best_is_the_newest_epoch(tmp_path):
    fit(tmp_path, [None, None, None], save_top_k=2)  # e.g. no val split
    assert kept(tmp_path) == []
    assert os.path.samefile(tmp_path / "best.pt", tmp_path / "last.pt")
    assert epoch_of(tmp_path / "best.pt") == 3


def test_every_n_epochs_snapshots_are_never_removed(tmp_path):
    fit(tmp_path, [0.5, 0.4, 0.3, 0.2, 0.1], every_n_epochs=2)
    assert kept(tmp_path, r"epoch_\d+\.pt") == ["epoch_002.pt", "epoch_004.pt"]
    assert [epoch_of(tmp_path / f"epoch_00{n}.pt") for n in (2, 4)] == [2, 4]
    assert kept(tmp_path) == ["epoch_005-val_loss_0.1000.pt"]


def test_step_checkpoints_keep_the_newest_n(tmp_path):
    fit(tmp_path, [0.5, 0.4, 0.3], every_n_steps=2, keep_step_checkpoints=3)  # 12 steps
    files = kept(tmp_path, r"step_\d+\.pt")
    assert files == ["step_0000008.pt", "step_0000010.pt", "step_0000012.pt"]
    assert load_checkpoint(tmp_path / files[0])["global_step"] == 8


def test_a_failed_write_removes_no_file(tmp_path, monkeypatch):
    callback = ModelCheckpoint(tmp_path, save_top_k=1)
    trainer = StubTrainer(callback)
    trainer.run_epoch(0.5)
    callback.writer.wait()

    def disk_full(state, path):
        raise UserError(f"could not write checkpoint {path} (No space left on device)")

    monkeypatch.setattr(checkpoint, "save_checkpoint", disk_full)
    trainer.run_epoch(0.1)  # a better epoch: epoch 1's file is to go
    with pytest.raises(UserError, match="No space left"):
        callback.writer.wait()
    assert kept(tmp_path) == ["epoch_001-val_loss_0.5000.pt"]
    assert epoch_of(tmp_path / "best.pt") == 1 and epoch_of(tmp_path / "last.pt") == 1


VALUES = [0.5, 0.4, 0.6, 0.3, 0.2, 0.45, 0.1]
SETTINGS = {"save_top_k": 2, "every_n_steps": 2, "keep_step_checkpoints": 2}


def resumed(directory: Path, **settings) -> StubTrainer:
    """A new callback and trainer restored from ``directory/last.pt``, as resume=auto does."""
    trainer = StubTrainer(ModelCheckpoint(directory, **settings))
    trainer.load_state_dict(load_checkpoint(directory / "last.pt"))
    return trainer


def test_a_resume_restores_the_lists_and_removes_stale_files(tmp_path):
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    fit(unbroken, VALUES, **SETTINGS)
    fit(broken, VALUES[:4], **SETTINGS)
    # Stopped after writing a file and before removing the one it evicted; and a top-k file
    # of a write that never made it into last.pt. Snapshots and last_good.pt stay.
    (broken / "epoch_001-val_loss_0.5000.pt").write_bytes(b"evicted")
    (broken / "step_0000002.pt").write_bytes(b"evicted")
    (broken / "epoch_005-val_loss_0.2000.pt").write_bytes(b"not in the state")
    (broken / "epoch_002.pt").write_bytes(b"a snapshot")
    (broken / "last_good.pt").write_bytes(b"kept")
    trainer = resumed(broken, **SETTINGS)
    trainer.fit(VALUES[4:])
    retained = r"epoch_\d+-.*\.pt|step_\d+\.pt"
    assert kept(broken, retained) == kept(unbroken, retained)
    assert kept(broken, retained) == [
        "epoch_005-val_loss_0.2000.pt",
        "epoch_007-val_loss_0.1000.pt",
        "step_0000026.pt",
        "step_0000028.pt",
    ]
    assert epoch_of(broken / "epoch_005-val_loss_0.2000.pt") == 5  # written again, for real
    assert (broken / "epoch_002.pt").exists() and (broken / "last_good.pt").exists()
    assert not list(broken.glob("*.tmp"))  # relinking a file that is already the link
    assert trainer.callbacks[0].state_dict()["top_k"] == [
        {"epoch": 7, "value": 0.1, "file": "epoch_007-val_loss_0.1000.pt"},
        {"epoch": 5, "value": 0.2, "file": "epoch_005-val_loss_0.2000.pt"},
    ]


def test_a_resume_links_the_files_a_stopped_write_left_out(tmp_path):
    fit(tmp_path, VALUES[:4], save_top_k=2)
    # Stopped after last.pt of epoch 4 was written and before its links were made.
    (tmp_path / "epoch_004-val_loss_0.3000.pt").unlink()
    (tmp_path / "best.pt").unlink()
    os.link(tmp_path / "epoch_002-val_loss_0.4000.pt", tmp_path / "best.pt")
    trainer = resumed(tmp_path, save_top_k=2)
    run_callbacks(trainer.callbacks, "on_fit_start", trainer)
    assert kept(tmp_path) == ["epoch_002-val_loss_0.4000.pt", "epoch_004-val_loss_0.3000.pt"]
    assert os.path.samefile(tmp_path / "best.pt", tmp_path / "epoch_004-val_loss_0.3000.pt")
    assert epoch_of(tmp_path / "best.pt") == 4


def test_a_resume_in_another_folder_forgets_the_files_it_lacks(tmp_path):
    fit(tmp_path / "first", VALUES[:4], save_top_k=2)
    trainer = StubTrainer(ModelCheckpoint(tmp_path / "second", save_top_k=2))
    trainer.load_state_dict(load_checkpoint(tmp_path / "first" / "best.pt"))  # resume=best.pt
    trainer.fit([0.35])
    assert kept(tmp_path / "second") == ["epoch_005-val_loss_0.3500.pt"]


def test_on_train_end_saves_the_step_training_stopped_at(tmp_path):
    callback = ModelCheckpoint(tmp_path)
    trainer = StubTrainer(callback)
    trainer.run_epoch(0.5)
    trainer.global_step += 3  # a time limit stops training mid-epoch
    callback.on_train_end(trainer)
    assert load_checkpoint(tmp_path / "last.pt")["global_step"] == 7


def test_short_epochs_write_last_pt_when_worth_it_and_best_pt_still_holds_the_best(
    tmp_path, monkeypatch
):
    """Epochs of 1/8 s and writes that take 0.5 s (a fake clock): last.pt is written after the
    first epoch (its cost is then known), then once 5 s of training would be lost, and at the
    end; a best epoch in between is kept in memory and written with the next checkpoint, so
    best.pt always ends as the best epoch."""
    clock = itertools.count(step=0.25)  # two readings a write: 0.5 s each
    monkeypatch.setattr(
        "torchcamp.trainer.callbacks.checkpointing.time.perf_counter", lambda: next(clock)
    )
    callback = ModelCheckpoint(tmp_path)
    trainer = StubTrainer(callback, epoch_seconds=1 / 8)
    trainer.max_epochs = 120
    written = []
    save = callback.writer.save

    def recording_save(state, path, links=(), remove=(), earlier=()):
        written.append([(job.state["epoch"], job.path.name) for job in earlier])
        written[-1].append((state["epoch"], path.name))
        save(state, path, links, remove, earlier)

    callback.writer.save = recording_save
    values = [0.9 - 0.001 * epoch for epoch in range(1, 11)] + [1.0] * 110  # best: epoch 10
    trainer.fit(values)
    callback.writer.wait()
    assert written == [
        [(1, "last.pt")],
        [(10, "epoch_010-val_loss_0.8900.pt"), (41, "last.pt")],  # 5 s after epoch 1
        [(81, "last.pt")],
        [(120, "last.pt")],  # the end
    ]
    assert epoch_of(tmp_path / "best.pt") == 10
    assert kept(tmp_path) == ["epoch_010-val_loss_0.8900.pt"]


def test_a_best_epoch_in_memory_is_written_when_training_stops(tmp_path, monkeypatch):
    clock = itertools.count(step=0.25)
    monkeypatch.setattr(
        "torchcamp.trainer.callbacks.checkpointing.time.perf_counter", lambda: next(clock)
    )
    callback = ModelCheckpoint(tmp_path)
    trainer = StubTrainer(callback, epoch_seconds=1 / 8)
    trainer.fit([0.5, 0.4, 0.3])  # epochs 2 and 3: new bests, neither worth a last.pt
    callback.writer.wait()
    assert epoch_of(tmp_path / "best.pt") == 3 and epoch_of(tmp_path / "last.pt") == 3
    assert kept(tmp_path) == ["epoch_003-val_loss_0.3000.pt"]  # epoch 2's was never written


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"save_top_k": -2}, "save_top_k=-2"),
        ({"every_n_epochs": 0}, "every_n_epochs=0"),
        ({"keep_step_checkpoints": -1}, "keep_step_checkpoints=-1"),
        ({"keep_step_checkpoints": 3}, "keep_step_checkpoints=3"),
        ({"every_n_steps": 0}, "every_n_steps=0"),
    ],
)
def test_a_wrong_value_is_a_one_line_user_error(tmp_path, settings, key):
    with pytest.raises(UserError) as error:
        ModelCheckpoint(tmp_path, **settings)
    message = str(error.value)
    assert message.startswith(f"callbacks.checkpoint.{key} ") and "\n" not in message


@pytest.mark.slow
def test_a_run_keeps_its_best_epochs(run_in_process):
    result = run_in_process(
        "data.synthetic=true",
        "data.batch_size=16",
        "trainer.max_epochs=5",
        "trainer.monitor=val/loss",
        "trainer.monitor_mode=min",
        "callbacks=[checkpoint]",
        "callbacks.checkpoint.save_top_k=2",
        "callbacks.checkpoint.every_n_epochs=2",
        "callbacks.checkpoint.every_n_steps=3",
        "callbacks.checkpoint.keep_step_checkpoints=2",
    )
    logged = (result.run_dir / "train.log").read_text()
    losses = {int(e): v for e, v in re.findall(r"epoch (\d)/5 .*val/loss=([\d.]+)", logged)}
    best_two = sorted(losses, key=lambda epoch: (float(losses[epoch]), epoch))[:2]
    directory = result.run_dir / "checkpoints"
    names = sorted(f"epoch_{e:03d}-val_loss_{losses[e]}.pt" for e in best_two)
    assert kept(directory) == names
    for name in names:
        assert epoch_of(directory / name) == int(name[6:9])
    top = f"epoch_{best_two[0]:03d}-val_loss_{losses[best_two[0]]}.pt"
    assert os.path.samefile(directory / "best.pt", directory / top)
    assert kept(directory, r"epoch_\d+\.pt") == ["epoch_002.pt", "epoch_004.pt"]
    assert kept(directory, r"step_\d+\.pt") == ["step_0000015.pt", "step_0000018.pt"]
    assert not list(directory.glob("*.tmp"))


@pytest.mark.slow
def test_best_pt_holds_the_best_epochs_weights_when_last_pt_is_written_rarely(tmp_path):
    """The real Trainer on epochs of milliseconds with no write cheap enough: last.pt is
    written after the first epoch (to measure it) and the last only, so the best epoch (the
    7th, by a val/loss made so) waits in memory; best.pt still ends as its weights."""
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from torchcamp.tasks.classification import classification_step, summarize
    from torchcamp.trainer.callbacks import Callback
    from torchcamp.trainer.options import Limits, Reporting
    from torchcamp.trainer.trainer import Trainer

    class Weights(Callback):
        order = 5  # before ModelCheckpoint

        def __init__(self):
            self.by_epoch = {}

        def on_epoch_end(self, trainer, metrics):
            state = trainer.module.state_dict()
            self.by_epoch[trainer.epoch] = {k: v.clone() for k, v in state.items()}

    def step(model, batch, loss_fn):
        out = classification_step(model, batch, loss_fn)
        if not model.training:  # validation of epoch trainer.epoch + 1: best at epoch 7
            out["loss"] = out["loss"] * 0 + abs(trainer.epoch + 1 - 7)
        return out

    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(64, 6, generator=generator), torch.randint(0, 3, (64,)))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 3))
    weights, checkpoint = Weights(), ModelCheckpoint(tmp_path)
    writes = []
    save = checkpoint._save_last
    checkpoint._save_last = lambda trainer, *a: (writes.append(trainer.epoch), save(trainer, *a))
    trainer = Trainer(
        model, step, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(),
        limits=Limits(max_epochs=12), summarize_fn=summarize, callbacks=[weights, checkpoint],
        # No write is cheap enough before 5 s of training.
        reporting=Reporting(progress=False, extras_budget=0.0),
    )  # fmt: skip
    loader = DataLoader(data, batch_size=16)
    trainer.fit(loader, loader)
    assert trainer.best == 0 and writes == [1, 12]
    kept = load_checkpoint(tmp_path / "best.pt")
    assert kept["epoch"] == 7 and load_checkpoint(tmp_path / "last.pt")["epoch"] == 12
    for name, value in kept["model"].items():
        assert torch.equal(value, weights.by_epoch[7][name]), name
    assert not torch.equal(kept["model"]["0.weight"], model.state_dict()["0.weight"])
