"""Every value bound for a ``_target_`` checked against the target's signature before any work:
a key the target does not take, or a value its annotation rules out, is one line naming the
node (``scheduler.step_size='abc' is not allowed: StepLR takes step_size: int``).

Types are checked with typeguard's ``check_type``, which understands the annotations torch and
torchvision write (unions, optionals, ``Literal``, generic containers) without code of ours
per type. What a target does not annotate is not checked, and neither is anything typeguard
cannot judge: the constructor and the first step still stand behind this (see
:func:`torchcamp.trainer.app.builders.call` and ``_first_epoch_error`` in train.py).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Collection, Mapping
from typing import Any

import torch
from hydra.utils import get_object
from typeguard import TypeCheckError, check_type

from torchcamp.tasks.contract import Task
from torchcamp.tasks.models.custom import import_model_target
from torchcamp.trainer.app.assembly import trainer_options
from torchcamp.trainer.app.builders import OWN_KEYS
from torchcamp.trainer.app.settings import Settings
from torchcamp.trainer.errors import UserError, first_line

# Arguments the run passes itself, never from the config (left out of "it takes ...").
SUPPLIED = {"params", "optimizer", "run"} | {
    "model",
    "step_fn",
    "loss_fn",
    "device",
    "scheduler",
    "scheduler_interval",
    "regularizer",
    "callbacks",
    "summarize_fn",
    "make_evaluator",
}  # fmt: skip  (the Trainer's)
# Scheduler keys whose null torchcamp fills in from the run's length (builders.py).
FILLED_IN = {"total_steps", "step_size_up"}


def check_targets(settings: Settings, task: Task) -> None:
    """Check every ``_target_`` node of the run: the groups, each part's optimizer (a GAN's
    ``task.optimizers``), the transforms and the callbacks; and the task's own ``data.*`` keys
    against its ``build_datasets``, which receives them."""
    check_arguments("data", task.build_datasets, settings.data.options)
    # The `trainer:` keys as the Trainer has always been named in these messages.
    check_arguments("trainer", trainer_options, settings.trainer, name="Trainer")
    if settings.model.get("_target_"):  # the user's own model: a clear line if it won't import
        import_model_target(settings.model["_target_"])
    for group, own in OWN_KEYS.items():
        node = getattr(settings, group)
        if node:
            check_node(group, node, own)
    for part, changes in (settings.task.optimizers or {}).items():
        node = {**settings.optimizer, **(changes or {})}
        check_node(f"task.optimizers.{part}", node, OWN_KEYS["optimizer"])
    for split, node in (settings.transforms or {}).items():
        check_node(f"transforms.{split}", node)
    for name, node in settings.callbacks.items():
        check_node(f"callbacks.{name}", node)


def check_node(path: str, node: Mapping[str, Any], own: Collection[str] = ()) -> None:
    """``node``'s keys and values against its ``_target_``'s signature (nested nodes too),
    leaving out the keys torchcamp reads itself (``own``)."""
    if "_target_" not in node:
        return
    arguments = {k: v for k, v in node.items() if not k.startswith("_") and k not in own}
    check_arguments(path, import_target(path, node["_target_"]), arguments)


def check_arguments(
    path: str, target: Any, arguments: Mapping[str, Any], name: str | None = None
) -> None:
    """``arguments`` (the node at ``path``) against ``target``'s signature; messages call
    it ``name`` (default: its own)."""
    name = name or getattr(target, "__name__", str(target))
    try:
        parameters = _signature(target).parameters
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check against
        return
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    for key, value in arguments.items():
        if key not in parameters or parameters[key].kind is inspect.Parameter.VAR_POSITIONAL:
            if takes_any:
                continue
            accepted = [k for k in parameters if k not in SUPPLIED and not k.startswith("_")]
            raise UserError(
                f"cannot build {path}: {name}() got an unexpected keyword argument '{key}' "
                f"(drop it with ~{path}.{key}); it takes {', '.join(accepted)}"
            )
        if isinstance(value, Mapping) and "_target_" in value:
            check_node(f"{path}.{key}", value)
        elif isinstance(value, list) and any(isinstance(v, Mapping) for v in value):
            for index, item in enumerate(value):
                if isinstance(item, Mapping):
                    check_node(f"{path}.{key}[{index}]", item)
        elif value is None and key in FILLED_IN:
            continue
        elif not _fits(value, annotation := _resolved(parameters[key].annotation, target)):
            raise UserError(
                f"{path}.{key}={_show(value)} is not allowed: {name} takes {key}: "
                f"{_describe(annotation)}"
            )


def import_target(path: str, dotted: str) -> Any:
    """The object ``_target_`` names; one that does not import is one line naming ``path``."""
    try:
        return get_object(dotted)
    except Exception as error:
        raise UserError(
            f"{path}._target_={dotted}: cannot import it ({first_line(error)}); give an "
            "importable class or function"
        ) from None


def _signature(target: Any) -> inspect.Signature:
    try:  # annotations written as strings (`from __future__ import annotations`) resolved
        return inspect.signature(target, eval_str=True)
    except NameError:  # one that names what its module does not import: unchecked types
        return inspect.signature(target)


def _resolved(annotation: Any, target: Any) -> Any:
    """An annotation left as a string (its signature could not resolve them all) resolved in
    the target's module; one that does not resolve is not checked."""
    if not isinstance(annotation, str):
        return annotation
    namespace = vars(inspect.getmodule(target) or typing)
    try:
        return eval(annotation, dict(namespace))  # what eval_str=True does, one at a time
    except Exception:
        return inspect.Parameter.empty


def _fits(value: Any, annotation: Any) -> bool:
    """Does ``value``, as YAML gives it, fit ``annotation``? Lists stand for tuples (YAML has
    none) and numbers or lists of numbers for tensors (builders.py makes the tensors); a
    boolean fits only where the annotation names bool (it would pass for an int)."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return True
    if isinstance(value, bool) and not _names(annotation, bool) and annotation is not object:
        return False
    candidates = [value, tuple(value)] if isinstance(value, list) else [value]
    for candidate in candidates:
        try:
            check_type(candidate, annotation)
            return True
        except TypeCheckError:
            continue
        except Exception:  # an annotation typeguard cannot judge: leave it to the constructor
            return True
    return _is_numeric(value) and _names(annotation, torch.Tensor)


def _names(annotation: Any, wanted: type) -> bool:
    """Does ``wanted`` appear anywhere in ``annotation`` (``float | Tensor``, ``Optional[...]``)?"""
    if annotation is wanted:
        return True
    return any(_names(arg, wanted) for arg in typing.get_args(annotation))


def _is_numeric(value: Any) -> bool:
    if isinstance(value, list):
        return bool(value) and all(_is_numeric(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _describe(annotation: Any) -> str:
    text = inspect.formatannotation(annotation)
    return text.replace("torch.Tensor", "Tensor").replace("NoneType", "None")


def _show(value: Any) -> str:
    """A value as it would be typed: null, true, 'text', 3."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value)
