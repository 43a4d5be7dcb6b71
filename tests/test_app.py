"""The application layer from outside: ``train(cfg)`` on a config composed with Hydra's compose
API (as a notebook or lightning-hydra-template's tests do), settings read once, callbacks as a
config group (a user's own callback, written outside the repository), and the run lock."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import train_in_process
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, ListConfig

from torchcamp.trainer.app.run_dir import RunDirectory
from torchcamp.trainer.app.settings import Settings, read_settings
from torchcamp.trainer.app.train import train
from torchcamp.trainer.errors import UserError

FAST = ["task=rmb", "data.synthetic=true", "trainer.max_epochs=1", "trainer.progress=false"]

# A user's callback in a package of their own: it records every event it sees, and, asking
# for `run`, what the run is built from.
USER_CALLBACK = """
import json
from pathlib import Path


class Recorder:
    order = 30

    def __init__(self, path, run=None):
        self.path = Path(path)
        self.events = []
        self.run_dir = str(run.directory.path) if run is not None else None

    def _note(self, event):
        self.events.append(event)
        self.path.write_text(json.dumps({"events": self.events, "run_dir": self.run_dir}))

    def on_fit_start(self, trainer):
        self._note("fit_start")

    def on_epoch_end(self, trainer, metrics):
        self._note(f"epoch_end {trainer.epoch} {sorted(metrics)[0]}")

    def on_fit_end(self, trainer, metrics):
        self._note("fit_end " + " ".join(sorted(k for k in metrics if k.startswith("test/"))))
"""


def composed(*overrides: str, hydra_config: bool = False) -> DictConfig:
    with initialize_config_module("torchcamp.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra_config)


@pytest.fixture
def user_package(tmp_path, monkeypatch) -> Path:
    """``mycallbacks.Recorder`` in a folder outside the repository, importable as a user's own
    installed package would be (and by subprocesses, through PYTHONPATH)."""
    folder = tmp_path / "userpkg"
    folder.mkdir()
    (folder / "mycallbacks.py").write_text(USER_CALLBACK)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", f"{folder}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return folder


def test_train_runs_in_process_on_a_composed_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    metrics = train(composed(*FAST), run_dir=tmp_path / "run")
    assert metrics["status"] == "completed" and metrics["epoch"] == 1
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics
    assert (tmp_path / "run" / "checkpoints" / "best.pt").exists()
    assert list((tmp_path / "run" / "tb").iterdir())


def test_a_config_with_hydra_settings_gives_its_run_dir_and_choices(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = composed(*FAST, "loss=focal", f"hydra.run.dir={tmp_path}/hydra_run", hydra_config=True)
    settings = read_settings(cfg)
    assert settings.run_dir == tmp_path / "hydra_run"
    assert settings.choices["loss"] == "focal" and "loss=focal" in settings.overrides
    assert "hydra" not in settings.config


def test_settings_are_plain_objects_read_once(tmp_path):
    settings = read_settings(composed(*FAST, "optimizer=adam"), run_dir=tmp_path)

    def visit(value, where):
        assert not isinstance(value, (DictConfig, ListConfig)), where
        if dataclasses.is_dataclass(value):
            for item in dataclasses.fields(value):
                visit(getattr(value, item.name), f"{where}.{item.name}")
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(item, f"{where}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                visit(item, f"{where}[{index}]")

    visit(settings, "settings")
    assert isinstance(settings, Settings) and settings.optimizer["_target_"] == "torch.optim.Adam"
    # The Trainer's keys pass straight through to its constructor.
    assert settings.trainer["max_epochs"] == 1 and settings.trainer["precision"] == "32"
    assert set(settings.callbacks) == {
        "checkpoint",
        "tensorboard",
        "model_views",
        "metrics_csv",
        "plots",
        "early_stopping",
    }


@pytest.mark.slow
def test_a_users_own_callback_joins_the_run_from_the_command_line(tmp_path, user_package):
    record = tmp_path / "events.json"
    command = [
        sys.executable,
        "-m",
        "torchcamp.trainer.app.cli",
        *FAST,
        "trainer.max_epochs=2",
        "+callbacks.recorder._target_=mycallbacks.Recorder",
        f"+callbacks.recorder.path={record}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(record.read_text())
    assert seen["events"][0] == "fit_start"
    assert seen["events"][1:3] == ["epoch_end 1 train/acc", "epoch_end 2 train/acc"]
    assert seen["events"][3].startswith("fit_end test/")
    assert seen["run_dir"] == str(tmp_path / "run")  # it asked for `run`, and got it


@pytest.mark.slow
def test_callbacks_can_be_dropped_or_all_left_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    metrics = train(composed(*FAST, "~callbacks.model_views"), run_dir=tmp_path / "no_views")
    assert metrics["status"] == "completed"
    metrics = train(composed(*FAST, "callbacks=none"), run_dir=tmp_path / "bare")
    assert "test/acc" in metrics  # tested with the weights training ended with
    assert not (tmp_path / "bare" / "checkpoints").exists()
    assert not (tmp_path / "bare" / "tb").exists()


def test_a_callback_that_does_not_import_is_one_line(tmp_path, monkeypatch, capsys):
    code, _ = train_in_process(
        monkeypatch, tmp_path, *FAST, "+callbacks.mine._target_=nowhere.Nothing"
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert err.strip().startswith("error: callbacks.mine._target_=nowhere.Nothing: cannot import")


@pytest.mark.slow
def test_importing_the_trainer_imports_no_torchvision():
    probe = (
        "import sys\n"
        "from torchcamp.trainer.trainer import Trainer\n"
        "import torchcamp.trainer.callbacks\n"
        "print('torchvision' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# ---- one process trains a run directory --------------------------------------------------


def hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process holding ``run_dir``'s lock (for two minutes at most), once it says so."""
    script = (
        "import time\n"
        "from pathlib import Path\n"
        "from torchcamp.trainer.app.run_dir import RunDirectory\n"
        f"with RunDirectory(Path({str(run_dir)!r})).lock():\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_the_run_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    run = RunDirectory(tmp_path / "run")
    with (
        run.lock(),
        pytest.raises(UserError, match=rf"is being trained by pid {os.getpid()} on "),
        run.lock(),
    ):
        pass
    with run.lock():  # released
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = hold_lock(tmp_path / "run")
    with pytest.raises(UserError, match=f"pid {holder.pid}"), RunDirectory(tmp_path / "run").lock():
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with RunDirectory(tmp_path / "run").lock():  # the kernel dropped the dead holder's lock
        pass


@pytest.mark.slow
def test_under_ddp_every_rank_is_refused_together(tmp_path, run_cli):
    # Rank 0 takes the lock; the others learn of its refusal through the group and stop too.
    holder = hold_lock(tmp_path / "held")
    try:
        result = run_cli(
            *FAST, "device=ddp", "device.devices=2", f"hydra.run.dir={tmp_path / 'held'}",
            check=False, timeout=120,
        )  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: run {tmp_path / 'held'} is being trained by pid {holder.pid} on "
        f"{socket.gethostname()}: one process trains a run at a time. Wait for it to end (or "
        "stop it), then resume=auto"
    ]
    assert not (tmp_path / "held" / "checkpoints").exists()


@pytest.mark.slow
def test_a_second_train_of_the_same_run_is_refused_and_writes_nothing(tmp_path, background_cli):
    # A trains with a checkpoint every step; B, the same command with resume=auto, would
    # continue A's run and write the same last.pt while A still trains.
    job = ("task=rmb", "data.synthetic=true", "trainer.max_epochs=300")
    job += ("callbacks.checkpoint.every_n_steps=1", "output_root=outputs")
    first = background_cli.start(tmp_path, *job, "hydra.run.dir=outputs/a")
    run_a = tmp_path / "outputs" / "a"
    last = run_a / "checkpoints" / "last.pt"
    while background_cli.saved_step(last) < 1:
        assert first.poll() is None, first.communicate()
        time.sleep(0.05)
    second = background_cli.start(tmp_path, *job, "resume=auto", "hydra.run.dir=outputs/a")
    _, err = second.communicate(timeout=120)
    still_training = first.poll() is None
    first.send_signal(signal.SIGTERM)
    _, first_err = first.communicate(timeout=120)

    assert still_training, "A ended before B tried: the test proves nothing"
    assert second.returncode == 2 and "Traceback" not in err, err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(f"error: run {run_a.resolve()} is being trained by pid {first.pid} on ")
    ), err
    assert first.returncode == 3, first_err  # A stopped cleanly, by the signal, not by B
    assert (run_a / ".lock").read_text().startswith(f"pid {first.pid} on ")
    assert not list(run_a.rglob("*.tmp"))  # no half-written checkpoint
    # B was refused before Hydra wrote its .hydra/ files or a log line into A's directory.
    assert "resume=auto" not in (run_a / ".hydra" / "overrides.yaml").read_text()
    assert "continuing the run" not in (run_a / "train.log").read_text()
