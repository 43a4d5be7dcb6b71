"""The ``evaluate`` and ``predict`` commands: a checkpoint's model, rebuilt from the config
inside it.

Like ``train`` they take ``key=value`` arguments; the command's own (``ckpt``, ``inputs``,
``predict.*``, ``output_dir``) are read here, every other one changes the checkpoint's config.
The model, data and loss are built by the same functions ``train`` uses (assembly.py); the
plain-object work is in trainer/inference.py and in each task's ``predict``. ``export-model``
(app/export.py) reads its checkpoint and rebuilds its model through the same functions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from torchcamp.tasks.contract import PredictOptions, describe_training_data
from torchcamp.tasks.models.custom import use_recorded_code
from torchcamp.trainer import inference
from torchcamp.trainer.app.assembly import build_loss, build_model, build_optimizers, load_task
from torchcamp.trainer.app.data import (
    build_datasets,
    build_loaders,
    build_transforms,
    num_workers,
)
from torchcamp.trainer.app.logs import also_logging_to
from torchcamp.trainer.app.messages import one_line
from torchcamp.trainer.app.process import setup_process
from torchcamp.trainer.app.run_dir import RunDirectory, write_metrics
from torchcamp.trainer.app.settings import Settings, read_settings, timestamped_dir
from torchcamp.trainer.app.signatures import check_targets
from torchcamp.trainer.app.validation import ACCELERATORS, validate
from torchcamp.trainer.checkpoint import load_checkpoint, load_weights
from torchcamp.trainer.errors import UserError
from torchcamp.trainer.status import RunStatus

if TYPE_CHECKING:
    import torch
    from torch import nn

    from torchcamp.tasks.contract import Task

PREDICT_DEFAULTS = {"threshold": 0.5, "num_images": 64, "seed": 0, "top_k": 3, "output_dir": None}


def evaluate_command(options: dict[str, str], overrides: list[str]) -> None:
    """``evaluate``: print the metrics of the checkpoint's model on its run's val and test data,
    and write them to ``metrics.json`` in this invocation's own directory."""
    path, state = read_checkpoint(options.get("ckpt"))
    cfg = checkpoint_config(path, state, overrides)
    output_dir = options.get("output_dir")
    out_dir = Path(output_dir) if output_dir else timestamped_dir(cfg.output_root, "evaluate")
    settings = read_settings(cfg, out_dir)
    check_targets(settings, load_task(settings))
    out_dir.mkdir(parents=True, exist_ok=True)
    with also_logging_to(out_dir / "evaluate.log"):
        metrics = evaluate_checkpoint(settings, path, state)
    print(json.dumps(metrics, indent=2))


def evaluate_checkpoint(settings: Settings, path: Path, state: dict[str, Any]) -> dict[str, Any]:
    """Rebuild the run's data, model and loss from ``settings``, load the checkpoint's weights
    and evaluate as the run did; returns the metrics, also written to ``metrics.json`` in
    ``settings.run_dir``."""
    device, _ = setup_process(settings)
    task = load_task(settings)
    splits, _ = build_datasets(settings, task, RunDirectory(settings.run_dir).synthetic_data)
    held_out = [split for split in ("val", "test") if split in splits]
    if not held_out:
        raise UserError(
            f"task={settings.task.name} has no val or test data to evaluate on: draw samples "
            "with predict instead"
        )
    meta = state.get("meta") or {}
    inference.check_same_data(path, meta.get("data"), describe_training_data(task, splits["train"]))
    loaders = build_loaders(settings, splits, task.collate_fn, device)
    model = build_model(settings, task, splits["train"], device)
    load_weights(model, state["model"], f"checkpoint {path}")
    _, optimizer = build_optimizers(settings, task, model)
    metrics = inference.evaluate(
        task.step,
        model,
        optimizer,
        build_loss(settings, task, splits["train"]),
        {split: loaders[split] for split in held_out},
        summarize_fn=task.summarize,
        make_evaluator=task.make_evaluator,
        device=device,
        precision=settings.trainer["precision"],
        channels_last=settings.trainer["channels_last"],
    )
    metrics |= {
        "checkpoint": str(path),
        "epoch": state["epoch"],
        "global_step": state["global_step"],
        "task": settings.task.name,
        "synthetic": settings.data.synthetic,
        "run_dir": str(settings.run_dir),
        "status": RunStatus.EVALUATED,
    }
    write_metrics(metrics, [settings.run_dir])
    return metrics


def predict_command(options: dict[str, str], overrides: list[str]) -> None:
    """``predict``: the checkpoint's model on ``inputs``, as its task predicts; prints one JSON
    line per record. Computes in float32 whatever precision the run trained in."""
    wanted = _predict_settings({k: v for k, v in options.items() if k.startswith("predict")})
    path, state = read_checkpoint(options.get("ckpt"))
    cfg = checkpoint_config(path, state, overrides)
    cfg.trainer.precision = "32"
    output_dir = wanted.pop("output_dir") or timestamped_dir(cfg.output_root, "predict")
    settings = read_settings(cfg, output_dir)
    check_targets(settings, load_task(settings))
    device, _ = setup_process(settings)
    task = load_task(settings)
    if task.predict is None:
        raise UserError(f"task={settings.task.name} has no predict function")
    model = checkpoint_model(settings, task, path, state, device)
    meta = state.get("meta") or {}
    request = PredictOptions(
        device=device,
        output_dir=Path(output_dir),
        batch_size=settings.data.batch_size,
        num_workers=num_workers(settings.data.num_workers, device, 1),
        data=meta["data"],
        data_options=settings.data.options,
        transforms=build_transforms(settings.transforms),
        **wanted,
    )
    for record in task.predict(model, _input_list(options.get("inputs")), request):
        print(json.dumps(record))


def checkpoint_model(
    settings: Settings, task: Task, path: Path, state: dict[str, Any], device: torch.device
) -> nn.Module:
    """The checkpoint's model in evaluation mode on ``device``, rebuilt from ``settings`` and
    the training data's description the checkpoint keeps (no data needed), with its weights."""
    meta = state.get("meta") or {}
    model = build_model(settings, task, inference.training_stand_in(path, meta), device)
    load_weights(model, state["model"], f"checkpoint {path}")
    return model.eval()


def read_checkpoint(ckpt: str | None) -> tuple[Path, dict[str, Any]]:
    """The ``ckpt=`` path and its state, checked to be a checkpoint that ``train`` wrote; the
    user's own modules its run imported are found where the run found them, if not here."""
    if not ckpt:
        raise UserError("no checkpoint: give ckpt=outputs/DATE/TIME/checkpoints/best.pt")
    path = Path(ckpt)
    if not path.is_file():
        raise UserError(
            f"ckpt={path}: no such checkpoint file (give a run's checkpoints/best.pt or last.pt)"
        )
    state = load_checkpoint(path)
    if not isinstance(state.get("config"), dict):
        raise UserError(f"checkpoint {path} holds no config: use a checkpoint that train wrote")
    use_recorded_code((state.get("meta") or {}).get("code") or [], path)
    return path, state


def checkpoint_config(path: Path, state: dict[str, Any], overrides: list[str]) -> DictConfig:
    """The run's config from its checkpoint, changed by ``overrides`` (``device=`` picks the
    accelerator), checked. Runs in one process, and builds the model without pretrained
    weights: the checkpoint's replace them, so nothing is downloaded or read besides it."""
    cfg = OmegaConf.create(_current_config(path, state["config"]))
    OmegaConf.set_struct(cfg, True)  # a key the run's config lacks is a typo, not a new key
    accelerators = [o.partition("=")[2] for o in overrides if o.partition("=")[0] == "device"]
    changes = [o for o in overrides if o.partition("=")[0] != "device"]
    try:
        cfg.merge_with_dotlist(changes)
    except (OmegaConfBaseException, yaml.YAMLError) as error:
        raise UserError(
            f"cannot apply {' '.join(changes)} to the checkpoint's config: {one_line(error)}"
        ) from error
    for accelerator in accelerators:
        if accelerator not in ACCELERATORS:
            raise UserError(
                f"device={accelerator}: evaluate and predict run in one process; use "
                f"device={', '.join(ACCELERATORS)}"
            )
        cfg.device.accelerator = accelerator
    cfg.device.strategy = "single"
    for key in ("weights", "weights_backbone", "weights_path"):
        if key in cfg.model:
            cfg.model[key] = None
    return cfg


def _current_config(path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config as this version reads it. Those written before tasks became
    ``Task`` objects have no ``transforms`` key: their ``task.options`` become ``data.*`` keys
    (names, dcgan, pennfudan load as before); rmb and hymenoptera, whose folders and transforms
    became configuration, are refused in one line saying what to do."""
    if "transforms" in config:
        return config
    task = dict(config.get("task") or {})
    if task.get("name") in ("rmb", "hymenoptera"):
        raise UserError(
            f"checkpoint {path} was written before task={task['name']} became an image-folder "
            "preset (its config has no transforms group), so its data and transforms cannot be "
            f"rebuilt: start a new run from its weights with train task={task['name']} "
            f"model.weights_path={path}, and evaluate or predict with that run's checkpoint"
        )
    options = task.pop("options", None) or {}
    return {**config, "task": task, "data": {**config["data"], **options}, "transforms": None}


def _predict_settings(given: dict[str, str]) -> dict[str, Any]:
    """The ``predict.<option>=value`` arguments over :data:`PREDICT_DEFAULTS`, checked: numbers
    read as YAML, ``output_dir`` as written."""
    known = ", ".join(f"predict.{key}" for key in PREDICT_DEFAULTS)
    unknown = sorted(key for key in given if key.removeprefix("predict.") not in PREDICT_DEFAULTS)
    if unknown:
        raise UserError(f"{unknown[0]} is not an option: use {known}")
    numbers = [f"{key}={value}" for key, value in given.items() if key != "predict.output_dir"]
    try:
        parsed = OmegaConf.to_container(OmegaConf.from_dotlist(numbers))
    except yaml.YAMLError as error:
        raise UserError(f"cannot read {' '.join(numbers)}: {one_line(error)}") from error
    output_dir = {"output_dir": given.get("predict.output_dir") or None}
    settings = PREDICT_DEFAULTS | parsed.get("predict", {}) | output_dir
    validate(OmegaConf.create({"predict": settings}))
    return settings


def _input_list(text: str | None) -> list[str]:
    """``inputs=a.jpg``, ``inputs=[a.jpg,folder/]`` or ``inputs=a,b``: the items as written,
    between commas (not read as YAML, which would make the surname No false), quotes around
    an item taken off."""
    if not text:
        return []
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    items = (item.strip() for item in text.split(","))
    return [item.strip("'\"") for item in items if item]
