"""The data report (datasets/report.py): images per split and class, class imbalance, unreadable
images, classes without training images, and identical images across splits."""

from __future__ import annotations

import json

from conftest import write_classes, write_image
from PIL import Image

from torchcamp.datasets.folders import find_image_folder
from torchcamp.datasets.report import data_report, report_lines


def test_the_report_counts_and_finds_duplicates_across_splits(tmp_path):
    classes = ("cat", "dog")
    same = Image.new("RGB", (8, 8), (1, 2, 3))
    leak_train, leak_val = tmp_path / "train" / "cat" / "a.png", tmp_path / "val" / "cat" / "b.png"
    for path in (leak_train, leak_val):
        path.parent.mkdir(parents=True, exist_ok=True)
        same.save(path)
    twin_a, twin_b = tmp_path / "train" / "dog" / "c.png", tmp_path / "train" / "dog" / "d.png"
    write_image(twin_a, 50)
    write_image(twin_b, 50)  # identical, but both in train: no leak
    other = write_image(tmp_path / "val" / "dog" / "e.png", 51)  # same size, other bytes
    assert other.stat().st_size == twin_a.stat().st_size
    train_extra = [write_image(tmp_path / "train" / "dog" / f"{i}.png", 60 + i) for i in range(3)]
    splits = {
        "train": [(leak_train, 0), (twin_a, 1), (twin_b, 1)] + [(p, 1) for p in train_extra],
        "val": [(leak_val, 0), (other, 1)],
    }
    report = data_report(splits, classes, skipped={"train": 2, "val": 1})
    assert report == {
        "images": {"train": {"cat": 1, "dog": 5}, "val": {"cat": 1, "dog": 1}},
        "total": {"train": 6, "val": 2},
        "imbalance": 5.0,
        "empty_train_classes": [],
        "unreadable": 3,
        "duplicates": [[str(leak_train), str(leak_val)]],
    }
    assert json.loads(json.dumps(report)) == report
    lines = report_lines(report)
    assert lines[:3] == [
        "train: 6 images (cat: 1, dog: 5)",
        "val: 2 images (cat: 1, dog: 1)",
        "class imbalance in train (largest / smallest class): 5.0",
    ]
    assert lines[3] == "WARNING: 3 unreadable image(s) left out"
    assert lines[4] == (
        "WARNING: 1 group(s) of identical images lie in more than one split, which inflates "
        f"validation accuracy: {leak_train} = {leak_val}"
    )


def test_the_report_names_classes_without_training_images_and_shortens_lines(tmp_path):
    classes = tuple(f"k{index:02d}" for index in range(12))
    files = [write_image(tmp_path / f"{index}.png", index) for index in range(12)]
    splits = {
        "train": [(files[index], index) for index in range(10)],  # k10, k11 have none
        "val": [(files[10], 10), (files[11], 11)],
    }
    report = data_report(splits, classes)
    assert report["imbalance"] is None
    assert report["empty_train_classes"] == ["k10", "k11"]
    assert report["unreadable"] == 0 and report["duplicates"] == []
    lines = report_lines(report)
    assert lines[0] == (
        "train: 10 images (k00: 1, k01: 1, k02: 1, k03: 1, k04: 1, k05: 1, k06: 1, k07: 1, "
        "k08: 1, k09: 1 ... 2 more)"
    )
    assert lines[2] == "WARNING: classes without a training image: k10, k11"
    assert len(lines) == 3


def test_the_report_of_a_found_folder(tmp_path):
    write_classes(tmp_path, {"a": 10, "b": 30})
    found = find_image_folder(tmp_path, seed=0)
    report = data_report(found.splits, found.classes)
    assert report["images"] == {
        "train": {"a": 8, "b": 24},
        "val": {"a": 1, "b": 3},
        "test": {"a": 1, "b": 3},
    }
    assert report["imbalance"] == 3.0 and report["duplicates"] == []
