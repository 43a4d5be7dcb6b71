"""Image datasets over lists of files: the course's custom Dataset, class folders, and a plain
folder of unlabelled images (a GAN's training set)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

from torchcamp.trainer.errors import UserError

# Any format Pillow reads that these data sets use; .gif included (hymenoptera has one).
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

Samples = list[tuple[Path, int]]
SHOWN_SKIPPED = 5  # paths named in the data.skip_corrupt warning; the rest are counted

log = logging.getLogger(__name__)


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


def readable(
    paths: Sequence[Path], skip_corrupt: bool, split: str = "data"
) -> tuple[list[Path], list[Path]]:
    """``(kept, skipped)``: with ``skip_corrupt`` (``data.skip_corrupt=true``), every file is
    decoded once here and those :func:`read_rgb` refuses are left out, with one warning for
    ``split`` that counts and names them. Without it nothing is read (no startup cost) and
    a bad file stops the run when it is read.

    Raises :class:`UserError` when files were given and none of them is readable.
    """
    if not skip_corrupt:
        return list(paths), []
    kept: list[Path] = []
    skipped: list[Path] = []
    for path in paths:
        # A full decode, as training does: Image.verify() passes truncated JPEGs.
        try:
            read_rgb(path)
        except UserError:
            skipped.append(path)
        else:
            kept.append(path)
    if skipped and not kept:
        raise UserError(
            f"no readable images in {split}: all {len(skipped)} are corrupt, e.g. {skipped[0]} "
            "(data.skip_corrupt=true left them out): replace the files"
        )
    if skipped:
        shown = ", ".join(str(path) for path in skipped[:SHOWN_SKIPPED])
        more = f" and {len(skipped) - SHOWN_SKIPPED} more" if len(skipped) > SHOWN_SKIPPED else ""
        log.warning(
            "skipped %d corrupt image(s) in %s (data.skip_corrupt=true): %s%s",
            len(skipped),
            split,
            shown,
            more,
        )
    return kept, skipped


class ImageList:
    """Map-style dataset over ``(path, label)`` pairs, decoded as RGB (the course's RMBDataset).

    ``skip_corrupt=True`` leaves out the files that cannot be decoded (see :func:`readable`);
    they are listed in ``skipped``. ``split`` names the set in messages.
    """

    def __init__(
        self,
        samples: Samples,
        classes: tuple[str, ...],
        transform: Callable | None = None,
        *,
        skip_corrupt: bool = False,
        split: str = "data",
    ):
        kept, self.skipped = readable([path for path, _ in samples], skip_corrupt, split)
        keep = set(kept)
        self.samples = [sample for sample in samples if sample[0] in keep]
        self.classes = classes
        self.transform = transform
        self.split = split
        _check_no_class_lost(samples, self.samples, classes, split)
        # With a cache: each image after the transform's deterministic leading steps, and the
        # steps left to run on every read (see cache_decoded).
        self._cached: list[Image.Image] | None = None
        self._rest: Callable | None = transform

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        """One label per sample, as ``ImageFolder.targets`` (what ``data.balance`` reads)."""
        return [label for _, label in self.samples]

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        if self._cached is not None:
            image, transform = self._cached[index], self._rest
        else:
            image, transform = read_rgb(path), self.transform
        if transform is not None:
            image = transform(image)
        return image, label

    def cache_decoded(self, budget_bytes: int) -> int:
        """Decode every image once and keep it in memory, passed through the transform's
        deterministic leading steps (Resize, CenterCrop, Grayscale), if all of them fit in
        ``budget_bytes`` (estimated from the first); the random steps still run on every read,
        so the samples are the same as without the cache. Returns the bytes used (0: none).

        Call it before the DataLoader starts its workers: they share the cache (fork).
        """
        prefix, rest = split_deterministic(self.transform)
        if budget_bytes <= 0 or not self.samples:
            return 0
        first = prefix(read_rgb(self.samples[0][0]))
        estimate = image_bytes(first) * len(self.samples)
        if estimate > budget_bytes:
            log.info(
                "%s: %d decoded images need about %.0f MB, over data.cache_mb: read from disk "
                "every epoch",
                self.split,
                len(self.samples),
                estimate / 2**20,
            )
            return 0
        self._cached = [first] + [prefix(read_rgb(path)) for path, _ in self.samples[1:]]
        self._rest = rest
        return sum(image_bytes(image) for image in self._cached)


def split_deterministic(transform: Callable | None) -> tuple[Callable, Callable | None]:
    """``(prefix, rest)`` of a ``transforms.Compose``: its leading steps without randomness
    (what they make of an image can be kept) and a Compose of the others (None if none)."""
    from torchvision import transforms

    steps = list(getattr(transform, "transforms", []))
    keepable = (transforms.Resize, transforms.CenterCrop, transforms.Grayscale)
    count = 0
    while count < len(steps) and isinstance(steps[count], keepable):
        count += 1
    if not hasattr(transform, "transforms"):  # not a Compose: nothing known to be fixed
        return (lambda image: image), transform
    rest = transforms.Compose(steps[count:]) if count < len(steps) else None
    return transforms.Compose(steps[:count]), rest


def image_bytes(image: Image.Image) -> int:
    """The pixel bytes of a PIL image."""
    return image.width * image.height * len(image.getbands())


def _check_no_class_lost(
    before: Samples, after: Samples, classes: Sequence[str], split: str
) -> None:
    """A class whose every image was skipped as corrupt: the same stop as an empty folder."""
    lost = {label for _, label in before} - {label for _, label in after}
    if lost:
        label = min(lost)
        folder = next(path.parent for path, of in before if of == label)
        raise UserError(
            f"no readable images in {folder} (class {classes[label]} of {split}): every one is "
            "corrupt (data.skip_corrupt=true left them out): replace the files"
        )


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


def image_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """The image files ``inputs`` names, for ``predict``: a file as given (one that is not a
    readable image stops the run when it is read); a folder as its image files at any depth,
    sorted, other files in it skipped. A missing path or a folder without images, or no inputs
    at all, is a :class:`UserError`."""
    if not inputs:
        raise UserError("no inputs: give images with inputs=[photo.jpg,folder/]")
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += find_images(path, "inputs= takes image files and folders that hold some")
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"inputs: no such file or folder: {path}")
    return files


class ImageFiles:
    """Map-style dataset of unlabelled images: ``dataset[i]`` is the transformed RGB image.

    ``skip_corrupt=True`` leaves out the files that cannot be decoded (listed in ``skipped``).
    """

    def __init__(
        self,
        files: Sequence[Path],
        transform: Callable | None = None,
        *,
        skip_corrupt: bool = False,
        split: str = "data",
    ) -> None:
        self.files, self.skipped = readable(files, skip_corrupt, split)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        image = read_rgb(self.files[index])
        return self.transform(image) if self.transform is not None else image
