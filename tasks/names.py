"""``task=names``: surname -> language (18 classes) with a character-level RNN.

The course's ``rnn_demo.py`` feeds one name at a time, letter by letter, through a hand-written
cell and updates the weights by hand. Here names come in padded batches: the hand-written cell
(``model=rnn_cell``) is unrolled with a mask on the lengths, and ``torch.nn.RNN``/``GRU``/``LSTM``
(``model=rnn|gru|lstm``) read packed sequences, so padding never changes a name's output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from torchcamp.datasets.names import (
    ALL_LETTERS,
    PAD_INDEX,
    UNK_INDEX,
    NameList,
    Vocab,
    download_names,
    load_names,
    to_ascii,
    write_synthetic_names,
)
from torchcamp.datasets.names import collate_names as collate_fn
from torchcamp.tasks.classification import build_loss, classification_outputs, summarize
from torchcamp.tasks.contract import ModelInputs, Task

# The models live in tasks/models/recurrent.py; imported here because configs and checkpoints
# written before name them as torchcamp.tasks.names.GRUClassifier and so on.
from torchcamp.tasks.models.recurrent import (
    CourseRNN,
    GRUClassifier,
    LSTMClassifier,
    RNNClassifier,
)
from torchcamp.trainer.errors import UserError

if TYPE_CHECKING:
    from torchcamp.tasks.contract import PredictOptions

__all__ = [
    "CourseRNN",
    "GRUClassifier",
    "LSTMClassifier",
    "RNNClassifier",
    "build_datasets",
    "build_loss",
    "build_model",
    "collate_fn",
    "describe_data",
    "download",
    "export_inputs",
    "make_synthetic_data",
    "predict",
    "step",
    "summarize",
]

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # inputs [B, T], lengths [B], labels [B]


def build_datasets(
    root: str | Path,
    seed: int,
    augment: bool = True,
    skip_corrupt: bool = False,
    folds: int | None = None,
    fold: int = 0,
) -> dict[str, NameList]:
    """Train/val/test from ``root/names/<Language>.txt`` (80/10/10 of each language's unique
    names, fixed by ``seed``), encoded with the training names' vocabulary. ``folds``/``fold``:
    K-fold cross-validation, val being fold ``fold`` of train and val pooled (test kept).

    ``augment`` and ``skip_corrupt`` are accepted for the CLI's sake: names have no
    augmentation, and ``skip_corrupt`` applies to image files (a bad text file still stops
    the run).
    """
    return load_names(root, seed, folds, fold)


def build_model(model_factory: Callable[..., nn.Module], train_set: NameList) -> nn.Module:
    """The chosen model (``model=``) sized by the data: classes, vocabulary, padding index."""
    return model_factory(
        num_classes=len(train_set.classes),
        vocab_size=len(train_set.vocab),
        padding_idx=PAD_INDEX,
    )


def make_synthetic_data(root: str | Path, seed: int) -> None:
    """Five made-up languages, 60 names each, in the real layout under ``root/names/``."""
    write_synthetic_names(root, seed)


def download(root: str | Path) -> None:
    """``data.download=true``: the PyTorch tutorial's ``data.zip``, keeping its ``names/``."""
    download_names(root)


def step(model: nn.Module, batch: Batch, loss_fn: Callable) -> dict[str, torch.Tensor]:
    """``(inputs, lengths, labels)`` -> loss, accuracy and the batch's confusion counts."""
    inputs, lengths, labels = batch
    return classification_outputs(model(inputs, lengths), labels, loss_fn)


def describe_data(train_set: NameList) -> dict[str, Any]:
    """What a checkpoint keeps of the training data, so that the model can be rebuilt and names
    encoded without it: the languages and the vocabulary (``build_model`` reads its length)."""
    return {"classes": list(train_set.classes), "vocab": list(train_set.vocab.itos)}


@torch.no_grad()
def predict(
    model: nn.Module, inputs: Sequence[str], options: PredictOptions
) -> list[dict[str, Any]]:
    """``{"name", "top": [{"label", "prob"}, ...]}`` per name: the ``options.top_k`` (3, as the
    course's ``predict``) most probable languages with their softmax probabilities.

    An input that is an existing file is read as names, one per line; any other is a name.
    Names are reduced to ASCII as in training; letters never seen in training read as unknown.
    """
    names = read_name_inputs(inputs)
    vocab, classes = Vocab.from_itos(options.data["vocab"]), options.data["classes"]
    top_k = min(options.top_k, len(classes))
    records = []
    for start in range(0, len(names), options.batch_size):
        chunk = names[start : start + options.batch_size]
        tokens, lengths, _ = collate_fn([(vocab.encode(to_ascii(name)), 0) for name in chunk])
        logits = model(tokens.to(options.device), lengths.to(options.device))
        probs, indices = logits.float().softmax(dim=1).topk(top_k, dim=1)
        for name, row_probs, row_indices in zip(
            chunk, probs.tolist(), indices.tolist(), strict=True
        ):
            top = [
                {"label": classes[i], "prob": p}
                for i, p in zip(row_indices, row_probs, strict=True)
            ]
            records.append({"name": name, "top": top})
    return records


def read_name_inputs(inputs: Sequence[str]) -> list[str]:
    """The names ``inputs`` gives: a file's non-empty lines (UTF-8), or the input itself."""
    names: list[str] = []
    for item in inputs:
        path = Path(item)
        if not path.is_file():
            names.append(item)
            continue
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            message = f"cannot read names from {path} ({error}): give a UTF-8 text file"
            raise UserError(message) from error
        names += [line.strip() for line in lines if line.strip()]
    if not names:
        raise UserError("no names: give inputs=[Hinton,Nguyen] or inputs=names.txt (one per line)")
    for name in names:
        if not to_ascii(name):
            raise UserError(f"name {name!r} has none of the letters the model reads: {ALL_LETTERS}")
    return names


def export_inputs(options: PredictOptions) -> ModelInputs:
    """For ``export-model``: a batch of encoded names and their lengths, which only TorchScript
    captures for names of any length."""
    return ModelInputs(
        names=("tokens", "lengths"),
        dynamic=({0: "batch", 1: "length"}, {0: "batch"}),
        random_items=lambda n: _random_names(options, n),
        describe=lambda _example: _describe_names(options),
        formats=("torchscript",),
        why_not=(
            "its models read a name letter by letter (packed sequences; a loop for rnn_cell), "
            "which torch.export, behind format=onnx and exported_program, cannot capture for "
            "names of any length"
        ),
    )


def _random_names(options: PredictOptions, n: int) -> list[Any]:
    """Made-up names of 1 to 15 letters of the vocabulary, encoded as the dataset encodes."""
    generator = torch.Generator().manual_seed(options.seed)
    lengths = torch.randint(1, 16, (n,), generator=generator).tolist()
    letters = (UNK_INDEX + 1, len(options.data["vocab"]))
    return [(torch.randint(*letters, (length,), generator=generator), 0) for length in lengths]


def _describe_names(options: PredictOptions) -> dict[str, Any]:
    """Languages, the vocabulary and how a name becomes tokens and a length."""
    return {
        "classes": list(options.data["classes"]),
        "vocab": list(options.data["vocab"]),
        "padding_index": PAD_INDEX,
        "unknown_index": UNK_INDEX,
        "encoding": (
            "a name reduced to ASCII (Unicode NFD, accents dropped, only ASCII letters and "
            "\" .,;'\" kept); tokens: each letter's index in vocab (unknown_index for a letter "
            "not in it), padded with padding_index to the batch's longest name; lengths: each "
            "name's number of letters"
        ),
    }


TASK = Task(
    build_datasets=build_datasets,
    build_model=build_model,
    step=step,
    build_loss=build_loss,
    collate_fn=collate_fn,
    summarize=summarize,
    describe_data=describe_data,
    predict=predict,
    download=download,
    make_synthetic_data=make_synthetic_data,
    export_inputs=export_inputs,
)
