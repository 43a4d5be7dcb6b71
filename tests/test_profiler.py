"""The profiler callback (``debug=profile``): a Chrome trace of a few optimizer steps and the
top operators in the log; too short a run warns instead of failing."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from torchcamp.tasks.classification import classification_step
from torchcamp.trainer.app.callbacks import profiler as profiler_factory
from torchcamp.trainer.app.run_dir import RunDirectory
from torchcamp.trainer.callbacks.profiler import Profiler
from torchcamp.trainer.errors import UserError
from torchcamp.trainer.options import Reporting
from torchcamp.trainer.trainer import Trainer

LOGGER = "torchcamp.trainer.callbacks.profiler"


def fit(callback: Profiler, steps: int) -> None:
    """One epoch of ``steps`` optimizer steps of a small MLP on in-memory data, then val."""
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(2 * steps, 6, generator=generator), torch.arange(2 * steps) % 3
    )
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(
        model,
        classification_step,
        optimizer,
        nn.CrossEntropyLoss(),
        callbacks=[callback],
        reporting=Reporting(progress=False),
    )
    trainer.fit(DataLoader(data, batch_size=2), DataLoader(data, batch_size=4))


def read_trace(directory) -> list[dict]:
    trace = json.loads((directory / "trace.json").read_text())
    return trace["traceEvents"]


def test_trace_and_table_of_the_active_steps(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    out = tmp_path / "profile"
    fit(Profiler(out, wait=1, warmup=1, active=2), steps=6)

    events = read_trace(out)
    names = {event.get("name", "") for event in events}
    assert any(name.startswith("aten::") for name in names)
    # Two recorded steps, each marked by the profiler: steps 3 and 4 of the run.
    assert {"ProfilerStep#2", "ProfilerStep#3"} <= names
    assert sorted(p.name for p in out.iterdir()) == ["trace.json"]  # no temporary file left
    assert f"trace written to {out / 'trace.json'}" in caplog.text
    assert "ui.perfetto.dev" in caplog.text
    assert "self_cpu_time_total" in caplog.text
    assert "aten::addmm" in caplog.text or "aten::linear" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_too_few_steps_warns_and_writes_nothing(tmp_path, caplog):
    out = tmp_path / "profile"
    fit(Profiler(out, wait=1, warmup=1, active=2), steps=2)

    assert not out.exists()
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "took 2 optimizer step(s)" in warning.message
    assert "callbacks.profiler.wait/warmup/active" in warning.message


def test_a_run_ending_inside_the_active_window_keeps_what_it_recorded(tmp_path, caplog):
    out = tmp_path / "profile"
    profiler = Profiler(out, wait=1, warmup=1, active=4)
    exports = []
    export = profiler._export
    profiler._export = lambda prof: (exports.append(prof.step_num), export(prof))
    fit(profiler, steps=4)

    names = {event.get("name", "") for event in read_trace(out)}
    assert {"ProfilerStep#2", "ProfilerStep#3"} <= names
    assert len(exports) == 1  # whether torch exported on stop() or the callback did
    assert "after 2 of the 4 active steps" in caplog.text


class QuietOnStop(Profiler):
    """As with a torch whose ``stop()`` inside the active window does not call
    ``on_trace_ready``: the callback must export what was recorded itself."""

    def finish(self) -> None:
        if self.profiler is not None:
            self.profiler.on_trace_ready = None
        super().finish()


def test_the_callback_exports_when_torch_does_not_on_stop(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    out = tmp_path / "profile"
    fit(QuietOnStop(out, wait=1, warmup=1, active=4), steps=3)

    names = {event.get("name", "") for event in read_trace(out)}
    assert "ProfilerStep#2" in names
    assert "trace written to" in caplog.text
    assert "after 1 of the 4 active steps" in caplog.text


def test_bad_window_is_one_line_naming_the_keys(tmp_path):
    with pytest.raises(UserError, match=r"callbacks\.profiler: .*active=0"):
        Profiler(tmp_path, active=0)


def test_factory_adds_nothing_on_other_ranks(tmp_path):
    assert profiler_factory(SimpleNamespace(is_main=False)) is None
    run = SimpleNamespace(is_main=True, directory=RunDirectory(tmp_path))
    built = profiler_factory(run, wait=0, warmup=0, active=1, row_limit=5)
    assert built.output_dir == tmp_path / "profile"
    assert (built.wait, built.warmup, built.active, built.row_limit) == (0, 0, 1, 5)


@pytest.mark.slow
def test_debug_profile_from_the_cli(run_in_process):
    # callbacks=none drops the default callbacks, not the one debug=profile adds.
    result = run_in_process(
        "debug=profile", "data.synthetic=true", "data.batch_size=4", "callbacks=none"
    )

    trace = result.run_dir / "profile" / "trace.json"
    names = {event.get("name", "") for event in read_trace(trace.parent)}
    assert any(name.startswith("aten::") for name in names)
    log = (result.run_dir / "train.log").read_text()
    assert f"trace written to {trace}" in log
    assert "self_cpu_time_total" in log or "self_cuda_time_total" in log
    assert "no trace written" not in log and "active steps" not in log  # the whole window
