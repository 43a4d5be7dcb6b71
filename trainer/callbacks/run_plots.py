"""Pictures of a run beside its files: ``curves.png`` and ``confusion_matrix.png``."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torchcamp.trainer.callbacks import Callback

log = logging.getLogger(__name__)

# Before its first drawing the cost is unknown: matplotlib's import and one figure take about
# this long on a laptop CPU.
FIRST_DRAWING_SECONDS = 0.75


class RunPlots(Callback):
    """``curves.png``: loss and each metric against the epoch, train and val on the same axes,
    the best epoch marked; redrawn after an epoch, and at the end. A classifier also gets
    ``confusion_matrix.png`` at the end: the last epoch's val split and the test split (scored
    with the best weights).

    Drawing the curves costs 0.2 to 0.6 s, more than a whole epoch of a small job, so they
    are redrawn only when the time since the last drawing is at least ``1 / budget`` times what
    that drawing took (``budget=0.005``: drawing stays under 0.5% of the run's time, within
    the noise of any epoch timing); an epoch of a minute or more is drawn every time, and the
    final picture always is.
    """

    order = 12  # after the CSV logger: the same rows

    def __init__(
        self,
        directory: str | Path,
        monitor: str | None = None,
        monitor_mode: str = "min",
        class_names: Sequence[str] | None = None,
        budget: float = 0.005,
    ) -> None:
        self.directory = Path(directory)
        self.monitor, self.monitor_mode = monitor, monitor_mode
        self.class_names = list(class_names or [])
        self.budget = budget
        self._last_drawn = 0.0
        self._drawing_seconds = FIRST_DRAWING_SECONDS

    @property
    def curves_path(self) -> Path:
        return self.directory / "curves.png"

    @property
    def confusion_path(self) -> Path:
        return self.directory / "confusion_matrix.png"

    def on_fit_start(self, trainer: Any) -> None:
        self._last_drawn = time.perf_counter()

    def on_epoch_end(self, trainer: Any, metrics: Mapping[str, float]) -> None:
        waited = time.perf_counter() - self._last_drawn
        if waited * self.budget >= self._drawing_seconds:
            self._draw_curves(trainer)

    def on_interrupt(self, trainer: Any) -> None:
        self._draw_curves(trainer)

    def on_fit_end(self, trainer: Any, metrics: Mapping[str, float]) -> None:
        self._draw_curves(trainer)
        from torchcamp.trainer.plots import draw_confusion_matrices

        matrices = {
            title: trainer.epoch_counts[split]["confusion"]
            for split, title in (("val", f"val (epoch {trainer.epoch})"), ("test", "test"))
            if "confusion" in trainer.epoch_counts.get(split, {})
        }
        if matrices:
            draw_confusion_matrices(matrices, self.class_names, self.confusion_path)

    def _draw_curves(self, trainer: Any) -> None:
        if not trainer.history:
            return
        from torchcamp.trainer.plots import draw_curves  # matplotlib: only once it is needed

        started = time.perf_counter()
        draw_curves(trainer.history, self.curves_path, self.monitor, self.monitor_mode)
        self._last_drawn = time.perf_counter()
        self._drawing_seconds = self._last_drawn - started
