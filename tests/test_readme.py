"""The README documents every option of every config group."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GROUPS = (
    "task",
    "model",
    "optimizer",
    "scheduler",
    "loss",
    "regularizer",
    "device",
    "hparams_search",
    "callbacks",
    "logger",
    "transforms",
    "debug",
)
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((REPO / "conf" / g).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_readme_describes_option(group, option):
    readme = (REPO / "README.md").read_text()
    # A table row that starts with the option, or the group's row that names it.
    rows = [line for line in readme.splitlines() if line.startswith("|")]
    assert any(
        line.startswith(f"| `{option}` |")
        or (line.startswith(f"| `{group}` |") and f"`{option}`" in line)
        for line in rows
    ), f"README.md has no row describing {group}={option}"
