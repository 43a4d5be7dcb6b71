"""``task=imagefolder``: any folder of labelled images, split as it is laid out.

``data.root`` (with ``data.folder`` inside it, for presets such as ``task=rmb``) is the image
folder. The layout is found by ``find_image_folder`` (datasets/folders.py): a CSV of files,
labels and splits; ``train``/``val``/``test`` folders of class folders; or class folders split
per class by ``seed``. The transforms come from the ``transforms`` group, the model from
``model=``; the step, loss, metrics and prediction are the classifier's (classification.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from torch import nn

from torchcamp.datasets.errors import DataError
from torchcamp.datasets.folders import FolderSplits, find_image_folder, write_split_csv
from torchcamp.datasets.images import ImageList
from torchcamp.datasets.report import WARNING, data_report, report_lines
from torchcamp.datasets.shapes import render_synthetic_shapes
from torchcamp.datasets.transforms import find_normalization
from torchcamp.tasks.classification import (
    build_loss,
    classification_step,
    describe_data,
    predict_images,
    summarize,
)
from torchcamp.tasks.contract import ModelInputs, Task
from torchcamp.tasks.models.custom import build_custom
from torchcamp.trainer.errors import UserError
from torchcamp.trainer.files import written_atomically

if TYPE_CHECKING:
    from torchcamp.tasks.contract import PredictOptions

log = logging.getLogger("torchcamp")


def build_datasets(
    root: str | Path,
    *,
    seed: int,
    augment: bool = True,
    skip_corrupt: bool = False,
    transforms: Mapping[str, Callable] | None = None,
    folder: str | list[str] | None = None,
    splits: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    image_size: int = 224,
    source: str | None = None,
    folds: int | None = None,
    fold: int = 0,
) -> dict[str, ImageList]:
    """The image folder's splits as datasets, through ``transforms["train"]`` (training, when
    ``augment``) and ``transforms["eval"]``.

    ``folder``: where in ``root`` the images are (a list: the first that exists; None: ``root``
    itself). ``splits``: a CSV of ``file,label[,split]``. ``val_fraction``/``test_fraction``:
    the per-class split of plain class folders. ``folds``/``fold``: K-fold cross-validation,
    val being fold ``fold`` of train and val pooled (test kept). ``image_size`` is read by the
    transform presets (``${data.image_size}``); ``source`` says where the data set comes from,
    for the message when it is missing.
    """
    if transforms is None:
        raise DataError("task=imagefolder needs transforms: pick one, e.g. transforms=imagenet")
    image_root = _image_folder(Path(root).expanduser(), folder, source)
    found = find_image_folder(
        image_root,
        splits_csv=splits,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        folds=folds,
        fold=fold,
    )
    log.info("image folder %s: %s; %d classes", image_root, found.layout, len(found.classes))
    train_transform = transforms["train"] if augment else transforms["eval"]
    return {
        name: ImageList(
            samples,
            found.classes,
            train_transform if name == "train" else transforms["eval"],
            skip_corrupt=skip_corrupt,
            split=name,
        )
        for name, samples in found.splits.items()
    }


def _image_folder(root: Path, folder: str | list[str] | None, source: str | None) -> Path:
    """``root``, or the first of ``folder``'s names that exists in it."""
    if folder is None:
        return root
    names = [folder] if isinstance(folder, str) else list(folder)
    for name in names:
        if (root / name).is_dir():
            return root / name
    where = f" ({source})" if source else ""
    raise DataError(
        f"no {' or '.join(f'{name}/' for name in names)} in data.root={root}: set data.root to "
        f"the folder that holds it{where}, or run with data.synthetic=true"
    )


def build_model(model_factory: Callable[..., nn.Module], train_set: Any) -> nn.Module:
    """The chosen model (``model=``) with one output per class (``num_classes``, given to any
    model that takes it: ``model=custom`` may name one that fixes its own outputs)."""
    return build_custom(model_factory, len(train_set.classes))


def normalization(train_set: ImageList) -> tuple[Sequence[float], Sequence[float]] | None:
    """The mean and std of the transform's ``Normalize``, to show inputs as pictures."""
    return find_normalization(train_set.transform)


def report_data(splits: Mapping[str, ImageList]) -> dict[str, Any]:
    """Images per split and class, the imbalance ratio, unreadable files and files in more
    than one split; logged (duplicates as a warning) and returned for metrics.json."""
    report = data_report(
        {name: dataset.samples for name, dataset in splits.items()},
        splits["train"].classes,
        {name: len(dataset.skipped) for name, dataset in splits.items()},
    )
    for line in report_lines(report):
        warning = line.startswith(WARNING)
        log.log(logging.WARNING if warning else logging.INFO, "%s", line.removeprefix(WARNING))
    return report


def save_split(splits: Mapping[str, ImageList], run_dir: Path) -> None:
    """``split.csv`` in the run directory: every image's file, class and split, readable back
    with ``data.splits=<run>/split.csv``."""
    paths = [path for dataset in splits.values() for path, _ in dataset.samples]
    root = Path(os.path.commonpath([str(path.parent) for path in paths]))
    found = FolderSplits(
        splits={name: dataset.samples for name, dataset in splits.items()},
        classes=tuple(splits["train"].classes),
        layout="",
    )
    path = run_dir / "split.csv"
    with (
        written_atomically(path) as temporary,
        open(temporary, "w", newline="", encoding="utf-8") as file,
    ):
        write_split_csv(file, found, root)


def predict(
    model: nn.Module, inputs: Sequence[str | Path], options: PredictOptions
) -> list[dict[str, Any]]:
    """``{"file", "label", "prob"}`` per image (folders expanded), through the run's evaluation
    transform."""
    if options.transforms is None:
        raise DataError("the checkpoint's config has no transforms: retrain it with this version")
    return predict_images(model, inputs, options.transforms["eval"], options)


def export_inputs(options: PredictOptions) -> ModelInputs:
    """For ``export-model``: a batch of images of ``data.image_size``, prepared by the run's
    evaluation transform (built into ``options.transforms``)."""
    return ModelInputs(
        names=("images",),
        dynamic=({0: "batch"},),
        random_items=lambda n: _random_images(options, n),
        describe=lambda example: _describe_images(options, example),
    )


def _random_images(options: PredictOptions, n: int) -> list[Any]:
    """Noise images of ``data.image_size`` through the run's evaluation transform: the shape,
    dtype and range of what the model reads."""
    transform = _eval_transform(options)
    size = options.data_options.get("image_size", 224)
    rng = np.random.default_rng(options.seed)
    pixels = (rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n))
    return [(transform(Image.fromarray(image)), 0) for image in pixels]


def _describe_images(options: PredictOptions, example: tuple[Any, ...]) -> dict[str, Any]:
    """Class names, the image size and the normalization of the evaluation transform."""
    mean_std = find_normalization(_eval_transform(options))
    return {
        "classes": list(options.data["classes"]),
        "image_size": list(example[0].shape[2:]),
        "normalization": {"mean": mean_std[0], "std": mean_std[1]} if mean_std else None,
    }


def _eval_transform(options: PredictOptions) -> Callable:
    if options.transforms is None:
        raise UserError("the checkpoint's config has no transforms: retrain it with this version")
    return options.transforms["eval"]


TASK = Task(
    build_datasets=build_datasets,
    build_model=build_model,
    step=classification_step,
    build_loss=build_loss,
    summarize=summarize,
    describe_data=describe_data,
    predict=predict,
    make_synthetic_data=render_synthetic_shapes,
    normalization=normalization,
    report_data=report_data,
    save_split=save_split,
    export_inputs=export_inputs,
)
