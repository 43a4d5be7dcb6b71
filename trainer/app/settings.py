"""The composed config, read once: :func:`read_settings` turns it into plain settings objects,
and nothing below the CLI sees a ``DictConfig``.

Imports no torch, so ``train --cfg job`` stays fast. The settings are plain dataclasses, dicts
and lists: DDP ranks receive them pickled, and a notebook can build or change them by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from torchcamp.trainer.app.validation import parse_duration, validate
from torchcamp.trainer.errors import UserError


@dataclass(frozen=True)
class TaskSettings:
    """``task.*``: the task's name, the module that defines its ``TASK`` and per-part optimizer
    changes (``task.optimizers``, a GAN's D and G)."""

    name: str
    module: str
    optimizers: dict[str, Any] | None = None


@dataclass(frozen=True)
class DataSettings:
    """``data.*``: where the data is and how it is loaded (see conf/config.yaml). ``options``
    holds the task's own data keys (those its config adds beside these, e.g. an image
    folder's ``splits``), passed to its ``build_datasets``."""

    root: str
    batch_size: int = 16
    num_workers: int | str = "auto"
    synthetic: bool = False
    augment: bool = True
    balance: str = "none"
    download: bool = False
    skip_corrupt: bool = False
    cache_mb: float = 1024
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceSettings:
    """``device.*``: the accelerator and the strategy (single, ddp, dp)."""

    accelerator: str = "auto"
    strategy: str = "single"
    devices: int | str = 1
    gpus: Any = None
    backend: str | None = None
    sync_batchnorm: bool = False


@dataclass
class Settings:
    """Everything a run needs to know, as plain values.

    ``trainer`` holds the Trainer's keyword arguments as the config has them. ``model``,
    ``optimizer``, ``scheduler``, ``loss``, ``regularizer`` and ``transforms`` are their groups'
    nodes as plain dicts (``_target_`` and the keys torchcamp reads, see
    :mod:`~torchcamp.trainer.app.builders`),
    empty or None where the group is ``none``; ``callbacks`` the callback nodes by name.
    ``run_dir`` is this invocation's directory, ``overrides`` its command line's ``key=value``
    arguments (for ``resume=auto``), ``choices`` the option picked in each group (``loss:
    focal``), ``config`` the whole resolved config (stored in checkpoints, shown in
    TensorBoard's HParams), ``sweep`` a multirun job's sweep directory and job number
    (``{"dir": ..., "job": 3}``; None outside a sweep). ``dated_run_dir`` says whether the run
    directory is named by the time it started (Hydra's default ``outputs/DATE/TIME``): only then
    does ``resume=auto`` search ``output_root``; a directory the user named is its own run's.
    ``code_paths`` are folders the user's own modules were imported from when the checkpoint
    being continued was written, tried when they are not importable from here
    (:func:`~torchcamp.tasks.models.custom.use_recorded_code`).
    """

    task: TaskSettings
    data: DataSettings
    device: DeviceSettings
    trainer: dict[str, Any]
    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    loss: dict[str, Any] | None
    regularizer: dict[str, Any] | None
    transforms: dict[str, Any] | None
    callbacks: dict[str, dict[str, Any]]
    seed: int
    resume: str | None
    output_root: str
    run_dir: Path
    overrides: list[str] = field(default_factory=list)
    choices: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    fast_dev_run: bool = False  # keep only train.log and metrics.json at the end
    overfit_batches: int | float = 0  # > 0: train and validate on the first train batches
    sweep: dict[str, Any] | None = None
    dated_run_dir: bool = True
    code_paths: list[dict[str, str]] = field(default_factory=list)


def read_settings(cfg: DictConfig, run_dir: str | Path | None = None) -> Settings:
    """Check ``cfg`` (one line per mistake, :class:`UserError`) and read it into
    :class:`Settings`.

    The run directory, overrides and group choices come from Hydra when it runs the command;
    from ``cfg.hydra`` when the config was composed with ``return_hydra_config=True``; else
    ``run_dir`` or ``<output_root>/DATE/TIME`` and none.
    """
    validate(cfg)
    hydra = _hydra_info(cfg)
    # Without Hydra's own node, which has values only Hydra's runtime fills in.
    config = {key: _plain(cfg[key]) for key in cfg if key != "hydra"}
    nodes = {name: config.get(name) for name in GROUP_NODES}
    callbacks = {k: v for k, v in (config.get("callbacks") or {}).items() if v is not None}
    task = dict(config["task"])
    return Settings(
        task=TaskSettings(
            name=task["name"],
            module=task["module"],
            optimizers=task.get("optimizers"),
        ),
        data=_data_settings(config["data"]),
        device=_settings(DeviceSettings, config["device"], "device"),
        trainer=_trainer_arguments(config["trainer"]),
        **nodes,
        callbacks=callbacks,
        seed=config["seed"],
        resume=config.get("resume") or None,
        output_root=config["output_root"],
        run_dir=Path(run_dir or hydra.get("run_dir") or timestamped_dir(config["output_root"])),
        overrides=hydra.get("overrides", []),
        choices=hydra.get("choices", {}),
        config=config,
        fast_dev_run=config["trainer"].get("fast_dev_run", False),
        overfit_batches=config["trainer"].get("overfit_batches", 0),
        sweep=hydra.get("sweep"),
        dated_run_dir=run_dir is None and hydra.get("dated_run_dir", True),
    )


def _trainer_arguments(values: dict[str, Any]) -> dict[str, Any]:
    """``trainer.*`` as the Trainer's keyword arguments: ``max_time`` in seconds, and the debug
    modes (``fast_dev_run``, ``overfit_batches``) turned into the limits they mean."""
    arguments = dict(values)
    fast_dev_run = arguments.pop("fast_dev_run", False)
    overfit_batches = arguments.pop("overfit_batches", 0)
    # `trainer.precision=32` arrives as a number; the Trainer takes the name "32".
    arguments["precision"] = str(arguments["precision"])
    if arguments.get("max_time") is not None:
        arguments["max_time"] = parse_duration(arguments["max_time"])
    limits = ("limit_train_batches", "limit_val_batches", "limit_test_batches")
    if overfit_batches:
        arguments |= dict.fromkeys(limits, overfit_batches)
    if fast_dev_run:
        arguments |= dict.fromkeys(limits, 1) | {"max_epochs": 1}
    return arguments


# The groups whose nodes go to builders as plain dicts.
GROUP_NODES = ("model", "optimizer", "scheduler", "loss", "regularizer", "transforms")


def timestamped_dir(output_root: str, suffix: str = "") -> Path:
    """``<output_root>/DATE/TIME[-suffix]``, as Hydra names a run's directory."""
    now = datetime.now()
    time = now.strftime("%H-%M-%S") + (f"-{suffix}" if suffix else "")
    return Path(output_root) / now.strftime("%Y-%m-%d") / time


def _hydra_info(cfg: DictConfig) -> dict[str, Any]:
    """This run's directory, command-line overrides and group choices, where Hydra knows them;
    in a multirun also the sweep's directory and this job's number (read here, while Hydra's
    runtime config exists: DDP ranks and the trackers that tag runs with them have none)."""
    sweep, pattern_key = None, "run.dir"
    if HydraConfig.initialized():
        hydra = HydraConfig.get()
        run_dir = hydra.runtime.output_dir
        overrides, choices = hydra.overrides.task, hydra.runtime.choices
        if hydra.mode == RunMode.MULTIRUN:
            sweep, pattern_key = {"dir": str(hydra.sweep.dir), "job": hydra.job.num}, "sweep.dir"
    elif "hydra" in cfg:  # composed with return_hydra_config=True (Hydra's compose API)
        hydra = cfg.hydra
        run_dir = hydra.run.dir if OmegaConf.select(hydra, "run.dir") else None
        overrides, choices = hydra.overrides.task, hydra.runtime.choices
    else:
        return {}
    choices = {g: c for g, c in choices.items() if not g.startswith("hydra") and c is not None}
    return {
        "run_dir": run_dir,
        "overrides": list(overrides),
        "choices": dict(choices),
        "sweep": sweep,
        "dated_run_dir": _names_a_time(hydra, pattern_key),
    }


def _names_a_time(hydra: DictConfig, key: str) -> bool:
    """Is Hydra's ``run.dir`` (``sweep.dir`` in a multirun) a pattern with the time in it, as
    the default ``${output_root}/${now:%Y-%m-%d}/${now:%H-%M-%S}`` is? Read unresolved: each
    invocation gets a new directory from such a pattern, so a run is found by searching."""
    pattern = OmegaConf.to_container(OmegaConf.select(hydra, key.rpartition(".")[0]))
    return "${now:" in str(pattern.get(key.rpartition(".")[2]))


def _settings(cls: type, values: dict[str, Any], group: str) -> Any:
    """``cls(**values)``; a key it does not have (``+data.foo=1``) is one line naming them."""
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UserError(
            f"{group}.{unknown[0]} is not a {group} setting (they are {', '.join(known)}): drop "
            f"it with ~{group}.{unknown[0]}"
        )
    return cls(**values)


def _data_settings(values: dict[str, Any]) -> DataSettings:
    """``data.*`` as :class:`DataSettings`: torchcamp's keys, and the rest as the task's
    ``options`` (checked against its ``build_datasets`` in signatures.py)."""
    known = {f.name for f in fields(DataSettings)} - {"options"}
    options = {key: value for key, value in values.items() if key not in known}
    return DataSettings(**{k: v for k, v in values.items() if k in known}, options=options)


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
