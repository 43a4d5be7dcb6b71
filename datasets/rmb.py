"""The course's RMB banknote set (1 yuan vs 100 yuan): its on-disk layouts and a stand-in.

Layouts read, under a data root, first match wins:

1. ``RMB_data/{1,100}/*.jpg`` with ``RMB_data_split.csv`` (``split,class,filename``) beside it;
2. ``rmb_split/{train,valid,test}/{1,100}/*.jpg`` (the course's pre-split folders);
3. ``RMB_data/{1,100}/*.jpg`` alone: a per-class 8:1:1 split, deterministic given the seed.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from torchcamp.datasets.images import Samples, class_folders
from torchcamp.trainer.errors import UserError

CLASSES = ("1", "100")  # folder names; label = index, as the course's {"1": 0, "100": 1}
SPLITS = {"train": "train", "valid": "val", "test": "test"}  # on-disk name -> ours


LAYOUT_HELP = (
    "expected RMB_data/1/*.jpg and RMB_data/100/*.jpg (optionally RMB_data_split.csv beside "
    "RMB_data/), or rmb_split/{train,valid,test}/{1,100}/*.jpg. The images are the DeepShare "
    "PyTorch course's banknote photos, handed out with the course material; set data.root to the "
    "folder that holds RMB_data/ (or TORCHCAMP_DATA), or run with data.synthetic=true"
)


def find_rmb_splits(root: str | Path, seed: int) -> dict[str, Samples]:
    """``{"train": [...], "val": [...], "test": [...]}`` from the first layout under ``root``."""
    root = Path(root)
    data_dir, csv_path, presplit = (
        root / "RMB_data",
        root / "RMB_data_split.csv",
        root / "rmb_split",
    )
    if data_dir.is_dir() and csv_path.is_file():
        return _splits_from_csv(data_dir, csv_path)
    if presplit.is_dir():
        return {
            ours: class_folders(presplit / disk, CLASSES, LAYOUT_HELP)
            for disk, ours in SPLITS.items()
        }
    if data_dir.is_dir():
        return _split_8_1_1(class_folders(data_dir, CLASSES, LAYOUT_HELP), seed)
    raise UserError(f"RMB data not found under data.root={root}: {LAYOUT_HELP}")


def _splits_from_csv(data_dir: Path, csv_path: Path) -> dict[str, Samples]:
    splits: dict[str, Samples] = {ours: [] for ours in SPLITS.values()}
    with open(csv_path, newline="") as file:
        for line, row in enumerate(csv.DictReader(file), start=2):
            split, name = SPLITS.get(row.get("split", "")), row.get("class", "")
            if split is None or name not in CLASSES:
                raise UserError(
                    f"{csv_path}:{line}: expected split in train/valid/test and class in 1/100, "
                    f"got {row}"
                )
            path = data_dir / name / row["filename"]
            if not path.is_file():
                raise UserError(f"{csv_path}:{line} names {path}, which does not exist")
            splits[split].append((path, CLASSES.index(name)))
    return splits


def _split_8_1_1(samples: Samples, seed: int) -> dict[str, Samples]:
    """Per class: shuffle with ``seed``, then 80 % train, 10 % val, the rest test."""
    splits: dict[str, Samples] = {"train": [], "val": [], "test": []}
    for label in range(len(CLASSES)):
        of_class = [sample for sample in samples if sample[1] == label]
        random.Random(seed).shuffle(of_class)
        n_train, n_val = round(0.8 * len(of_class)), round(0.1 * len(of_class))
        splits["train"] += of_class[:n_train]
        splits["val"] += of_class[n_train : n_train + n_val]
        splits["test"] += of_class[n_train + n_val :]
    return splits


# ---- synthetic stand-in ------------------------------------------------------------------

NOTE_COLOURS = {"1": (120, 140, 90), "100": (200, 60, 70)}  # olive-green 1 yuan, red 100 yuan


def render_synthetic_rmb(root: str | Path, seed: int, per_class: int = 40) -> Path:
    """Draw ``per_class`` banknote-like JPEGs per class into ``root/RMB_data/{1,100}/``.

    Each is a note of its class's colour (jittered) showing "1" or "100", placed at random on a
    noisy background, so decoding, resizing and augmentation all run as on the real photos.
    Deterministic given ``seed``. Returns ``root``.
    """
    import numpy as np

    root = Path(root)
    rng = np.random.default_rng(seed)
    font = ImageFont.load_default()
    for name in CLASSES:
        folder = root / "RMB_data" / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            width, height = int(rng.integers(90, 140)), int(rng.integers(50, 80))
            background = rng.integers(150, 256, size=(height, width, 3), dtype=np.uint8)
            image = Image.fromarray(background)
            draw = ImageDraw.Draw(image)
            note_w, note_h = int(width * rng.uniform(0.6, 0.9)), int(height * rng.uniform(0.6, 0.9))
            left = int(rng.integers(0, width - note_w + 1))
            top = int(rng.integers(0, height - note_h + 1))
            colour = tuple(
                int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in NOTE_COLOURS[name]
            )
            draw.rectangle(
                (left, top, left + note_w, top + note_h), fill=colour, outline=(30, 30, 30)
            )
            draw.text(
                (left + note_w // 4, top + note_h // 3), name, fill=(245, 245, 235), font=font
            )
            noisy = np.asarray(image, dtype=np.int16) + rng.integers(
                -20, 21, size=(height, width, 3)
            )
            Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(
                folder / f"{name}_{index:03d}.jpg"
            )
    return root
