"""The course's RMB banknote set (1 yuan vs 100 yuan): a stand-in in its on-disk layout.

``task=rmb`` reads the real set as an image folder (conf/task/rmb.yaml, datasets/folders.py),
under a data root, first match wins: ``RMB_data/{1,100}/*.jpg`` with ``RMB_data_split.csv``
(``split,class,filename``) beside it; ``RMB_data/{1,100}/*.jpg`` alone, split 8:1:1 per class
by the seed; or ``rmb_split/{train,valid,test}/{1,100}/*.jpg`` (the course's pre-split folders).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

CLASSES = ("1", "100")  # folder names; label = index, as the course's {"1": 0, "100": 1}


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
