"""The documentation: the generated config reference covers every option, and every command
line in docs/ composes (no training)."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_module
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from torchcamp.trainer.app.help import EXPORT_OPTIONS
from torchcamp.trainer.app.validation import RULES, validate

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
sys.path.insert(0, str(DOCS / "hooks"))
import config_reference  # noqa: E402  (docs/hooks is not a package: the MkDocs hook)

OPTIONS = sorted(
    (p.parent.relative_to(REPO / "conf").as_posix(), p.stem)
    for p in (REPO / "conf").rglob("*.yaml")
    if p.parent != REPO / "conf"
)
COMMANDS = ("train", "evaluate", "predict", "export-model")
COMMAND_LINE = re.compile(
    r"^\s*(\S+=\S+\s+|srun\s+)*(train|evaluate|predict|export-model|torchrun)\s"
)
# Each inference command's own options (the rest change the checkpoint's config).
OWN_KEYS = {
    "evaluate": ("ckpt", "output_dir"),
    "predict": ("ckpt", "inputs", "predict"),
    "export-model": EXPORT_OPTIONS,
}


@pytest.fixture(scope="module")
def reference() -> str:
    return config_reference.render()


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_reference_describes_option(reference, group, option):
    """Every YAML file of conf/ has a section with its leading comment as its meaning."""
    section = reference.split(f"### `{group}={option}`\n\n", 1)
    assert len(section) == 2, f"reference has no section for {group}={option}"
    assert not section[1].startswith("(no description)"), (
        f"conf/{group}/{option}.yaml has no leading comment saying what it is"
    )


def test_reference_lists_every_checked_key(reference):
    for key in RULES:
        assert f"`{key}`" in reference, f"reference lacks {key}"


def test_reference_gives_root_defaults(reference):
    assert "| `trainer.max_epochs` | `10` | an integer >= 1 | epochs to train |" in reference


def test_reference_gives_every_key_a_meaning(reference):
    """Every key row's last cell (its meaning) says something: a comment beside or above it."""
    section, empty = "", []
    for line in reference.splitlines():
        if line.startswith("#"):
            section = line.lstrip("# ")
        elif line.startswith("| `") and not line.rsplit("|", 2)[-2].strip():
            empty.append(f"{section}: {line.split('|')[1].strip()}")
    assert not empty, "keys without a comment saying what they do:\n" + "\n".join(empty)


def doc_files() -> dict[str, str]:
    """The code blocks of docs/ whose info string names a file: ```python file=regression.py"""
    files: dict[str, str] = {}
    for page in sorted(DOCS.rglob("*.md")):
        files.update(re.findall(r"```\w+ file=(\S+)\n(.*?)```", page.read_text(), re.DOTALL))
    return files


def command_lines() -> list[tuple[str, str]]:
    """(page, line) for every train/evaluate/predict/export-model line of a code block of
    the README and docs/."""
    found = []
    for page in [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]:
        for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", page.read_text(), re.DOTALL):
            for line in block.replace("\\\n", " ").splitlines():
                for part in line.split(";"):
                    if not COMMAND_LINE.match(part):
                        continue
                    words = shlex.split(part, comments=True)
                    while words and ("=" in words[0] or words[0] == "srun"):
                        words = words[1:]  # VAR=value train ..., srun train ...
                    if words and words[0] == "torchrun":
                        words = ["train", *words[words.index("torchcamp.trainer.app.cli") + 1 :]]
                    if words and words[0] in COMMANDS:
                        found.append((str(page.relative_to(REPO)), shlex.join(words)))
    return found


COMMAND_LINES = command_lines()
COMPOSED: set[tuple[str, ...]] = set()


@pytest.fixture(scope="module")
def hydra_conf():
    """Hydra initialised once for every command (composing is quick, initialising is not)."""
    GlobalHydra.instance().clear()
    with initialize_config_module("torchcamp.conf", version_base="1.3"):
        yield


@pytest.fixture(scope="module")
def own_files(tmp_path_factory) -> Path:
    """The docs' own files (the regression task's configs/...) in a folder, as a user has them."""
    folder = tmp_path_factory.mktemp("docs_files")
    for name, text in doc_files().items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def _overrides(command: str, words: list[str], own_files: Path) -> list[str]:
    """The Hydra overrides a command line gives, its flags dropped (first job of a sweep)."""
    overrides, sweep = [], False
    words = list(words)
    while words:
        word = words.pop(0)
        if word in ("--help", "-h"):
            continue
        if word == "-m":
            sweep = True
        elif word == "--cfg":
            words.pop(0)
        elif word == "--config-dir":
            overrides.append(f"hydra.searchpath=[file://{own_files / words.pop(0)}]")
        elif command != "train" and word.split("=")[0].split(".")[0] in OWN_KEYS[command]:
            continue
        else:
            overrides.append(word)
    if sweep:
        parsed = OverridesParser.create().parse_overrides(overrides)
        overrides = BasicSweeper.split_arguments(parsed, None)[0][0]
    return overrides


def test_docs_have_commands():
    assert len(COMMAND_LINES) > 60
    assert {command.split()[0] for _, command in COMMAND_LINES} == set(COMMANDS)


@pytest.mark.parametrize(("page", "command"), COMMAND_LINES)
def test_command_composes(hydra_conf, own_files, page, command):
    """The command's overrides compose into a config that passes the rules table."""
    words = [os.path.expandvars(word) for word in shlex.split(command)]  # $HOME, as the shell
    overrides = tuple(_overrides(words[0], words[1:], own_files))
    if overrides not in COMPOSED:  # many lines give the same overrides: compose those once
        validate(compose("config", overrides=list(overrides)))
        COMPOSED.add(overrides)


def test_callback_example_runs(own_files, monkeypatch, capsys):
    """docs/extending/callback.md's EpochTimer, against a stand-in for the Trainer."""
    monkeypatch.syspath_prepend(str(own_files))
    from mypkg import EpochTimer

    timer, trainer = EpochTimer(every=2), SimpleNamespace(epoch=2)
    timer.on_fit_start(trainer)
    timer.on_epoch_end(trainer, {"val/acc": 1.0})
    assert capsys.readouterr().out.startswith("epoch 2: ")


def test_transforms_example_builds(hydra_conf, own_files):
    """docs/extending/transforms.md's grayscale recipe composes, builds and runs on an image."""
    from hydra.utils import instantiate
    from PIL import Image

    configs = f"hydra.searchpath=[file://{own_files / 'configs'}]"
    overrides = [configs, "task=imagefolder", "transforms=grayscale", "data.image_size=128"]
    cfg = compose("config", overrides=overrides)
    image = Image.new("RGB", (200, 160), (200, 40, 40))
    for split in ("train", "eval"):
        assert tuple(instantiate(cfg.transforms[split])(image).shape) == (3, 128, 128)


def test_readme_links_exist():
    """The README's links into the repository (docs/...) name files that are there: MkDocs
    checks docs/ itself (--strict), not the README."""
    readme = (REPO / "README.md").read_text()
    for target in re.findall(r"\]\(((?!https?:)[^)#]+)(?:#[^)]*)?\)", readme):
        assert (REPO / target).exists(), f"README.md links to {target}, which is not there"
