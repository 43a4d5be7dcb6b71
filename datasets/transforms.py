"""Small pieces the transform presets (conf/transforms/) need beyond torchvision's own."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torchvision.transforms import v2


class ResizeForCrop(v2.Resize):
    """``Resize`` of the shorter side to ``round(crop_size * ratio)``: the evaluation resize
    before a ``CenterCrop(crop_size)`` (ImageNet's 256 for 224 is the default ratio).

    A ``Resize`` still, so the decode cache keeps its output (see ``split_deterministic``).
    """

    def __init__(self, crop_size: int, ratio: float = 256 / 224, **kwargs: Any) -> None:
        super().__init__(round(crop_size * ratio), **kwargs)


def find_normalization(
    transform: Callable | None,
) -> tuple[Sequence[float], Sequence[float]] | None:
    """``(mean, std)`` of the last ``Normalize`` in a Compose (v1 or v2), None without one:
    what showing the inputs as pictures must undo."""
    steps = getattr(transform, "transforms", [transform])
    for step in reversed(steps):
        if type(step).__name__ == "Normalize":
            return list(step.mean), list(step.std)
    return None
