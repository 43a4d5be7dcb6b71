"""Pictures of a run beside its files: ``curves.png`` and ``confusion_matrix.png``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torchcamp.trainer.callbacks import Callback, best_effort
from torchcamp.trainer.extras import EpochSchedule

# matplotlib's import and one figure: about this long on a laptop CPU (0.5 s measured here).
FIRST_DRAWING_SECONDS = 0.75


class RunPlots(Callback):
    """``curves.png``: loss and each metric against the epoch, train and val on the same axes,
    the best epoch marked; redrawn after an epoch on the time budget
    (:mod:`torchcamp.trainer.extras`: as their cost allows, or every ``every_n_epochs``; not
    after the first, a curve of one point), and always at the end. A classifier also gets
    ``confusion_matrix.png`` at the end: the last epoch's val split and the test split (scored
    with the best weights).

    Drawing the curves costs 0.2 to 0.6 s (matplotlib's import, then the figure), more than a
    whole epoch of a small job: on the budget a run of short epochs draws them rarely, an
    epoch of a minute or more every time. A picture that cannot be written (a full disk) is
    one warning, and the run goes on without them
    (:func:`~torchcamp.trainer.callbacks.best_effort`).
    """

    order = 12  # after the CSV logger: the same rows
    outputs = "curves.png and confusion_matrix.png"

    def __init__(
        self,
        curves_path: str | Path,
        confusion_path: str | Path,
        monitor: str | None = None,
        monitor_mode: str = "min",
        class_names: Sequence[str] | None = None,
        every_n_epochs: int | None = None,
    ) -> None:
        # Where the run's layout puts them (trainer/app/run_dir.py), beside each other.
        self.curves_path, self.confusion_path = Path(curves_path), Path(confusion_path)
        self.output_dir = self.curves_path.parent
        self.monitor, self.monitor_mode = monitor, monitor_mode
        self.class_names = list(class_names or [])
        # Its first drawing imports matplotlib: about FIRST_DRAWING_SECONDS, not to be spent
        # to find that out on a run whose whole budget is smaller.
        self.schedule = EpochSchedule(
            "plots", every_n_epochs, first=False, cost=FIRST_DRAWING_SECONDS
        )

    @best_effort
    def on_epoch_end(self, trainer: Any, metrics: Mapping[str, float]) -> None:
        # After the last epoch they are drawn by on_fit_end, once.
        if trainer.epoch < trainer.max_epochs:
            self.schedule.run_if_due(trainer, lambda: self._draw_curves(trainer))

    @best_effort
    def on_interrupt(self, trainer: Any) -> None:
        self._draw_curves(trainer)

    @best_effort
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

        draw_curves(trainer.history, self.curves_path, self.monitor, self.monitor_mode)
