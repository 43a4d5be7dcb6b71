"""A normal (non-editable) install carries the configs and installs nothing at top level."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_configs_under_the_torchcamp_namespace(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("torchcamp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "torchcamp/conf/config.yaml" in names
    assert "torchcamp/conf/task/rmb.yaml" in names
    assert "torchcamp/trainer/cli.py" in names
    top_level = {name.split("/")[0] for name in names}
    assert top_level <= {"torchcamp", wheel.name.split("-")[0] + "-0.1.0.dist-info"}, top_level
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert (
        "train = torchcamp.trainer.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    )
