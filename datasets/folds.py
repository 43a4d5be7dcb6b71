"""Stratified K-fold cross-validation (``data.folds=K data.fold=i``) for the classifiers.

The test split is left as it is; every other sample (train and val pooled) lies in exactly one
of K folds. Fold ``i``'s run validates on fold ``i`` and trains on the other K-1. Folds are
dealt per class, so each fold holds every class's samples in proportion (counts differ by at
most one per class), and fixed by the seed alone: the same files or names and seed give the
same folds in any listing order, and another seed another partition (so ``seed=1,2,3
'data.fold=range(5)'`` is a repeated 3x5 cross-validation). Pure Python: used by
datasets/folders.py (image folders) and datasets/names.py.
"""

from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from torchcamp.datasets.errors import DataError

log = logging.getLogger(__name__)

Sample = tuple[Any, int]  # (a path or a name, label)


def check_folds(folds: object, fold: object) -> None:
    """``data.folds`` null (off) or an integer >= 2, ``data.fold`` an integer in [0, folds)
    (0 while folds are off): else a one-line :class:`DataError` naming both keys."""
    written_folds, written_fold = shown(folds), shown(fold)
    if folds is None:
        if not (is_int(fold) and fold == 0):
            raise DataError(
                f"data.fold={written_fold} is not allowed with data.folds=null (no folds): set "
                f"data.folds=K to validate on fold {written_fold} of K, or leave data.fold at 0"
            )
        return
    if not is_int(folds) or folds < 2:
        raise DataError(
            f"data.folds={written_folds} is not allowed (data.fold={written_fold}): use null "
            "(no folds) or an integer >= 2"
        )
    if not is_int(fold) or not 0 <= fold < folds:
        raise DataError(
            f"data.fold={written_fold} is not allowed with data.folds={written_folds}: use an "
            f"integer from 0 to {folds - 1}"
        )


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # true is not a fold


def shown(value: object) -> str:
    """A value as it is written on the command line (null, true)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)


def assign_folds(samples: Sequence[Sample], folds: int, seed: int) -> list[int]:
    """Each sample's fold, in the order given.

    Per class (in label order): its samples sorted by ``str(sample[0])`` (the listing order
    does not matter), shuffled by ``random.Random(f"{seed}/folds/{label}")``, then dealt to the
    folds in turn, each class carrying on where the previous one stopped, so that the folds'
    sizes also differ by at most one overall.
    """
    by_class: dict[int, list[int]] = defaultdict(list)
    for index, (_, label) in enumerate(samples):
        by_class[label].append(index)
    assigned = [0] * len(samples)
    dealt = 0
    for label in sorted(by_class):
        indices = sorted(by_class[label], key=lambda index: str(samples[index][0]))
        random.Random(f"{seed}/folds/{label}").shuffle(indices)
        for index in indices:
            assigned[index] = dealt % folds
            dealt += 1
    return assigned


def split_fold(
    splits: Mapping[str, Sequence[Sample]], folds: int, fold: int, seed: int
) -> dict[str, list[Sample]]:
    """``splits`` with ``train`` and ``val`` replaced by fold ``fold`` of their union (val: the
    fold, train: the rest, each in the pool's order); ``test`` kept as it is."""
    check_folds(folds, fold)
    pool = [*splits["train"], *splits.get("val", [])]
    if len(pool) < folds:
        raise DataError(
            f"data.folds={folds} is more than the {len(pool)} samples outside the test split: "
            f"every fold needs one, so use data.folds={max(2, len(pool))} or fewer"
        )
    per_class = Counter(label for _, label in pool)
    small = [label for label, count in per_class.items() if count < folds]
    if small:  # not an error: those folds validate without the class
        log.warning(
            "%d class(es) have fewer than data.folds=%d samples outside test: some folds' val "
            "has none of them",
            len(small),
            folds,
        )
    assigned = assign_folds(pool, folds, seed)
    val = [sample for sample, at in zip(pool, assigned, strict=True) if at == fold]
    train = [sample for sample, at in zip(pool, assigned, strict=True) if at != fold]
    return {name: list(samples) for name, samples in splits.items()} | {"train": train, "val": val}


def describe_fold(folds: int, fold: int, seed: int) -> str:
    """How :func:`split_fold` split, for the log line that names the layout."""
    return (
        f"train and val pooled into {folds} folds per class by seed {seed}: val is fold {fold}, "
        f"train the other {folds - 1}"
    )
