"""The ``train`` command: compose the config with Hydra, build plain objects, run the Trainer.

This is the only module that reads the config. Heavy imports (torch, torchvision,
tensorboard) happen inside :func:`train`, so ``train --help`` and ``train --cfg job`` answer
at once.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from torchcamp.trainer.config import validate
from torchcamp.trainer.errors import UserError

log = logging.getLogger("torchcamp")


def train(cfg: DictConfig, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Train as ``cfg`` says, writing into ``run_dir`` (Hydra's output dir by default).

    Returns the final metrics that are also written to ``run_dir/metrics.json``.
    """
    validate(cfg)
    import torch

    from torchcamp.trainer import builders
    from torchcamp.trainer.callbacks import ModelCheckpoint, TensorBoardLogger
    from torchcamp.trainer.trainer import Trainer
    from torchcamp.trainer.utils import seed_everything

    run_dir = Path(run_dir or HydraConfig.get().runtime.output_dir)
    device = _resolve_device(cfg.device.accelerator, str(cfg.trainer.precision))
    seed_everything(cfg.seed)
    torch.backends.cudnn.benchmark = cfg.trainer.cudnn_benchmark
    if cfg.trainer.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True

    resume_path = _resume_path(cfg)  # before any work: a wrong path fails at once
    task = importlib.import_module(cfg.task.module)
    data_root, notes = _prepare_data(cfg, task, run_dir)
    splits = task.build_datasets(data_root, seed=cfg.seed)
    loaders = _build_loaders(cfg, splits, getattr(task, "collate_fn", None), device)

    num_classes = len(splits["train"].classes)
    model = builders.build_model(_node(cfg.model), task, num_classes)
    optimizer = builders.build_optimizer(_node(cfg.optimizer), model)
    scheduler, interval = builders.build_scheduler(
        _node(cfg.scheduler),
        optimizer,
        builders.steps_per_epoch(loaders["train"], cfg.trainer.accumulate_grad_batches),
        cfg.trainer.max_epochs,
    )
    loss_fn = builders.build_loss(_node(cfg.loss), _choice("loss"), task, num_classes)
    regularizer = builders.build_regularizer(_node(cfg.regularizer))

    resolved = OmegaConf.to_container(cfg, resolve=True)
    meta = {"task": cfg.task.name, "overrides": _task_overrides()}
    callbacks = [
        ModelCheckpoint(run_dir / "checkpoints", extra={"config": resolved, "meta": meta}),
        TensorBoardLogger(run_dir / "tb", hparams=_hparams(resolved), notes=notes),
    ]
    trainer = Trainer(
        model,
        task.step,
        optimizer,
        loss_fn,
        device=device,
        scheduler=scheduler,
        scheduler_interval=interval,
        regularizer=regularizer,
        precision=str(cfg.trainer.precision),
        max_epochs=cfg.trainer.max_epochs,
        accumulate_grad_batches=cfg.trainer.accumulate_grad_batches,
        gradient_clip_val=cfg.trainer.gradient_clip_val,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        monitor=cfg.trainer.monitor,
        monitor_mode=cfg.trainer.monitor_mode,
        callbacks=callbacks,
        progress=cfg.trainer.progress,
    )
    if resume_path is not None:
        _restore(trainer, resume_path)

    metrics = trainer.fit(loaders["train"], loaders.get("val"), loaders.get("test"))
    metrics |= {
        "epoch": trainer.epoch,
        "global_step": trainer.global_step,
        "time/fit_seconds": round(trainer.fit_seconds, 3),
        "task": cfg.task.name,
        "synthetic": cfg.data.synthetic,
        "resumed_from": str(resume_path) if resume_path else None,
        "status": "completed",
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("metrics: %s", run_dir / "metrics.json")
    return metrics


def _node(node: Any) -> dict | None:
    """A config node as a plain, resolved dict (None stays None)."""
    return OmegaConf.to_container(node, resolve=True) if node is not None else None


def _choice(group: str) -> str:
    """The option picked for ``group`` (``loss=focal`` -> ``focal``)."""
    try:
        return HydraConfig.get().runtime.choices.get(group) or group
    except ValueError:  # train() called without Hydra
        return group


def _restore(trainer: Any, path: Path) -> None:
    from torchcamp.trainer.checkpoint import load_checkpoint

    state = load_checkpoint(path)
    saved_total = (state.get("scheduler") or {}).get("total_steps")
    total = getattr(trainer.scheduler, "total_steps", None)
    if saved_total is not None and total is not None and saved_total != total:
        raise UserError(
            f"checkpoint {path} has a schedule of total_steps={saved_total} optimizer steps and "
            f"this run needs {total}: resume with the checkpoint's trainer.max_epochs, or set "
            f"scheduler.total_steps={saved_total}"
        )
    try:
        trainer.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError) as error:
        raise UserError(
            f"checkpoint {path} does not fit this run "
            f"({str(error).strip().splitlines()[0]}); resume with the same task and model"
        ) from error
    log.info("resumed from %s at epoch %d, step %d", path, trainer.epoch, trainer.global_step)


def _resolve_device(accelerator: str, precision: str):
    import torch

    has_cuda = torch.cuda.is_available()
    if accelerator == "cuda" and not has_cuda:
        raise UserError("device=cuda but CUDA is not available here: use device=cpu or device=auto")
    device = torch.device("cuda" if accelerator in ("cuda", "auto") and has_cuda else "cpu")
    if precision == "16-mixed" and device.type != "cuda":
        raise UserError(
            "trainer.precision=16-mixed needs CUDA, and this run is on the CPU: "
            "use trainer.precision=bf16-mixed or 32"
        )
    return device


def _prepare_data(cfg: DictConfig, task: Any, run_dir: Path) -> tuple[Path, dict[str, str]]:
    """The data root to read, and notes for the logs; renders synthetic data when asked."""
    if not cfg.data.synthetic:
        return Path(cfg.data.root), {}
    root = run_dir / "synthetic_data"
    task.make_synthetic_data(root, seed=cfg.seed)
    note = (
        f"data.synthetic=true: training on a rendered stand-in data set in {root}, not on "
        f"real data; its figures say nothing about the real task"
    )
    log.warning(note)
    return root, {"data/synthetic": note}


def _build_loaders(cfg: DictConfig, splits: dict, collate_fn: Any, device: Any) -> dict[str, Any]:
    from torch.utils.data import DataLoader, DistributedSampler

    common = {
        "batch_size": cfg.data.batch_size,
        "num_workers": cfg.data.num_workers,
        "collate_fn": collate_fn,
        "pin_memory": device.type == "cuda",
    }
    # Workers are not persistent: each epoch's workers are seeded from the global RNG, which a
    # checkpoint restores, so random augmentation after a resume matches an unbroken run.
    # One replica of DistributedSampler: the shuffle order is a function of (seed, epoch),
    # so resuming at epoch e replays exactly the order an uninterrupted run would see.
    sampler = DistributedSampler(
        splits["train"], num_replicas=1, rank=0, shuffle=True, seed=cfg.seed
    )
    loaders = {"train": DataLoader(splits["train"], sampler=sampler, **common)}
    for split in ("val", "test"):
        if split in splits:
            loaders[split] = DataLoader(splits[split], shuffle=False, **common)
    return loaders


def _task_overrides() -> list[str]:
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # train() called without Hydra (tests, notebooks)
        return []


def _resume_path(cfg: DictConfig) -> Path | None:
    from torchcamp.trainer.checkpoint import find_resume_checkpoint

    if cfg.resume in (None, ""):
        return None
    if cfg.resume != "auto":
        if not Path(cfg.resume).is_file():
            raise UserError(
                f"resume={cfg.resume}: no such checkpoint file "
                "(give the path of a last.pt or best.pt, or resume=auto)"
            )
        return Path(cfg.resume)
    found = find_resume_checkpoint(cfg.output_root, cfg.task.name, _task_overrides())
    if found is None:
        log.info(
            "resume=auto: no earlier run of task=%s with these overrides under %s; starting fresh",
            cfg.task.name,
            cfg.output_root,
        )
    return found


def _hparams(resolved: dict) -> dict[str, Any]:
    """Flat hyperparameters for TensorBoard's HParams tab: group choices and every value."""
    flat: dict[str, Any] = {}
    try:
        choices = HydraConfig.get().runtime.choices
        flat |= {
            group: choice for group, choice in choices.items() if not group.startswith("hydra")
        }
    except ValueError:
        pass

    def visit(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key not in ("_target_", "_partial_"):
                    visit(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = node if isinstance(node, (int, float, str, bool)) else str(node)

    visit(resolved, "")
    return flat


@hydra.main(version_base="1.3", config_path="pkg://torchcamp.conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    # A sweeper (e.g. Optuna) optimises what the task function returns.
    return metrics.get(cfg.trainer.monitor)


def main() -> None:
    """Console entry point for ``train``."""
    # Let Hydra's own errors (unknown option or key, bad override) reach us instead of being
    # printed with a stack trace and exit code 1; we print one line and exit with 2.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        _hydra_main()
    except (HydraException, OmegaConfBaseException) as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        sys.exit(2)


def _one_line(error: BaseException) -> str:
    """Hydra's messages span lines (options, search path); keep what names the problem."""
    options = getattr(error, "options", None)
    missing = getattr(error, "missing_cfg_file", None)
    if options and missing and "/" in missing:
        group, name = missing.rsplit("/", 1)
        return f"unknown {group} option '{name}': choose one of {', '.join(options)}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(error).__name__


if __name__ == "__main__":
    main()
