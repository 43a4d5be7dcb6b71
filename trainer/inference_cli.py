"""The ``evaluate`` and ``predict`` commands: a checkpoint's model, rebuilt from the config
inside it.

Like ``train`` they take ``key=value`` arguments; the command's own (``ckpt``, ``inputs``,
``predict.*``, ``output_dir``) are read here, every other one changes the checkpoint's config.
The model, data and loss are built by the same functions ``train`` uses (in cli.py); the
plain-object work is in inference.py and in each task's ``predict``.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from torchcamp.trainer.cli import (
    _also_logging_to,
    _build_loaders,
    _build_loss_fn,
    _build_model,
    _build_optimizers,
    _build_splits,
    _node,
    _num_workers,
    _one_line,
    _setup_process,
    _user_message,
    _write_metrics,
)
from torchcamp.trainer.config import ACCELERATORS, validate
from torchcamp.trainer.errors import EXIT_USER_ERROR, UserError

EVALUATE_HELP = """evaluate: score a checkpoint on its run's val and test data (torchcamp).

  evaluate ckpt=PATH [output_dir=DIR] [key=value ...]

  ckpt=PATH        a run's checkpoints/best.pt or last.pt: model, data and loss are rebuilt
                   from the config inside it
  output_dir=DIR   where metrics.json and evaluate.log go
                   (default: <output_root>/DATE/TIME-evaluate)
  key=value        changes to the checkpoint's config, e.g. data.root=/path/to/data,
                   device=auto|cpu|cuda, data.batch_size=64, data.num_workers=2

Prints the val/* and test/* metrics as JSON and writes them to metrics.json."""

PREDICT_HELP = """predict: run a checkpoint's model on images or names (torchcamp).

  predict ckpt=PATH inputs=[a.jpg,folder/] [predict.<option>=value ...] [key=value ...]

  ckpt=PATH               a run's checkpoints/best.pt or last.pt: the config and class names
                          inside it rebuild the model, no training data needed
  inputs=[a,b,...]        items between commas, as written. rmb, hymenoptera, pennfudan: image
                          files, and folders searched at any depth for images; names: names,
                          or text files of one name per line; dcgan: none
  predict.threshold=0.5   pennfudan: the lowest detection score kept
  predict.num_images=64   dcgan: how many images to draw
  predict.seed=0          dcgan: the seed of the noise
  predict.top_k=3         names: how many languages per name
  predict.output_dir=DIR  where pennfudan and dcgan write images
                          (default: <output_root>/DATE/TIME-predict)
  key=value               changes to the checkpoint's config: device=auto|cpu|cuda,
                          data.batch_size=64 (images or names per batch), data.num_workers=2

Prints one JSON line per record: rmb, hymenoptera {"file", "label", "prob"}; names {"name",
"top": [{"label", "prob"}, ...]}; pennfudan {"file", "drawn", "boxes", "labels", "scores"} (also
in predictions.json); dcgan {"file"} per image written."""

PREDICT_DEFAULTS = {"threshold": 0.5, "num_images": 64, "seed": 0, "top_k": 3, "output_dir": None}


def evaluate_main() -> None:
    """Console entry point for ``evaluate``."""
    _run_command(EVALUATE_HELP, ("ckpt", "output_dir"), _evaluate)


def predict_main() -> None:
    """Console entry point for ``predict``."""
    _run_command(PREDICT_HELP, ("ckpt", "inputs", "predict"), _predict)


def _run_command(
    help_text: str,
    own_keys: tuple[str, ...],
    command: Callable[[dict[str, str], list[str]], None],
) -> None:
    """Split the ``key=value`` arguments into the command's own options (``own_keys``, as
    written) and changes to the checkpoint's config, and run ``command``; a mistake exits 2
    with one line."""
    args = sys.argv[1:]
    try:
        if any(arg in ("--help", "-h") for arg in args):
            print(help_text)
            return
        # Records and metrics go to stdout; the log goes to stderr.
        logging.basicConfig(
            level=logging.INFO,
            format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s",
            stream=sys.stderr,
        )
        own, overrides = {}, []
        for arg in args:
            key, equals, value = arg.partition("=")
            if not equals or not key:
                raise UserError(f"{arg!r} is not key=value: see --help")
            if key.split(".")[0] in own_keys:
                own[key] = value
            else:
                overrides.append(arg)
        command(own, overrides)
    except UserError as error:
        print(f"error: {_user_message(error)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except (HydraException, OmegaConfBaseException) as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except BrokenPipeError:  # stdout's reader has had enough (predict ... | head): stop quietly
        # Point stdout at /dev/null, or flushing it at exit fails once more, with a message.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except KeyboardInterrupt:
        sys.exit(130)  # the shell's code for SIGINT


def _evaluate(options: dict[str, str], overrides: list[str]) -> None:
    """``evaluate``: print the metrics of the checkpoint's model on its run's val and test data,
    and write them to ``metrics.json`` in this invocation's own directory."""
    path, state = _read_checkpoint(options.get("ckpt"))
    cfg = _checkpoint_config(state, overrides)
    output_dir = options.get("output_dir")
    out_dir = Path(output_dir) if output_dir else _timestamped_dir(cfg.output_root, "evaluate")
    out_dir.mkdir(parents=True, exist_ok=True)
    with _also_logging_to(out_dir / "evaluate.log"):
        metrics = _evaluate_in(cfg, path, state, out_dir)
    print(json.dumps(metrics, indent=2))


def _evaluate_in(
    cfg: DictConfig, path: Path, state: dict[str, Any], out_dir: Path
) -> dict[str, Any]:
    """Rebuild the run's data, model and loss from ``cfg``, load the checkpoint's weights and
    evaluate as the run did; returns the metrics, also written to ``out_dir/metrics.json``."""
    from torchcamp.trainer import inference

    device, _ = _setup_process(cfg)
    task = importlib.import_module(cfg.task.module)
    splits, _ = _build_splits(cfg, task, out_dir, is_main=True)
    held_out = [split for split in ("val", "test") if split in splits]
    if not held_out:
        raise UserError(
            f"task={cfg.task.name} has no val or test data to evaluate on: draw samples with "
            "predict instead"
        )
    meta = state.get("meta") or {}
    inference.check_same_data(path, meta.get("data"), task, splits["train"])
    loaders = _build_loaders(cfg, splits, getattr(task, "collate_fn", None), device)
    model = _build_model(cfg, task, splits["train"], device)
    inference.load_model_weights(model, state, path)
    _, optimizer = _build_optimizers(cfg, task, model)
    loss_name = (meta.get("choices") or {}).get("loss", "loss")
    metrics = inference.evaluate(
        task,
        model,
        optimizer,
        _build_loss_fn(cfg, task, splits["train"], loss_name),
        {split: loaders[split] for split in held_out},
        device=device,
        precision=str(cfg.trainer.precision),
        channels_last=cfg.trainer.channels_last,
    )
    metrics |= {
        "checkpoint": str(path),
        "epoch": state["epoch"],
        "global_step": state["global_step"],
        "task": cfg.task.name,
        "synthetic": cfg.data.synthetic,
        "run_dir": str(out_dir),
        "status": "evaluated",
    }
    _write_metrics(metrics, [out_dir], is_main=True)
    return metrics


def _predict(options: dict[str, str], overrides: list[str]) -> None:
    """``predict``: the checkpoint's model on ``inputs``, as its task predicts; prints one JSON
    line per record. Computes in float32 whatever precision the run trained in."""
    from torchcamp.trainer import inference

    settings = _predict_settings({k: v for k, v in options.items() if k.startswith("predict")})
    path, state = _read_checkpoint(options.get("ckpt"))
    cfg = _checkpoint_config(state, overrides)
    cfg.trainer.precision = "32"
    device, _ = _setup_process(cfg)
    task = importlib.import_module(cfg.task.module)
    if not hasattr(task, "predict"):
        raise UserError(f"task={cfg.task.name} has no predict function")
    meta = state.get("meta") or {}
    model = _build_model(cfg, task, inference.training_stand_in(path, meta), device)
    inference.load_model_weights(model, state, path)
    model.eval()
    output_dir = settings.pop("output_dir") or _timestamped_dir(cfg.output_root, "predict")
    request = inference.PredictOptions(
        device=device,
        output_dir=Path(output_dir),
        batch_size=cfg.data.batch_size,
        num_workers=_num_workers(cfg.data.num_workers, device, 1),
        data=meta["data"],
        task_options=_node(cfg.task.get("options")) or {},
        **settings,
    )
    for record in task.predict(model, _input_list(options.get("inputs")), request):
        print(json.dumps(record))


def _read_checkpoint(ckpt: str | None) -> tuple[Path, dict[str, Any]]:
    """The ``ckpt=`` path and its state, checked to be a checkpoint that ``train`` wrote."""
    from torchcamp.trainer.checkpoint import load_checkpoint

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
    return path, state


def _checkpoint_config(state: dict[str, Any], overrides: list[str]) -> DictConfig:
    """The run's config from its checkpoint, changed by ``overrides`` (``device=`` picks the
    accelerator), checked. Runs in one process, and builds the model without pretrained
    weights: the checkpoint's replace them, so nothing is downloaded or read besides it."""
    cfg = OmegaConf.create(state["config"])
    OmegaConf.set_struct(cfg, True)  # a key the run's config lacks is a typo, not a new key
    accelerators = [o.partition("=")[2] for o in overrides if o.partition("=")[0] == "device"]
    changes = [o for o in overrides if o.partition("=")[0] != "device"]
    try:
        cfg.merge_with_dotlist(changes)
    except (OmegaConfBaseException, yaml.YAMLError) as error:
        raise UserError(
            f"cannot apply {' '.join(changes)} to the checkpoint's config: {_one_line(error)}"
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
    validate(cfg)
    return cfg


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
        raise UserError(f"cannot read {' '.join(numbers)}: {_one_line(error)}") from error
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


def _timestamped_dir(output_root: str, command: str) -> Path:
    """``<output_root>/DATE/TIME-<command>``: next to train's runs, never one of them."""
    from datetime import datetime

    now = datetime.now()
    return Path(output_root) / now.strftime("%Y-%m-%d") / f"{now.strftime('%H-%M-%S')}-{command}"
