"""What to do with a model's parameters: freeze, initialise, group for the optimizer."""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from torchcamp.trainer.errors import UserError

log = logging.getLogger(__name__)

NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def freeze(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Set ``requires_grad=False`` on parameters whose name matches a regex; returns their names."""
    frozen = []
    for name, param in model.named_parameters():
        if any(re.search(pattern, name) for pattern in patterns):
            param.requires_grad_(False)
            frozen.append(name)
    if patterns and not frozen:
        raise UserError(f"model.freeze={list(patterns)} matches no parameter of {_names(model)}")
    return frozen


def init_weights(model: nn.Module, scheme: str, std: float = 0.02) -> None:
    """Initialise every conv and linear weight with ``torch.nn.init.<scheme>_``; zero the biases.

    ``default`` leaves the model's own initialisation alone.
    """
    if scheme == "default":
        return
    init = getattr(nn.init, f"{scheme}_", None)
    if init is None or scheme.startswith("_"):
        raise UserError(
            f"model.init={scheme} is not allowed: use default, xavier_normal, xavier_uniform, "
            "kaiming_normal, kaiming_uniform, normal or orthogonal"
        )
    kwargs = {"std": std} if scheme == "normal" else {}
    for module in model.modules():
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            init(module.weight, **kwargs)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def build_param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float | None,
    rules: Sequence[Mapping[str, Any]] = (),
    no_decay_bias_norm: bool = False,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups for the trainable parameters.

    Each parameter goes to the first rule whose ``match`` regex finds its name; that group's lr is
    ``lr * lr_mult`` and its weight decay the rule's (default: the optimizer's). With
    ``no_decay_bias_norm``, biases and normalisation weights of every group get weight decay 0.
    Every group carries a ``name`` for the logs.
    """
    no_decay = _bias_and_norm_names(model) if no_decay_bias_norm else set()
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        index = next((i for i, r in enumerate(rules) if re.search(r["match"], name)), len(rules))
        rule = rules[index] if index < len(rules) else {}
        decays = name not in no_decay
        group = groups.get((index, decays))
        if group is None:
            group_decay = rule.get("weight_decay", weight_decay) if decays else 0.0
            label = rule.get("match", "(rest)") + ("" if decays else " [no decay]")
            group = {"params": [], "name": label, "lr": lr * rule.get("lr_mult", 1.0)}
            if group_decay is not None:
                group["weight_decay"] = group_decay
            groups[(index, decays)] = group
        group["params"].append(param)
    for index, rule in enumerate(rules):
        if not any(key[0] == index for key in groups):
            raise UserError(f"optimizer.param_groups: match={rule['match']!r} finds no parameter")
    return [groups[key] for key in sorted(groups)]


def check_optimizers_fit(
    model: nn.Module,
    optimizers: Mapping[str, torch.optim.Optimizer],
    accumulate_grad_batches: int,
    precision: str,
) -> None:
    """Combinations that cannot work stop at start, not mid-epoch."""
    for optimizer in optimizers.values():
        if needs_closure(optimizer) and len(optimizers) > 1:
            raise UserError(
                f"{type(optimizer).__name__} steps with a closure, which a task with several "
                f"optimizers ({', '.join(optimizers)}) cannot drive: use another optimizer"
            )
        _check_optimizer_fits(model, optimizer, accumulate_grad_batches, precision)


def needs_closure(optimizer: torch.optim.Optimizer) -> bool:
    """LBFGS and friends re-evaluate the loss themselves: ``step(closure)`` is mandatory."""
    step_params = inspect.signature(optimizer.step).parameters
    return "closure" in step_params and step_params["closure"].default is inspect.Parameter.empty


def other_parts_params(
    optimizers: Mapping[str, torch.optim.Optimizer], part: str
) -> list[nn.Parameter]:
    """The trainable parameters of every optimizer but ``part``'s (shared ones excluded): held
    without gradients while ``part`` trains (Lightning's ``toggle_optimizer``), so that a
    generator step leaves nothing in the discriminator's gradients."""
    own = {id(p) for group in optimizers[part].param_groups for p in group["params"]}
    return [
        p
        for name, optimizer in optimizers.items()
        if name != part
        for group in optimizer.param_groups
        for p in group["params"]
        if p.requires_grad and id(p) not in own
    ]


@contextmanager
def without_grad(params: Sequence[nn.Parameter]) -> Iterator[None]:
    """``requires_grad=False`` on ``params`` for the duration, restored afterwards."""
    for param in params:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param in params:
            param.requires_grad_(True)


def _check_optimizer_fits(
    model: nn.Module, optimizer: torch.optim.Optimizer, accumulate_grad_batches: int, precision: str
) -> None:
    name = type(optimizer).__name__
    closure = needs_closure(optimizer)
    if closure and accumulate_grad_batches > 1:
        raise UserError(
            f"{name} steps with a closure that re-evaluates one batch, so it cannot accumulate "
            "gradients: use trainer.accumulate_grad_batches=1"
        )
    if closure and precision == "16-mixed":
        raise UserError(
            f"{name} steps with a closure, which GradScaler cannot drive: "
            "use trainer.precision=32 or bf16-mixed"
        )
    if isinstance(optimizer, torch.optim.SparseAdam):
        sparse = {
            id(module.weight)
            for module in model.modules()
            if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and module.sparse
        }
        dense = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in sparse]
        if dense:
            raise UserError(
                "optimizer=sparse_adam needs sparse gradients (nn.Embedding(sparse=True)) for "
                f"every trainable parameter; this model has dense ones ({', '.join(dense[:4])}"
                f"{', ...' if len(dense) > 4 else ''}): use another optimizer such as adam"
            )


def _bias_and_norm_names(model: nn.Module) -> set[str]:
    names = set()
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            if param_name == "bias" or isinstance(module, NORM_LAYERS):
                names.add(f"{module_name}.{param_name}" if module_name else param_name)
    return names


def _names(model: nn.Module) -> str:
    names = [name for name, _ in model.named_parameters()]
    return ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")


def log_parameters(
    module: nn.Module, optimizers: Mapping[str, torch.optim.Optimizer], phased: bool
) -> None:
    """Log the model's parameter counts and each optimizer's parameter groups (a GAN's parts
    are named)."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = total - trainable
    name = type(module).__name__
    log.info(f"model {name}: {total:,} parameters, {trainable:,} trainable, {frozen:,} frozen")
    for part, optimizer in optimizers.items():
        for index, group in enumerate(optimizer.param_groups):
            count = sum(p.numel() for p in group["params"])
            log.info(
                f"{part + ' ' if phased else ''}param group {index} "
                f"{group.get('name', '')}: {len(group['params'])} tensors, {count:,} "
                f"parameters, lr={group['lr']:.3g}, "
                f"weight_decay={group.get('weight_decay', 'n/a')}"
            )
