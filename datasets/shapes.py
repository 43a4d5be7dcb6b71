"""A stand-in image folder for ``task=imagefolder data.synthetic=true``: drawn shapes.

Three classes (circle, square, triangle), class folders with no split (the flat layout, so
the per-class split runs too), in several formats and modes (RGB JPEG, grayscale PNG, palette
GIF) and sizes, so the whole pipeline runs as on a user's own photos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")


def render_synthetic_shapes(root: str | Path, seed: int, per_class: int = 30) -> Path:
    """Draw ``per_class`` images per shape into ``root/<shape>/``; deterministic given
    ``seed``. Returns ``root``."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for name in SHAPES:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            image = _draw(rng, name)
            if index % 5 == 3:  # some grayscale PNGs and palette GIFs, as real folders have
                image.convert("L").save(folder / f"{name}_{index:03d}.png")
            elif index % 5 == 4:
                image.convert("P").save(folder / f"{name}_{index:03d}.gif")
            else:
                image.save(folder / f"{name}_{index:03d}.jpg")
    return root


def _draw(rng: np.random.Generator, name: str) -> Image.Image:
    width, height = int(rng.integers(48, 96)), int(rng.integers(48, 96))
    noise = rng.integers(90, 200, size=(height, width, 3), dtype=np.uint8)
    image = Image.fromarray(noise)
    draw = ImageDraw.Draw(image)
    size = int(rng.integers(min(width, height) // 3, min(width, height) // 2 + 1))
    cx = int(rng.integers(size, width - size + 1))
    cy = int(rng.integers(size, height - size + 1))
    colour = tuple(int(c) for c in rng.integers(0, 90, size=3))
    box = (cx - size, cy - size, cx + size, cy + size)
    if name == "circle":
        draw.ellipse(box, fill=colour)
    elif name == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(cx, cy - size), (cx - size, cy + size), (cx + size, cy + size)], fill=colour)
    return image
