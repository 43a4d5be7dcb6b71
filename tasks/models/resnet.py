"""torchvision's ResNet18 fitted to a task's classes."""

from __future__ import annotations

from torch import nn

from torchcamp.tasks.models.weights import torchvision_weights


def resnet18(num_classes: int, weights: str | None = None) -> nn.Module:
    """torchvision's ResNet18 with ``fc`` replaced for ``num_classes``.

    ``weights`` names torchvision weights (``IMAGENET1K_V1``): torchvision downloads them once
    into its cache (``~/.cache/torch/hub/checkpoints``); offline and not cached is a clear error.
    """
    import torchvision

    with torchvision_weights("resnet18", weights):
        model = torchvision.models.resnet18(weights=weights or None)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model
