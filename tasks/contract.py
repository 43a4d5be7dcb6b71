"""The Task contract: everything torchcamp needs from a task, in one typed object.

A task is a module that defines ``TASK = Task(...)``; its config (``conf/task/<name>.yaml``, or
a file of the user's own in ``--config-dir``) names that module in ``task.module``. The CLI
reads this one object: a field left ``None`` means the task does not have that feature, and
nothing else about the module is looked at.

Three fields are required:

``build_datasets(root, *, seed, augment, skip_corrupt, **options) -> {"train": ..., "val": ...}``
    The datasets by split (map-style, ``len`` and ``[i]``); ``"train"`` is required, ``"val"``
    and ``"test"`` are scored when present. ``root`` is ``data.root`` (or the folder the
    synthetic stand-in was rendered into); ``options`` are the task's own ``data.*`` keys (those
    its config adds beside torchcamp's), plus ``transforms`` (``{"train": ..., "eval": ...}``,
    built from the ``transforms`` group) when the config has them.
``build_model(model_factory, train_set) -> nn.Module``
    ``model_factory`` is the ``model`` node instantiated with ``_partial_``: call it with what
    the data decides (``num_classes=len(train_set.classes)``, a vocabulary size).
``step(model, batch, loss_fn) -> {"loss": tensor, ...}``
    One batch through the model. ``loss`` is what is minimised; every other 0-d tensor is
    averaged over the epoch and logged (``mae``); a tensor with more dimensions is summed over
    the epoch and handed to ``summarize``, and so is a :class:`~torchcamp.trainer.metrics.Counts`
    once counted (the classifiers' confusion matrix). A task with ``parts`` also gets
    ``phase=`` (the part being optimised).

Everything else is optional; see each field's comment below. One more at length:

``export_inputs(options) -> ModelInputs``
    Makes the task's models exportable (``export-model``). ``options`` are those ``predict``
    gets (:class:`PredictOptions`: the checkpoint's ``data`` description, ``data_options``, the
    built ``transforms``, ``seed``). The :class:`ModelInputs` returned name the inputs of the
    model's ``forward`` in order (a batch of the task's ``collate_fn`` less its last element,
    the labels), their free dimensions (``{0: "batch"}``), the formats that can capture the
    model, how to make ``n`` dataset items of the right shape when the run's data is not there,
    and what the exported file's JSON should tell its users about the inputs. The model's
    output is checked and described as one score per class (``[N, C]`` logits). A task without
    it is refused by ``export-model`` in one line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from torchcamp.trainer.metrics import Evaluator


@dataclass
class PredictOptions:
    """What a task's ``predict`` gets besides the model and the inputs.

    ``data`` is the checkpoint's ``meta["data"]`` (e.g. ``classes``, ``vocab``),
    ``data_options`` its config's task-specific ``data.*`` keys (e.g. ``image_size``),
    ``transforms`` the ``transforms`` group built (``{"train": ..., "eval": ...}``) or None.
    ``threshold`` is the lowest detection score kept, ``num_images`` how many images a
    generator draws (from noise seeded by ``seed``), ``top_k`` how many classes a name gets.
    Tasks that write files write them into ``output_dir``.
    """

    device: torch.device
    output_dir: Path
    batch_size: int = 16
    num_workers: int = 0
    data: dict[str, Any] = field(default_factory=dict)
    data_options: dict[str, Any] = field(default_factory=dict)
    transforms: dict[str, Any] | None = None
    threshold: float = 0.5
    num_images: int = 64
    seed: int = 0
    top_k: int = 3


@dataclass(frozen=True)
class Task:
    """What a task gives torchcamp (see the module docstring for the three required fields)."""

    build_datasets: Callable[..., Mapping[str, Any]]
    build_model: Callable[[Callable[..., nn.Module], Any], nn.Module]
    step: Callable[..., Mapping[str, Any]]

    # loss_fn from the ``loss`` node's object (None for loss=none) and its ``adapt`` keys;
    # None: the loss object is used as it is.
    build_loss: Callable[[Any, Mapping[str, Any] | None], Any] | None = None
    # The DataLoaders' collate_fn (names pads sequences, detection keeps lists).
    collate_fn: Callable[[list[Any]], Any] | None = None
    # Epoch metrics from the epoch's summed tensors: {"confusion": ...} -> {"macro_acc": ...}.
    summarize: Callable[[Mapping[str, torch.Tensor]], Mapping[str, float]] | None = None
    # A fresh metric object for each evaluation, when sums are not enough (detection mAP).
    make_evaluator: Callable[[], Evaluator] | None = None
    # What the checkpoint keeps of the training data (class names, a vocabulary), as plain
    # values: build_model receives an object with these attributes when predicting, and a
    # resumed or evaluated run refuses data whose description differs.
    describe_data: Callable[[Any], Mapping[str, Any]] | None = None
    # ``predict`` command: records ({"file", "label", ...}) for the inputs.
    predict: Callable[[nn.Module, Sequence[str], PredictOptions], list[dict[str, Any]]] | None = (
        None
    )
    # ``data.download=true``: fetch the public data set into root.
    download: Callable[[Path], None] | None = None
    # ``data.synthetic=true``: render a small stand-in data set in the real layout into root.
    make_synthetic_data: Callable[[Path, int], None] | None = None
    # Parts trained against each other, one optimizer each, stepped in this order (a GAN's D
    # and G); ``step`` then gets ``phase=<part name>``.
    parts: Callable[[nn.Module], Mapping[str, nn.Module]] | None = None
    # Pictures for TensorBoard after every epoch: {"tag": image batch or grid}.
    epoch_images: Callable[..., Mapping[str, torch.Tensor]] | None = None
    # How the model views feed images to the model when it is not model(images) (a GAN's D).
    forward_images: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None
    # (mean, std) the inputs were normalised with, for showing them: from the train set.
    normalization: Callable[[Any], tuple[Sequence[float], Sequence[float]] | None] | None = None
    # A short report on the data, before the first epoch: logged and kept in metrics.json.
    report_data: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
    # Write the resolved split (which file went where) into the run directory.
    save_split: Callable[[Mapping[str, Any], Path], None] | None = None
    # ``export-model``: what the model reads (see the module docstring and ModelInputs).
    export_inputs: Callable[[PredictOptions], ModelInputs] | None = None

    def __post_init__(self) -> None:
        for name in ("build_datasets", "build_model", "step"):
            if not callable(getattr(self, name)):
                raise TypeError(f"Task.{name} must be a function, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class ModelInputs:
    """What a task's models read, for ``export-model`` (the Task's ``export_inputs``).

    ``names``: the inputs of ``forward``, in order; ``dynamic``: each one's free dimensions
    (``{0: "batch", 1: "length"}``); ``random_items(n)``: ``n`` dataset items (inputs and a
    label, as ``build_datasets``' datasets give them) of the right shape, checked on when the
    run's data is not at hand; ``describe(example)``: what the JSON beside the file says about
    preparing inputs and reading outputs (class names, sizes), given an example batch of
    inputs; ``formats``: those that capture the model (None: every one), ``why_not`` the
    reason the others do not.
    """

    names: tuple[str, ...]
    dynamic: tuple[Mapping[int, str], ...]
    random_items: Callable[[int], list[Any]]
    describe: Callable[[tuple[torch.Tensor, ...]], Mapping[str, Any]] = lambda _example: {}
    formats: tuple[str, ...] | None = None
    why_not: str = ""


def describe_training_data(task: Task, train_set: Any) -> dict[str, Any]:
    """What the model and its predictions need from the training data, as plain values for the
    checkpoint's ``meta["data"]``: the task's ``describe_data(train_set)``, or nothing."""
    return dict(task.describe_data(train_set)) if task.describe_data is not None else {}
