"""The RMB data as ``task=rmb`` reads it (an image-folder preset): pre-split folders, errors
that name the path, and the synthetic set (datasets/rmb.py). The seeded 8:1:1 split and the
split CSV are image-folder layouts, tested with task=rmb in test_folders.py."""

from __future__ import annotations

import pytest
from conftest import preset_datasets, write_images

from torchcamp.datasets.errors import DataError
from torchcamp.datasets.rmb import render_synthetic_rmb


def rmb_splits(root, *overrides, seed=0):
    """``{split: [(path, label), ...]}`` as ``train task=rmb data.root=ROOT`` reads them."""
    datasets = preset_datasets("rmb", root, *overrides, seed=seed)
    return {name: dataset.samples for name, dataset in datasets.items()}


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
