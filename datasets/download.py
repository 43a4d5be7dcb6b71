"""Fetching a public data set's archive (``data.download=true``); needs the internet."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from torchcamp.datasets.errors import DataError


def download_archive(url: str, root: str | Path, keep: str | None = None) -> None:
    """Download ``url`` and unpack it into ``root``.

    ``keep`` names one folder inside the archive (``"data/names"``) to place at ``root`` under
    its last name (``root/names``) instead of unpacking everything. The archive is unpacked
    beside ``root``'s contents in a temporary folder first, so a failed download leaves
    nothing half-written behind.
    """
    from torchvision.datasets.utils import download_and_extract_archive

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        try:
            download_and_extract_archive(url, download_root=tmp, remove_finished=True)
        except OSError as error:  # URLError is an OSError: offline, proxy, DNS, disk full
            raise DataError(f"could not download {url} into {root}: {error}") from error
        unpacked = Path(tmp)
        if keep and not (unpacked / keep).is_dir():
            raise DataError(f"{url} has no {keep}/ in it any more: fetch the data by hand")
        for folder in [unpacked / keep] if keep else list(unpacked.iterdir()):
            target = root / folder.name
            if target.exists():  # never mix a fresh copy into a broken one
                raise DataError(
                    f"{target} exists but is not a usable data set: move it away and run again"
                )
            shutil.move(str(folder), str(target))
