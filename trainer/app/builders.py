"""Config nodes (plain dicts) -> objects, with ``hydra.utils.instantiate`` as the registry.

The CLI hands each group's node here as a plain dict. The keys torchcamp reads itself — a
scheduler's ``interval``, a loss's ``adapt``, ``model.freeze`` and so on — are taken out before
the rest is passed to the ``_target_``. Mistakes in a node end as one clear :class:`UserError`.
"""

from __future__ import annotations

import copy
import logging
import math
import re
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

import torch
import yaml
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from torch import nn

from torchcamp.trainer.checkpoint import load_weights, read_weights
from torchcamp.trainer.data import limited_batches
from torchcamp.trainer.errors import USER_ERRORS, UserError, first_line
from torchcamp.trainer.params import build_param_groups, freeze, init_weights

log = logging.getLogger(__name__)

# Keys each group's node holds for torchcamp itself, with their defaults: taken out
# (:func:`take_own`) before the rest reaches the `_target_`, and left out of the check of the
# `_target_`'s arguments (signatures.py), the rules table checking them instead.
OWN_KEYS: dict[str, dict[str, Any]] = {
    "model": {"freeze": [], "init": "default", "init_std": 0.02, "weights_path": None},
    "optimizer": {"no_decay_bias_norm": False, "param_groups": []},
    "scheduler": {"interval": "epoch"},
    "loss": {"adapt": None, "binary_only": False},
    "regularizer": {},
}


def take_own(group: str, node: dict[str, Any]) -> dict[str, Any]:
    """``group``'s own keys (:data:`OWN_KEYS`) popped out of ``node``, with their defaults
    where the node has none."""
    return {key: node.pop(key, copy.copy(default)) for key, default in OWN_KEYS[group].items()}


def instantiate(node: Mapping[str, Any], **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` passing plain lists and dicts, never OmegaConf containers.

    An optimizer keeps its arguments (``betas``...) in its state dict, and a checkpoint must
    hold only primitives to load with ``weights_only=True``.
    """
    return hydra_instantiate(node, _convert_="all", **kwargs)


def build_model(node: Mapping[str, Any], task: Any, train_set: Any) -> nn.Module:
    """The task's model from the ``model`` node, initialised (``init``) and partly frozen.

    The task's ``build_model(model_factory, train_set)`` finishes it from what the training data
    says (its classes, its vocabulary).
    """
    node = dict(node)
    own = take_own("model", node)
    patterns, scheme, std = own["freeze"], own["init"], own["init_std"]
    weights_path = own["weights_path"]
    model = call("model", task.build_model, instantiate(node), train_set)
    init_weights(model, scheme, std)
    if weights_path:  # after init: loaded weights win, a mismatched head keeps its init
        source = f"model.weights_path={weights_path}"
        load_weights(model, read_weights(weights_path), source, fresh_head=True)
        log.info("loaded model weights from %s", weights_path)
    frozen = freeze(model, patterns)
    if frozen:
        log.info("froze %d parameter tensors matching %s", len(frozen), list(patterns))
    return model


def build_optimizer(node: Mapping[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer over the trainable parameters, in the parameter groups the node asks for
    (on a GPU the fused implementation where there is one: :func:`fused_on_gpu`)."""
    node = dict(node)
    own = take_own("optimizer", node)
    no_decay, rules = own["no_decay_bias_norm"], own["param_groups"]
    if rules or no_decay:
        params = build_param_groups(model, node["lr"], node.get("weight_decay"), rules, no_decay)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
    device = next((p.device.type for p in model.parameters()), "cpu")
    return call("optimizer", instantiate(fused_on_gpu(node, device)), params)


# The optimizers whose fused implementation runs on CUDA and skips a step on the device when
# told to (GradScaler's found_inf): Adagrad's fused one is CPU-only.
FUSED_ON_CUDA = ("torch.optim.SGD", "torch.optim.Adam", "torch.optim.AdamW")


def fused_on_gpu(node: Mapping[str, Any], device_type: str) -> dict[str, Any]:
    """``node`` with ``fused: true`` on CUDA for SGD, Adam and AdamW when it chooses neither
    ``fused`` nor ``foreach``: one kernel for all parameters, and the Trainer's NaN/Inf check
    can then skip a bad step on the device instead of reading the loss every step (a host
    sync). Elsewhere, or with a choice made, ``node`` as it is."""
    chosen = node.get("fused") is not None or node.get("foreach") is not None
    if device_type != "cuda" or chosen or node.get("_target_") not in FUSED_ON_CUDA:
        return dict(node)
    return {**node, "fused": True}


def build_optimizers(
    node: Mapping[str, Any],
    model: nn.Module,
    parts: Mapping[str, nn.Module] | None,
    part_overrides: Mapping[str, Any] | None,
) -> torch.optim.Optimizer | dict[str, torch.optim.Optimizer]:
    """The optimizer, or, for a task that names its parts (a GAN's ``D`` and ``G``), one per
    part: the ``optimizer`` node with that part's keys from ``task.optimizers`` changed."""
    if parts is None:
        return build_optimizer(node, model)
    part_overrides = part_overrides or {}
    unknown = sorted(set(part_overrides) - set(parts))
    if unknown:
        raise UserError(
            f"task.optimizers has {', '.join(unknown)}, and this task's parts are "
            f"{', '.join(parts)}: use task.optimizers.<part>.<key>=..."
        )
    return {
        name: build_optimizer({**node, **(part_overrides.get(name) or {})}, module)
        for name, module in parts.items()
    }


def build_schedulers(
    node: Mapping[str, Any] | None,
    optimizer: torch.optim.Optimizer | Mapping[str, torch.optim.Optimizer],
    steps_per_epoch: int,
    max_epochs: int,
) -> tuple[Any, str]:
    """:func:`build_scheduler` for the optimizer, or one scheduler per part's optimizer."""
    if not isinstance(optimizer, Mapping):
        return build_scheduler(node, optimizer, steps_per_epoch, max_epochs)
    built = {
        name: build_scheduler(node, opt, steps_per_epoch, max_epochs)
        for name, opt in optimizer.items()
    }
    interval = next(iter(built.values()))[1]
    return {name: scheduler for name, (scheduler, _) in built.items()}, interval


def build_scheduler(
    node: Mapping[str, Any] | None,
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    max_epochs: int,
) -> tuple[Any, str]:
    """The scheduler (None for ``scheduler=none``) and its interval, ``epoch`` or ``step``.

    ``total_steps: null`` anywhere in the node becomes the run's optimizer steps, and
    ``step_size_up: null`` half an epoch of them, so per-step schedules fit the run exactly
    whatever the loader length and accumulation.
    """
    node = copy.deepcopy(dict(node or {}))  # step counts are filled in below, nested ones too
    interval = take_own("scheduler", node)["interval"]
    if not node:
        return None, interval
    _fill_step_counts(node, steps_per_epoch, steps_per_epoch * max_epochs)
    return call("scheduler", instantiate(node), optimizer), interval


def _fill_step_counts(node: dict, steps_per_epoch: int, total_steps: int) -> None:
    for key, value in node.items():
        if isinstance(value, dict):
            _fill_step_counts(value, steps_per_epoch, total_steps)
        elif value is None and key == "total_steps":
            node[key] = total_steps
        elif value is None and key == "step_size_up":
            node[key] = max(1, steps_per_epoch // 2)


def build_loss(node: Mapping[str, Any], name: str, task: Any, num_classes: int | None) -> Callable:
    """The loss, adapted by the task to its outputs; lists of numbers become tensors.

    ``num_classes`` is None for a task that is not a classifier (dcgan).
    """
    node = dict(node)
    own = take_own("loss", node)
    adapt, binary_only = own["adapt"], own["binary_only"]
    if binary_only and num_classes not in (None, 2):
        fitting = ", ".join(n for n, spec in _loss_specs().items() if not spec.get("binary_only"))
        raise UserError(
            f"loss={name} fits two-class tasks only, and this task has {num_classes} classes: "
            f"use one of {fitting}"
        )
    tensors = {k: torch.tensor(v) for k, v in node.items() if _is_number_list(v)}
    rest = {k: v for k, v in node.items() if k not in tensors}
    loss = call("loss", lambda: instantiate(rest, **tensors)) if node else None  # loss=none
    if task.build_loss is not None:
        return task.build_loss(loss, adapt)
    if loss is None:
        raise UserError("this task trains with a loss, and loss=none gives none: pick one")
    return loss


def _loss_specs() -> dict[str, dict]:
    folder = resources.files("torchcamp.conf").joinpath("loss")
    files = sorted(f for f in folder.iterdir() if f.name.endswith(".yaml"))
    return {f.name.removesuffix(".yaml"): yaml.safe_load(f.read_text()) or {} for f in files}


def _is_number_list(value: Any) -> bool:
    return (
        isinstance(value, list) and bool(value) and all(isinstance(v, (int, float)) for v in value)
    )


def build_regularizer(node: Mapping[str, Any] | None) -> Any:
    """The regularizer, or None for ``regularizer=none``."""
    return call("regularizer", instantiate, dict(node)) if node else None


def steps_per_epoch(
    loader: Any, accumulate_grad_batches: int, limit: int | float | None = None
) -> int:
    """Optimizer steps in one epoch of at most ``limit`` batches (``trainer.limit_train_batches``):
    the last, shorter accumulation window counts too."""
    return math.ceil(limited_batches(len(loader), limit) / accumulate_grad_batches)


def call(group: str, factory: Callable, *args: Any) -> Any:
    """Call a config-built factory; whatever it raises becomes one line naming ``group``."""
    try:
        return factory(*args)
    except USER_ERRORS:
        raise
    except Exception as error:  # a constructor refusing a value the config gave it
        if isinstance(error.__cause__, USER_ERRORS):  # raised inside Hydra's instantiate
            raise error.__cause__ from None
        # Hydra wraps the constructor's own error: "Error in call to target ...", then it.
        reason = error.__cause__ if isinstance(error, InstantiationException) else error
        message = first_line(reason)
        # A key left by a preset for another class (task=dcgan's Adam betas, then optimizer=sgd).
        unexpected = re.search(r"unexpected keyword argument '(\w+)'", message)
        fix = f"drop it with ~{group}.{unexpected[1]}" if unexpected else "check the overrides"
        raise UserError(f"cannot build {group}: {message} ({fix})") from error
