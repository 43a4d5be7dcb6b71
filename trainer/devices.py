"""Where a run computes: CPU or which GPUs, one process or many, and how the model is wrapped.

``device.strategy`` is ``single`` (one process, one device), ``ddp`` (one process per device,
DistributedDataParallel) or ``dp`` (one process, ``nn.DataParallel`` over its GPUs, as the
course shows).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from torchcamp.trainer import distributed
from torchcamp.trainer.errors import UserError


def use_cuda(accelerator: str) -> bool:
    """Does ``device.accelerator`` mean CUDA here? Refuses ``cuda`` on a machine without it."""
    has_cuda = torch.cuda.is_available()
    if accelerator == "cuda" and not has_cuda:
        raise UserError("device=cuda but CUDA is not available here: use device=cpu or device=auto")
    return accelerator in ("cuda", "auto") and has_cuda


def choose_gpus(spec: str | Sequence[int] | None) -> list[int]:
    """GPU indices from ``device.gpus``: null (all), a list, or ``auto_free`` (most free first).

    ``auto_free`` asks the driver for each GPU's free memory (``torch.cuda.mem_get_info``).
    """
    count = torch.cuda.device_count()
    if spec is None:
        return list(range(count))
    if spec == "auto_free":
        return sorted(range(count), key=lambda index: -torch.cuda.mem_get_info(index)[0])
    missing = [index for index in spec if index >= count]
    if missing:
        raise UserError(f"device.gpus={list(spec)}: this machine has GPUs 0..{count - 1} only")
    return list(spec)


def num_processes(devices: int | str, gpus: Sequence[int], cuda: bool) -> int:
    """How many DDP processes ``device.devices`` asks for on this node."""
    if devices != "all":
        if cuda and devices > len(gpus):
            raise UserError(f"device.devices={devices} but only {len(gpus)} GPUs are usable here")
        return int(devices)
    if not cuda:
        raise UserError(
            "device.devices=all counts GPUs and this run has none: give a number of CPU "
            "processes, e.g. device.devices=2"
        )
    return len(gpus)


def process_device(cuda: bool, strategy: str, gpus: Sequence[int]) -> torch.device:
    """This process's device: under DDP its local rank's GPU, otherwise the first chosen GPU."""
    if not cuda:
        return torch.device("cpu")
    if strategy == "ddp":  # the launcher already narrowed CUDA_VISIBLE_DEVICES to the chosen GPUs
        return torch.device("cuda", distributed.local_rank())
    return torch.device("cuda", gpus[0])


def wrap_model(
    model: nn.Module,
    strategy: str,
    device: torch.device,
    gpus: Sequence[int],
    sync_batchnorm: bool = False,
    find_unused_parameters: bool = False,
) -> nn.Module:
    """Wrap ``model``, already on ``device``, for the strategy (the bare model for single).

    ``find_unused_parameters``: some backward passes leave parameters without gradients (a
    GAN's phases), so DDP must look for them instead of waiting for their gradients.
    """
    if strategy == "ddp":
        if sync_batchnorm and device.type != "cuda":
            raise UserError(
                "device.sync_batchnorm=true needs CUDA: SyncBatchNorm runs on GPUs only"
            )
        if sync_batchnorm:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        device_ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(
            model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
        )
    if strategy == "dp":
        return nn.DataParallel(model, device_ids=list(gpus) if device.type == "cuda" else None)
    return model
