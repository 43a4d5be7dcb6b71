"""A stand-in for aligned face crops (the classic DCGAN data): drawn cartoon faces.

Real face sets (CelebA) are large and behind sign-up pages, so tests and ``data.synthetic=true``
use these: a skin-toned oval with eyes, a mouth and hair on a plain background, jittered in
colour, size and position, in two sub-folders so the recursive search is exercised too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def render_synthetic_faces(root: str | Path, seed: int, count: int = 96) -> Path:
    """Write ``count`` 72x72 JPEG faces under ``root/faces/{a,b}/``; deterministic. Returns root."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        folder = Path(root) / "faces" / ("a" if index % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        _draw_face(rng).save(folder / f"face_{index:04d}.jpg", quality=95)
    return Path(root)


def _draw_face(rng: np.random.Generator, size: int = 72) -> Image.Image:
    background = tuple(int(c) for c in rng.integers(40, 220, size=3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    cx, cy = size // 2 + int(rng.integers(-4, 5)), size // 2 + int(rng.integers(-3, 4))
    rx, ry = int(rng.integers(17, 23)), int(rng.integers(22, 28))
    hair = tuple(int(c) for c in rng.integers(10, 120, size=3))
    draw.ellipse((cx - rx - 3, cy - ry - 5, cx + rx + 3, cy + ry // 3), fill=hair)
    skin = (int(rng.integers(170, 240)), int(rng.integers(120, 190)), int(rng.integers(90, 160)))
    draw.ellipse((cx - rx, cy - ry + 6, cx + rx, cy + ry), fill=skin)
    eye_dy, eye_dx = int(rng.integers(-2, 3)), int(rng.integers(7, 10))
    for side in (-1, 1):
        ex, ey = cx + side * eye_dx, cy - 2 + eye_dy
        draw.ellipse((ex - 3, ey - 2, ex + 3, ey + 2), fill=(255, 255, 255))
        draw.ellipse((ex - 1, ey - 1, ex + 1, ey + 1), fill=(30, 20, 20))
    mouth = int(rng.integers(5, 9))
    draw.arc((cx - mouth, cy + 6, cx + mouth, cy + 14), 20, 160, fill=(150, 40, 50), width=2)
    return image
