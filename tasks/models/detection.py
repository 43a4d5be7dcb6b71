"""torchvision's Faster R-CNN fitted to a task's classes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from torchcamp.tasks.models.weights import torchvision_weights


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
    with torchvision_weights(name, weights or weights_backbone):
        if not weights:
            return builder(
                weights=None, weights_backbone=weights_backbone, num_classes=num_classes, **options
            )
        model = builder(weights=weights, **options)
    in_features = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_classes)
    return model
