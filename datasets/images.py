"""Image datasets over lists of files: the course's custom Dataset, class folders, and a plain
folder of unlabelled images (a GAN's training set)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from torchcamp.datasets.errors import DataError

# Formats Pillow recognises but cannot decode by itself: the stubs need a handler the user
# registers, MPEG is identified only. A video or HDF5 file beside the images is not one.
IDENTIFY_ONLY_FORMATS = frozenset({"BUFR", "GRIB", "HDF5", "MPEG", "WMF"})

# Modes with more than 8 bits per pixel, and the value each one's full scale is taken to be:
# 16-bit PNG, TIFF and PGM files open as "I;16*" or "I"; float images are taken as 0..1.
# (Image.convert clips them at 255 instead: a 16-bit photo would come out nearly white.)
HIGH_DEPTH_FULL_SCALE = {
    "I;16": 65535,
    "I;16L": 65535,
    "I;16B": 65535,
    "I;16N": 65535,
    "I": 65535,
    "F": 1.0,
}

Samples = list[tuple[Path, int]]
SHOWN_SKIPPED = 5  # paths named in the data.skip_corrupt warning; the rest are counted

log = logging.getLogger(__name__)


def image_suffixes() -> frozenset[str]:
    """Every file extension (lower-case, with the dot) of a format Pillow can open and decode."""
    Image.init()  # registers every plugin; before it only the formats imported so far count
    return frozenset(
        suffix.lower()
        for suffix, format_name in Image.registered_extensions().items()
        if format_name in Image.OPEN and format_name not in IDENTIFY_ONLY_FORMATS
    )


IMAGE_SUFFIXES = image_suffixes()


def read_rgb(path: Path) -> Image.Image:
    """The image at ``path`` as RGB (see :func:`to_rgb`); an unreadable, truncated or
    non-image file is a :class:`DataError` naming it."""
    try:
        with Image.open(path) as image:
            return to_rgb(image)
    # UnidentifiedImageError and truncated files are OSErrors; a mode Pillow cannot convert is
    # a ValueError; a decompression bomb is its own type. Each is a fault of that one file.
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(
            f"cannot read image {path} ({error}): replace or remove the file"
        ) from error


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as a new RGB image, without Pillow's warnings.

    A palette with transparency goes through RGBA (straight to RGB, Pillow warns); 16-bit and
    float greyscale is scaled to 8 bits first (see ``HIGH_DEPTH_FULL_SCALE``); alpha is dropped.
    """
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    elif image.mode in HIGH_DEPTH_FULL_SCALE:
        image = to_8bit(image, HIGH_DEPTH_FULL_SCALE[image.mode])
    return image.convert("RGB")


def to_8bit(image: Image.Image, full_scale: float) -> Image.Image:
    """A single-channel image of any depth as 8-bit greyscale ("L"): ``full_scale`` becomes
    255, values outside 0..full_scale are clipped."""
    pixels = np.asarray(image, dtype=np.float64) * (255 / full_scale)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def readable(
    paths: Sequence[Path], skip_corrupt: bool, split: str = "data"
) -> tuple[list[Path], list[Path]]:
    """``(kept, skipped)``: with ``skip_corrupt`` (``data.skip_corrupt=true``), every file is
    decoded once here and those :func:`read_rgb` refuses are left out, with one warning for
    ``split`` that counts and names them. Without it nothing is read (no startup cost) and
    a bad file stops the run when it is read.

    Raises :class:`DataError` when files were given and none of them is readable.
    """
    if not skip_corrupt:
        return list(paths), []
    kept: list[Path] = []
    skipped: list[Path] = []
    for path in paths:
        # A full decode, as training does: Image.verify() passes truncated JPEGs.
        try:
            read_rgb(path)
        except DataError:
            skipped.append(path)
        else:
            kept.append(path)
    if skipped and not kept:
        raise DataError(
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
    """``(prefix, rest)`` of a ``Compose`` (``transforms`` or ``transforms.v2``): its leading
    steps without randomness (Resize, CenterCrop, Grayscale: what they make of an image can be
    kept) and a Compose of the same kind of the others (None if none)."""
    from torchvision import transforms
    from torchvision.transforms import v2

    # Only a Compose runs every step in order: RandomApply and RandomChoice also hold a
    # .transforms list, but which of its steps run is random.
    if not isinstance(transform, (transforms.Compose, v2.Compose)):
        return (lambda image: image), transform
    keepable = (
        transforms.Resize,
        transforms.CenterCrop,
        transforms.Grayscale,
        v2.Resize,
        v2.CenterCrop,
        v2.Grayscale,
    )
    steps = list(transform.transforms)
    count = 0
    while count < len(steps) and isinstance(steps[count], keepable):
        count += 1
    if count == 0:  # v2's Compose refuses an empty list
        return (lambda image: image), transform
    compose = type(transform)
    rest = compose(steps[count:]) if count < len(steps) else None
    return compose(steps[:count]), rest


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
        raise DataError(
            f"no readable images in {folder} (class {classes[label]} of {split}): every one is "
            "corrupt (data.skip_corrupt=true left them out): replace the files"
        )


def find_images(root: str | Path, layout_help: str) -> list[Path]:
    """Every image file under ``root``, at any depth, sorted (hidden folders skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"no folder {root}: {layout_help}")
    files = images_in(root, recursive=True)
    if not files:
        # IMAGE_SUFFIXES holds some 60 extensions: a few familiar ones say enough.
        raise DataError(
            f"no images (any format Pillow reads: .jpg, .png, .webp, .tif, ...) under {root}: "
            f"{layout_help}"
        )
    return files


def images_in(folder: Path, *, recursive: bool) -> list[Path]:
    """The image files in ``folder`` (or anywhere below it), sorted; hidden files and
    folders skipped (macOS's "._photo.jpg" copies are not images)."""
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        path
        for path in candidates
        if path.suffix.lower() in IMAGE_SUFFIXES
        and path.is_file()
        and not any(is_hidden(part) for part in path.relative_to(folder).parts)
    )


def is_hidden(name: str) -> bool:
    """A dot-file or dot-folder (.ipynb_checkpoints, ._photo.jpg)."""
    return name.startswith(".")


def image_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """The image files ``inputs`` names, for ``predict``: a file as given (one that is not a
    readable image stops the run when it is read); a folder as its image files at any depth,
    sorted, other files in it skipped. A missing path or a folder without images, or no inputs
    at all, is a :class:`DataError`."""
    if not inputs:
        raise DataError("no inputs: give images with inputs=[photo.jpg,folder/]")
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += find_images(path, "inputs= takes image files and folders that hold some")
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"inputs: no such file or folder: {path}")
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
