"""One clear line for each way torchvision's named weights can fail to load."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torchcamp.trainer.errors import UserError


@contextmanager
def torchvision_weights(model_name: str, weights: str | None) -> Iterator[None]:
    """Turn torchvision's errors about named weights into one clear line each."""
    try:
        yield
    except KeyError as error:  # an unknown name, from torchvision's Weights.verify
        raise UserError(
            f"{weights} is not a weights name torchvision knows for {model_name} ({error}): see "
            "https://pytorch.org/vision/stable/models.html, or use null"
        ) from None
    except OSError as error:  # URLError and friends: offline, proxy, DNS
        raise UserError(
            f"{model_name} weights {weights}: cannot download them ({error}) and they are not in "
            "the torch hub cache (~/.cache/torch/hub/checkpoints); connect once, or give a "
            "local state dict with model.weights_path=... and the weights set to null"
        ) from error
