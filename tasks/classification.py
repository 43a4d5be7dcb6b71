"""What single-label classification tasks share: the step, feeding any loss from logits, and
predicting from image files.

A classifier produces logits ``[N, C]`` and has class-index targets ``[N]``. Each loss config
says (under ``adapt``) what its loss wants instead — log-probabilities for ``nll``, one-hot
floats for the BCE family, and so on — and :class:`AdaptedLoss` converts in this one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from torchcamp.datasets.images import ImageFiles, image_inputs

# The loss adapter lives in tasks/losses.py; INPUTS and TARGETS stay importable here, where
# callers (the app's validation tests) have always found them.
from torchcamp.tasks.losses import INPUTS as INPUTS
from torchcamp.tasks.losses import TARGETS as TARGETS
from torchcamp.tasks.losses import AdaptedLoss
from torchcamp.trainer.errors import UserError
from torchcamp.trainer.metrics import Counts

if TYPE_CHECKING:
    from torchcamp.tasks.contract import PredictOptions


def build_loss(loss: nn.Module | None, adapt: Mapping[str, str] | None = None) -> nn.Module:
    """The task's loss: ``loss`` fed from logits and class indices as ``adapt`` says."""
    if loss is None:
        raise UserError(
            "a classifier trains with a loss, and loss=none gives none: use e.g. loss=cross_entropy"
        )
    return AdaptedLoss(loss, **(adapt or {}))


def classification_step(
    model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], loss_fn: Callable
) -> dict[str, torch.Tensor]:
    """``(inputs, labels)`` -> loss, accuracy and the batch's confusion counts."""
    inputs, labels = batch
    return classification_outputs(model(inputs), labels, loss_fn)


def classification_outputs(
    logits: torch.Tensor, labels: torch.Tensor, loss_fn: Callable
) -> dict[str, Any]:
    """What every classification step reports: the loss and the batch's confusion counts.

    Accuracy is not computed per batch: :func:`summarize` reads it off the epoch's confusion
    matrix (the same number as the batch-size-weighted mean of batch accuracies). The counts
    are :class:`~torchcamp.trainer.metrics.Counts`, one ``bincount`` for many steps, so the
    step adds one ``argmax`` and one addition to the loss.
    """
    return {
        "loss": loss_fn(logits, labels),
        "confusion": confusion_counts(labels, logits.argmax(dim=1), logits.shape[1]),
    }


def confusion_counts(labels: torch.Tensor, predictions: torch.Tensor, classes: int) -> Counts:
    """The cells of a ``[classes, classes]`` matrix to count: row = true class, column =
    predicted class."""
    return Counts(torch.add(predictions, labels, alpha=classes), (classes, classes))


def summarize(counts: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Epoch metrics from the summed confusion matrix: ``acc`` (correct / all) and
    ``macro_acc``, the mean per-class recall (classes without samples in the split are left
    out of the mean)."""
    confusion = counts["confusion"].double()
    support = confusion.sum(dim=1)
    recalls = confusion.diagonal()[support > 0] / support[support > 0]
    accuracy = confusion.diagonal().sum() / support.sum().clamp(min=1)
    return {"acc": accuracy.item(), "macro_acc": recalls.mean().item()}


def describe_data(train_set: Any) -> dict[str, Any]:
    """What a checkpoint keeps of the training data, so that the model can be rebuilt and its
    outputs named without it: the class names."""
    return {"classes": list(train_set.classes)}


@torch.no_grad()
def predict_images(
    model: nn.Module,
    inputs: Sequence[str | Path],
    transform: Callable,
    options: PredictOptions,
) -> list[dict[str, Any]]:
    """``{"file", "label", "prob"}`` for every image ``inputs`` names (folders expanded): the
    most probable class after ``transform`` (the task's evaluation transform) and its softmax
    probability, in batches of ``options.batch_size`` on ``options.device``."""
    files = image_inputs(inputs)
    classes = options.data["classes"]
    loader = DataLoader(
        ImageFiles(files, transform),
        batch_size=options.batch_size,
        num_workers=options.num_workers,
    )
    probs, labels = [], []
    for images in loader:
        prob, label = model(images.to(options.device)).float().softmax(dim=1).max(dim=1)
        probs += prob.tolist()
        labels += label.tolist()
    return [
        {"file": str(path), "label": classes[label], "prob": prob}
        for path, label, prob in zip(files, labels, probs, strict=True)
    ]
