"""``task=rmb``: 1-yuan vs 100-yuan banknotes, LeNet at 32x32, as the course's train_lenet.py."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn
from torchvision import transforms

from torchcamp.datasets.images import ImageList
from torchcamp.datasets.rmb import CLASSES, find_rmb_splits, render_synthetic_rmb
from torchcamp.tasks.classification import build_loss, describe_data, predict_images, summarize
from torchcamp.tasks.classification import classification_step as step

if TYPE_CHECKING:
    from torchcamp.trainer.inference import PredictOptions

__all__ = [
    "build_datasets",
    "build_loss",
    "build_model",
    "describe_data",
    "eval_transform",
    "make_synthetic_data",
    "predict",
    "step",
    "summarize",
]

# The course's statistics for this set (not ImageNet's).
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def eval_transform() -> transforms.Compose:
    """The course's evaluation transform: Resize(32, 32), ToTensor, Normalize."""
    return transforms.Compose(
        [transforms.Resize((32, 32)), transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
    )


def build_datasets(
    root: str | Path, seed: int, augment: bool = True, skip_corrupt: bool = False
) -> dict[str, ImageList]:
    """Train/val/test splits with the course's transforms (RandomCrop on train only).

    ``augment=False`` gives the training split the evaluation transform. ``skip_corrupt``
    leaves out images that cannot be decoded, after the split (so it stays the same).
    """
    evaluation = eval_transform()
    train_transform = transforms.Compose(
        [
            transforms.Resize((32, 32)),
            transforms.RandomCrop(32, padding=4),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
    if not augment:
        train_transform = evaluation
    splits = find_rmb_splits(root, seed)
    return {
        name: ImageList(
            samples,
            CLASSES,
            train_transform if name == "train" else evaluation,
            skip_corrupt=skip_corrupt,
            split=name,
        )
        for name, samples in splits.items()
    }


def build_model(model_factory: Callable[..., nn.Module], train_set: ImageList) -> nn.Module:
    """The chosen model (``model=``) with one output per banknote class."""
    return model_factory(num_classes=len(train_set.classes))


def make_synthetic_data(root: str | Path, seed: int) -> None:
    """Render the stand-in set (drawn "1" and "100" notes) in the real layout under ``root``."""
    render_synthetic_rmb(root, seed)


def predict(
    model: nn.Module, inputs: Sequence[str | Path], options: PredictOptions
) -> list[dict[str, Any]]:
    """``{"file", "label", "prob"}`` per image (folders expanded), through the evaluation
    transform."""
    return predict_images(model, inputs, eval_transform(), options)
