"""Any folder of labelled images (datasets/folders.py): its three layouts (a CSV, split folders,
class folders), the seeded per-class split (task=rmb's 8:1:1 split and its CSV among them), which
files count as images, and the split CSV round trip. Reading the images: test_images.py; the
data report: test_data_report.py; task=imagefolder from the command line: test_imagefolder.py."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from conftest import preset_datasets, write_classes, write_image

from torchcamp.datasets.errors import DataError
from torchcamp.datasets.folders import find_image_folder, write_split_csv
from torchcamp.datasets.images import IMAGE_SUFFIXES, read_rgb, readable


def summary(samples: list[tuple[Path, int]], root: Path) -> list[tuple[str, int]]:
    """Samples as (path relative to root, label), for readable comparisons."""
    return [(path.relative_to(root).as_posix(), label) for path, label in samples]


def per_class(samples: list[tuple[Path, int]], num_classes: int) -> list[int]:
    return [sum(label == wanted for _, label in samples) for wanted in range(num_classes)]


# ---- class folders: the seeded split -------------------------------------------------------


def test_class_folders_are_split_per_class_by_the_seed(tmp_path):
    root = tmp_path / "pets"
    write_classes(root, {"dog": 20, "cat": 10})
    found = find_image_folder(root, seed=0)
    assert found.classes == ("cat", "dog")
    assert found.layout == "class folders, split per class by seed 0 (val 0.1, test 0.1)"
    assert {split: per_class(samples, 2) for split, samples in found.splits.items()} == {
        "train": [8, 16],
        "val": [1, 2],
        "test": [1, 2],
    }
    everything = [sample for samples in found.splits.values() for sample in samples]
    assert len(everything) == len(set(everything)) == 30  # disjoint, nothing lost
    assert all(path.parent.name == found.classes[label] for path, label in everything)
    assert find_image_folder(root, seed=0).splits == found.splits
    other = find_image_folder(root, seed=1)
    assert other.splits["val"] != found.splits["val"]
    assert per_class(other.splits["val"], 2) == [1, 2]


def course_8_1_1_split(folder: Path, classes: tuple[str, ...], seed: int) -> dict:
    """The RMB task's split as it always was: per class, its files in sorted order shuffled by
    a fresh ``random.Random(seed)``, then round(80 %) train, round(10 %) val, the rest test."""
    splits: dict[str, list[tuple[Path, int]]] = {"train": [], "val": [], "test": []}
    for label, name in enumerate(classes):
        files = [(path, label) for path in sorted((folder / name).iterdir())]
        random.Random(seed).shuffle(files)
        n_train, n_val = round(0.8 * len(files)), round(0.1 * len(files))
        splits["train"] += files[:n_train]
        splits["val"] += files[n_train : n_train + n_val]
        splits["test"] += files[n_train + n_val :]
    return splits


def test_the_split_is_the_rmb_tasks_8_1_1_split(tmp_path):
    # Existing RMB results depend on this split: the image folder must reproduce it exactly.
    write_classes(tmp_path / "RMB_data", {"1": 17, "100": 23}, suffix=".jpg")
    for seed in (0, 1, 42):
        expected = course_8_1_1_split(tmp_path / "RMB_data", ("1", "100"), seed)
        assert {split: per_class(samples, 2) for split, samples in expected.items()} == {
            "train": [14, 18],  # round(0.8 * 17), round(0.8 * 23)
            "val": [2, 2],
            "test": [1, 3],
        }
        found = find_image_folder(tmp_path / "RMB_data", seed=seed)
        assert found.classes == ("1", "100")
        assert found.splits == expected
        # task=rmb (the image-folder preset) trains on this split.
        datasets = preset_datasets("rmb", tmp_path, seed=seed)
        assert {name: dataset.samples for name, dataset in datasets.items()} == expected
    assert course_8_1_1_split(tmp_path / "RMB_data", ("1", "100"), 1) != expected


def test_without_a_test_fraction_there_is_no_test_split(tmp_path):
    write_classes(tmp_path, {"a": 7, "b": 6})
    found = find_image_folder(tmp_path, seed=3, val_fraction=0.25, test_fraction=0.0)
    assert set(found.splits) == {"train", "val"}
    assert per_class(found.splits["train"], 2) == [5, 4]  # round(0.75 * 7), round(0.75 * 6)
    assert per_class(found.splits["val"], 2) == [2, 2]  # the rest: no image lost to rounding
    assert found.layout == "class folders, split per class by seed 3 (val 0.25, no test)"


def test_a_one_image_class_goes_to_train(tmp_path):
    write_classes(tmp_path, {"many": 10, "single": 1})
    found = find_image_folder(tmp_path, val_fraction=0.3, test_fraction=0.3)
    assert per_class(found.splits["train"], 2) == [4, 1]
    assert per_class(found.splits["val"], 2) == [3, 0]
    assert per_class(found.splits["test"], 2) == [3, 0]


@pytest.mark.parametrize(
    ("val", "test", "message"),
    [
        (1.0, 0.0, r"val_fraction=1\.0 must be at least 0 and below 1"),
        (0.1, -0.1, r"test_fraction=-0\.1 must be at least 0"),
        (0.5, 0.5, r"leave nothing for training"),
    ],
)
def test_bad_fractions_are_refused(tmp_path, val, test, message):
    write_classes(tmp_path, {"a": 2, "b": 2})
    with pytest.raises(DataError, match=message):
        find_image_folder(tmp_path, val_fraction=val, test_fraction=test)


def test_nested_folders_upper_case_suffixes_and_hidden_files(tmp_path):
    write_image(tmp_path / "a" / "2023" / "one.PNG", 1)
    write_image(tmp_path / "a" / "two.png", 2)
    write_image(tmp_path / "b" / "three.png", 3)
    write_image(tmp_path / "b" / ".ipynb_checkpoints" / "three-copy.png", 3)
    write_image(tmp_path / "b" / "._three.png", 4)  # macOS's resource fork copy
    (tmp_path / "b" / "notes.txt").write_text("not an image")
    write_image(tmp_path / ".cache" / "x.png", 5)  # a hidden folder is not a class
    found = find_image_folder(tmp_path, val_fraction=0.0, test_fraction=0.0)
    assert found.classes == ("a", "b")
    assert summary(found.splits["train"], tmp_path) == [
        ("a/2023/one.PNG", 0),
        ("a/two.png", 0),
        ("b/three.png", 1),
    ]


def test_two_hundred_classes_are_sorted_and_all_in_train(tmp_path):
    names = [f"c{index}" for index in range(200)]
    write_classes(tmp_path, dict.fromkeys(names, 2))
    found = find_image_folder(tmp_path, seed=5)
    assert found.classes == tuple(sorted(names))
    assert found.classes[:4] == ("c0", "c1", "c10", "c100")  # sorted as strings
    assert sorted({label for _, label in found.splits["train"]}) == list(range(200))
    assert all(path.parent.name == found.classes[label] for path, label in found.splits["train"])


def test_an_empty_class_folder_is_named(tmp_path):
    write_classes(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError) as error:
        find_image_folder(tmp_path)
    assert str(error.value) == (
        f"no images in {tmp_path / 'c'} (class c): add images or remove the folder"
    )


def test_fewer_than_two_classes_are_refused(tmp_path):
    write_classes(tmp_path / "one", {"only": 3})
    with pytest.raises(DataError, match=r"found 1 class folder \(only\) in .*one: a classifier"):
        find_image_folder(tmp_path / "one")
    write_image(tmp_path / "loose" / "a.png")
    write_image(tmp_path / "loose" / "b.png", 1)
    with pytest.raises(DataError, match=r"holds 2 images but no class folders: put them in one"):
        find_image_folder(tmp_path / "loose")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"found 0 class folders in .*empty: a classifier"):
        find_image_folder(tmp_path / "empty")


def test_a_missing_folder_is_named_with_the_layouts(tmp_path):
    with pytest.raises(DataError) as error:
        find_image_folder(tmp_path / "nowhere")
    message = str(error.value)
    assert message.startswith(f"no image folder {tmp_path / 'nowhere'} (missing, or not a folder)")
    assert "train/ and val/" in message and "file,label[,split]" in message
    assert "\n" not in message


# ---- split folders ---------------------------------------------------------------------------


@pytest.mark.parametrize("val_name", ["val", "valid", "validation"])
@pytest.mark.parametrize("with_test", [True, False])
def test_split_folders_are_read(tmp_path, val_name, with_test):
    write_classes(tmp_path / "train", {"ants": 4, "bees": 3})
    write_classes(tmp_path / val_name, {"ants": 2, "bees": 1})
    if with_test:
        write_classes(tmp_path / "test", {"bees": 2})  # a class may be missing from test
    found = find_image_folder(tmp_path, seed=9)
    assert found.classes == ("ants", "bees")
    expected = {"train": [4, 3], "val": [2, 1]} | ({"test": [0, 2]} if with_test else {})
    assert {split: per_class(samples, 2) for split, samples in found.splits.items()} == expected
    assert summary(found.splits["val"], tmp_path) == [
        (f"{val_name}/ants/img000.png", 0),
        (f"{val_name}/ants/img001.png", 0),
        (f"{val_name}/bees/img000.png", 1),
    ]
    assert found.layout == f"split folders train/{val_name}" + ("/test" if with_test else "")


def test_split_folder_mistakes_are_named(tmp_path):
    write_classes(tmp_path / "train", {"ants": 2, "bees": 2})
    with pytest.raises(DataError, match=r"needs one validation folder .* has none"):
        find_image_folder(tmp_path)
    write_classes(tmp_path / "val", {"ants": 1, "wasps": 1})
    with pytest.raises(DataError, match=r"val/wasps is a class that .*train lacks"):
        find_image_folder(tmp_path)
    write_classes(tmp_path / "valid", {"ants": 1})
    with pytest.raises(DataError, match=r"has both val and valid"):
        find_image_folder(tmp_path)
    for name in ("valid", "val/wasps"):
        for path in sorted((tmp_path / name).rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (tmp_path / name).rmdir()
    (tmp_path / "train" / "cicadas").mkdir()
    with pytest.raises(DataError, match=r"no images in .*train/cicadas \(class cicadas\)"):
        find_image_folder(tmp_path)
    (tmp_path / "train" / "cicadas").rmdir()
    assert per_class(find_image_folder(tmp_path).splits["val"], 2) == [1, 0]


# ---- CSV layouts -----------------------------------------------------------------------------


def test_a_csv_with_a_split_column(tmp_path, monkeypatch):
    root = tmp_path / "photos"
    write_classes(root, {"cat": 3, "dog": 3})
    outside = write_image(tmp_path / "elsewhere" / "stray.png", 99)
    (root / "labels.csv").write_text(
        "Image,Label,Split\n"
        "cat/img000.png,cat,TRAIN\n"
        "img000.png,dog,train\n"  # relative to root/<label>/
        f"{outside},dog,Train\n"  # absolute
        "cat/img001.png,cat,Validation\n"
        "dog/img001.png,dog,valid\n"
        "cat/img002.png,cat,test\n"
    )
    monkeypatch.chdir(tmp_path)  # "labels.csv" is not in the working directory: root's is used
    found = find_image_folder(root, splits_csv="labels.csv")
    assert found.classes == ("cat", "dog")
    assert found.layout == f"CSV {root / 'labels.csv'}"
    assert found.splits["train"] == [
        (root / "cat" / "img000.png", 0),
        (root / "dog" / "img000.png", 1),
        (outside, 1),
    ]
    assert summary(found.splits["val"], root) == [("cat/img001.png", 0), ("dog/img001.png", 1)]
    assert summary(found.splits["test"], root) == [("cat/img002.png", 0)]
    # Relative to the working directory first.
    assert find_image_folder(root, splits_csv="photos/labels.csv").splits == found.splits


def test_the_rmb_csv_beside_the_folder_is_found(tmp_path):
    write_classes(tmp_path / "RMB_data", {"1": 3, "100": 3}, suffix=".jpg")
    (tmp_path / "RMB_data_split.csv").write_text(
        "split,class,filename\ntrain,1,img000.jpg\ntrain,100,img000.jpg\ntrain,1,img001.jpg\n"
        "valid,1,img002.jpg\nvalid,100,img001.jpg\ntest,100,img002.jpg\n"
    )
    found = find_image_folder(tmp_path / "RMB_data", seed=0)
    assert found.layout == f"CSV {tmp_path / 'RMB_data_split.csv'}"
    assert found.classes == ("1", "100")
    assert summary(found.splits["val"], tmp_path) == [
        ("RMB_data/1/img002.jpg", 0),
        ("RMB_data/100/img001.jpg", 1),
    ]
    assert found.splits == {  # the CSV's rows, in its order
        "train": [
            (tmp_path / "RMB_data" / "1" / "img000.jpg", 0),
            (tmp_path / "RMB_data" / "100" / "img000.jpg", 1),
            (tmp_path / "RMB_data" / "1" / "img001.jpg", 0),
        ],
        "val": [
            (tmp_path / "RMB_data" / "1" / "img002.jpg", 0),
            (tmp_path / "RMB_data" / "100" / "img001.jpg", 1),
        ],
        "test": [(tmp_path / "RMB_data" / "100" / "img002.jpg", 1)],
    }
    datasets = preset_datasets("rmb", tmp_path)  # as the RMB task reads it
    assert {name: dataset.samples for name, dataset in datasets.items()} == found.splits


def test_a_csv_without_a_split_column_is_split_like_class_folders(tmp_path):
    root = tmp_path / "images"
    write_classes(root, {"x": 12, "y": 9})
    rows = [f"{path.relative_to(root).as_posix()},{path.parent.name}" for path in root.glob("*/*")]
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("file,class\n" + "\n".join(reversed(sorted(rows))) + "\n")
    found = find_image_folder(root, splits_csv=csv_path, seed=4)
    assert found.splits == find_image_folder(root, seed=4).splits
    assert found.layout == f"CSV {csv_path}, split per class by seed 4 (val 0.1, test 0.1)"
    assert per_class(found.splits["train"], 2) == [10, 7]


def test_csv_mistakes_name_the_line(tmp_path):
    write_classes(tmp_path / "data", {"a": 1, "b": 1})
    csv_path = tmp_path / "labels.csv"

    def refused(text: str) -> str:
        csv_path.write_text(text)
        with pytest.raises(DataError) as error:
            find_image_folder(tmp_path / "data", splits_csv=csv_path)
        return str(error.value)

    data = tmp_path / "data"
    assert refused("file,label\na/img000.png,a\ngone.png,b\n") == (
        f"{csv_path}:3 names gone.png, which is not in {data} (nor {data / 'b'}/)"
    )
    assert refused("file,label,split\na/img000.png,a,dev\n") == (
        f"{csv_path}:2: split 'dev' is not one of train, val (or valid, validation), test"
    )
    assert refused("name,kind\na/img000.png,a\n").startswith(
        f"{csv_path}: needs a file column (file, filename, path, image) and a label column "
        "(label, class); its header has name, kind"
    )
    assert refused("file,label,split\na/img000.png,a,val\nb/img000.png,b,test\n") == (
        f"{csv_path} puts no image in train: give some rows split=train"
    )
    assert refused("file,label\na/img000.png,a\n").startswith(
        f"found 1 class (a) in {csv_path}: a classifier needs at least 2"
    )
    with pytest.raises(DataError) as error:
        find_image_folder(data, splits_csv="missing.csv")
    assert str(error.value) == (
        f"splits CSV missing.csv not found: it is neither at {Path('missing.csv').resolve()} "
        f"nor at {data / 'missing.csv'}"
    )


def test_a_written_split_reads_back_the_same(tmp_path):
    root = tmp_path / "set"
    write_classes(root, {"b": 6, "a, with comma": 5})
    outside = write_image(tmp_path / "extra" / "x.png", 200)
    found = find_image_folder(root, seed=7)
    found.splits["train"].append((outside, 0))
    csv_path = tmp_path / "out" / "splits.csv"
    csv_path.parent.mkdir()
    with open(csv_path, "w", newline="", encoding="utf-8") as file:
        write_split_csv(file, found, root)
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "file,label,split"
    assert f'{outside},"a, with comma",train' in lines  # outside root: absolute, label quoted
    assert sum(line.startswith("/") for line in lines) == 1  # the others relative to root
    assert len(lines) == 1 + 12
    back = find_image_folder(root, splits_csv=csv_path)
    assert back.splits == found.splits
    assert back.classes == found.classes == ("a, with comma", "b")


# ---- which files are images ------------------------------------------------------------------


def test_image_suffixes_are_what_pillow_opens(tmp_path):
    assert {".jpg", ".jpeg", ".png", ".gif", ".webp", ".tif", ".bmp", ".ppm", ".tga"} <= (
        IMAGE_SUFFIXES
    )
    assert not {".pdf", ".h5", ".mpg"} & IMAGE_SUFFIXES  # save-only, stub, identify-only
    assert all(suffix == suffix.lower() and suffix.startswith(".") for suffix in IMAGE_SUFFIXES)
    write_image(tmp_path / "a" / "x.ppm", 1, "PPM")
    write_image(tmp_path / "b" / "y.tga", 2, "TGA")
    found = find_image_folder(tmp_path, val_fraction=0.0, test_fraction=0.0)
    assert summary(found.splits["train"], tmp_path) == [("a/x.ppm", 0), ("b/y.tga", 1)]


def test_a_corrupt_file_is_found_and_then_skipped(tmp_path):
    write_classes(tmp_path, {"a": 2, "b": 2})
    bad = tmp_path / "a" / "img002.png"
    bad.write_bytes(b"not a png at all")
    found = find_image_folder(tmp_path, val_fraction=0.0, test_fraction=0.0)
    paths = [path for path, _ in found.splits["train"]]
    assert bad in paths and len(paths) == 5
    kept, skipped = readable(paths, skip_corrupt=True, split="train")
    assert skipped == [bad]
    assert kept == [path for path in paths if path != bad]
    with pytest.raises(DataError, match=r"cannot read image .*img002\.png"):
        read_rgb(bad)
