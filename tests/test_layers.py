"""The layers: the library (``trainer/`` outside ``trainer/app/``) never imports the CLI above
it (``trainer/app/``) or the tasks (``tasks/``); what it needs is passed in. Checked on the
source: every import, those inside functions and ``TYPE_CHECKING`` blocks too."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "trainer"
ABOVE = ("torchcamp.trainer.app", "torchcamp.tasks")


def package_of(path: Path) -> str:
    """The package a module of trainer/ is in: ``torchcamp.trainer.callbacks`` for
    trainer/callbacks/csv_logger.py (and for trainer/callbacks/__init__.py)."""
    return ".".join(("torchcamp", "trainer", *path.relative_to(LIBRARY).parent.parts))


def imports(source: str, package: str) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in ``source``, a module of ``package``; relative
    imports made absolute, and ``from X import y`` read as X and as X.y (y may be a module)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}".rstrip(".")
            found += [(node.lineno, base), *((node.lineno, f"{base}.{a.name}") for a in node.names)]
    return found


def reaching_up(source: str, package: str) -> list[str]:
    """``"line N imports M"`` for each import of ``source`` that reaches the layers above."""
    lines = {}
    for line, module in imports(source, package):
        if any(module == above or module.startswith(above + ".") for above in ABOVE):
            lines.setdefault(line, f"line {line} imports {module}")
    return [lines[line] for line in sorted(lines)]


def test_the_library_imports_neither_the_app_nor_the_tasks():
    library = [p for p in LIBRARY.rglob("*.py") if "app" not in p.relative_to(LIBRARY).parts]
    assert len(library) > 20
    offending = [
        f"{path.relative_to(REPO)}: {problem}"
        for path in sorted(library)
        for problem in reaching_up(path.read_text(), package_of(path))
    ]
    assert not offending, "the library reaches up:\n" + "\n".join(offending)


def test_the_check_sees_relative_imports_and_imports_inside_functions():
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from torchcamp.tasks.contract import Task\n"
        "def f():\n    from ..app import cli\n    import torchcamp.tasks.names\n"
        "from .. import app\nfrom ..checkpoint import save_checkpoint\n"
    )
    assert reaching_up(source, "torchcamp.trainer.callbacks") == [
        "line 3 imports torchcamp.tasks.contract",
        "line 5 imports torchcamp.trainer.app",
        "line 6 imports torchcamp.tasks.names",
        "line 7 imports torchcamp.trainer.app",
    ]
    assert package_of(LIBRARY / "callbacks" / "__init__.py") == "torchcamp.trainer.callbacks"
