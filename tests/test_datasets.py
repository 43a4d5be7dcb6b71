"""The RMB layouts as ``task=rmb`` reads them (an image-folder preset): the split CSV,
pre-split folders, the seeded 8:1:1 split, and errors; leaving out corrupt images
(``data.skip_corrupt``)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import preset_datasets
from PIL import Image

from torchcamp.datasets.errors import DataError
from torchcamp.datasets.images import readable
from torchcamp.datasets.rmb import render_synthetic_rmb


def write_images(folder, count, prefix="img"):
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.new("RGB", (40, 20), (index, 0, 0)).save(folder / f"{prefix}{index:02d}.jpg")


def rmb_splits(root, *overrides, seed=0):
    """``{split: [(path, label), ...]}`` as ``train task=rmb data.root=ROOT`` reads them."""
    datasets = preset_datasets("rmb", root, *overrides, seed=seed)
    return {name: dataset.samples for name, dataset in datasets.items()}


def test_8_1_1_split_is_per_class_and_deterministic(tmp_path):
    write_images(tmp_path / "RMB_data" / "1", 20)
    write_images(tmp_path / "RMB_data" / "100", 10)
    splits = rmb_splits(tmp_path, seed=0)
    assert {name: len(items) for name, items in splits.items()} == {
        "train": 24,
        "val": 3,
        "test": 3,
    }
    assert sum(label == 1 for _, label in splits["train"]) == 8
    assert rmb_splits(tmp_path, seed=0) == splits
    assert rmb_splits(tmp_path, seed=1) != splits
    everything = [item for items in splits.values() for item in items]
    assert len(set(everything)) == 30


def test_split_csv_is_followed(tmp_path):
    write_images(tmp_path / "RMB_data" / "1", 3)
    write_images(tmp_path / "RMB_data" / "100", 3)
    (tmp_path / "RMB_data_split.csv").write_text(
        "split,class,filename\ntrain,1,img00.jpg\ntrain,100,img00.jpg\n"
        "valid,1,img01.jpg\nvalid,100,img01.jpg\ntest,1,img02.jpg\ntest,100,img02.jpg\n"
    )
    splits = rmb_splits(tmp_path, seed=0)
    assert [(p.parent.name, p.name, label) for p, label in splits["val"]] == [
        ("1", "img01.jpg", 0),
        ("100", "img01.jpg", 1),
    ]


def test_pre_split_folders_are_read(tmp_path):
    for split, count in (("train", 4), ("valid", 2), ("test", 1)):
        write_images(tmp_path / "rmb_split" / split / "1", count)
        write_images(tmp_path / "rmb_split" / split / "100", count)
    splits = rmb_splits(tmp_path, seed=0)
    assert [len(splits[name]) for name in ("train", "val", "test")] == [8, 4, 2]


def test_missing_and_malformed_data_name_the_path(tmp_path):
    nowhere = tmp_path / "nowhere"
    with pytest.raises(DataError, match=r"no RMB_data/ or rmb_split/ in data\.root=.*nowhere"):
        rmb_splits(nowhere, seed=0)
    write_images(tmp_path / "RMB_data" / "1", 3)
    (tmp_path / "RMB_data" / "100").mkdir()
    with pytest.raises(DataError, match=r"no images in .*100"):
        rmb_splits(tmp_path, seed=0)
    (tmp_path / "RMB_data_split.csv").write_text("split,class,filename\ntrain,1,gone.jpg\n")
    with pytest.raises(DataError, match=r"RMB_data_split\.csv:2 names gone\.jpg, which is not in"):
        rmb_splits(tmp_path, seed=0)


def test_synthetic_set_uses_the_real_layout_and_course_transforms(tmp_path):
    render_synthetic_rmb(tmp_path, seed=3, per_class=10)
    assert len(list((tmp_path / "RMB_data" / "1").glob("*.jpg"))) == 10
    datasets = preset_datasets("rmb", tmp_path, seed=3)
    image, label = datasets["train"][0]
    assert image.shape == (3, 32, 32) and label in (0, 1)
    assert datasets["train"].classes == ("1", "100")
    # Same seed, same bytes: a resumed synthetic run trains on the same images.
    again = tmp_path / "again"
    render_synthetic_rmb(again, seed=3, per_class=10)
    first = sorted((tmp_path / "RMB_data" / "1").glob("*.jpg"))[0]
    assert first.read_bytes() == (again / "RMB_data" / "1" / first.name).read_bytes()


# ---- data.skip_corrupt ---------------------------------------------------------------------


def truncate(path):
    """Cut an image file mid-stream, as an interrupted copy leaves it."""
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def write_noise(path):
    # Noise, not a flat colour: the JPEG is then long enough to cut inside the pixel data.
    pixels = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def test_readable_decodes_each_file_and_names_the_skipped_ones(tmp_path, caplog):
    good, cut, text = tmp_path / "good.jpg", tmp_path / "cut.jpg", tmp_path / "notes.jpg"
    write_noise(good)
    write_noise(cut)
    truncate(cut)
    text.write_text("not an image")
    with caplog.at_level(logging.WARNING):
        kept, skipped = readable([good, cut, text], skip_corrupt=True, split="train")
    assert (kept, skipped) == ([good], [cut, text])
    [record] = caplog.records
    assert "skipped 2 corrupt image(s) in train" in record.getMessage()
    assert str(cut) in record.getMessage() and str(text) in record.getMessage()
    # Off: nothing is opened, so not even a missing file is noticed here.
    assert readable([cut, tmp_path / "gone.jpg"], skip_corrupt=False) == (
        [cut, tmp_path / "gone.jpg"],
        [],
    )
    with pytest.raises(DataError, match=r"no readable images in val: all 2 are corrupt"):
        readable([cut, text], skip_corrupt=True, split="val")


def test_skip_corrupt_drops_images_from_the_splits_and_keeps_labels_aligned(tmp_path):
    for split in ("train", "valid", "test"):
        write_images(tmp_path / "rmb_split" / split / "1", 2)
        write_images(tmp_path / "rmb_split" / split / "100", 2)
    bad = tmp_path / "rmb_split" / "train" / "1" / "img00.jpg"
    bad.write_text("not an image")

    # Off (the default): no upfront scan; reading the file stops the run, naming it.
    train = preset_datasets("rmb", tmp_path)["train"]
    assert len(train) == 4 and train.skipped == []
    with pytest.raises(DataError, match=r"cannot read image .*img00\.jpg"):
        train[0]

    splits = preset_datasets("rmb", tmp_path, "data.skip_corrupt=true")
    train = splits["train"]
    assert train.skipped == [bad] and splits["val"].skipped == []
    assert [path.name for path, _ in train.samples] == ["img01.jpg", "img00.jpg", "img01.jpg"]
    assert train.targets == [0, 1, 1] and train.classes == ("1", "100")
    assert train[0][0].shape == (3, 32, 32)

    # A class left with no readable image stops the run, as an empty folder does.
    (tmp_path / "rmb_split" / "train" / "1" / "img01.jpg").write_text("not an image")
    with pytest.raises(DataError, match=r"no readable images in .*train/1 \(class 1 of train\)"):
        preset_datasets("rmb", tmp_path, "data.skip_corrupt=true")


# ---- data.cache_mb: decoded images kept in memory ------------------------------------------


def test_cached_images_give_the_same_samples_and_are_not_read_again(tmp_path, monkeypatch):
    import torch

    from torchcamp.datasets import images
    from torchcamp.trainer.data import sample_seed, seeded_rngs

    render_synthetic_rmb(tmp_path, seed=0)
    plain, cached = (preset_datasets("rmb", tmp_path) for _ in range(2))
    used = sum(split.cache_decoded(2**20) for split in cached.values())
    assert used == 3 * 32 * 32 * sum(len(split) for split in cached.values())  # after Resize

    def no_disk(path):
        raise AssertionError(f"read {path} again")

    for name in ("train", "val"):  # RandomCrop on train: still drawn on every read
        for index in range(len(plain[name])):
            with seeded_rngs(sample_seed(0, 1, index)):
                expected, label = plain[name][index]
            monkeypatch.setattr(images, "read_rgb", no_disk)
            with seeded_rngs(sample_seed(0, 1, index)):
                image, cached_label = cached[name][index]
            monkeypatch.undo()
            assert torch.equal(image, expected) and label == cached_label


def test_a_cache_over_budget_is_not_made(tmp_path):
    render_synthetic_rmb(tmp_path, seed=0)
    train = preset_datasets("rmb", tmp_path)["train"]
    assert train.cache_decoded(3 * 32 * 32 * len(train) - 1) == 0
    assert train.cache_decoded(0) == 0
    assert train[0][0].shape == (3, 32, 32)  # read from disk as before
