"""``metrics.csv``: one row per epoch, for pandas, a spreadsheet or a quick ``column -t``."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torchcamp.trainer.callbacks import Callback
from torchcamp.trainer.files import written_atomically

LEADING = ("epoch", "step")


class CSVLogger(Callback):
    """Writes the Trainer's ``history`` (epoch, step, every train/val metric, the lr, the
    epoch's seconds) to ``path`` after every epoch.

    The history is part of every checkpoint, and the file is rewritten whole from it (a
    temporary file, then a rename: a kill or a full disk leaves the previous file, never half a
    row; a failed write stops the run, see :mod:`torchcamp.trainer.files`). So a
    run killed and resumed has every epoch exactly once: the rows a killed run wrote after its
    checkpoint are replaced when training redoes those epochs. Rewriting costs well under a
    millisecond for a few hundred epochs.
    """

    order = 10

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_fit_start(self, trainer: Any) -> None:
        # A resumed run: the file now says what its checkpoint says.
        if trainer.history:
            self._write(trainer.history)
        else:
            self.path.unlink(missing_ok=True)

    def on_epoch_end(self, trainer: Any, metrics: Mapping[str, float]) -> None:
        self._write(trainer.history)

    def _write(self, rows: Sequence[Mapping[str, Any]]) -> None:
        columns = list(LEADING)
        for row in rows:  # a metric that appears late (or a new lr group) gets its column
            columns += [key for key in row if key not in columns]
        with written_atomically(self.path) as temporary, open(temporary, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)


def read_metrics_csv(path: str | Path) -> list[dict[str, float]]:
    """The rows of a ``metrics.csv`` as numbers (an empty cell is NaN); [] without a file."""
    try:
        with open(path, newline="") as file:
            rows = list(csv.DictReader(file))
    except FileNotFoundError:
        return []
    return [
        {key: float(value) if value else float("nan") for key, value in row.items()} for row in rows
    ]
