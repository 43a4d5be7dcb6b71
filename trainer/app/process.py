"""This process's part of a run: join the DDP group if asked, pick the device, set torch's
process-wide switches, seed."""

from __future__ import annotations

import logging

import torch

from torchcamp.trainer import devices, distributed
from torchcamp.trainer.app.settings import Settings
from torchcamp.trainer.errors import UserError
from torchcamp.trainer.utils import seed_everything, set_backend_flags


def setup_process(settings: Settings) -> tuple[torch.device, list[int]]:
    """Join the DDP group if asked, pick this process's device and GPUs, set the process-wide
    switches ``trainer.*`` asks for (cuDNN, determinism, anomaly detection), seed every RNG."""
    device_settings = settings.device
    cuda = devices.use_cuda(device_settings.accelerator)
    if settings.trainer["precision"] == "16-mixed" and not cuda:
        raise UserError(
            "trainer.precision=16-mixed needs CUDA, and this run is on the CPU: "
            "use trainer.precision=bf16-mixed or 32"
        )
    gpus = devices.choose_gpus(device_settings.gpus) if cuda else []
    if device_settings.strategy == "ddp":
        distributed.init_process_group(device_settings.backend or ("nccl" if cuda else "gloo"))
        if distributed.rank() != 0:
            logging.getLogger().setLevel(logging.WARNING)  # one voice in the log: rank 0's
    device = devices.process_device(cuda, device_settings.strategy, gpus)
    # The process's, not a Trainer's: one built to evaluate leaves them as they are.
    trainer = settings.trainer
    set_backend_flags(
        trainer.get("deterministic", False),
        trainer.get("cudnn_benchmark", False),
        trainer.get("detect_anomaly", False),
    )
    # Every rank starts from the same seed: DDP keeps the replicas identical anyway, and a
    # checkpoint's RNG state (rank 0's) then fits every rank on resume.
    seed_everything(settings.seed)
    return device, gpus
