"""``model=custom``: the user's own model, named by ``model._target_=mynets.TinyNet``.

Two helpers for the app: :func:`import_model_target` finds the class or function (a module in
the working directory included, as ``python -m`` would), and :func:`build_custom` calls it for
a task, each mistake one line that says what to fix.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import logging
import os
import sys
import sysconfig
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn

from torchcamp.trainer.errors import UserError, first_line

log = logging.getLogger("torchcamp")

# sysconfig's folders of installed and standard-library modules: nothing to record there.
INSTALLED_PATHS = ("purelib", "platlib", "stdlib", "platstdlib")

# Module name -> the file a checkpoint's run imported it from, where that file is gone: named
# in the error when the module cannot be imported here either.
_gone: dict[str, str] = {}


def import_model_target(path: str) -> Callable[..., Any]:
    """The class or function that ``path`` (``module.Name``, e.g. ``mynets.TinyNet``) names.

    The working directory is searched first, as ``python -m`` would: the ``train`` script runs
    from the virtual environment's ``bin/``, whose path would not find ``mynets.py`` next to the
    user. Nested names (``module.Outer.Inner``) are not looked up: name a module-level one.
    """
    module_name, _, attribute = str(path).rpartition(".")
    if not module_name or not attribute:
        raise UserError(
            f"model._target_={path}: give module.Name, the module's dotted path and the class or "
            "function in it, e.g. model._target_=mynets.TinyNet"
        )
    module = import_user_module(f"model._target_={path}", module_name)
    if not hasattr(module, attribute):
        public = [name for name in vars(module) if not name.startswith("_")]
        close = difflib.get_close_matches(attribute, public, n=3)
        hint = f": did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"model._target_={path}: {module_name} has no {attribute}{hint}")
    target = getattr(module, attribute)
    if not callable(target):
        raise UserError(
            f"model._target_={path} is a {type(target).__name__}: name a class or function "
            "that returns a torch.nn.Module"
        )
    return target


def build_custom(factory: Callable[..., Any], num_classes: int, **kwargs: Any) -> nn.Module:
    """``factory(num_classes=num_classes, **kwargs)``, or ``factory(**kwargs)`` when it takes
    no ``num_classes`` (a model whose outputs the user fixed); it must return an ``nn.Module``.

    ``factory`` is the class or function :func:`import_model_target` found, or Hydra's partial of
    it with the model node's options.
    """
    target = _target_name(factory)
    if _accepts(factory, "num_classes"):
        kwargs = {"num_classes": num_classes, **kwargs}
    try:
        model = factory(**kwargs)
    except UserError:  # one of ours (torchvision_classifier's), already one line
        raise
    except Exception as error:  # the user's code: any error is theirs to fix, in one line
        raise UserError(
            f"model._target_={target}: building it raised {type(error).__name__}: "
            f"{first_line(error)}"
        ) from error
    if not isinstance(model, nn.Module):
        raise UserError(
            f"model._target_={target} returned a {type(model).__name__}, not a torch.nn.Module: "
            "name a Module class, or a function that returns one"
        )
    return model


def import_user_module(setting: str, module_name: str) -> Any:
    """``module_name`` imported with the working directory on ``sys.path``: the user's own code
    (``model._target_``, ``task.module``). Missing, or raising while it is imported, is one line
    that starts with ``setting`` (``model._target_=mynets.TinyNet``)."""
    try:
        with _working_directory_on_path():
            importlib.invalidate_caches()  # a module written since the last import is found
            return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if not _is_module_or_parent(error.name, module_name):  # one of its own imports
            raise _import_failed(setting, module_name, error) from error
        file = module_name.replace(".", "/") + ".py"
        gone = _gone.get(module_name)
        where = f"; the run imported it from {gone}, which is not there" if gone else ""
        raise UserError(
            f"{setting}: cannot import {module_name} ({first_line(error)}{where}): put "
            f"{file} in the working directory or install it"
        ) from None
    except Exception as error:  # SyntaxError, or anything the module runs when imported
        raise _import_failed(setting, module_name, error) from error


def code_locations(modules: Mapping[str, str], run_dir: Path) -> list[dict[str, str]]:
    """Where each of the user's modules (``{setting: module name}``, e.g. ``{"task.module":
    "regression"}``) is imported from, for a checkpoint to record: the folder on ``sys.path``
    that holds it, as an absolute path and relative to ``run_dir`` (a project folder moved whole,
    runs and code, still finds it), and the module's file inside that folder. Installed
    modules (torchcamp's, torch's) and names that do not import are left out."""
    installed = {Path(sysconfig.get_paths()[key]).resolve() for key in INSTALLED_PATHS}
    recorded = []
    for setting, name in modules.items():
        file = _module_file(name) if name and not name.startswith("torchcamp.") else None
        if file is None:
            continue
        depth = name.count(".") + (file.name == "__init__.py")
        root = file.parents[depth]
        if root in installed:
            continue
        recorded.append(
            {
                "setting": setting,
                "module": name,
                "root": str(root),
                "root_from_run": os.path.relpath(root, run_dir.resolve()),
                "path": file.relative_to(root).as_posix(),
            }
        )
    return recorded


def use_recorded_code(recorded: Sequence[Mapping[str, str]], checkpoint: Path) -> None:
    """Make the user's modules that ``checkpoint``'s run imported (:func:`code_locations`)
    importable here when they are not already (``evaluate``, ``predict``, a resume from another
    working directory): their folder goes last on ``sys.path``, so the working directory and
    installed packages still come first. Only folders that hold the recorded file are added;
    where none does, the error on import names the file the run used."""
    run_dir = checkpoint.resolve().parent.parent
    for entry in recorded:
        name = entry["module"]
        if _module_file(name) is not None:
            continue
        roots = [Path(entry["root"]), run_dir / entry["root_from_run"]]
        found = next((r.resolve() for r in roots if (r / entry["path"]).is_file()), None)
        if found is None:
            _gone[name] = str(Path(entry["root"]) / entry["path"])
            continue
        if str(found) not in sys.path:
            sys.path.append(str(found))
        log.info(
            "%s=%s: not importable from %s; importing it from %s, where the run found it",
            entry["setting"],
            name,
            os.getcwd(),
            found / entry["path"],
        )


def _module_file(name: str) -> Path | None:
    """The file module ``name`` is (or would be) imported from, the working directory on the
    path; None if it is not importable."""
    module = sys.modules.get(name)
    if module is None:
        try:
            with _working_directory_on_path():
                importlib.invalidate_caches()
                spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):  # a missing parent package, a bad name
            spec = None
        origin = spec.origin if spec is not None else None
    else:
        origin = getattr(module, "__file__", None)
    return Path(origin).resolve() if origin and os.path.isfile(origin) else None


def _import_failed(setting: str, module_name: str, error: BaseException) -> UserError:
    return UserError(
        f"{setting}: importing {module_name} raised {type(error).__name__}: {first_line(error)}"
    )


def _is_module_or_parent(missing: str | None, module_name: str) -> bool:
    """Is ``missing`` (a ModuleNotFoundError's name) ``module_name`` or a package above it?"""
    return missing is not None and (module_name + ".").startswith(missing + ".")


@contextmanager
def _working_directory_on_path() -> Iterator[None]:
    """The working directory first on ``sys.path`` for the block, unless it is there already."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _accepts(factory: Callable[..., Any], parameter: str) -> bool:
    """Does ``factory`` take ``parameter`` by keyword (by name, or through ``**kwargs``)?"""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): give what tasks give
        return True
    return any(
        p.kind == p.VAR_KEYWORD
        or (p.name == parameter and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        for p in parameters
    )


def _target_name(factory: Callable[..., Any]) -> str:
    """``module.Name`` of ``factory`` (through a ``functools.partial``), for messages."""
    func = getattr(factory, "func", factory)
    name = getattr(func, "__qualname__", None) or type(func).__name__
    module = getattr(func, "__module__", None)
    return f"{module}.{name}" if module else name
