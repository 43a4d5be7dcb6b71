"""What a labelled image set holds, before training on it: images per split and class, the class
imbalance, unreadable files, and identical files in more than one split (a leak that makes
validation accuracy look better than it is)."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from torchcamp.datasets.images import Samples

SHOWN_CLASSES = 10  # per-class counts in a log line; the rest are counted
SHOWN_DUPLICATES = 3  # example groups in the duplicates warning
WARNING = "WARNING: "  # starts the lines a caller should log as warnings
CHUNK_BYTES = 1 << 20


def data_report(
    splits: Mapping[str, Samples],
    classes: Sequence[str],
    skipped: Mapping[str, int] | None = None,
) -> dict:
    """A JSON-able summary of ``splits`` (labels index ``classes``); ``skipped`` counts the
    unreadable files left out per split.

    Keys: ``images`` ({split: {class: count}}), ``total`` ({split: count}), ``imbalance``
    (largest over smallest class in train; None when a class has no training image, those
    being listed in ``empty_train_classes``), ``unreadable`` (skipped files in all) and
    ``duplicates`` (groups of paths with identical bytes spread over more than one split).
    """
    images = {split: class_counts(samples, classes) for split, samples in splits.items()}
    train = images.get("train", dict.fromkeys(classes, 0))
    empty = [name for name in classes if train[name] == 0]
    counts = list(train.values())
    return {
        "images": images,
        "total": {split: len(samples) for split, samples in splits.items()},
        "imbalance": None if empty or not counts else max(counts) / min(counts),
        "empty_train_classes": empty,
        "unreadable": sum((skipped or {}).values()),
        "duplicates": cross_split_duplicates(splits),
    }


def class_counts(samples: Samples, classes: Sequence[str]) -> dict[str, int]:
    """``{class: number of samples}``, every class listed (0 included), in label order."""
    counts = [0] * len(classes)
    for _, label in samples:
        counts[label] += 1
    return dict(zip(classes, counts, strict=True))


def cross_split_duplicates(splits: Mapping[str, Samples]) -> list[list[str]]:
    """Groups of files with the same bytes that lie in two splits or more, each sorted, the
    groups sorted. Only files whose size another file shares are read and hashed."""
    splits_of: dict[Path, set[str]] = defaultdict(set)
    for split, samples in splits.items():
        for path, _ in samples:
            splits_of[path].add(split)
    groups = []
    for group in identical_files(splits_of):
        if len(set().union(*(splits_of[path] for path in group))) >= 2:
            groups.append(sorted(str(path) for path in group))
    return sorted(groups)


def identical_files(paths: Iterable[Path]) -> list[list[Path]]:
    """``paths`` grouped by content (a file alone is a group of one); unreadable ones left out
    (the readers report those)."""
    by_size: dict[int, list[Path]] = defaultdict(list)
    for path in paths:
        try:
            by_size[path.stat().st_size].append(path)
        except OSError:
            continue
    groups: list[list[Path]] = []
    for same_size in by_size.values():
        if len(same_size) == 1:  # a unique size: no other file can match it, nothing to read
            groups.append(same_size)
            continue
        by_digest: dict[bytes, list[Path]] = defaultdict(list)
        for path in same_size:
            digest = file_digest(path)
            if digest is not None:
                by_digest[digest].append(path)
        groups += by_digest.values()
    return groups


def file_digest(path: Path) -> bytes | None:
    """A BLAKE2b digest of the file's bytes, read in chunks; None when it cannot be read."""
    digest = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as file:
            while chunk := file.read(CHUNK_BYTES):
                digest.update(chunk)
    except OSError:
        return None
    return digest.digest()


def report_lines(report: dict) -> list[str]:
    """Short log lines for a :func:`data_report`; those a caller should log as warnings start
    with ``WARNING``."""
    lines = [split_line(split, counts) for split, counts in report["images"].items()]
    if report["imbalance"] is not None:
        ratio = report["imbalance"]
        lines.append(f"class imbalance in train (largest / smallest class): {ratio:.1f}")
    empty = report["empty_train_classes"]
    if empty:
        names = ", ".join(empty[:SHOWN_CLASSES])
        lines.append(
            f"{WARNING}classes without a training image: {names}{more(empty, SHOWN_CLASSES)}"
        )
    if report["unreadable"]:
        lines.append(f"{WARNING}{report['unreadable']} unreadable image(s) left out")
    if report["duplicates"]:
        lines.append(duplicates_line(report["duplicates"]))
    return lines


def split_line(split: str, counts: Mapping[str, int]) -> str:
    """``"train: 120 images (cat: 60, dog: 60)"``, the first classes only when there are many."""
    shown = ", ".join(f"{name}: {count}" for name, count in list(counts.items())[:SHOWN_CLASSES])
    return f"{split}: {sum(counts.values())} images ({shown}{more(counts, SHOWN_CLASSES)})"


def duplicates_line(groups: list[list[str]]) -> str:
    """The warning for identical files in more than one split, with a few examples."""
    examples = "; ".join(" = ".join(group) for group in groups[:SHOWN_DUPLICATES])
    return (
        f"{WARNING}{len(groups)} group(s) of identical images lie in more than one split, which "
        f"inflates validation accuracy: {examples}{more(groups, SHOWN_DUPLICATES)}"
    )


def more(items: Sequence | Mapping, shown: int) -> str:
    """``" ... N more"`` for what a line leaves out of ``items``; "" when nothing."""
    left = len(items) - shown
    return f" ... {left} more" if left > 0 else ""
