"""The ``train`` command end to end on synthetic data: files, TensorBoard, sweeps, resume."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

FAST = ("data.synthetic=true", "trainer.max_epochs=2", "trainer.log_every_n_steps=1")


def read_events(tb_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    return events


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


@pytest.mark.slow
def test_console_script_is_installed():
    script = Path(sys.executable).with_name("train")
    assert script.exists(), "pip install did not create the `train` console script"
    out = subprocess.run([script, "--help"], capture_output=True, text=True, check=True).stdout
    assert "optimizer: " in out and "sgd" in out and "task: " in out and "rmb" in out


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job"]], ids=["--help", "--cfg job"])
def test_help_and_cfg_answer_without_importing_torch(tmp_path, args):
    # What the console script runs, then a look at what it imported (issue 8: fast startup).
    probe = (
        f"import sys; sys.argv = ['train', *{args!r}]\n"
        "from torchcamp.trainer.app.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted({'torch', 'torchvision', 'tensorboard'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout[-500:]


def test_help_lists_every_group_and_composes_the_given_overrides(monkeypatch, capsys):
    from torchcamp.trainer.app.cli import main

    monkeypatch.setattr(sys, "argv", ["train", "--help", "optimizer=adam", "trainer.max_epochs=3"])
    main()
    out = capsys.readouterr().out
    conf = Path(__file__).resolve().parents[1] / "conf"
    for group in (p for p in conf.iterdir() if p.is_dir() and p.name != "hydra"):
        options = ", ".join(sorted(f.stem for f in group.glob("*.yaml")))
        assert f"\n{group.name}: {options}\n" in out
    assert "_target_: torch.optim.Adam" in out and "max_epochs: 3" in out


@pytest.mark.slow
def test_synthetic_run_writes_the_run_directory(run_in_process):
    result = run_in_process(*FAST)
    run_dir = result.run_dir
    for path in (".hydra/config.yaml", "train.log", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run_dir / path).is_file(), path
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    log = (run_dir / "train.log").read_text()
    assert "data.synthetic=true" in log and "parameters" in log and "trainable" in log

    metrics = result.metrics
    for key in ("train/loss", "val/loss", "val/acc", "best/val/acc", "test/acc", "test/loss"):
        assert isinstance(metrics[key], float), key
    assert metrics["epoch"] == 2 and metrics["global_step"] == 8  # 64 train images / 16
    assert metrics["time/fit_seconds"] > 0 and metrics["synthetic"] is True
    assert metrics["status"] == "completed"

    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 2 and checkpoint["global_step"] == 8
    assert checkpoint["config"]["task"]["name"] == "rmb"
    assert set(checkpoint) >= {"model", "optimizers", "schedulers", "scaler", "rng", "best"}
    assert not any(key.startswith("module.") for key in checkpoint["model"])


@pytest.mark.slow
def test_tensorboard_event_file_holds_the_logged_scalars(run_in_process):
    run_dir = run_in_process(*FAST).run_dir
    events = read_events(run_dir / "tb")
    tags = events.Tags()
    scalars = set(tags["scalars"])
    assert {"train/loss_step", "lr/group0", "train/loss", "val/loss", "val/acc"} <= scalars
    assert {"test/acc", "best/val/acc"} <= scalars
    assert [e.step for e in events.Scalars("train/loss_step")] == list(range(1, 9))
    assert [e.step for e in events.Scalars("val/acc")] == [4, 8]
    val_acc = [e.value for e in events.Scalars("val/acc")]
    assert val_acc[-1] == pytest.approx(
        json.loads((run_dir / "metrics.json").read_text())["val/acc"]
    )
    assert "params/conv1.weight" in tags["histograms"]
    assert "grads/conv1.weight" in tags["histograms"]
    assert "data/synthetic/text_summary" in tags["tensors"]
    assert "val/confusion_matrix" in tags["images"]
    assert {"val/macro_acc", "test/macro_acc"} <= scalars
    # The HParams plugin's session summaries are in the same event file (no experiment summary:
    # TensorBoard builds it from every run's, see tests/test_visualize.py).
    plugin_tags = events.PluginTagToContent("hparams")
    assert {"_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(plugin_tags)


@pytest.mark.slow
def test_multirun_writes_one_job_per_combination_and_a_summary(tmp_path, run_in_process):
    run_in_process(
        "-m",
        "optimizer=sgd,adam",
        "trainer.max_epochs=1",
        "data.synthetic=true",
        "hydra.sweep.dir=sweep",
    )
    sweep = tmp_path / "sweep"
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [row["job"] for row in rows] == ["0", "1"]
    assert "optimizer=sgd" in rows[0]["overrides"] and "optimizer=adam" in rows[1]["overrides"]
    assert all(row["status"] == "completed" for row in rows)
    assert all(float(row["val/acc"]) >= 0 for row in rows)


@pytest.mark.slow
def test_two_epochs_equal_one_epoch_plus_resume(run_in_process):
    # On the CPU: CUDA's convolution kernels are not bit-reproducible run to run (unless
    # trainer.deterministic). Resuming mid-epoch, with workers: tests/test_resume_exact.py.
    args = (*FAST, "device=cpu")
    straight = run_in_process(*args)
    first = run_in_process(*args, "trainer.max_epochs=1")
    resumed = run_in_process(*args, f"resume={first.run_dir}/checkpoints/last.pt")
    assert "resumed from" in (resumed.run_dir / "train.log").read_text()
    assert resumed.metrics["epoch"] == 2 and resumed.metrics["global_step"] == 8
    # A run's own last.pt continues that run, in its directory.
    assert resumed.metrics["run_dir"] == str(first.run_dir)
    a, b = final_weights(straight.run_dir), final_weights(first.run_dir)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # The run's curves go on from the checkpoint's step in the same event files, none repeated.
    steps = [e.step for e in read_events(first.run_dir / "tb").Scalars("train/loss_step")]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]


@pytest.mark.slow
def test_resume_auto_picks_the_newest_matching_run(tmp_path, run_in_process):
    # Run directories named by the time, as Hydra's default names them: resume=auto searches.
    runs = tmp_path / "outputs"
    common = ("data.synthetic=true", "trainer.max_epochs=1", "resume=auto", f"output_root={runs}")

    def dated(name: str) -> str:
        return f"hydra.run.dir={runs}/{name}/${{now:%H-%M-%S-%f}}"

    def run_dir(name: str) -> Path:
        (only,) = (runs / name).iterdir()
        return only

    run_in_process(*common, dated("a"))
    assert "starting fresh" in (run_dir("a") / "train.log").read_text()
    run_in_process(*common, "seed=7", dated("b"))
    run_in_process(*common, dated("c"))
    # Run b differs in seed, so the match is run a, which had finished its epoch: nothing is
    # trained again.
    metrics = json.loads((run_dir("c") / "metrics.json").read_text())
    assert metrics["status"] == "skipped" and metrics["run_dir"] == str(run_dir("a").resolve())
    assert metrics["epoch"] == 1
    assert not (run_dir("c") / "checkpoints").exists()


@pytest.mark.slow
def test_bf16_autocast_on_cpu_runs(run_in_process):
    metrics = run_in_process(*FAST, "trainer.precision=bf16-mixed", "device=cpu").metrics
    assert metrics["global_step"] == 8 and metrics["train/loss"] == metrics["train/loss"]  # not NaN


@pytest.mark.slow
def test_accumulation_and_clipping_through_the_cli(run_in_process):
    metrics = run_in_process(
        *FAST,
        "trainer.accumulate_grad_batches=3",
        "trainer.gradient_clip_val=0.5",
        "regularizer=l2",
    ).metrics
    # 4 batches per epoch in windows of 3: one full window and one partial window that still steps.
    assert metrics["global_step"] == 4
    assert "train/reg_loss" in metrics


@pytest.mark.slow
def test_missing_data_is_not_replaced_by_synthetic(run_in_process):
    result = run_in_process("trainer.max_epochs=1", "data.root=empty", check=False)
    assert result.returncode == 2 and "data.synthetic=true" in result.stderr
    assert not result.run_dir.joinpath("synthetic_data").exists()


@pytest.mark.slow
def test_cfg_job_prints_the_config_without_training(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "torchcamp.trainer.app.cli", "--cfg", "job"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "max_epochs" in out and not (tmp_path / "outputs").exists()


def test_histograms_are_counted_in_torch_and_skip_nonfinite_values(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from torchcamp.trainer.callbacks.tensorboard import HISTOGRAM_BINS, TensorBoardLogger

    logger = TensorBoardLogger(tmp_path)
    logger.writer = SummaryWriter(tmp_path)
    values = torch.linspace(-1.0, 3.0, 1000)
    logger._histogram("w", values, 1)
    logger._histogram("same", torch.full((5,), 2.0), 1)
    logger._histogram("diverged", torch.tensor([1.0, float("nan")]), 1)
    logger.writer.close()
    events = read_events(tmp_path)
    assert "diverged" not in events.Tags()["histograms"]
    (hist,) = events.Histograms("w")
    assert hist.histogram_value.num == 1000 and sum(hist.histogram_value.bucket) == 1000
    assert len(hist.histogram_value.bucket) == HISTOGRAM_BINS
    assert (hist.histogram_value.min, hist.histogram_value.max) == (-1.0, 3.0)
    assert hist.histogram_value.bucket_limit[-1] == 3.0
    assert abs(hist.histogram_value.sum - float(values.sum())) < 1e-3
    (same,) = events.Histograms("same")
    assert list(same.histogram_value.bucket) == [5]
