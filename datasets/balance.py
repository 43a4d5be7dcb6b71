"""Class balance for any classification task (``data.balance=sampler|weights``).

Both need only a training set with ``.targets`` (one label per sample) and ``.classes``, as
torchvision's ``ImageFolder`` has: ``sampler`` draws every class equally often, ``weights`` puts
inverse class frequencies into the loss.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler

from torchcamp.datasets.errors import DataError


def inverse_frequency_weights(targets: Sequence[int], num_classes: int) -> list[float]:
    """``N / (C * n_c)`` per class: 1 for every class when balanced; 0 for an absent class."""
    counts = torch.bincount(torch.as_tensor(list(targets)), minlength=num_classes).double()
    weights = torch.where(
        counts > 0, len(targets) / (num_classes * counts.clamp(min=1)), torch.zeros(())
    )
    return weights.tolist()


class WeightedEpochSampler(Sampler[int]):
    """Draws ``len(weights)`` indices with replacement, in proportion to ``weights``.

    The draw is a function of ``(seed, epoch)`` alone (the Trainer calls :meth:`set_epoch`), so a
    resumed run replays the order an unbroken run sees. Under DDP every rank makes the same
    draw, rounded up to a multiple of ``num_replicas``, and keeps every ``num_replicas``-th
    index from ``rank`` on, as ``DistributedSampler`` does.
    """

    def __init__(
        self, weights: Sequence[float], seed: int, num_replicas: int = 1, rank: int = 0
    ) -> None:
        self.weights = torch.as_tensor(list(weights), dtype=torch.double)
        self.seed, self.num_replicas, self.rank = seed, num_replicas, rank
        self.epoch = 0
        self.num_samples = math.ceil(len(self.weights) / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        total = self.num_samples * self.num_replicas
        drawn = torch.multinomial(self.weights, total, replacement=True, generator=generator)
        return iter(drawn[self.rank : total : self.num_replicas].tolist())


def balanced_sampler(
    dataset: Any, seed: int, num_replicas: int = 1, rank: int = 0
) -> WeightedEpochSampler:
    """``data.balance=sampler``: every class drawn equally often (each sample ∝ 1/its class)."""
    targets = _targets(dataset, "sampler")
    class_weights = inverse_frequency_weights(targets, len(dataset.classes))
    return WeightedEpochSampler(
        [class_weights[t] for t in targets], seed, num_replicas=num_replicas, rank=rank
    )


# Loss keys that take one weight per class: weight (CrossEntropyLoss, NLLLoss,
# MultiMarginLoss) and alpha (the focal loss's alpha_t).
CLASS_WEIGHT_KEYS = ("weight", "alpha")


def class_weighted_loss(node: Mapping[str, Any], dataset: Any, loss_name: str) -> dict[str, Any]:
    """``data.balance=weights``: the loss node with inverse class frequencies of ``dataset``
    as its per-class weights. Refused for a loss without per-class weights, or whose weights
    the command line already set."""
    node = dict(node)
    key = next((k for k in CLASS_WEIGHT_KEYS if k in node), None)
    if key is None:
        raise DataError(
            f"data.balance=weights needs a loss with per-class weights, and loss={loss_name} "
            "has none: use loss=cross_entropy, nll, multi_margin or focal, or data.balance=sampler"
        )
    if node[key] is not None:
        raise DataError(
            f"data.balance=weights sets loss.{key} from the class frequencies, and "
            f"loss.{key}={node[key]} is set too: drop one of them"
        )
    node[key] = inverse_frequency_weights(_targets(dataset, "weights"), len(dataset.classes))
    return node


def _targets(dataset: Any, mode: str) -> list[int]:
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise DataError(
            f"data.balance={mode} needs a training set that lists its labels (.targets), and "
            "this task's does not: use data.balance=none"
        )
    return list(targets)
