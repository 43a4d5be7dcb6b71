"""Checks on the composed config, before any work: one line per problem, naming key and fix.

Hydra already refuses unknown keys and unknown group options; these rules add types and
ranges for the user-facing keys. Imports no torch, so ``--cfg job`` stays fast.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from torchcamp.trainer.errors import UserError
from torchcamp.trainer.options import PRECISIONS  # the library's, the one definition

ACCELERATORS = ("auto", "cpu", "cuda")
# The model_views callback's on/off views (TensorBoard).
VIEW_SWITCHES = ("input_grid", "graph", "kernels", "feature_maps", "grad_cam")
INITS = (
    "default",
    "xavier_normal",
    "xavier_uniform",
    "kaiming_normal",
    "kaiming_uniform",
    "normal",
    "orthogonal",
)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_limit(value: Any) -> bool:
    """Lightning's ``limit_*_batches``: a count of batches or a share of them."""
    return (_is_int(value) and value >= 1) or (isinstance(value, float) and 0 < value <= 1)


def parse_duration(value: Any) -> float | None:
    """``trainer.max_time`` in seconds: a number of seconds, ``HH:MM:SS`` or ``DD:HH:MM:SS``
    (Lightning's format); None for anything else."""
    if _is_number(value):
        return float(value) if 0 < value < math.inf else None
    parts = value.split(":") if isinstance(value, str) else []
    if len(parts) not in (3, 4) or not all(part.strip().isdigit() for part in parts):
        return None
    seconds = 0.0
    for part, unit in zip(reversed(parts), (1, 60, 3600, 86400), strict=False):
        seconds += int(part) * unit
    return seconds or None


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, ListConfig))


def _is_group_rule(rule: Any) -> bool:
    if not isinstance(rule, (dict, DictConfig)) or not isinstance(rule.get("match"), str):
        return False
    if set(rule) - {"match", "lr_mult", "weight_decay"}:
        return False
    numbers = [rule[key] for key in ("lr_mult", "weight_decay") if key in rule]
    return all(_is_number(n) and n >= 0 for n in numbers)


def _is_layer_name(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value != "")


def _is_callback(node: Any) -> bool:  # None: switched off with callbacks.<name>=null
    return node is None or (
        isinstance(node, (dict, DictConfig)) and isinstance(node.get("_target_"), str)
    )


def _one_of(*allowed: str) -> tuple[Callable[[Any], bool], str]:
    def accepts(value: Any) -> bool:
        return isinstance(value, (str, int, float)) and str(value) in allowed

    return accepts, "one of " + ", ".join(allowed)


# How a classifier feeds its loss (tasks/classification.py's INPUTS and TARGETS; a test keeps
# them equal, and this module imports no torch).
LOSS_INPUTS = ("log_softmax", "logits", "sigmoid", "softmax")
LOSS_TARGETS = ("index", "one_hot", "signed")


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _is_dict(value: Any) -> bool:
    return isinstance(value, (dict, DictConfig))


def _is_module_path(value: Any) -> bool:
    return isinstance(value, str) and all(part.isidentifier() for part in value.split("."))


# key -> (accepts the value?, what is allowed). Keys absent from the config are skipped.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (lambda v: _is_int(v) and 0 <= v < 2**32, "an integer in [0, 2**32)"),
    "resume": (lambda v: v is None or _is_text(v), "null, auto or a checkpoint's path"),
    "output_root": (_is_text, "a folder path"),
    "task.name": (_is_text, "a task's name"),
    "task.module": (
        _is_module_path,
        "an importable module that defines TASK, such as mytasks.regression",
    ),
    "task.optimizers": (
        lambda v: v is None or (_is_dict(v) and all(p is None or _is_dict(p) for p in v.values())),
        "per-part optimizer keys: task.optimizers.<part>.<key>=value",
    ),
    "loss.adapt": (lambda v: v is None or _is_dict(v), "the task's loss adapter keys"),
    "loss.adapt.input": _one_of(*LOSS_INPUTS),
    "loss.adapt.target": _one_of(*LOSS_TARGETS),
    "loss.adapt.label_smoothing": (
        lambda v: _is_number(v) and 0 <= v < 0.5,
        "a number in [0, 0.5) (the course: 0.1)",
    ),
    "loss.binary_only": (lambda v: isinstance(v, bool), "true or false"),
    "model.weights_path": (lambda v: v is None or _is_text(v), "null or a state dict's path"),
    "trainer.max_epochs": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "trainer.precision": _one_of(*PRECISIONS),
    "trainer.accumulate_grad_batches": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "trainer.gradient_clip_val": (
        lambda v: v is None or (_is_number(v) and v > 0),
        "null or a number > 0",
    ),
    "trainer.log_every_n_steps": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "trainer.monitor": (
        lambda v: v is None or (isinstance(v, str) and "/" in v),
        "a metric name like val/acc, or null (best.pt is then the last epoch)",
    ),
    "trainer.monitor_mode": _one_of("min", "max"),
    "trainer.progress": (lambda v: isinstance(v, bool), "true or false"),
    "trainer.deterministic": (lambda v: isinstance(v, bool), "true or false"),
    "trainer.cudnn_benchmark": (lambda v: isinstance(v, bool), "true or false"),
    "trainer.detect_anomaly": (lambda v: isinstance(v, bool), "true or false"),
    "trainer.channels_last": (lambda v: isinstance(v, bool), "true or false"),
    "trainer.compile": (
        lambda v: isinstance(v, (bool, dict, DictConfig)),
        "true, false, or torch.compile's keyword arguments such as {mode:max-autotune}",
    ),
    "trainer.max_time": (
        lambda v: v is None or parse_duration(v) is not None,
        "null, seconds (2700) or a duration HH:MM:SS or DD:HH:MM:SS (00:45:00)",
    ),
    **{
        f"trainer.limit_{split}_batches": (
            lambda v: v is None or _is_limit(v),
            "null (all), a count of batches (an integer >= 1) or a share such as 0.25",
        )
        for split in ("train", "val", "test")
    },
    "trainer.overfit_batches": (
        lambda v: v == 0 or _is_limit(v),
        "0 (off), a count of batches (an integer >= 1) or a share such as 0.1",
    ),
    "trainer.fast_dev_run": (lambda v: isinstance(v, bool), "true or false"),
    "trainer.extras_budget": (
        lambda v: _is_number(v) and 0 <= v <= 1,
        "a share of the training time in [0, 1] (0.01; 0: the views and pictures at the end only)",
    ),
    **{
        f"callbacks.{name}.every_n_epochs": (
            lambda v: v is None or (_is_int(v) and v >= 1),
            "null (on trainer.extras_budget) or an integer >= 1 (1: after every epoch)",
        )
        for name in ("tensorboard", "model_views", "plots")
    },
    "callbacks.early_stopping.patience": (
        lambda v: v is None or (_is_int(v) and v >= 1),
        "null (off) or an integer >= 1: epochs without improvement before stopping",
    ),
    "callbacks.early_stopping.min_delta": (
        lambda v: _is_number(v) and 0 <= v < math.inf,
        "a number >= 0: the least change that counts as an improvement",
    ),
    "callbacks.early_stopping.mode": _one_of("min", "max"),
    "callbacks": (
        lambda v: (
            v is None
            or (isinstance(v, (dict, DictConfig)) and all(_is_callback(n) for n in v.values()))
        ),
        "named callbacks, each with a _target_: +callbacks.<name>._target_=package.Class",
    ),
    "callbacks.checkpoint.every_n_steps": (
        lambda v: v is None or (_is_int(v) and v >= 1),
        "null or an integer >= 1",
    ),
    "callbacks.tensorboard.confusion_matrix": (lambda v: isinstance(v, bool), "true or false"),
    **{
        f"callbacks.model_views.{switch}": (lambda v: isinstance(v, bool), "true or false")
        for switch in VIEW_SWITCHES
    },
    "callbacks.model_views.feature_layer": (_is_layer_name, "null or a module name: conv1"),
    "callbacks.model_views.grad_cam_layer": (_is_layer_name, "null or a module name: layer4"),
    "callbacks.model_views.num_images": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    # logger=mlflow (conf/logger/mlflow.yaml)
    "logger.tracking_uri": (
        lambda v: v is None or _is_text(v),
        "null (MLFLOW_TRACKING_URI, else MLflow's default) or a URI: http://127.0.0.1:5000",
    ),
    "logger.experiment_name": (
        lambda v: v is None or _is_text(v),
        "an MLflow experiment's name (null: the task's)",
    ),
    "logger.run_name": (
        lambda v: v is None or _is_text(v),
        "null (the run directory) or a name",
    ),
    "logger.flush_secs": (
        lambda v: _is_number(v) and 0 < v < math.inf,
        "a number of seconds > 0",
    ),
    "data.root": (lambda v: isinstance(v, str) and v != "", "a folder path"),
    "data.batch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "data.num_workers": (
        lambda v: v == "auto" or (_is_int(v) and v >= 0),
        "auto or an integer >= 0",
    ),
    "data.synthetic": (lambda v: isinstance(v, bool), "true or false"),
    "data.augment": (lambda v: isinstance(v, bool), "true or false"),
    "data.balance": _one_of("none", "sampler", "weights"),
    "data.download": (lambda v: isinstance(v, bool), "true or false"),
    "data.skip_corrupt": (lambda v: isinstance(v, bool), "true or false"),
    "data.cache_mb": (
        lambda v: _is_number(v) and 0 <= v < math.inf,
        "a number of MB >= 0 (0: no cache)",
    ),
    "optimizer.lr": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "scheduler.interval": _one_of("epoch", "step"),
    "regularizer.weight": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "device.accelerator": _one_of(*ACCELERATORS),
    "device.strategy": _one_of("single", "ddp", "dp"),
    "device.devices": (lambda v: v == "all" or (_is_int(v) and v >= 1), "all or an integer >= 1"),
    "device.gpus": (
        lambda v: (
            v is None
            or v == "auto_free"
            or (_is_list(v) and all(_is_int(g) and g >= 0 for g in v) and len(v) > 0)
        ),
        "null, auto_free or a list of GPU indices such as [0,2]",
    ),
    "device.backend": (lambda v: v in (None, "nccl", "gloo"), "null, nccl or gloo"),
    "device.sync_batchnorm": (lambda v: isinstance(v, bool), "true or false"),
    "model.init": _one_of(*INITS),
    "model.init_std": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "model.freeze": (
        lambda v: _is_list(v) and all(isinstance(p, str) for p in v),
        "a list of regexes",
    ),
    "optimizer.no_decay_bias_norm": (lambda v: isinstance(v, bool), "true or false"),
    "optimizer.param_groups": (
        lambda v: _is_list(v) and all(_is_group_rule(rule) for rule in v),
        "a list of {match: <regex>, lr_mult: <number >= 0>, weight_decay: <number >= 0>}",
    ),
    # The `predict` command's own options (not in a training run's config).
    "predict.threshold": (lambda v: _is_number(v) and 0 <= v <= 1, "a score in [0, 1]"),
    "predict.num_images": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "predict.top_k": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "predict.seed": (_is_int, "an integer"),
    "predict.output_dir": (
        lambda v: v is None or (isinstance(v, str) and v != ""),
        "a folder path, or null (outputs/DATE/TIME)",
    ),
}


def validate(cfg: DictConfig) -> None:
    """Raise :class:`UserError` for the first value that breaks a rule in :data:`RULES`."""
    for key, (accepts, allowed) in RULES.items():
        try:
            value = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=True)
        except Exception as error:  # a missing (???) value or a broken interpolation
            raise UserError(f"{key}: {error}".splitlines()[0]) from error
        if value is _MISSING:
            continue
        if not accepts(value):
            raise UserError(f"{key}={_show(value)} is not allowed: use {allowed}")


def _show(value: Any) -> str:
    """A value as it is typed on the command line: null, true, 3, abc."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)


_MISSING = object()
