"""Pictures of a run: curves, confusion matrices and sweep comparisons are PNGs written
atomically, and importing torchcamp does not import matplotlib."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from torchcamp.trainer import plots
from torchcamp.trainer.errors import WriteFailed


def epoch_rows(epochs: int) -> list[dict[str, float]]:
    """Rows as in a run's metrics.csv: val/loss is lowest at epoch 3 of 5 and later."""
    return [
        {
            "epoch": epoch,
            "step": 10 * epoch,
            "train/loss": 1.0 / epoch,
            "val/loss": 0.1 * abs(epoch - 3) + 0.2,
            "train/acc": 1 - 1.0 / (epoch + 1),
            "val/acc": 0.5 + 0.01 * epoch,
            "lr": 0.1 * 0.5**epoch,
            "time/epoch_seconds": 2.0,
        }
        for epoch in range(1, epochs + 1)
    ]


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def test_curves_are_a_png_grid_with_no_temporary_file_left(tmp_path):
    path = tmp_path / "plots" / "curves.png"  # the folder is created
    plots.draw_curves(epoch_rows(5), path, monitor="val/loss")
    width, height = png_size(path)
    # loss, acc and lr: one row of three subplots, wider than high.
    assert 1000 <= width <= 1600 and 250 <= height <= 500
    assert leftovers(path.parent) == []


@pytest.fixture
def drawn(monkeypatch):
    """The figures the functions would save, in order, instead of saving them."""
    figures = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: figures.append(figure))
    return figures


def test_curves_group_by_metric_name_losses_first_and_lr_last(drawn):
    row = {
        "epoch": 1,
        "step": 1,
        "val/auc": 0.7,
        "train/acc": 0.5,
        "val/loss": 1.0,
        "train/loss_D": 0.3,
        "lr": 0.1,
        "lr/head": 0.2,
        "time/epoch_seconds": 9.0,
        "grad_norm": 2.0,
        "val/never": math.nan,
    }
    plots.draw_curves([row], "unused.png")
    axes = [ax for ax in drawn[0].axes if ax.axison]
    assert [ax.get_title() for ax in axes] == ["loss", "loss_D", "acc", "auc", "grad_norm", "lr"]
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["val"]
    assert [t.get_text() for t in axes[-1].get_legend().get_texts()] == ["lr", "lr/head"]
    assert axes[-1].get_yscale() == "log"


def test_best_epoch_is_a_dashed_line_everywhere_and_annotated_on_its_curve(drawn):
    plots.draw_curves(epoch_rows(5), "unused.png", monitor="val/loss")
    figure = drawn[0]
    assert figure.get_suptitle() == "5 epochs; best val/loss (min): 0.2 at epoch 3"
    for ax in figure.axes:
        dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
        assert [list(line.get_xdata()) for line in dashed] == [[3.0, 3.0]]
    notes = {ax.get_title(): [t.get_text() for t in ax.texts] for ax in figure.axes}
    assert notes == {"loss": ["best: 0.2 (epoch 3)"], "acc": [], "lr": []}


def test_best_is_the_max_in_max_mode_and_the_earliest_on_a_tie(drawn):
    plots.draw_curves(epoch_rows(5), "unused.png", monitor="val/acc", monitor_mode="max")
    tied = [{"epoch": 1, "val/loss": 0.5}, {"epoch": 2, "val/loss": 0.5}]
    plots.draw_curves(tied, "unused.png", monitor="val/loss")
    assert drawn[0].get_suptitle() == "5 epochs; best val/acc (max): 0.55 at epoch 5"
    assert drawn[1].get_suptitle() == "2 epochs; best val/loss (min): 0.5 at epoch 1"


def test_no_best_marked_without_a_monitor_in_the_rows(drawn):
    plots.draw_curves(epoch_rows(3), "unused.png", monitor="val/missing")
    plots.draw_curves(epoch_rows(3), "unused.png")
    for figure in drawn:
        assert figure.get_suptitle() == "3 epochs"
        for ax in figure.axes:
            assert not ax.texts and len(ax.lines) == len(ax.get_legend().get_texts())


def test_curves_grow_a_grid_row_per_three_metrics(drawn):
    rows = [row | {"train/loss_D": 0.7, "val/auc": 0.8} for row in epoch_rows(4)]
    plots.draw_curves(epoch_rows(4), "unused.png")
    plots.draw_curves(rows, "unused.png")
    (one_width, one_height), (two_width, two_height) = (f.get_size_inches() for f in drawn)
    assert two_width == one_width and two_height > 1.8 * one_height
    assert [ax.axison for ax in drawn[1].axes] == [True] * 5 + [False]  # the sixth is blank


def test_curves_of_a_single_row_show_each_value_as_a_point(tmp_path):
    path = tmp_path / "curves.png"
    plots.draw_curves(epoch_rows(1), path, monitor="val/acc", monitor_mode="max")
    assert min(png_size(path)) > 250


def test_curves_skip_missing_and_nan_values(drawn):
    rows = epoch_rows(6)
    rows[1]["val/loss"] = math.nan
    del rows[2]["val/acc"]
    rows[3]["train/acc"] = ""  # an empty cell, as csv.DictReader gives it
    for row in rows:
        row["val/auc"] = math.nan  # a metric never logged: no subplot
    plots.draw_curves(rows, "unused.png", monitor="val/loss")
    loss, acc, _ = drawn[0].axes
    curves = {line.get_label(): line for line in loss.lines if line.get_marker() == "o"}
    assert list(curves["val"].get_xdata()) == [1, 3, 4, 5, 6]  # one line across the gap
    assert [len(line.get_xdata()) for line in acc.lines if line.get_marker() == "o"] == [5, 5]
    drawn[0].draw_without_rendering()  # lays out and draws, no NaN or log-scale error


def test_curves_of_no_rows_or_no_val_split_still_draw(drawn):
    no_val = [{k: v for k, v in row.items() if not k.startswith("val/")} for row in epoch_rows(3)]
    plots.draw_curves(no_val, "unused.png", monitor="val/loss")
    plots.draw_curves([], "unused.png")
    assert [ax.get_title() for ax in drawn[0].axes] == ["loss", "acc", "lr"]
    assert drawn[1].axes[0].texts[0].get_text() == "no metrics yet"
    drawn[1].draw_without_rendering()


def test_an_unknown_monitor_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="monitor_mode"):
        plots.draw_curves(epoch_rows(2), tmp_path / "curves.png", "val/loss", "best")
    assert not (tmp_path / "curves.png").exists()


def test_a_failed_save_keeps_the_previous_picture(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    path = tmp_path / "curves.png"
    path.write_bytes(b"the picture of epoch 4")
    before = path.read_bytes()

    def fail_after_a_partial_write(self, fname, **kwargs):
        with open(fname, "wb") as file:
            file.write(b"\x89PNG half a picture")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", fail_after_a_partial_write)
    with pytest.raises(WriteFailed, match=r"could not write .*curves.png \(No space left"):
        plots.draw_curves(epoch_rows(5), path, monitor="val/loss")
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_confusion_matrices_side_by_side_from_arrays_and_lists(tmp_path):
    # Tensors go the same way as arrays (.tolist()); torch is left out for its 1.5 s import.
    path = tmp_path / "confusion.png"
    matrices = {
        "val (epoch 10)": np.array([[40, 10], [5, 45]], dtype=np.int64),
        "test (best weights)": np.array([[30, 0], [0, 0]]),  # a class with no sample
        "train": [[1.0, 2.0], [3.0, 4.0]],
    }
    plots.draw_confusion_matrices(matrices, ["ants", "bees"], path)
    width, height = png_size(path)
    assert width > 2.5 * height  # three matrices in a row
    assert leftovers(tmp_path) == []


def test_confusion_matrix_of_18_classes(tmp_path):
    counts = np.random.default_rng(0).integers(0, 20, (18, 18)) + 200 * np.eye(18, dtype=int)
    names = [f"class_{i}" for i in range(18)]
    plots.draw_confusion_matrices({"val (epoch 3)": counts}, names, tmp_path / "cm.png")
    width, height = png_size(tmp_path / "cm.png")
    assert 900 <= height <= 1400 and width > height  # cells big enough to read


def test_confusion_matrix_title_holds_the_accuracy():
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    plots._draw_matrix(ax, "val", np.array([[40.0, 10.0], [5.0, 45.0]]), ["a", "b"])
    assert ax.get_title() == "val\naccuracy 85.00%"
    cells = [text.get_text() for text in ax.texts]
    assert cells == ["40\n80%", "10\n20%", "5\n10%", "45\n90%"]  # count and row share


def test_confusion_matrix_of_the_wrong_shape_is_refused(tmp_path):
    with pytest.raises(ValueError, match="3 classes is 3x3, not 2x2"):
        plots.draw_confusion_matrices({"val": [[1, 2], [3, 4]]}, "abc", tmp_path / "cm.png")
    with pytest.raises(ValueError, match="no confusion matrix"):
        plots.draw_confusion_matrices({}, ["a", "b"], tmp_path / "cm.png")
    assert list(tmp_path.iterdir()) == []


def sweep_jobs() -> list[tuple[str, list[dict[str, float]]]]:
    return [
        (
            f"optimizer=adam optimizer.lr={lr} model.width={'1' * 60}",
            [{"epoch": epoch, "val/loss": lr * 10 / epoch} for epoch in range(1, 6)],
        )
        for lr in (0.1, 0.01, 0.001)
    ] + [("no_val=true", [{"epoch": 1, "train/loss": 1.0}])]


def test_sweep_comparison_draws_the_jobs_that_have_the_metric(tmp_path):
    path = tmp_path / "sweep.png"
    assert plots.draw_sweep_comparison(sweep_jobs(), "val/loss", path) is True
    width, height = png_size(path)
    assert 800 <= width <= 1000 and height > 450
    assert leftovers(tmp_path) == []


def test_sweep_comparison_names_and_thickens_the_best_job(drawn):
    plots.draw_sweep_comparison(sweep_jobs(), "val/loss", "unused.png")
    plots.draw_sweep_comparison(sweep_jobs(), "val/loss", "unused.png", monitor_mode="max")
    for figure, winner in zip(drawn, (2, 0), strict=True):  # lr=0.001 has the lowest loss
        label = sweep_jobs()[winner][0]
        assert figure.get_suptitle().endswith(f"by {plots._shorten(label)}")
        widths = [line.get_linewidth() for line in figure.axes[0].lines]
        assert len(widths) == 3 and max(widths) == widths[winner] > 2 * min(widths)
    assert drawn[0].get_suptitle().startswith("val/loss (min): best 0.002 by")


def test_a_sweep_legend_below_grows_the_figure_with_the_jobs(drawn):
    jobs = sweep_jobs()[:3]
    plots.draw_sweep_comparison(jobs, "val/loss", "unused.png")
    plots.draw_sweep_comparison(jobs * 10, "val/loss", "unused.png")
    (few_width, few_height), (many_width, many_height) = (f.get_size_inches() for f in drawn)
    assert many_width == few_width and many_height > few_height + 2
    assert len(drawn[1].legends) == 1 and len(drawn[1].legends[0].get_texts()) == 30


def test_sweep_comparison_writes_nothing_when_no_job_has_the_metric(tmp_path):
    path = tmp_path / "sweep.png"
    assert plots.draw_sweep_comparison(sweep_jobs(), "val/acc", path) is False
    assert plots.draw_sweep_comparison([], "val/loss", path) is False
    assert list(tmp_path.iterdir()) == []


def test_long_job_labels_are_shortened():
    label = sweep_jobs()[0][0]
    assert len(plots._shorten(label)) == 60 and plots._shorten(label).endswith("…")
    assert plots._shorten("optimizer=sgd") == "optimizer=sgd"


@pytest.mark.slow
def test_importing_torchcamp_does_not_import_matplotlib():
    code = "import sys, torchcamp.trainer.plots; print('matplotlib' in sys.modules)"
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert completed.stdout.strip() == "False"
