"""Shared fixtures: run the real CLI in a subprocess, read run directories back, build a
task preset's datasets as ``train`` builds them, draw small image files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PIL import Image

if TYPE_CHECKING:
    from torchcamp.trainer.app.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


class CliResult:
    def __init__(self, completed: subprocess.CompletedProcess, run_dir: Path):
        self.returncode = completed.returncode
        self.stdout = completed.stdout
        self.stderr = completed.stderr
        self.run_dir = run_dir

    @property
    def metrics(self) -> dict:
        return json.loads((self.run_dir / "metrics.json").read_text())


def cli_command(*args: str) -> tuple[list[str], dict[str, str]]:
    """``train ARGS`` as ``python -m torchcamp.trainer.app.cli`` without progress bars, and its
    environment (unbuffered output, no TORCHCAMP_DATA from the developer's shell)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("TORCHCAMP_DATA", None)
    return [sys.executable, "-m", "torchcamp.trainer.app.cli", *args, "trainer.progress=false"], env


@pytest.fixture
def run_cli(tmp_path):
    """Run ``train ARGS`` (as ``python -m torchcamp.trainer.app.cli``) with cwd=tmp_path.

    Unless the args name one, the run directory is ``tmp_path/run<N>``. Returns a CliResult.
    """
    counter = iter(range(1000))

    def run(*args: str, check: bool = True, timeout: int = 300) -> CliResult:
        args = list(args)
        run_dir = tmp_path / f"run{next(counter)}"
        if not any(a.startswith(("hydra.run.dir=", "-m", "--multirun")) for a in args):
            args.append(f"hydra.run.dir={run_dir}")
        command, env = cli_command(*args)
        completed = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
        )
        result = CliResult(completed, run_dir)
        if check and completed.returncode != 0:
            raise AssertionError(
                f"train {' '.join(args)} exited {completed.returncode}\n"
                f"stdout:\n{completed.stdout[-3000:]}\nstderr:\n{completed.stderr[-3000:]}"
            )
        return result

    return run


def preset_settings(task: str, root: str | Path, *overrides: str, seed: int = 0) -> Settings:
    """The settings of ``train task=TASK data.root=ROOT seed=SEED OVERRIDES``: the real config
    composed (``conf/``) and read as ``train`` reads it."""
    from hydra import compose, initialize_config_module

    from torchcamp.trainer.app.settings import read_settings

    with initialize_config_module("torchcamp.conf", version_base="1.3"):
        cfg = compose("config", [f"task={task}", f"data.root={root}", f"seed={seed}", *overrides])
    return read_settings(cfg, run_dir=Path(root) / "run")


def preset_datasets(task: str, root: str | Path, *overrides: str, seed: int = 0) -> dict:
    """The datasets by split that ``train task=TASK data.root=ROOT seed=SEED OVERRIDES``
    trains on, built the way ``train`` builds them (the task's ``TASK``, the config's ``data.*``
    keys and transforms; ``data.synthetic=true`` renders into ``root``)."""
    from torchcamp.trainer.app.assembly import load_task
    from torchcamp.trainer.app.data import build_datasets

    settings = preset_settings(task, root, *overrides, seed=seed)
    splits, _ = build_datasets(settings, load_task(settings), Path(root))
    return splits


# A user's own model for model=custom: a module of theirs in the working directory.
CUSTOM_MODEL_MODULE = "tinynet"
CUSTOM_MODEL_SOURCE = """
from torch import nn


class TinyNet(nn.Module):
    \"\"\"A small convolutional classifier for images of any size.\"\"\"

    def __init__(self, num_classes, width=8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.fc = nn.Linear(width, num_classes)

    def forward(self, images):
        return self.fc(self.features(images))
"""


@pytest.fixture
def custom_model(tmp_path, monkeypatch) -> Iterator[str]:
    """``model._target_=tinynet.TinyNet``, the override ``model=custom`` needs, naming a small
    ``nn.Module`` class in ``tinynet.py``, written into ``tmp_path`` and made the working
    directory, as a user would run it. The module leaves ``sys.modules`` after the test."""
    (tmp_path / f"{CUSTOM_MODEL_MODULE}.py").write_text(CUSTOM_MODEL_SOURCE)
    monkeypatch.chdir(tmp_path)
    yield f"model._target_={CUSTOM_MODEL_MODULE}.TinyNet"
    sys.modules.pop(CUSTOM_MODEL_MODULE, None)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "RMB_data").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


def train_in_process(
    monkeypatch, tmp_path: Path, *args: str, run_name: str = "run"
) -> tuple[int, Path]:
    """``train ARGS`` in this process (the ``main`` the console script runs), fast for many runs.

    Returns (exit code, run directory); the run directory is ``tmp_path/<run_name>`` unless
    ``args`` name one (``hydra.run.dir=...``).
    """
    from torchcamp.trainer.app.cli import main

    given = [a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")]
    run_dir = tmp_path / (given[-1] if given else run_name)  # an absolute one stays as it is
    own_dir = [] if given else [f"hydra.run.dir={run_dir}"]
    argv = ["train", *args, *own_dir, "trainer.progress=false"]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(sys, "path", list(sys.path))  # main() puts the cwd first, for good
    monkeypatch.chdir(tmp_path)
    try:
        main()
    except SystemExit as exit_:
        return int(exit_.code or 0), run_dir
    return 0, run_dir


@pytest.fixture
def run_in_process(monkeypatch, tmp_path, capsys):
    """``run_cli``'s twin for quick runs: ``train ARGS`` in this process (see
    :func:`train_in_process`), returning the same kind of result, in ``tmp_path/run<N>``."""
    monkeypatch.delenv("TORCHCAMP_DATA", raising=False)
    counter = iter(range(1000))

    def run(*args: str, check: bool = True) -> InProcessResult:
        name = f"run{next(counter)}"
        code, run_dir = train_in_process(monkeypatch, tmp_path, *args, run_name=name)
        out, err = capsys.readouterr()
        if check and code != 0:
            raise AssertionError(f"train {' '.join(args)} exited {code}\n{err[-3000:]}")
        return InProcessResult(code, out, err, run_dir)

    return run


class InProcessResult(CliResult):
    def __init__(self, returncode: int, stdout: str, stderr: str, run_dir: Path):
        self.returncode, self.stdout, self.stderr, self.run_dir = (
            returncode,
            stdout,
            stderr,
            run_dir,
        )


# ---- runs that are stopped from outside: kills and signals ----------------------------------


class BackgroundCli:
    """``train`` processes started in the background, and signals sent at a chosen step."""

    @staticmethod
    def start(cwd: Path, *args: str) -> subprocess.Popen:
        """``train ARGS`` (with ``trainer.progress=false``) in ``cwd``; output captured."""
        command, env = cli_command(*args)
        pipe = subprocess.PIPE
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=pipe, stderr=pipe, text=True)

    @staticmethod
    def saved_step(last: Path) -> int:
        """The optimizer step ``last`` holds; -1 before it is written."""
        from torchcamp.trainer.checkpoint import load_checkpoint

        try:
            return load_checkpoint(last)["global_step"]
        except Exception:  # not written yet
            return -1

    @classmethod
    def signal_at_step(cls, process: subprocess.Popen, last: Path, step: int, signum: int) -> None:
        """Send ``signum`` once ``last`` holds optimizer step ``step`` or a later one (the run
        is wherever it has got to by then: mid-epoch, mid-window, writing a checkpoint...)."""
        while process.poll() is None and cls.saved_step(last) < step:
            time.sleep(0.005)
        assert process.poll() is None, f"the run ended before step {step}: {process.communicate()}"
        process.send_signal(signum)


@pytest.fixture(scope="session")
def background_cli() -> type[BackgroundCli]:
    return BackgroundCli


# ---- small image files drawn for the data tests --------------------------------------------


def write_image(path: Path, value: int = 0, suffix_format: str = "PNG") -> Path:
    """An 8x8 RGB image whose pixels all hold ``value`` (so images with different values
    differ in content)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value % 256, value // 256, 7)).save(path, suffix_format)
    return path


def write_classes(folder: Path, counts: dict[str, int], suffix: str = ".png") -> None:
    """``counts[name]`` distinct images in ``folder/<name>/``."""
    value = 0
    for name, count in counts.items():
        for index in range(count):
            value += 1
            write_image(folder / name / f"img{index:03d}{suffix}", value)


def write_images(folder: Path, count: int, prefix: str = "img") -> None:
    """``count`` distinct 40x20 JPEGs in ``folder``: ``img00.jpg``, ``img01.jpg``..."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.new("RGB", (40, 20), (index, 0, 0)).save(folder / f"{prefix}{index:02d}.jpg")
