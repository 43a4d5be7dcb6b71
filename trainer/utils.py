"""Small helpers the Trainer and the CLI share: seeding, RNG state, device placement."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's (CPU and every CUDA device) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_backend_flags(deterministic: bool, cudnn_benchmark: bool, detect_anomaly: bool) -> None:
    """The process-wide switches a run asks for, as Lightning's Trainer sets them."""
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.autograd.set_detect_anomaly(detect_anomaly)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True


def get_rng_state() -> dict[str, Any]:
    """Every global RNG state, as tensors and primitives only (loads with weights_only=True)."""
    version, mt_state, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": [version, list(mt_state), gauss],
        "numpy": [
            np_kind,
            torch.from_numpy(np_keys.astype(np.int64)),
            np_pos,
            np_has_gauss,
            np_gauss,
        ],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state(
        (np_kind, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss)
    )
    torch.set_rng_state(state["torch"])
    # A checkpoint from a GPU run restores only the devices this machine has.
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])


def map_tensors(batch: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``fn`` applied to every tensor in a (nested) tuple, named tuple, list or dict."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, Mapping):
        return {key: map_tensors(value, fn) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        mapped = [map_tensors(value, fn) for value in batch]
        return type(batch)(*mapped) if hasattr(batch, "_fields") else type(batch)(mapped)
    return batch


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) tuple, list or dict to ``device``."""
    return map_tensors(batch, lambda tensor: tensor.to(device, non_blocking=True))


def to_channels_last(batch: Any) -> Any:
    """Every 4-D floating-point tensor (images) of a batch in NHWC memory order; labels, boxes
    and sequences are left alone."""
    return map_tensors(batch, _channels_last_image)


def _channels_last_image(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.ndim == 4 and tensor.is_floating_point():
        return tensor.contiguous(memory_format=torch.channels_last)
    return tensor
