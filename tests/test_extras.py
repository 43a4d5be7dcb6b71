"""The time budget of the periodic extras (views, histograms, confusion images, curves): which
epochs get them, with a fake clock (trainer/extras.py), and the keys that set it from the CLI."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from torchcamp.trainer.callbacks.run_plots import RunPlots
from torchcamp.trainer.extras import EpochSchedule, ExtrasBudget


class FakeClock:
    """Seconds that pass only when told: an extra "takes" ``cost`` by advancing it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# Binary fractions, so that the budget's sums are exact: 1/64 of the training time (~1.6%),
# an extra that takes 1/16 s.
FRACTION, COST = 1 / 64, 1 / 16


def run_epochs(schedule, trainer, clock, epochs, epoch_seconds=1.0, cost=COST, stop_at=None):
    """Train ``epochs`` epochs of ``epoch_seconds`` each; the extra costs ``cost`` seconds.
    Returns the epochs after which it ran (``stop_at``: training ends there, early)."""
    ran = []

    def extra():
        ran.append(trainer.epoch)
        clock.now += cost

    for epoch in range(1, epochs + 1):
        trainer.epoch, trainer.fit_seconds = epoch, epoch * epoch_seconds
        schedule.run_if_due(trainer, extra)
        if epoch == stop_at:
            break
    schedule.run_at_end(trainer, extra)
    return ran


def fake_trainer(fraction, max_epochs, clock):
    return SimpleNamespace(
        epoch=0, max_epochs=max_epochs, fit_seconds=0.0, extras=ExtrasBudget(fraction, clock)
    )


def test_first_and_last_epoch_and_in_between_as_the_budget_allows():
    clock = FakeClock()
    trainer = fake_trainer(FRACTION, 30, clock)
    ran = run_epochs(EpochSchedule("views"), trainer, clock, 30)
    # Once the first epoch's has been paid for, a run whenever what all runs took stays within
    # 1/64 of the training time: 2/16 s at 8 s, 3/16 s at 12 s, ...; and the last epoch.
    assert ran == [1, 8, 12, 16, 20, 24, 28, 30]
    assert trainer.extras.spent["views"] == COST * len(ran)
    assert (
        trainer.extras.spent["views"] <= FRACTION * trainer.fit_seconds + COST
    )  # over by one at most


def test_long_epochs_get_the_extras_every_time():
    clock = FakeClock()
    trainer = fake_trainer(FRACTION, 6, clock)
    assert run_epochs(EpochSchedule("views"), trainer, clock, 6, epoch_seconds=60) == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]


def test_each_extra_keeps_to_its_own_allowance():
    clock = FakeClock()
    trainer = fake_trainer(FRACTION, 30, clock)
    views, histograms = EpochSchedule("views"), EpochSchedule("histograms")
    ran = {"views": [], "histograms": []}
    for epoch in range(1, 31):
        trainer.epoch, trainer.fit_seconds = epoch, float(epoch)
        for name, schedule, cost in (("views", views, COST), ("histograms", histograms, 1.0)):

            def extra(name=name, cost=cost):
                ran[name].append(trainer.epoch)
                clock.now += cost

            schedule.run_if_due(trainer, extra)
    assert ran["views"] == [1, 8, 12, 16, 20, 24, 28, 30]  # as alone: not starved
    assert ran["histograms"] == [1, 30]  # 1 s a time: 2 s of it only fit at 128 s
    assert trainer.extras.spent == {"views": 8 * COST, "histograms": 2.0}


def test_zero_budget_means_at_the_end_only_and_every_n_epochs_wins():
    clock = FakeClock()
    assert run_epochs(EpochSchedule("views"), fake_trainer(0, 10, clock), clock, 10) == [10]
    every_3 = EpochSchedule("views", every_n_epochs=3)
    assert run_epochs(every_3, fake_trainer(0, 10, clock), clock, 10) == [1, 3, 6, 9, 10]
    every_1 = EpochSchedule("views", every_n_epochs=1)  # every view every epoch, whatever it costs
    ran = run_epochs(every_1, fake_trainer(FRACTION, 5, clock), clock, 5, cost=10.0)
    assert ran == [1, 2, 3, 4, 5]


def test_an_early_stop_gets_the_extras_for_its_last_epoch_once():
    clock = FakeClock()
    trainer = fake_trainer(FRACTION, 30, clock)
    assert run_epochs(EpochSchedule("views"), trainer, clock, 30, stop_at=7) == [1, 7]
    trainer = fake_trainer(FRACTION, 30, clock)
    assert run_epochs(EpochSchedule("views"), trainer, clock, 30, stop_at=8) == [1, 8]  # not twice


def test_a_resumed_run_measures_an_extra_once_then_keeps_to_the_budget():
    clock = FakeClock()
    trainer = fake_trainer(FRACTION, 30, clock)
    trainer.extras.spent = {
        "views": 4 * COST
    }  # what the run it continues spent (in its checkpoint)
    schedule, ran = EpochSchedule("views"), []

    def extra():
        ran.append(trainer.epoch)
        clock.now += COST

    for epoch in range(12, 31):  # resumed after epoch 11: no cost known in this process yet
        trainer.epoch, trainer.fit_seconds = epoch, float(epoch)
        schedule.run_if_due(trainer, extra)
    assert ran == [12, 24, 28, 30]  # measured once; then 6/16 s at 24 s, 7/16 s at 28 s, last


def test_curves_skip_the_first_epoch_and_are_drawn_once_at_the_end(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(
        "torchcamp.trainer.plots.draw_curves", lambda rows, *args: drawn.append(len(rows))
    )
    clock = FakeClock()
    trainer = fake_trainer(FRACTION, 3, clock)
    trainer.epoch_counts = {}
    plots = RunPlots(tmp_path / "curves.png", tmp_path / "confusion_matrix.png")
    for epoch in (1, 2, 3):
        trainer.epoch, trainer.fit_seconds = epoch, 60.0 * epoch  # long epochs: within budget
        trainer.history = [{"epoch": e} for e in range(1, epoch + 1)]
        plots.on_epoch_end(trainer, {})
    plots.on_fit_end(trainer, {})
    assert drawn == [2, 3]  # not after epoch 1 (one point); epoch 3's at the end, once


def image_steps(run_dir, prefix):
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"images": 0, "histograms": 0})
    events.Reload()
    tags = events.Tags()
    steps = {tag: [e.step for e in events.Images(tag)] for tag in tags["images"]}
    steps |= {tag: [e.step for e in events.Histograms(tag)] for tag in tags["histograms"]}
    return {tag: s for tag, s in steps.items() if tag.startswith(prefix)}


@pytest.mark.slow
def test_the_keys_from_the_cli(run_in_process):
    """Four epochs of 4 steps. trainer.extras_budget=0: the views and histograms once, at
    the end (step 16); callbacks.model_views.every_n_epochs=1 brings every epoch's views back
    (and the histograms stay at the end)."""
    args = ("data.synthetic=true", "trainer.max_epochs=4", "callbacks=[tensorboard,model_views]")
    end_only = run_in_process(*args, "trainer.extras_budget=0").run_dir
    assert set(map(tuple, image_steps(end_only, "kernels/").values())) == {(16,)}
    assert set(map(tuple, image_steps(end_only, "params/").values())) == {(16,)}
    every = run_in_process(
        *args, "trainer.extras_budget=0", "callbacks.model_views.every_n_epochs=1"
    ).run_dir
    assert set(map(tuple, image_steps(every, "grad_cam/").values())) == {(4, 8, 12, 16)}
    assert set(map(tuple, image_steps(every, "params/").values())) == {(16,)}
