"""A normal (non-editable) install carries the configs and installs nothing at top level."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_ships_configs_under_the_torchcamp_namespace(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    assert "would be ignored" not in built.stdout + built.stderr  # setuptools' packaging warning
    (wheel,) = tmp_path.glob("torchcamp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {name.removeprefix("torchcamp/conf/") for name in names if name.endswith(".yaml")}
    in_repo = {str(path.relative_to(REPO / "conf")) for path in (REPO / "conf").rglob("*.yaml")}
    assert in_repo <= shipped, f"not in the wheel: {sorted(in_repo - shipped)}"
    # Every module of the four source folders, sub-packages included (tasks/models/).
    sources = {
        f"torchcamp/{path.relative_to(REPO)}"
        for folder in ("trainer", "tasks", "datasets", "conf")
        for path in (REPO / folder).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert sources <= set(names), f"not in the wheel: {sorted(sources - set(names))}"
    top_level = {name.split("/")[0] for name in names}
    assert top_level <= {"torchcamp", wheel.name.split("-")[0] + "-0.1.0.dist-info"}, top_level
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert (
        "train = torchcamp.trainer.app.cli:main"
        in zipfile.ZipFile(wheel).read(entry_points).decode()
    )
