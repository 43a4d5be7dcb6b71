"""Pictures of a training run: its curves, its confusion matrices, a sweep's jobs side by side.

Drawn with matplotlib's object-oriented API (a ``Figure`` of its own, never ``pyplot``), so
nothing opens a window and no global state is touched. matplotlib is imported inside each
function: importing torchcamp must not pay for it. Every picture is written atomically, so a
crash mid-save leaves the previous one intact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from torchcamp.trainer.files import written_atomically

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100  # what a screen shows; more only makes the files and the drawing slower
MAX_COLUMNS = 3  # subplots per row of the curves grid
PANEL_SIZE = (4.5, 3.2)  # inches per curves subplot
STAGES = ("train", "val", "test")  # column prefixes whose curves share a subplot
LABEL_CHARS = 60  # a sweep job's label is shortened to this many characters
Series = tuple[np.ndarray, np.ndarray]  # epochs and values, finite only


def draw_curves(
    rows: Sequence[Mapping[str, float]],
    path: str | Path,
    monitor: str | None = None,
    monitor_mode: str = "min",
) -> None:
    """Draw a run's epoch rows (as in its ``metrics.csv``) to the picture ``path``.

    One subplot per metric name (``loss``, ``acc``...) with its train and val curves against
    the epoch, losses first, then the others alphabetically, then ``lr``. ``time/*``, ``epoch``
    and ``step`` are left out. When ``monitor`` is a column, its best epoch (min or max by
    ``monitor_mode``) is a dashed line in every subplot and a marked point on its curve.
    """
    from matplotlib.figure import Figure

    _check_mode(monitor_mode)
    panels = _panels(rows)
    best = _best(_series(rows, monitor), monitor_mode) if monitor else None
    columns = min(MAX_COLUMNS, max(len(panels), 1))
    grid_rows = max(math.ceil(len(panels) / columns), 1)
    width, height = PANEL_SIZE
    figure = Figure(figsize=(width * columns, height * grid_rows + 0.4))
    _fixed_margins(figure, grid_rows)
    axes = figure.subplots(grid_rows, columns, squeeze=False).ravel()
    for ax, (name, series) in zip(axes, panels, strict=False):
        _draw_panel(ax, name, series, monitor, best)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    if not panels:
        axes[0].text(0.5, 0.5, "no metrics yet", ha="center", va="center")
    figure.suptitle(_curves_title(rows, monitor, monitor_mode, best))
    _save(figure, path)


def draw_confusion_matrices(
    matrices: Mapping[str, Any], class_names: Sequence[str], path: str | Path
) -> None:
    """Draw confusion matrices side by side to the picture ``path``.

    ``matrices`` maps a title (``"val (epoch 10)"``) to a square count matrix (a tensor, an
    array or nested lists; rows are the true class, columns the predicted one). The colour is
    each row's share, every cell shows its count and percentage, and each title the accuracy.
    """
    from matplotlib.figure import Figure

    counts = {title: _counts(matrix, len(class_names)) for title, matrix in matrices.items()}
    if not counts:
        raise ValueError("no confusion matrix to draw")
    # Cells keep a readable size however many classes there are; the text shrinks to fit them.
    side = max(3.5, 0.5 * len(class_names) + 2.0)
    figure = Figure(figsize=(side * len(counts) + 1.0, side), layout="constrained")
    axes = figure.subplots(1, len(counts), squeeze=False).ravel()
    for ax, (title, matrix) in zip(axes, counts.items(), strict=True):
        image = _draw_matrix(ax, title, matrix, class_names)
    figure.colorbar(image, ax=list(axes), shrink=0.8, label="share of the true class")
    _save(figure, path)


def draw_sweep_comparison(
    jobs: Sequence[tuple[str, Sequence[Mapping[str, float]]]],
    metric: str,
    path: str | Path,
    monitor_mode: str = "min",
) -> bool:
    """Draw each sweep job's ``metric`` against the epoch, one line a job, to ``path``.

    ``jobs`` are (label, epoch rows) pairs; the label (the job's overrides) names its line.
    The job with the best value (min or max by ``monitor_mode``) is drawn thicker and named in
    the title. Jobs without the metric are left out; returns False, writing nothing, when no
    job has it, True when the picture was written.
    """
    from matplotlib.figure import Figure

    _check_mode(monitor_mode)
    curves = [(label or f"job {i}", _series(rows, metric)) for i, (label, rows) in enumerate(jobs)]
    curves = [(label, series) for label, series in curves if series[1].size]
    if not curves:
        return False
    best_of = np.min if monitor_mode == "min" else np.max
    bests = [float(best_of(values)) for _, (_, values) in curves]
    winner = int(np.argmin(bests) if monitor_mode == "min" else np.argmax(bests))
    # The legend goes below the axes, in two columns when there are many jobs: the figure
    # grows with it, so the curves keep their size however many jobs the sweep has.
    legend_columns = 1 if len(curves) <= 8 else 2
    legend_height = 0.22 * math.ceil(len(curves) / legend_columns)
    figure = Figure(figsize=(9.0, 4.5 + legend_height), layout="constrained")
    ax = figure.add_subplot()
    for i, (label, (epochs, values)) in enumerate(curves):
        # The default colour cycle repeats after 10 lines: the line style tells those apart.
        style = ("-", "--", ":", "-.")[i // 10 % 4]
        width = 2.8 if i == winner else 1.2
        ax.plot(
            epochs,
            values,
            style,
            marker="o",
            markersize=3,
            linewidth=width,
            label=_shorten(label),
            zorder=3 if i == winner else 2,
        )
    ax.set(xlabel="epoch", ylabel=metric)
    ax.grid(alpha=0.3)
    _integer_ticks(ax)
    figure.legend(loc="outside lower center", ncols=legend_columns, fontsize="small")
    best_label = _shorten(curves[winner][0])
    figure.suptitle(f"{metric} ({monitor_mode}): best {bests[winner]:.4g} by {best_label}")
    _save(figure, path)
    return True


def _check_mode(mode: str) -> None:
    if mode not in ("min", "max"):
        raise ValueError(f"monitor_mode must be 'min' or 'max', not {mode!r}")


def _number(value: Any) -> float:
    """A cell as a float; NaN when missing or not a number (rows read back from a CSV hold
    strings, and empty ones where a metric was not logged)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _series(rows: Sequence[Mapping[str, Any]], column: str | None) -> Series:
    """The epochs and values of ``column`` where it is a finite number. Gaps are dropped
    rather than drawn as NaN, so a metric logged every few epochs stays one connected line."""
    points = np.array(
        [
            (_number(row.get("epoch", index + 1)), _number(row.get(column, math.nan)))
            for index, row in enumerate(rows)
        ],
        dtype=float,
    ).reshape(-1, 2)
    points = points[np.isfinite(points).all(axis=1)]
    return points[:, 0], points[:, 1]


def _best(series: Series, mode: str) -> tuple[float, float] | None:
    """(epoch, value) of the best point; the earliest one on a tie, as a checkpoint keeps it."""
    epochs, values = series
    if not values.size:
        return None
    index = int(np.argmin(values) if mode == "min" else np.argmax(values))
    return float(epochs[index]), float(values[index])


def _panel_name(column: str) -> str:
    """The subplot a column is drawn in: its metric name for a stage's column (``val/loss``:
    ``loss``), ``lr`` for every learning rate, else the column itself."""
    stage, _, name = column.partition("/")
    if stage in STAGES and name:
        return name
    return "lr" if stage == "lr" else column


def _panels(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, dict[str, Series]]]:
    """The subplots in their order (losses, the others alphabetically, lr), each with its
    columns' series; columns without a single finite value are left out."""
    columns = dict.fromkeys(key for row in rows for key in row)
    panels: dict[str, dict[str, Series]] = {}
    for column in columns:
        if column in ("epoch", "step") or column.startswith("time/"):
            continue
        series = _series(rows, column)
        if series[1].size:
            panels.setdefault(_panel_name(column), {})[column] = series
    order = sorted(panels, key=lambda name: (name == "lr", not name.startswith("loss"), name))
    return [(name, panels[name]) for name in order]


def _draw_panel(
    ax: Axes,
    name: str,
    series: dict[str, Series],
    monitor: str | None,
    best: tuple[float, float] | None,
) -> None:
    for column, (epochs, values) in series.items():
        stage, _, rest = column.partition("/")
        label = stage if stage in STAGES and rest else column
        # Markers as well as lines: a run's first epoch is a single point, invisible as a line.
        # Each stage keeps its colour in every panel (train blue, val orange, test green).
        color = f"C{STAGES.index(stage)}" if stage in STAGES and rest else None
        ax.plot(epochs, values, marker="o", markersize=3, label=label, color=color)
    if name == "lr" and all((values > 0).all() for _, values in series.values()):
        ax.set_yscale("log")  # warmup and decay move a learning rate by decades
    ax.set(title=name, xlabel="epoch")
    ax.grid(alpha=0.3)
    _integer_ticks(ax)
    if best is not None:
        ax.axvline(best[0], color="grey", linestyle="--", linewidth=1)
        if monitor in series:
            _mark_best(ax, best)
    ax.legend(fontsize="small")


def _mark_best(ax: Axes, best: tuple[float, float]) -> None:
    """A star on the best point and its value beside it, towards the middle of the axes so
    the text stays inside them: left of a point in the right half, below one in the top half."""
    epoch, value = best
    ax.plot([epoch], [value], marker="*", markersize=12, color="crimson", zorder=4)
    # Where the point lies as a fraction of the axes, whatever the scale (log or linear),
    # once the limits take in every curve.
    ax.autoscale_view()
    x, y = ax.transAxes.inverted().transform(ax.transData.transform((epoch, value)))
    ax.annotate(
        f"best: {value:.4g} (epoch {_epoch_text(epoch)})",
        xy=(epoch, value),
        xytext=(-6 if x > 0.5 else 6, -8 if y > 0.5 else 8),
        textcoords="offset points",
        ha="right" if x > 0.5 else "left",
        va="top" if y > 0.5 else "bottom",
        fontsize="small",
    )


def _curves_title(
    rows: Sequence[Mapping[str, Any]],
    monitor: str | None,
    mode: str,
    best: tuple[float, float] | None,
) -> str:
    epochs = f"{len(rows)} epoch{'s' if len(rows) != 1 else ''}"
    if best is None:
        return epochs
    return f"{epochs}; best {monitor} ({mode}): {best[1]:.4g} at epoch {_epoch_text(best[0])}"


def _epoch_text(epoch: float) -> str:
    return str(int(epoch)) if float(epoch).is_integer() else f"{epoch:g}"


def _integer_ticks(ax: Axes) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 2.5 on the axis
    low, high = ax.get_xlim()
    if high - low < 2:  # a single epoch: widen the axis so its one tick is a whole number
        middle = (low + high) / 2
        ax.set_xlim(middle - 1, middle + 1)


def _counts(matrix: Any, classes: int) -> np.ndarray:
    """A square float array of counts, from a tensor (on any device), an array or lists."""
    # .tolist() reads a tensor on any device without importing torch here.
    counts = np.asarray(matrix.tolist() if hasattr(matrix, "tolist") else matrix, dtype=float)
    if counts.shape != (classes, classes):
        raise ValueError(
            f"a confusion matrix for {classes} classes is {classes}x{classes}, "
            f"not {'x'.join(map(str, counts.shape))}"
        )
    return counts


def _draw_matrix(ax: Axes, title: str, counts: np.ndarray, class_names: Sequence[str]) -> Any:
    """One confusion matrix on ``ax``; returns its image, for the colour bar."""
    totals = counts.sum(axis=1, keepdims=True)
    # A class with no sample has a row of zeros: share 0, not a division by zero.
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    size = max(5.0, min(10.0, 120 / len(class_names)))
    for (true, predicted), count in np.ndenumerate(counts):
        share = shares[true, predicted]
        text = f"{_count_text(count)}\n{share:.0%}"
        color = "white" if share > 0.5 else "black"
        # Out of the layout: the cells lie inside the axes, so constrained layout need not
        # measure hundreds of texts to find the margins.
        ax.text(
            predicted,
            true,
            text,
            ha="center",
            va="center",
            fontsize=size,
            color=color,
            in_layout=False,
        )
    ticks = range(len(class_names))
    crowded = len(class_names) > 4 or max(map(len, class_names), default=0) > 6
    ax.set_xticks(
        ticks,
        class_names,
        fontsize=size + 1,
        rotation=45 if crowded else 0,
        ha="right" if crowded else "center",
        rotation_mode="anchor",
    )
    ax.set_yticks(ticks, class_names, fontsize=size + 1)
    total = counts.sum()
    accuracy = f"{np.trace(counts) / total:.2%}" if total else "n/a"
    ax.set(xlabel="predicted", ylabel="true", title=f"{title}\naccuracy {accuracy}")
    return image


def _count_text(count: float) -> str:
    return str(int(count)) if float(count).is_integer() else f"{count:.3g}"


def _shorten(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def _fixed_margins(figure: Figure, grid_rows: int) -> None:
    """Margins in inches, for the curves' grid of subplots: half the drawing time of
    ``layout="constrained"``, which measures every label first (0.2 s against 0.35 s)."""
    width, height = figure.get_size_inches()
    figure.subplots_adjust(
        left=0.75 / width,
        right=1 - 0.2 / width,
        bottom=0.55 / height,
        top=1 - 0.75 / height,
        wspace=0.3,
        hspace=0.75 / (height / grid_rows - 1.3),
    )


def _save(figure: Figure, path: str | Path) -> None:
    """Write ``figure`` to ``path`` atomically (see :mod:`torchcamp.trainer.files`).

    A failed save leaves the previous picture intact and no temporary file behind. No fsync:
    a picture is redrawn every epoch, not worth a disk flush.
    """
    path = Path(path)
    with written_atomically(path) as temporary:
        # The format is explicit: matplotlib would guess it from the temporary's ".tmp".
        figure.savefig(temporary, format=path.suffix.lstrip(".").lower() or "png", dpi=DPI)
