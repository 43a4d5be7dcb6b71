"""Process groups for DistributedDataParallel: start, join, reduce, broadcast.

``train device=ddp`` starts its own workers with torch's elastic launcher (what ``torchrun``
uses), so the plain command works on one machine. Under ``torchrun`` or a SLURM job the
processes already exist, and each joins the group its environment describes.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

log = logging.getLogger(__name__)

LAUNCHER_ENV = ("TORCHELASTIC_RUN_ID", "SLURM_PROCID")  # set by torchrun / elastic, or SLURM
# A gloo group beside NCCL for small host-side agreements (stop now?), which on NCCL would
# wait for the GPU at every step.
_control_group: Any = None


def is_distributed() -> bool:
    """Is this process part of an initialised process group?"""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0)))


def launched_externally() -> bool:
    """Was this process started as one rank of many (torchrun, SLURM tasks)?"""
    if "SLURM_PROCID" in os.environ:
        return int(os.environ.get("SLURM_NTASKS", 1)) > 1
    return "TORCHELASTIC_RUN_ID" in os.environ or "RANK" in os.environ


def launch(worker: Callable[..., Any], args: Sequence[Any], nprocs: int) -> Any:
    """Run ``worker(*args)`` in ``nprocs`` local processes of one group; returns rank 0's result."""
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nprocs,
        run_id=f"torchcamp-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # a free port, as torchrun --standalone
        max_restarts=0,
        monitor_interval=0.1,
        start_method="spawn",
    )
    return elastic_launch(config, worker)(*args)[0]


def init_process_group(backend: str) -> None:
    """Join the group described by the environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT)."""
    if "SLURM_PROCID" in os.environ and "RANK" not in os.environ:
        _export_slurm_environment()
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend)
    global _control_group
    _control_group = dist.new_group(backend="gloo") if backend != "gloo" else None
    log.info("rank %d of %d joined the %s process group", rank(), world_size(), backend)


def _export_slurm_environment() -> None:
    """RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT from SLURM's variables (one task a rank).

    submitit parses SLURM's compressed node lists; it only looks at SLURM's variables when it
    knows it runs under SLURM, which a plain ``srun train ...`` does not tell it.
    """
    from submitit.helpers import TorchDistributedEnvironment  # the slurm extra: optional

    os.environ.setdefault("SUBMITIT_EXECUTOR", "slurm")
    # Derived from SLURM's job, the same on every task: it wins over stale MASTER_* values.
    # Each rank keeps every GPU of the node visible and picks cuda:<local rank> itself.
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over ranks; the tensor itself without a group."""
    if not is_distributed():
        return tensor
    # NCCL reduces CUDA tensors only, gloo CPU ones.
    on_cuda = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if on_cuda else torch.device("cpu")
    reduced = tensor.to(device)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced.to(tensor.device)


def any_rank(flag: bool) -> bool:
    """Is ``flag`` true on any rank? (``flag`` itself without a group.) On the CPU, through
    the control group, so asking at every step does not wait for the GPU."""
    return any_rank_each(flag)[0]


def any_rank_each(*flags: bool) -> tuple[bool, ...]:
    """:func:`any_rank` for several flags in one collective."""
    if not is_distributed():
        return flags
    tensor = torch.tensor([int(flag) for flag in flags])
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=_control_group)
    return tuple(bool(value) for value in tensor.tolist())


def gather_objects(item: Any) -> list[Any]:
    """Every rank's ``item`` (any picklable object, of any size), in rank order, on every rank;
    ``[item]`` without a group. For what tensors of one shape cannot hold (detections)."""
    if not is_distributed():
        return [item]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, item)
    return gathered


def broadcast_module(module: nn.Module) -> None:
    """Make every rank's parameters and buffers equal to rank 0's."""
    if is_distributed():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel / DataParallel, or the model itself."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model
