"""Reading images (datasets/images.py): any mode as RGB without warnings, corrupt files left out
with data.skip_corrupt, decoded images cached in memory (data.cache_mb), and the deterministic
steps of a transform split off for that cache."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import preset_datasets, write_images
from PIL import Image

from torchcamp.datasets.errors import DataError
from torchcamp.datasets.images import read_rgb, readable, split_deterministic
from torchcamp.datasets.rmb import render_synthetic_rmb

# ---- reading any image as RGB ----------------------------------------------------------------


def palette_with_byte_transparency(path: Path) -> Path:
    image = Image.new("P", (8, 8))
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    image.putdata([1] * 64)
    image.save(path, transparency=bytes([0, 128, 255]))
    return path


def test_a_palette_with_transparency_would_warn_when_converted_plainly(tmp_path):
    path = palette_with_byte_transparency(tmp_path / "palette.png")
    with Image.open(path) as image, pytest.warns(UserWarning, match="Transparency"):
        image.convert("RGB")


@pytest.mark.parametrize(
    ("mode", "make", "rgb"),
    [
        ("L", lambda: Image.new("L", (8, 8), 77), (77, 77, 77)),
        ("LA", lambda: Image.new("LA", (8, 8), (90, 0)), (90, 90, 90)),
        ("RGBA", lambda: Image.new("RGBA", (8, 8), (10, 20, 30, 0)), (10, 20, 30)),
        ("1", lambda: Image.new("1", (8, 8), 1), (255, 255, 255)),
        ("CMYK", lambda: Image.new("CMYK", (8, 8), (0, 255, 255, 0)), (255, 0, 0)),
        ("I;16", lambda: Image.fromarray(np.full((8, 8), 32768, np.uint16)), (128, 128, 128)),
        ("I", lambda: Image.new("I", (8, 8), 32768), (128, 128, 128)),
        ("F", lambda: Image.new("F", (8, 8), 0.2), (51, 51, 51)),
    ],
)
def test_every_mode_is_read_as_rgb_without_warnings(tmp_path, mode, make, rgb):
    image = make()
    assert image.mode == mode
    path = tmp_path / ("image.tif" if mode in ("CMYK", "F", "I") else "image.png")
    image.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        read = read_rgb(path)
    assert read.mode == "RGB" and read.size == (8, 8)
    assert read.getpixel((3, 3)) == rgb


def test_a_palette_with_transparency_and_16_bit_png_are_read_without_warnings(tmp_path):
    palette = palette_with_byte_transparency(tmp_path / "palette.png")
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(deep)
    with Image.open(deep) as opened:
        assert opened.mode == "I;16"  # what a 16-bit PNG opens as
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_rgb(palette).getpixel((0, 0)) == (255, 0, 0)
        assert read_rgb(deep).getpixel((0, 0)) == (255, 255, 255)  # scaled, not clipped


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


# ---- caching the deterministic steps of a transform ------------------------------------------


def test_split_deterministic_knows_v2_and_v1_composes():
    from torchvision import transforms
    from torchvision.transforms import v2

    resize, crop, grey, flip = (
        v2.Resize(6),
        v2.CenterCrop(4),
        v2.Grayscale(3),
        v2.RandomHorizontalFlip(),
    )
    to_image = v2.ToImage()
    prefix, rest = split_deterministic(v2.Compose([resize, crop, grey, flip, to_image]))
    assert type(prefix) is v2.Compose and prefix.transforms == [resize, crop, grey]
    assert type(rest) is v2.Compose and rest.transforms == [flip, to_image]
    kept = prefix(Image.new("RGB", (12, 8), (200, 0, 0)))
    assert kept.size == (4, 4) and kept.mode == "RGB" and len(set(kept.getpixel((1, 1)))) == 1

    prefix, rest = split_deterministic(v2.Compose([v2.Resize(4), v2.CenterCrop(4)]))
    assert len(prefix.transforms) == 2 and rest is None

    v1_resize, v1_crop = transforms.Resize(8), transforms.RandomCrop(8, padding=2)
    prefix, rest = split_deterministic(transforms.Compose([v1_resize, v1_crop]))
    assert type(prefix) is transforms.Compose and prefix.transforms == [v1_resize]
    assert rest.transforms == [v1_crop]

    # RandomApply holds a list of steps too, but runs them at random: nothing is kept.
    random_apply = v2.RandomApply([v2.Resize(4)], p=0.5)
    prefix, rest = split_deterministic(random_apply)
    assert rest is random_apply
    image = Image.new("RGB", (5, 5))
    assert prefix(image) is image
