"""K-fold cross-validation (data.folds=K data.fold=i): the fold assignment (datasets/folds.py),
image folders and names split by it, the run's split.csv, and the one-line errors."""

from __future__ import annotations

import csv
import random
from collections import Counter
from pathlib import Path

import pytest
from conftest import preset_datasets

from torchcamp.datasets.errors import DataError
from torchcamp.datasets.folds import assign_folds, check_folds, split_fold
from torchcamp.datasets.hymenoptera import render_synthetic_hymenoptera
from torchcamp.datasets.shapes import render_synthetic_shapes
from torchcamp.tasks.imagefolder import save_split


def pool_of(sizes: dict[int, int]) -> list[tuple[str, int]]:
    """``sizes[label]`` named samples of each label."""
    return [(f"c{label}/s{i:03d}", label) for label, size in sizes.items() for i in range(size)]


def counts(samples, label: int) -> int:
    return sum(1 for _, sample_label in samples if sample_label == label)


def spread(values) -> int:
    return max(values) - min(values)


def check_partition(folds: list[dict[str, list]], pool: list, test: list | None) -> None:
    """Every pooled sample is in exactly one fold's val and in every other fold's train; each
    fold's val has every class within one sample of the other folds; test never moves."""
    vals = [sample for fold in folds for sample in fold["val"]]
    assert sorted(vals) == sorted(pool) and len(set(vals)) == len(pool)
    for fold in folds:
        assert set(fold["train"]) | set(fold["val"]) == set(pool)
        assert not set(fold["train"]) & set(fold["val"])
        assert fold.get("test") == test
    for label in {label for _, label in pool}:
        assert spread([counts(fold["val"], label) for fold in folds]) <= 1


# ---- the assignment ----------------------------------------------------------------------


def test_folds_are_stratified_balanced_and_fixed_by_the_seed_alone():
    pool = pool_of({0: 23, 1: 7, 2: 11})
    assigned = assign_folds(pool, 5, seed=1)
    for label in (0, 1, 2):
        per_fold = Counter(f for f, (_, lab) in zip(assigned, pool, strict=True) if lab == label)
        assert spread([per_fold[f] for f in range(5)]) <= 1  # stratified
    assert spread(list(Counter(assigned).values())) <= 1  # and the folds' sizes even overall
    shuffled = random.Random(0).sample(pool, len(pool))  # another listing order: same folds
    fold_of = dict(zip(pool, assigned, strict=True))
    assert assign_folds(shuffled, 5, seed=1) == [fold_of[sample] for sample in shuffled]
    assert assign_folds(pool, 5, seed=1) == assigned
    assert assign_folds(pool, 5, seed=2) != assigned  # another seed, another partition


def test_split_fold_keeps_test_and_validates_on_each_fold_once():
    splits = {"train": pool_of({0: 20, 1: 9}), "val": [("v0", 0), ("v1", 1)], "test": [("t", 0)]}
    folds = [split_fold(splits, 4, fold, seed=3) for fold in range(4)]
    check_partition(folds, [*splits["train"], *splits["val"]], [("t", 0)])
    assert list(folds[0]) == ["train", "val", "test"]


@pytest.mark.parametrize(
    ("folds", "fold", "message"),
    [
        (1, 0, "data.folds=1 is not allowed (data.fold=0): use null (no folds) or an integer >= 2"),
        (True, 0, "data.folds=true is not allowed (data.fold=0)"),
        (5, 5, "data.fold=5 is not allowed with data.folds=5: use an integer from 0 to 4"),
        (3, -1, "data.fold=-1 is not allowed with data.folds=3"),
        (None, 2, "data.fold=2 is not allowed with data.folds=null (no folds): set data.folds=K"),
    ],
)
def test_bad_folds_are_one_line_naming_both_keys(folds, fold, message):
    with pytest.raises(DataError) as error:
        check_folds(folds, fold)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_more_folds_than_samples_is_refused():
    splits = {"train": pool_of({0: 2, 1: 2}), "val": []}
    with pytest.raises(
        DataError, match=r"data.folds=5 is more than the 4 samples outside the test"
    ):
        split_fold(splits, 5, 0, seed=0)


# ---- the tasks ---------------------------------------------------------------------------


def samples_by_split(datasets: dict) -> dict[str, list]:
    return {name: list(dataset.samples) for name, dataset in datasets.items()}


def test_an_image_folder_is_cut_into_folds_and_split_csv_shows_the_fold(tmp_path):
    root = render_synthetic_shapes(tmp_path / "shapes", seed=0, per_class=12)
    plain = samples_by_split(preset_datasets("imagefolder", root, seed=1))
    folds = [
        samples_by_split(
            preset_datasets("imagefolder", root, "data.folds=3", f"data.fold={i}", seed=1)
        )
        for i in range(3)
    ]
    check_partition(folds, plain["train"] + plain["val"], plain["test"])  # test as without folds
    other_seed = preset_datasets("imagefolder", root, "data.folds=3", "data.fold=0", seed=2)
    assert set(other_seed["val"].samples) != set(folds[0]["val"])

    save_split(
        preset_datasets("imagefolder", root, "data.folds=3", "data.fold=1", seed=1), tmp_path
    )
    with open(tmp_path / "split.csv", newline="") as file:
        val = {row["file"] for row in csv.DictReader(file) if row["split"] == "val"}
    assert val == {path.relative_to(root).as_posix() for path, _ in folds[1]["val"]}


def test_split_folders_pool_train_and_val(tmp_path):
    render_synthetic_hymenoptera(tmp_path, seed=0, per_class=8)  # train 8+1 / val 2 per class
    plain = samples_by_split(preset_datasets("hymenoptera", tmp_path))
    folds = [
        samples_by_split(preset_datasets("hymenoptera", tmp_path, "data.folds=3", f"data.fold={i}"))
        for i in range(3)
    ]
    check_partition(folds, plain["train"] + plain["val"], None)  # the set has no test split


def write_names(root: Path, languages: dict[str, int]) -> Path:
    folder = root / "names"
    folder.mkdir(parents=True)
    for language, count in languages.items():
        names = [f"{language[:2]}{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(count)]
        (folder / f"{language}.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    return root


def test_names_are_cut_into_folds_with_test_kept(tmp_path):
    root = write_names(tmp_path, {"Alpha": 30, "Beta": 14, "Gamma": 9})
    plain = samples_by_split(preset_datasets("names", root, seed=4))
    folds = [
        samples_by_split(preset_datasets("names", root, "data.folds=4", f"data.fold={i}", seed=4))
        for i in range(4)
    ]
    check_partition(folds, plain["train"] + plain["val"], plain["test"])
    other_seed = preset_datasets("names", root, "data.folds=4", "data.fold=0", seed=5)
    assert set(other_seed["val"].samples) != set(folds[0]["val"])


def test_a_task_refuses_bad_folds_before_reading_data(tmp_path):
    with pytest.raises(DataError, match=r"^data.fold=4 is not allowed with data.folds=4"):
        preset_datasets("names", tmp_path / "nowhere", "data.folds=4", "data.fold=4")
    with pytest.raises(DataError, match=r"^data.fold=1 is not allowed with data.folds=null"):
        preset_datasets("imagefolder", tmp_path / "nowhere", "data.fold=1")
