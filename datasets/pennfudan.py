"""The Penn-Fudan pedestrian set of torchvision's object-detection tutorial.

Layout under a data root: ``PennFudanPed/PNGImages/<stem>.png`` (170 RGB photos of varying
size), ``PennFudanPed/Annotation/<stem>.txt`` (PASCAL-1.00 text: one ``Bounding box for object
k ...`` line per pedestrian, 1-based inclusive pixel coordinates) and
``PennFudanPed/PedMasks/<stem>_mask.png`` (single-channel, each pedestrian an integer id,
0 = background). Boxes come from the annotation, else from the mask; either way they are
0-based XYXY with inclusive maxima, as ``torchvision.ops.masks_to_boxes`` gives.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes
from torchvision.transforms import v2

from torchcamp.datasets.download import download_archive
from torchcamp.datasets.errors import DataError
from torchcamp.datasets.images import read_rgb, readable

URL = "https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip"
LAYOUT_HELP = (
    "expected PennFudanPed/{PNGImages,Annotation,PedMasks} under data.root. It is the "
    f"Penn-Fudan pedestrian set of torchvision's detection tutorial: {URL} (unzip it into "
    "data.root, or run with data.download=true); or run with data.synthetic=true"
)

_BOX_LINE = "Bounding box for object"
# `... (Xmin, Ymin) - (Xmax, Ymax) : (160, 182) - (302, 431)`: the numbers after the colon.
_BOX_NUMBERS = re.compile(r":\s*\((\d+),\s*(\d+)\)\s*-\s*\((\d+),\s*(\d+)\)\s*$")

Target = dict[str, Any]


@dataclass(frozen=True)
class PennFudanSample:
    """One photo and the files that describe it (``None`` where that file is absent)."""

    image: Path
    annotation: Path | None
    mask: Path | None


def find_pennfudan(root: str | Path) -> list[PennFudanSample]:
    """Every ``root/PennFudanPed/PNGImages/*.png`` with its annotation and mask, by name."""
    base = Path(root) / "PennFudanPed"
    images_dir = base / "PNGImages"
    if not images_dir.is_dir():
        raise DataError(f"PennFudan data not found: no {images_dir}: {LAYOUT_HELP}")
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() == ".png")
    if not images:
        raise DataError(f"no .png images in {images_dir}: {LAYOUT_HELP}")
    return [_sample(base, image) for image in images]


def _sample(base: Path, image: Path) -> PennFudanSample:
    annotation = base / "Annotation" / f"{image.stem}.txt"
    mask = base / "PedMasks" / f"{image.stem}_mask.png"
    return PennFudanSample(
        image, annotation if annotation.is_file() else None, mask if mask.is_file() else None
    )


def read_boxes(sample: PennFudanSample) -> torch.Tensor:
    """float32 ``[N, 4]`` 0-based XYXY boxes (inclusive maxima): annotation first, else mask."""
    if sample.annotation is not None:
        boxes = _annotation_boxes(sample.annotation)
        if len(boxes):
            return boxes
    if sample.mask is not None:
        return _mask_boxes(sample.mask)
    where = sample.annotation or f"no Annotation/{sample.image.stem}.txt"
    raise DataError(
        f"no boxes for {sample.image}: {where} has no 'Bounding box' lines and there is no "
        f"PedMasks/{sample.image.stem}_mask.png; restore the file from the archive: {LAYOUT_HELP}"
    )


def _annotation_boxes(path: Path) -> torch.Tensor:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read annotation {path}: {error}; restore it") from error
    boxes = []
    for number, line in enumerate(lines, start=1):
        if not line.startswith(_BOX_LINE):
            continue
        match = _BOX_NUMBERS.search(line)
        if match is None:
            raise DataError(
                f"{path}:{number}: cannot read the box in {line!r}; expected "
                "'... : (Xmin, Ymin) - (Xmax, Ymax)', restore the file from the archive"
            )
        xmin, ymin, xmax, ymax = (int(value) for value in match.groups())
        if xmin > xmax or ymin > ymax or min(xmin, ymin) < 1:
            raise DataError(f"{path}:{number}: not a box (1-based, min <= max): {line!r}")
        boxes.append((xmin, ymin, xmax, ymax))
    # The file's "Top left pixel co-ordinates : (1, 1)": shift to 0-based, keeping maxima
    # inclusive so the boxes match masks_to_boxes on the masks.
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4) - 1


def _mask_boxes(path: Path) -> torch.Tensor:
    try:
        with Image.open(path) as mask:
            ids = np.array(mask)  # "L" or "P": the pixel values are the pedestrian ids
    except OSError as error:
        raise DataError(f"cannot read mask {path}: {error}; restore it") from error
    if ids.ndim != 2:
        raise DataError(f"{path} is not a single-channel id mask (shape {ids.shape})")
    objects = np.unique(ids)
    objects = objects[objects != 0]  # 0 is background
    masks = torch.from_numpy(ids[None] == objects[:, None, None])
    return masks_to_boxes(masks).to(torch.float32).reshape(-1, 4)


def detection_transforms(train: bool) -> v2.Compose:
    """The tutorial's v2 pipeline; v2 moves the boxes with the pixels. No resize: the detector
    resizes itself."""
    steps: list[Callable] = [v2.ToImage()]
    if train:
        steps += [v2.RandomHorizontalFlip(0.5), v2.RandomPhotometricDistort(p=0.5)]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.SanitizeBoundingBoxes()]
    return v2.Compose(steps)


class PennFudanDataset(torch.utils.data.Dataset):
    """``(image, target)`` pairs in torchvision's detection format, one pedestrian class.

    ``transforms`` takes and returns ``(image, target)``; ``None`` means
    ``detection_transforms(train=False)`` (a float image in [0, 1], boxes unchanged).
    ``skip_corrupt=True`` leaves out the photos that cannot be decoded (listed in ``skipped``);
    annotations and masks are still checked as always.
    """

    classes = ("background", "pedestrian")

    def __init__(
        self,
        samples: Sequence[PennFudanSample],
        transforms: Callable | None = None,
        *,
        skip_corrupt: bool = False,
        split: str = "data",
    ):
        kept, self.skipped = readable([sample.image for sample in samples], skip_corrupt, split)
        keep = set(kept)
        self.samples = [sample for sample in samples if sample.image in keep]
        self.transforms = transforms if transforms is not None else detection_transforms(False)
        # Parsed once, not every epoch: a bad annotation also stops the run before training.
        self.boxes = [read_boxes(sample) for sample in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        sample = self.samples[index]
        image = read_rgb(sample.image)
        height, width = image.height, image.width
        boxes = self.boxes[index].clone()  # the transforms must not touch the cached boxes
        _check_inside(boxes, sample, width, height)
        target: Target = {
            # Wrapped before the transforms so that v2 flips (and drops) them with the pixels.
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
            "labels": torch.ones(len(boxes), dtype=torch.int64),
        }
        image, target = self.transforms(image, target)
        # After the transforms, so these agree with what SanitizeBoundingBoxes kept.
        boxes = target["boxes"]
        target["image_id"] = index
        target["area"] = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        target["iscrowd"] = torch.zeros(len(boxes), dtype=torch.int64)
        return image, target


def _check_inside(boxes: torch.Tensor, sample: PennFudanSample, width: int, height: int) -> None:
    # SanitizeBoundingBoxes would silently drop such boxes: say which file disagrees instead.
    beyond = (boxes[:, 2] > width - 1) | (boxes[:, 3] > height - 1)  # maxima are inclusive
    if (boxes[:, :2] < 0).any() or beyond.any():
        source = sample.annotation or sample.mask
        raise DataError(
            f"boxes from {source} reach outside the {width}x{height} image {sample.image}: "
            "the annotation does not belong to this image; restore it from the archive"
        )


def split_pennfudan(
    samples: Sequence[PennFudanSample], seed: int, val_size: int = 50
) -> dict[str, list[PennFudanSample]]:
    """Shuffle with ``seed``; the last ``val_size`` are "val", the rest "train".

    The torchvision tutorial holds out 50; ``val_size=0`` trains on all, as the course does.
    """
    if not 0 <= val_size < len(samples):
        raise DataError(
            f"val_size={val_size} must be between 0 and {len(samples) - 1} for "
            f"{len(samples)} images (at least one left to train on)"
        )
    order = list(samples)
    random.Random(seed).shuffle(order)
    cut = len(order) - val_size  # not order[-val_size:]: that is everything when val_size=0
    return {"train": order[:cut], "val": order[cut:]}


def collate_detection(
    batch: Sequence[tuple[torch.Tensor, Target]],
) -> tuple[list[torch.Tensor], list[Target]]:
    """``(images, targets)`` as lists: the images differ in size, so they cannot be stacked."""
    return [image for image, _ in batch], [target for _, target in batch]


def download_pennfudan(root: str | Path) -> None:
    """Fetch and unzip the set into ``root/PennFudanPed`` (needs the internet)."""
    # keep= places only PennFudanPed/ and fails clearly if the archive's layout changes.
    download_archive(URL, root, keep="PennFudanPed")


def render_synthetic_pennfudan(root: str | Path, seed: int, count: int = 12) -> Path:
    """Draw a stand-in set in the real layout: 1-3 tall coloured "pedestrians" per image.

    Each image gets a mask (ids 1..N) and an annotation in the real file format, except the
    last, which has no annotation so that the mask fallback runs. Deterministic from ``seed``.
    """
    rng = np.random.default_rng(seed)
    base = Path(root) / "PennFudanPed"
    for folder in ("PNGImages", "Annotation", "PedMasks"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        stem = f"FudanPed{index + 1:05d}"
        image, mask = _draw_pedestrians(rng)
        image.save(base / "PNGImages" / f"{stem}.png")
        mask.save(base / "PedMasks" / f"{stem}_mask.png")
        if index < count - 1:
            boxes = _mask_boxes(base / "PedMasks" / f"{stem}_mask.png")  # exact, as drawn
            text = _annotation_text(stem, image.size, boxes)
            (base / "Annotation" / f"{stem}.txt").write_text(text, encoding="utf-8")
    return Path(root)


def _draw_pedestrians(rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    width, height = int(rng.integers(120, 201)), int(rng.integers(100, 161))
    pixels = rng.integers(90, 170, size=(height, width, 3)).astype(np.uint8)  # grey noise
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    count = int(rng.integers(1, 4))
    slot = width // count  # one horizontal slot each, so the pedestrians never overlap
    for ped in range(1, count + 1):
        w, h = int(rng.integers(12, 25)), int(rng.integers(height // 2, height - 8))
        x0 = ped * slot - slot + int(rng.integers(2, slot - w - 1))
        y0 = int(rng.integers(2, height - h - 1))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x0 + w, y0 + h), fill=ped)
    ids = np.array(mask)
    colour = np.array([200, 40, 40], dtype=np.uint8)  # red: apart from the grey background
    pixels[ids > 0] = colour
    return Image.fromarray(pixels), mask


def _annotation_text(stem: str, size: tuple[int, int], boxes: torch.Tensor) -> str:
    label = '"PASpersonWalking"'
    lines = [
        "# Compatible with PASCAL Annotation Version 1.00",
        f'Image filename : "PennFudanPed/PNGImages/{stem}.png"',
        f"Image size (X x Y x C) : {size[0]} x {size[1]} x 3",
        'Database : "The Penn-Fudan-Pedestrian Database"',
        f"Objects with ground truth : {len(boxes)} {{ {' '.join([label] * len(boxes))} }}",
        "# Note there may be some objects not included in the ground truth list for they are "
        "severe-occluded",
        "# or have very small size.",
        "# Top left pixel co-ordinates : (1, 1)",
    ]
    for k, box in enumerate(boxes.int().tolist(), start=1):
        xmin, ymin, xmax, ymax = (value + 1 for value in box)  # the file is 1-based
        lines += [
            f"# Details for pedestrian {k} ({label})",
            f'Original label for object {k} {label} : "PennFudanPed"',
            f"{_BOX_LINE} {k} {label} (Xmin, Ymin) - (Xmax, Ymax) : "
            f"({xmin}, {ymin}) - ({xmax}, {ymax})",
            f'Pixel mask for object {k} {label} : "PennFudanPed/PedMasks/{stem}_mask.png"',
            "",
        ]
    return "\n".join(lines) + "\n"
