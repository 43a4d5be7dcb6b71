"""The character-level classifiers of ``task=names``: the course's hand-written RNN cell and
``torch.nn.RNN``/``GRU``/``LSTM`` over packed sequences."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence


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
