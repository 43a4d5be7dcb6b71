"""``task=pennfudan``: pedestrian detection, finetuning torchvision's Faster R-CNN as the course.

Images of different sizes travel as lists (``collate_fn``); in training the model returns its
four losses, which :func:`step` sums for the Trainer; in evaluation it returns detections, which
:func:`make_evaluator` scores as COCO-style mAP (torchmetrics with pycocotools, the
``detection`` extra). :func:`predict` draws a trained detector's boxes on any photos.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as F
from torchvision.utils import draw_bounding_boxes, make_grid

from torchcamp.datasets.images import ImageFiles, image_inputs
from torchcamp.datasets.pennfudan import (
    PennFudanDataset,
    detection_transforms,
    download_pennfudan,
    find_pennfudan,
    render_synthetic_pennfudan,
    split_pennfudan,
)
from torchcamp.datasets.pennfudan import collate_detection as collate_fn
from torchcamp.tasks.classification import describe_data  # the class names, as a classifier's
from torchcamp.tasks.contract import Task
from torchcamp.trainer import distributed
from torchcamp.trainer.errors import UserError

if TYPE_CHECKING:
    from torchcamp.tasks.contract import PredictOptions

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
            f"data.val_fraction={val_fraction}: use a fraction in [0, 1) (0 trains on "
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


@torch.no_grad()
def predict(
    model: nn.Module, inputs: Sequence[str | Path], options: PredictOptions
) -> list[dict[str, Any]]:
    """Detections scoring at least ``options.threshold`` on every image ``inputs`` names
    (folders expanded): ``{"file", "drawn", "boxes", "labels", "scores"}`` each, boxes as
    ``[x1, y1, x2, y2]`` pixels. Each image is written with its boxes drawn (red, with scores)
    to ``<output_dir>/<name>.png``, and every record to ``<output_dir>/predictions.json``."""
    files = image_inputs(inputs)
    classes = options.data["classes"]
    # Photos differ in size: batches travel as lists, and the detector resizes each itself.
    loader = DataLoader(
        ImageFiles(files, _float_image),
        batch_size=options.batch_size,
        num_workers=options.num_workers,
        collate_fn=list,
    )
    options.output_dir.mkdir(parents=True, exist_ok=True)
    outputs = iter(zip(files, _output_paths(files, options.output_dir), strict=True))
    records = []
    for images in loader:
        detections = model([image.to(options.device) for image in images])
        for image, detection in zip(images, detections, strict=True):
            keep = detection["scores"] >= options.threshold
            boxes, scores = detection["boxes"][keep].cpu(), detection["scores"][keep].cpu()
            picture = (image * 255).round().to(torch.uint8)
            picture = _draw(picture, boxes, "red", [f"{s:.2f}" for s in scores.tolist()])
            file, path = next(outputs)
            Image.fromarray(picture.permute(1, 2, 0).numpy()).save(path)
            labels = [classes[label] for label in detection["labels"][keep].tolist()]
            records.append(
                {
                    "file": str(file),
                    "drawn": str(path),
                    "boxes": boxes.tolist(),
                    "labels": labels,
                    "scores": scores.tolist(),
                }
            )
    (options.output_dir / "predictions.json").write_text(json.dumps(records, indent=2) + "\n")
    return records


def _float_image(image: Image.Image) -> torch.Tensor:
    """A PIL image as float ``[3, H, W]`` in [0, 1], as the evaluation transform gives it."""
    return F.to_dtype(F.to_image(image), torch.float32, scale=True).as_subclass(torch.Tensor)


def _output_paths(files: Sequence[Path], folder: Path) -> list[Path]:
    """``folder/<stem>.png`` per file; a stem seen before gets ``_2``, ``_3``... appended."""
    seen: dict[str, int] = {}
    paths = []
    for file in files:
        seen[file.stem] = seen.get(file.stem, 0) + 1
        suffix = f"_{seen[file.stem]}" if seen[file.stem] > 1 else ""
        paths.append(folder / f"{file.stem}{suffix}.png")
    return paths


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


TASK = Task(
    build_datasets=build_datasets,
    build_model=build_model,
    step=step,
    build_loss=build_loss,
    collate_fn=collate_fn,
    make_evaluator=make_evaluator,
    describe_data=describe_data,
    predict=predict,
    download=download,
    make_synthetic_data=make_synthetic_data,
    epoch_images=epoch_images,
)
