"""Models as the course builds them: LeNet, and torchvision's ResNet18 and Faster R-CNN fitted
to a task's classes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchcamp.trainer.errors import UserError


class LeNet(nn.Module):
    """LeNet-5: conv 6@5 -> pool -> conv 16@5 -> pool -> 120 -> 84 -> classes.

    Built for 32x32 inputs, as the course's; any larger input is average-pooled to the 5x5 map
    the classifier expects, so the model also serves tasks with bigger images.
    """

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)
        self.initialize_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.max_pool2d(F.relu(self.conv1(x)), 2)
        out = F.max_pool2d(F.relu(self.conv2(out)), 2)
        # 5x5 already at the course's 32x32 input; larger inputs (hymenoptera) are pooled to it.
        out = F.adaptive_avg_pool2d(out, 5).flatten(1)
        out = F.relu(self.fc1(out))
        out = F.relu(self.fc2(out))
        return self.fc3(out)

    def initialize_weights(self) -> None:
        """The course's initialisation: Xavier-normal convolutions, N(0, 0.1) linear layers."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.1)
                nn.init.zeros_(module.bias)


def resnet18(num_classes: int, weights: str | None = None) -> nn.Module:
    """torchvision's ResNet18 with ``fc`` replaced for ``num_classes``.

    ``weights`` names torchvision weights (``IMAGENET1K_V1``): torchvision downloads them once
    into its cache (``~/.cache/torch/hub/checkpoints``); offline and not cached is a clear error.
    """
    import torchvision

    with _torchvision_weights("resnet18", weights):
        model = torchvision.models.resnet18(weights=weights or None)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def fasterrcnn(
    builder: Callable[..., nn.Module],
    num_classes: int,
    weights: str | None = None,
    weights_backbone: str | None = None,
    **options: Any,
) -> nn.Module:
    """A torchvision Faster R-CNN (``builder``, e.g. ``fasterrcnn_resnet50_fpn``) for
    ``num_classes`` (background included), as the course finetunes it.

    ``weights`` (``COCO_V1``) come with COCO's 91-class box predictor, which is replaced by a
    fresh ``FastRCNNPredictor``; ``weights_backbone`` (``IMAGENET1K_V1``) starts only the
    backbone. ``options`` go to the builder: ``min_size``, ``max_size``,
    ``trainable_backbone_layers`` and the other ``FasterRCNN`` arguments.
    """
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

    name = getattr(builder, "func", builder).__name__
    with _torchvision_weights(name, weights or weights_backbone):
        if not weights:
            return builder(
                weights=None, weights_backbone=weights_backbone, num_classes=num_classes, **options
            )
        model = builder(weights=weights, **options)
    in_features = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_classes)
    return model


@contextmanager
def _torchvision_weights(model_name: str, weights: str | None) -> Iterator[None]:
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
