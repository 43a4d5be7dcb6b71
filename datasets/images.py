"""Image datasets over lists of files: the course's custom Dataset, class folders, and a plain
folder of unlabelled images (a GAN's training set)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

from torchcamp.trainer.errors import UserError

# Any format Pillow reads that these data sets use; .gif included (hymenoptera has one).
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

Samples = list[tuple[Path, int]]


def read_rgb(path: Path) -> Image.Image:
    """The image at ``path`` as RGB; an unreadable, truncated or non-image file is a
    :class:`UserError` naming it."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as error:  # UnidentifiedImageError and truncated files are OSErrors
        raise UserError(
            f"cannot read image {path} ({error}): replace or remove the file"
        ) from error


class ImageList:
    """Map-style dataset over ``(path, label)`` pairs, decoded as RGB (the course's RMBDataset)."""

    def __init__(
        self, samples: Samples, classes: tuple[str, ...], transform: Callable | None = None
    ):
        self.samples = samples
        self.classes = classes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        """One label per sample, as ``ImageFolder.targets`` (what ``data.balance`` reads)."""
        return [label for _, label in self.samples]

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        image = read_rgb(path)
        if self.transform is not None:
            image = self.transform(image)
        return image, label


def class_folders(folder: Path, classes: Sequence[str], layout_help: str) -> Samples:
    """``(path, label)`` for every image in ``folder/<class>/``, label = index in ``classes``."""
    samples: Samples = []
    for label, name in enumerate(classes):
        class_dir = folder / name
        files = sorted(p for p in class_dir.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"no images in {class_dir}: {layout_help}")
        samples += [(path, label) for path in files]
    return samples


def find_images(root: str | Path, layout_help: str) -> list[Path]:
    """Every image file under ``root``, at any depth, sorted (hidden folders skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"no folder {root}: {layout_help}")
    files = sorted(
        path
        for path in root.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )
    if not files:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise UserError(f"no images ({suffixes}) under {root}: {layout_help}")
    return files


class ImageFiles:
    """Map-style dataset of unlabelled images: ``dataset[i]`` is the transformed RGB image."""

    def __init__(self, files: Sequence[Path], transform: Callable | None = None) -> None:
        self.files = list(files)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        image = read_rgb(self.files[index])
        return self.transform(image) if self.transform is not None else image
