"""The ants-vs-bees set of PyTorch's transfer-learning tutorial: its download and a stand-in.

``task=hymenoptera`` reads it as an image folder (conf/task/hymenoptera.yaml,
datasets/folders.py): ``hymenoptera_data/{train,val}/<class>/<image>`` under a data root, any
image format (the set has a palette GIF and a ``.jpeg``); classes are the ``train``
sub-folders, sorted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from torchcamp.datasets.download import download_archive

URL = "https://download.pytorch.org/tutorial/hymenoptera_data.zip"


def download_hymenoptera(root: str | Path) -> None:
    """Fetch and unzip the tutorial's archive into ``root`` (needs the internet)."""
    download_archive(URL, root)


def render_synthetic_hymenoptera(root: str | Path, seed: int, per_class: int = 24) -> Path:
    """Draw a stand-in set in the real layout: dark elongated "ants", striped yellow "bees".

    Each split gets ``per_class`` images per class (val a quarter as many), on noisy green-brown
    backgrounds at varying sizes, plus one palette GIF, as the real set has. Deterministic.
    """
    rng = np.random.default_rng(seed)
    base = Path(root) / "hymenoptera_data"
    for split, count in (("train", per_class), ("val", max(2, per_class // 4))):
        for name in ("ants", "bees"):
            folder = base / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                image = _draw_insect(rng, name)
                image.save(folder / f"{name}_{index:03d}.jpg")
    _draw_insect(rng, "ants").convert("P").save(base / "train" / "ants" / "palette.gif")
    return Path(root)


def _draw_insect(rng: np.random.Generator, name: str) -> Image.Image:
    width, height = int(rng.integers(80, 140)), int(rng.integers(80, 140))
    background = rng.integers(60, 160, size=(height, width, 3)).astype(np.uint8)
    background[..., 1] = np.clip(background[..., 1].astype(int) + 40, 0, 255)  # greenish
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    cx, cy = (
        int(rng.integers(width // 3, 2 * width // 3)),
        int(rng.integers(height // 3, 2 * height // 3)),
    )
    if name == "ants":  # three dark segments in a row
        size = int(rng.integers(6, 12))
        for offset in (-2, 0, 2):
            x = cx + offset * size
            draw.ellipse((x - size, cy - size // 2, x + size, cy + size // 2), fill=(25, 15, 10))
    else:  # a yellow body with black stripes and pale wings
        rx, ry = int(rng.integers(14, 24)), int(rng.integers(9, 14))
        draw.ellipse((cx - rx, cy - 2 * ry, cx + rx // 2, cy), fill=(220, 230, 250))
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=(235, 190, 30))
        for stripe in range(-rx + 6, rx - 4, 8):
            draw.rectangle(
                (cx + stripe, cy - ry + 2, cx + stripe + 3, cy + ry - 2), fill=(20, 20, 20)
            )
    return image
