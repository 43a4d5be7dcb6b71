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
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from torchcamp.datasets.names import (
    ALL_LETTERS,
    PAD_INDEX,
    NameList,
    Vocab,
    download_names,
    load_names,
    to_ascii,
    write_synthetic_names,
)
from torchcamp.datasets.names import collate_names as collate_fn
from torchcamp.tasks.classification import build_loss, classification_outputs, summarize
from torchcamp.trainer.errors import UserError

if TYPE_CHECKING:
    from torchcamp.trainer.inference import PredictOptions

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
    "make_synthetic_data",
    "predict",
    "step",
    "summarize",
]

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # inputs [B, T], lengths [B], labels [B]


def build_datasets(
    root: str | Path, seed: int, augment: bool = True, skip_corrupt: bool = False
) -> dict[str, NameList]:
    """Train/val/test from ``root/names/<Language>.txt`` (80/10/10 of each language's unique
    names, fixed by ``seed``), encoded with the training names' vocabulary.

    ``augment`` and ``skip_corrupt`` are accepted for the CLI's sake: names have no
    augmentation, and ``skip_corrupt`` applies to image files (a bad text file still stops
    the run).
    """
    return load_names(root, seed)


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


# ---- models ------------------------------------------------------------------------------


class CourseRNN(nn.Module):
    """The course's hand-written cell: ``s_t = tanh(u(x_t) + w(s_{t-1}))``, ``o = v(s_T)``.

    ``x_t`` is the one-hot vector of a letter, ``s_0`` zeros. The cell is unrolled over a padded
    batch; a name's state stops changing after its last letter (a mask on ``lengths``), so its
    output is what the course's one-name loop gives. ``forward`` returns logits: the course
    applies ``log_softmax`` and ``NLLLoss``, which is ``CrossEntropyLoss`` on these logits (and
    exactly what ``loss=nll`` gets through the loss adapter).
    """

    def __init__(
        self,
        num_classes: int,
        vocab_size: int | None = None,
        padding_idx: int = 0,
        hidden_size: int = 128,
    ) -> None:
        super().__init__()
        _check_vocab(self, vocab_size)
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.u = nn.Linear(vocab_size, hidden_size)
        self.w = nn.Linear(hidden_size, hidden_size)
        self.v = nn.Linear(hidden_size, num_classes)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(inputs, self.vocab_size).to(self.u.weight.dtype)
        u_x = self.u(one_hot)  # [B, T, H]: every step's input term at once
        hidden = u_x.new_zeros(inputs.shape[0], self.hidden_size)
        for t in range(inputs.shape[1]):
            new = torch.tanh(u_x[:, t] + self.w(hidden))
            hidden = torch.where((lengths > t).unsqueeze(1), new, hidden)
        return self.v(hidden)


class RecurrentClassifier(nn.Module):
    """Embedding (or one-hot) -> ``torch.nn`` recurrent layers -> linear, on packed sequences.

    ``embedding_dim: null`` feeds one-hot letters, as the course does. The class comes from the
    last layer's final hidden state (both directions concatenated when ``bidirectional``);
    ``dropout`` applies between recurrent layers and before the linear layer.
    """

    recurrent: type[nn.RNNBase] = nn.RNN

    def __init__(
        self,
        num_classes: int,
        vocab_size: int | None = None,
        padding_idx: int = 0,
        embedding_dim: int | None = 64,
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_vocab(self, vocab_size)
        self.vocab_size = vocab_size
        self.embedding = (
            nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx)
            if embedding_dim
            else None
        )
        self.rnn = self.recurrent(
            embedding_dim or vocab_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.directions = 2 if bidirectional else 1
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_size * self.directions, num_classes)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:
            x = self.embedding(inputs)
        else:
            x = F.one_hot(inputs, self.vocab_size).to(self.fc.weight.dtype)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, hidden = self.rnn(packed)
        if isinstance(hidden, tuple):  # LSTM: (h, c)
            hidden = hidden[0]
        # [layers * directions, B, H]: the last layer's directions, side by side.
        last = torch.cat(list(hidden[-self.directions :]), dim=1)
        return self.fc(self.dropout(last))


class RNNClassifier(RecurrentClassifier):
    """``torch.nn.RNN`` (tanh): the course's cell, as torch ships it."""

    recurrent = nn.RNN


class GRUClassifier(RecurrentClassifier):
    """``torch.nn.GRU``: gated, keeps information over long names."""

    recurrent = nn.GRU


class LSTMClassifier(RecurrentClassifier):
    """``torch.nn.LSTM``: gated, with a separate cell state."""

    recurrent = nn.LSTM


def _check_vocab(model: nn.Module, vocab_size: int | None) -> None:
    if vocab_size is None:  # e.g. model=gru with an image task
        raise ValueError(
            f"{type(model).__name__} reads characters and needs the vocabulary of a text task: "
            "use it with task=names"
        )
