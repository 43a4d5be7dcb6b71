"""Any folder of labelled images (``task=imagefolder``): the three layouts it may have, found in
this order, and a CSV that pins a split down.

1. A CSV of ``file,label[,split]`` rows: given, or ``<folder>_split.csv`` beside the folder (the
   course ships ``RMB_data/`` with ``RMB_data_split.csv`` so);
2. split folders: ``train/`` and ``val/`` (or ``valid/``, ``validation/``), optionally ``test/``,
   each with one sub-folder per class;
3. class folders: one sub-folder per class, split per class by the seed.

Labels are indices into the sorted class names; every listing is sorted, so the same files and
seed give the same splits on every machine. With ``folds`` (``data.folds``), whatever layout
was found keeps its test split and cuts train and val into folds (datasets/folds.py).
"""

from __future__ import annotations

import csv
import logging
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from torchcamp.datasets.errors import DataError
from torchcamp.datasets.folds import check_folds, describe_fold, split_fold
from torchcamp.datasets.images import Samples, images_in, is_hidden

log = logging.getLogger(__name__)

LAYOUT_HELP = (
    "an image folder holds one sub-folder of images per class (split by the seed), or "
    "train/ and val/ (or valid/, validation/) and optionally test/ with one sub-folder per class "
    "in each, or comes with a CSV of file,label[,split] rows (given, or <folder>_split.csv "
    "beside the folder)"
)
VAL_FOLDERS = ("val", "valid", "validation")
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
FILE_COLUMNS = ("file", "filename", "path", "image")
LABEL_COLUMNS = ("label", "class")
SPLIT_COLUMN = "split"
CSV_HEADER = ("file", "label", "split")  # what write_split_csv writes
# Not classes: what macOS leaves in folders it zipped (its files are hidden "._" copies).
NOT_CLASS_FOLDERS = frozenset({"__MACOSX"})


@dataclass
class FolderSplits:
    """The samples of an image folder by split, its classes and how they were found."""

    splits: dict[str, Samples]  # "train", "val", and "test" when there is one
    classes: tuple[str, ...]  # sorted class names; label = index
    layout: str  # one human sentence for the log


def find_image_folder(
    root: str | Path,
    *,
    splits_csv: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    folds: int | None = None,
    fold: int = 0,
) -> FolderSplits:
    """The splits of the image folder ``root``, from the first of its layouts that is there
    (see the module's docstring). ``seed``, ``val_fraction`` and ``test_fraction`` split the
    classes that no CSV or folder splits already: per class, so every split keeps the class
    proportions, with at least one image of each class in train, and no "test" split when
    ``test_fraction`` is 0. With ``folds``, train and val are then pooled and val is fold
    ``fold`` of them (datasets/folds.py); test stays the split the layout gives.

    Raises :class:`DataError` naming the file or folder and the fix for every problem found.
    """
    root = Path(root)
    check_fractions(val_fraction, test_fraction)
    check_folds(folds, fold)
    found = read_layout(root, splits_csv, seed, val_fraction, test_fraction)
    if folds is None:
        return found
    splits = split_fold(found.splits, folds, fold, seed)
    layout = f"{found.layout}; {describe_fold(folds, fold, seed)} (data.val_fraction not used)"
    return FolderSplits(splits, found.classes, layout)


def read_layout(
    root: Path, splits_csv: str | Path | None, seed: int, val_fraction: float, test_fraction: float
) -> FolderSplits:
    """The splits of the first layout of ``root`` that is there."""
    if not root.is_dir():
        raise DataError(f"no image folder {root} (missing, or not a folder): {LAYOUT_HELP}")
    csv_path = locate_csv(root, splits_csv)
    if csv_path is not None:
        return read_csv_layout(csv_path, root, seed, val_fraction, test_fraction)
    if (root / "train").is_dir():
        return read_split_folders(root)
    return read_class_folders(root, seed, val_fraction, test_fraction)


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Each fraction in [0, 1), and train's share (1 minus both) above 0."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise DataError(f"{name}={value} must be at least 0 and below 1")
    if val_fraction + test_fraction >= 1:
        raise DataError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} leave nothing for "
            "training: together they must stay below 1"
        )


# ---- layout 1: a CSV ---------------------------------------------------------------------


def locate_csv(root: Path, splits_csv: str | Path | None) -> Path | None:
    """The CSV to follow: ``splits_csv`` (as given, else relative to ``root``), or else
    ``<root's name>_split.csv`` beside ``root`` when there is one."""
    if splits_csv is None:
        # abspath: root "." has no name of its own; not resolve(): a linked folder's CSV lies
        # beside the link.
        absolute = Path(os.path.abspath(root))
        beside = absolute.parent / f"{absolute.name}_split.csv"
        return beside if beside.is_file() else None
    given = Path(splits_csv)
    if given.is_file():
        return given
    if not given.is_absolute() and (root / given).is_file():
        return root / given
    raise DataError(
        f"splits CSV {given} not found: it is neither at {given.resolve()} nor at {root / given}"
    )


def read_csv_layout(
    csv_path: Path, root: Path, seed: int, val_fraction: float, test_fraction: float
) -> FolderSplits:
    """The splits a CSV names; without a split column, its rows split per class by ``seed``."""
    rows, has_split = read_csv_rows(csv_path, root)
    classes = tuple(sorted({label for _, label, _ in rows}))
    check_class_count(classes, "class", f"in {csv_path}")
    label_of = {name: index for index, name in enumerate(classes)}
    if not has_split:
        samples = [(path, label_of[name]) for path, name, _ in rows]
        splits = split_per_class(samples, len(classes), seed, val_fraction, test_fraction)
        layout = f"CSV {csv_path}, {describe_split(seed, val_fraction, test_fraction)}"
        return FolderSplits(splits, classes, layout)
    splits: dict[str, Samples] = {"train": [], "val": []}
    for path, name, split in rows:
        splits.setdefault(split, []).append((path, label_of[name]))
    if not splits["train"]:
        raise DataError(f"{csv_path} puts no image in train: give some rows split=train")
    return FolderSplits(splits, classes, f"CSV {csv_path}")


def read_csv_rows(csv_path: Path, root: Path) -> tuple[list[tuple[Path, str, str]], bool]:
    """``([(path, label, split), ...], has_split_column)``, in file order; split is "" when
    there is no split column."""
    with open(csv_path, newline="", encoding="utf-8-sig") as file:  # -sig: Excel's BOM
        reader = csv.DictReader(file)
        columns = {name.strip().lower(): name for name in reader.fieldnames or []}
        file_column = first_present(FILE_COLUMNS, columns)
        label_column = first_present(LABEL_COLUMNS, columns)
        if file_column is None or label_column is None:
            raise DataError(
                f"{csv_path}: needs a file column ({', '.join(FILE_COLUMNS)}) and a label column "
                f"({', '.join(LABEL_COLUMNS)}); its header has {', '.join(columns) or 'nothing'}"
            )
        split_column = columns.get(SPLIT_COLUMN)
        rows = []
        for row in reader:
            where = f"{csv_path}:{reader.line_num}"
            file_name, label = cell(row, file_column), cell(row, label_column)
            if not file_name or not label:
                raise DataError(f"{where}: a row needs a file and a label, got {row}")
            split = "" if split_column is None else split_name(cell(row, split_column), where)
            rows.append((resolve_listed(file_name, label, root, where), label, split))
    if not rows:
        raise DataError(f"{csv_path} lists no images: add file,label rows under its header")
    return rows, split_column is not None


def first_present(names: Iterable[str], columns: dict[str, str]) -> str | None:
    """The header's spelling of the first of ``names`` it has (matched case-insensitively)."""
    return next((columns[name] for name in names if name in columns), None)


def cell(row: dict[str, str | None], column: str) -> str:
    """A row's value in ``column``, stripped; "" for a short row."""
    return (row.get(column) or "").strip()


def split_name(value: str, where: str) -> str:
    """Our name (train, val, test) for a CSV's split value."""
    name = SPLIT_NAMES.get(value.lower())
    if name is None:
        raise DataError(
            f"{where}: split {value!r} is not one of train, val (or valid, validation), test"
        )
    return name


def resolve_listed(file_name: str, label: str, root: Path, where: str) -> Path:
    """A CSV's file as a path: under ``root``, else under ``root/<label>/`` (the course's CSV
    names files so), else as given (an absolute path)."""
    for path in (root / file_name, root / label / file_name):
        if path.is_file():
            return path
    raise DataError(f"{where} names {file_name}, which is not in {root} (nor {root / label}/)")


# ---- layout 2: split folders -------------------------------------------------------------


def read_split_folders(root: Path) -> FolderSplits:
    """``root/train/<class>/`` with a val folder and maybe ``root/test/`` beside it; the
    classes are train's sub-folders."""
    val_folders = [name for name in VAL_FOLDERS if (root / name).is_dir()]
    if len(val_folders) != 1:
        found = f"both {' and '.join(val_folders)}" if val_folders else "none"
        raise DataError(
            f"{root / 'train'} needs one validation folder beside it, val/, valid/ or "
            f"validation/, and {root} has {found}: {LAYOUT_HELP}"
        )
    on_disk = {"train": "train", "val": val_folders[0]}
    if (root / "test").is_dir():
        on_disk["test"] = "test"
    classes = tuple(class_folder_names(root / "train"))
    check_class_count(classes, "class folder", f"in {root / 'train'}")
    splits = {}
    for split, folder in on_disk.items():
        check_known_classes(root / folder, classes)
        splits[split] = class_samples(root / folder, classes, require_images=split == "train")
    return FolderSplits(splits, classes, f"split folders {'/'.join(on_disk.values())}")


def check_known_classes(folder: Path, classes: tuple[str, ...]) -> None:
    """A class folder in val or test that train lacks: the model could never predict it."""
    unknown = sorted(set(class_folder_names(folder)) - set(classes))
    if unknown:
        raise DataError(
            f"{folder / unknown[0]} is a class that {folder.parent / 'train'} lacks: add its "
            "training images there, or remove the folder"
        )


# ---- layout 3: class folders -------------------------------------------------------------


def read_class_folders(
    root: Path, seed: int, val_fraction: float, test_fraction: float
) -> FolderSplits:
    """``root/<class>/`` folders, split per class by ``seed``."""
    classes = tuple(class_folder_names(root))
    loose = images_in(root, recursive=False)
    if not classes and loose:
        raise DataError(
            f"{root} holds {len(loose)} images but no class folders: put them in one folder per "
            f"class ({root}/<class>/<image>), the folder's name being the label"
        )
    if loose:  # beside class folders they have no label: say so rather than drop them quietly
        log.warning(
            "%d images lie directly in %s, outside the class folders: left out", len(loose), root
        )
    check_class_count(classes, "class folder", f"in {root}")
    samples = class_samples(root, classes, require_images=True)
    splits = split_per_class(samples, len(classes), seed, val_fraction, test_fraction)
    layout = f"class folders, {describe_split(seed, val_fraction, test_fraction)}"
    return FolderSplits(splits, classes, layout)


def split_per_class(
    samples: Samples, num_classes: int, seed: int, val_fraction: float, test_fraction: float
) -> dict[str, Samples]:
    """Per class, in label order: its samples sorted by path and shuffled by a fresh
    ``random.Random(seed)``, then train, val and test (the rest) by the fractions (rounded;
    at least one image in train). No "test" key when ``test_fraction`` is 0.

    This is the RMB task's 8:1:1 split for fractions 0.1 and 0.1: keep it exactly so, or the
    splits (and results) of existing runs change.
    """
    splits: dict[str, Samples] = {"train": [], "val": []}
    if test_fraction > 0:
        splits["test"] = []
    for label in range(num_classes):
        of_class = sorted(sample for sample in samples if sample[1] == label)
        random.Random(seed).shuffle(of_class)
        count = len(of_class)
        n_train = max(1, round((1 - val_fraction - test_fraction) * count))
        splits["train"] += of_class[:n_train]
        rest = of_class[n_train:]
        if test_fraction > 0:
            n_val = round(val_fraction * count)
            splits["val"] += rest[:n_val]
            splits["test"] += rest[n_val:]
        else:  # val takes the rest, so no image is lost to rounding
            splits["val"] += rest
    return splits


def describe_split(seed: int, val_fraction: float, test_fraction: float) -> str:
    """How :func:`split_per_class` split, for the layout sentence."""
    test = f"test {test_fraction}" if test_fraction > 0 else "no test"
    return f"split per class by seed {seed} (val {val_fraction}, {test})"


# ---- shared by the layouts ---------------------------------------------------------------


def class_folder_names(folder: Path) -> list[str]:
    """The sub-folders of ``folder`` that name classes, sorted (hidden ones skipped)."""
    return sorted(
        path.name
        for path in folder.iterdir()
        if path.is_dir() and not is_hidden(path.name) and path.name not in NOT_CLASS_FOLDERS
    )


def class_samples(folder: Path, classes: tuple[str, ...], *, require_images: bool) -> Samples:
    """``(path, label)`` for the images in each ``folder/<class>/`` (at any depth), sorted.
    With ``require_images``, a class folder without images is a :class:`DataError`; otherwise
    a missing or empty one is just no samples."""
    samples: Samples = []
    for label, name in enumerate(classes):
        class_dir = folder / name
        files = images_in(class_dir, recursive=True) if class_dir.is_dir() else []
        if require_images and not files:
            raise DataError(
                f"no images in {class_dir} (class {name}): add images or remove the folder"
            )
        samples += [(path, label) for path in files]
    return samples


def check_class_count(classes: tuple[str, ...], noun: str, where: str) -> None:
    """A classifier needs two classes at least: "found 1 class folder (cats) in data/: ..."."""
    if len(classes) < 2:
        named = f" ({classes[0]})" if classes else ""
        plural = "" if len(classes) == 1 else "s"
        raise DataError(
            f"found {len(classes)} {noun}{plural}{named} {where}: a classifier needs at least 2; "
            f"{LAYOUT_HELP}"
        )


# ---- writing a split down ----------------------------------------------------------------


def write_split_csv(file: TextIO, found: FolderSplits, root: Path) -> None:
    """Write ``found``'s splits to the open text ``file`` (opened with ``newline=""``) as
    ``file,label,split`` rows (file relative to ``root`` when inside it, else absolute).
    ``find_image_folder(root, splits_csv=path)`` reads the same splits back. The caller
    picks how the file is written (a run's ``split.csv``: atomically, see
    ``tasks/imagefolder.py``)."""
    writer = csv.writer(file)
    writer.writerow(CSV_HEADER)
    for split, samples in found.splits.items():
        for sample_path, label in samples:
            writer.writerow([listed_name(sample_path, root), found.classes[label], split])


def listed_name(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (with "/") when it lies inside it, else absolute."""
    # abspath, not resolve(): a linked image inside root stays inside it.
    absolute, absolute_root = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    for inner, outer in ((path, root), (absolute, absolute_root)):
        if inner.is_relative_to(outer):
            return inner.relative_to(outer).as_posix()
    return str(absolute)
