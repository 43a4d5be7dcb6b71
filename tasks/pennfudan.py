"""``task=pennfudan``: pedestrian detection, finetuning torchvision's Faster R-CNN as the course.

Images of different sizes travel as lists (``collate_fn``); in training the model returns its
four losses, which :func:`step` sums for the Trainer; in evaluation it returns detections, which
:func:`make_evaluator` scores as COCO-style mAP (torchmetrics with pycocotools, the
``detection`` extra).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.transforms.v2 import functional as F
from torchvision.utils import draw_bounding_boxes, make_grid

from torchcamp.datasets.pennfudan import (
    PennFudanDataset,
    detection_transforms,
    download_pennfudan,
    find_pennfudan,
    render_synthetic_pennfudan,
    split_pennfudan,
)
from torchcamp.datasets.pennfudan import collate_detection as collate_fn
from torchcamp.trainer import distributed
from torchcamp.trainer.errors import UserError

__all__ = [
    "DetectionEvaluator",
    "build_datasets",
    "build_loss",
    "build_model",
    "collate_fn",
    "download",
    "epoch_images",
    "make_evaluator",
    "make_synthetic_data",
    "step",
]

Batch = tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]
SHOWN_IMAGES = 4  # val images drawn with their detections each epoch
SHOWN_SCORE = 0.5  # detections below this score are not drawn


def build_datasets(
    root: str | Path,
    seed: int,
    augment: bool = True,
    val_fraction: float = 0.3,
    skip_corrupt: bool = False,
) -> dict[str, PennFudanDataset]:
    """Train and val splits of the photos (``val_fraction`` held out, fixed by ``seed``).

    Training images are flipped and colour-jittered with their boxes (transforms.v2); the
    detector resizes every image itself (``model.min_size``/``max_size``). ``skip_corrupt``
    leaves out photos that cannot be decoded, after the split (so it stays the same).
    """
    _require_detection_extra()  # before any training: mAP is computed after the first epoch
    if not 0 <= val_fraction < 1:
        raise UserError(
            f"task.options.val_fraction={val_fraction}: use a fraction in [0, 1) (0 trains on "
            "every photo, as the course does, and reports no mAP)"
        )
    samples = find_pennfudan(root)
    val_size = round(val_fraction * len(samples))
    splits = split_pennfudan(samples, seed, val_size=val_size)
    datasets = {
        "train": PennFudanDataset(
            splits["train"],
            detection_transforms(train=augment),
            skip_corrupt=skip_corrupt,
            split="train",
        )
    }
    if splits["val"]:
        datasets["val"] = PennFudanDataset(
            splits["val"], detection_transforms(train=False), skip_corrupt=skip_corrupt, split="val"
        )
    return datasets


def build_model(model_factory: Callable[..., nn.Module], train_set: PennFudanDataset) -> nn.Module:
    """The detector (``model=fasterrcnn_*``) for background + pedestrian."""
    return model_factory(num_classes=len(train_set.classes))


def build_loss(loss: Callable | None, adapt: Mapping[str, Any] | None) -> None:
    """Faster R-CNN computes its own losses: the ``loss`` group must be ``none``."""
    if loss is not None:
        raise UserError(
            "task=pennfudan trains with Faster R-CNN's own losses (classifier, box_reg, "
            "objectness, rpn_box_reg), so it takes no loss: use loss=none"
        )


def step(model: nn.Module, batch: Batch, loss_fn: None) -> dict[str, Any]:
    """Training: the model's four losses and their sum as ``loss``. Evaluation: the detections
    and the targets, for :class:`DetectionEvaluator`."""
    images, targets = batch
    if model.training:
        losses = model(images, targets)
        return {"loss": sum(losses.values()), **losses}
    return {"detections": model(images), "targets": targets}


class DetectionEvaluator:
    """COCO mAP over an evaluation pass: ``map`` (IoU 0.50:0.95), ``map_50``, ``map_75`` and
    ``mar_100``, from torchmetrics' ``MeanAveragePrecision`` (pycocotools underneath).

    Under DDP each rank holds the detections of its own shard, and shards differ in length;
    they are gathered as Python objects (torchmetrics' own tensor sync expects every rank to
    hold as many images and fails on gloo otherwise), then every rank scores them all.
    """

    def __init__(self) -> None:
        self.detections: list[dict[str, torch.Tensor]] = []
        self.targets: list[dict[str, torch.Tensor]] = []

    def update(self, outputs: Mapping[str, Any]) -> None:
        keep = ("boxes", "scores", "labels")
        self.detections += [{k: d[k].detach().cpu() for k in keep} for d in outputs["detections"]]
        self.targets += [
            {"boxes": t["boxes"].as_subclass(torch.Tensor).cpu(), "labels": t["labels"].cpu()}
            for t in outputs["targets"]
        ]

    def compute(self) -> dict[str, float]:
        from torchmetrics.detection import MeanAveragePrecision

        metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", sync_on_compute=False)
        for detections, targets in distributed.gather_objects((self.detections, self.targets)):
            if detections:
                metric.update(detections, targets)
        results = metric.compute()
        return {name: float(results[name]) for name in ("map", "map_50", "map_75", "mar_100")}


def make_evaluator() -> DetectionEvaluator:
    """A fresh mAP accumulator for one evaluation pass."""
    return DetectionEvaluator()


@torch.no_grad()
def epoch_images(
    model: nn.Module, dataset: PennFudanDataset, device: torch.device
) -> dict[str, torch.Tensor]:
    """``{"val_detections": a grid}``: the first val images with their true boxes (green) and
    the model's detections scoring at least 0.5 (red, with scores)."""
    was_training = model.training
    model.eval()
    panels = []
    for index in range(min(SHOWN_IMAGES, len(dataset))):
        image, target = dataset[index]
        detection = model([image.to(device)])[0]
        keep = detection["scores"] >= SHOWN_SCORE
        picture = (image * 255).round().to(torch.uint8).as_subclass(torch.Tensor)
        picture = _draw(picture, target["boxes"], "lime")
        scores = [f"{s:.2f}" for s in detection["scores"][keep].tolist()]
        picture = _draw(picture, detection["boxes"][keep].cpu(), "red", scores)
        # Photos differ in size: the same height, then cropped or padded to one width.
        panels.append(F.center_crop(F.resize(picture, [240], antialias=True), [240, 320]))
    model.train(was_training)
    return {"val_detections": make_grid(panels, nrow=SHOWN_IMAGES, padding=4)}


def _draw(
    picture: torch.Tensor, boxes: torch.Tensor, colour: str, labels: list[str] | None = None
) -> torch.Tensor:
    if len(boxes) == 0:  # an untrained detector finds nothing: nothing to draw
        return picture
    return draw_bounding_boxes(picture, boxes, labels=labels, colors=colour, width=2)


def make_synthetic_data(root: str | Path, seed: int) -> None:
    """Drawn "pedestrians" with annotation files and masks in the real layout under ``root``."""
    render_synthetic_pennfudan(root, seed, count=16)


def download(root: str | Path) -> None:
    """Fetch the Penn-Fudan zip into ``root`` (``data.download=true``)."""
    download_pennfudan(root)


def _require_detection_extra() -> None:
    missing = [m for m in ("torchmetrics", "pycocotools") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(
            f"task=pennfudan reports COCO mAP with torchmetrics and pycocotools, and "
            f"{' and '.join(missing)} is not installed: pip install 'torchcamp[detection]'"
        )
