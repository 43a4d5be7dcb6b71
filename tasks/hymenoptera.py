"""``task=hymenoptera``: ants vs bees, finetuning ResNet18 as the course's transfer-learning job."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn
from torchvision import transforms

from torchcamp.datasets.hymenoptera import (
    download_hymenoptera,
    find_hymenoptera_splits,
    render_synthetic_hymenoptera,
)
from torchcamp.datasets.images import ImageList
from torchcamp.tasks.classification import build_loss, describe_data, predict_images, summarize
from torchcamp.tasks.classification import classification_step as step

if TYPE_CHECKING:
    from torchcamp.trainer.inference import PredictOptions

__all__ = [
    "build_datasets",
    "build_loss",
    "build_model",
    "describe_data",
    "download",
    "eval_transform",
    "make_synthetic_data",
    "predict",
    "step",
    "summarize",
]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MEAN, STD = IMAGENET_MEAN, IMAGENET_STD  # what TensorBoard's image views undo


def eval_transform(image_size: int = 224) -> transforms.Compose:
    """The course's validation transform: Resize(size * 256/224), CenterCrop(size), ToTensor,
    ImageNet's Normalize."""
    return transforms.Compose(
        [
            transforms.Resize(round(image_size * 256 / 224)),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def build_datasets(
    root: str | Path,
    seed: int,
    augment: bool = True,
    image_size: int = 224,
    skip_corrupt: bool = False,
) -> dict[str, ImageList]:
    """Train and val with the course's transforms, at ``image_size`` (224 as the course).

    Train: RandomResizedCrop + horizontal flip; val: Resize(size * 256/224) + CenterCrop.
    ``skip_corrupt`` leaves out images that cannot be decoded.
    """
    evaluation = eval_transform(image_size)
    train_transform = transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    if not augment:
        train_transform = evaluation
    splits, classes = find_hymenoptera_splits(root)
    return {
        split: ImageList(
            splits[split],
            classes,
            train_transform if split == "train" else evaluation,
            skip_corrupt=skip_corrupt,
            split=split,
        )
        for split in ("train", "val")
    }


def build_model(model_factory: Callable[..., nn.Module], train_set: ImageList) -> nn.Module:
    """The chosen model with one output per class (ResNet18's ``fc`` replaced)."""
    return model_factory(num_classes=len(train_set.classes))


def make_synthetic_data(root: str | Path, seed: int) -> None:
    """Render drawn ants and bees in the real layout under ``root``."""
    render_synthetic_hymenoptera(root, seed)


def download(root: str | Path) -> None:
    """Fetch the tutorial's zip into ``root`` (``data.download=true``)."""
    download_hymenoptera(root)


def predict(
    model: nn.Module, inputs: Sequence[str | Path], options: PredictOptions
) -> list[dict[str, Any]]:
    """``{"file", "label", "prob"}`` per image (folders expanded), through the validation
    transform at the run's ``task.options.image_size``."""
    image_size = options.task_options.get("image_size", 224)
    return predict_images(model, inputs, eval_transform(image_size), options)
