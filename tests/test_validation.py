"""Each invalid value stops the CLI before any work with one line and exit code 2 (the config
checks of trainer/app/validation.py), and so does a bad data file once data is read, unless
``data.skip_corrupt`` leaves it out. What valid options build: test_config_groups.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from torchcamp.trainer.app.validation import validate
from torchcamp.trainer.errors import UserError

CASES = [
    (["optimizer.lr=-0.1"], "optimizer.lr=-0.1"),
    (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0"),
    (["trainer.precision=fp8"], "trainer.precision=fp8"),
    (["trainer.max_epochs=abc"], "trainer.max_epochs=abc"),
    (["trainer.monitor_mode=up"], "trainer.monitor_mode=up"),
    (["data.batch_size=0"], "data.batch_size=0"),
    (["optimizer=nope"], "unknown optimizer option 'nope': choose one of adadelta"),
    (["trainer.nope=1"], "trainer.nope"),
    (["+optimizer.nope=1", "data.synthetic=true"], "cannot build optimizer"),
    (["resume=missing.pt"], "resume=missing.pt"),
    (["data.root=does-not-exist"], "no RMB_data/ or rmb_split/ in data.root=does-not-exist"),
]
if not torch.cuda.is_available():
    CASES += [
        (["trainer.precision=16-mixed"], "trainer.precision=16-mixed needs CUDA"),
        (["device=cuda"], "device=cuda but CUDA is not available"),
    ]


def assert_nothing_written_outside(cwd: Path, run_dir: Path, *made: Path) -> None:
    """The run's cwd holds only its run directory (if any) and what the test itself made."""
    assert set(cwd.iterdir()) <= {run_dir, *made}, sorted(cwd.iterdir())


@pytest.mark.parametrize(("args", "expected"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_invalid_value_gives_one_line_and_exit_2(tmp_path, run_in_process, args, expected):
    result = run_in_process(*args, check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    # Nothing was trained: no checkpoint, no metrics.
    assert not (result.run_dir / "checkpoints").exists()
    assert not (result.run_dir / "metrics.json").exists()
    assert_nothing_written_outside(tmp_path, result.run_dir)


# ---- bad files: the same promise once data is read ----------------------------------------


def corrupt_one_image(root: Path) -> list[str]:
    from torchcamp.datasets.hymenoptera import render_synthetic_hymenoptera

    render_synthetic_hymenoptera(root, seed=0, per_class=4)
    victim = root / "hymenoptera_data" / "train" / "bees" / "bees_001.jpg"
    victim.write_bytes(victim.read_bytes()[:200])  # truncated mid-stream
    return ["task=hymenoptera", f"data.root={root}", "model=lenet", "data.image_size=32"]


def empty_class_folder(root: Path) -> list[str]:
    from torchcamp.datasets.hymenoptera import render_synthetic_hymenoptera

    render_synthetic_hymenoptera(root, seed=0, per_class=4)
    # A training class: val/ and test/ may lack a class (datasets/folders.py), train may not.
    for image in (root / "hymenoptera_data" / "train" / "bees").iterdir():
        image.unlink()
    return ["task=hymenoptera", f"data.root={root}", "model=lenet"]


def bad_annotation_line(root: Path) -> list[str]:
    from torchcamp.datasets.pennfudan import render_synthetic_pennfudan

    render_synthetic_pennfudan(root, seed=0, count=6)
    annotation = sorted((root / "PennFudanPed" / "Annotation").glob("*.txt"))[0]
    # "... : (160, 182) - (302, 431)" -> "... : (160, 18x) - (302, 431)"
    annotation.write_text(re.sub(r": \((\d+), (\d+)\)", r": (\1, \2x)", annotation.read_text()))
    return ["task=pennfudan", f"data.root={root}", "data.val_fraction=0.5"]


FILE_CASES = [
    (corrupt_one_image, ["data.num_workers=0"], "cannot read image .*bees_001.jpg"),
    (corrupt_one_image, ["data.num_workers=2"], "cannot read image .*bees_001.jpg"),
    (empty_class_folder, [], r"no images in .*train/bees \(class bees\)"),
    (bad_annotation_line, [], r"FudanPed00001.txt:\d+"),
    (lambda root: ["task=names", "data.synthetic=true"], ["loss=bce"], "fits two-class tasks"),
    (lambda root: ["data.synthetic=true"], ["loss=none"], "loss=none gives none"),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "args", "expected"),
    FILE_CASES,
    ids=["corrupt image", "corrupt image in a worker", "empty class folder",
         "annotation line", "bce for 5 classes", "no loss"],
)  # fmt: skip
def test_bad_files_give_one_line_and_exit_2(tmp_path, run_in_process, make, args, expected):
    result = run_in_process(*make(tmp_path / "data"), *args, "trainer.max_epochs=1", check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and re.search(expected, lines[0]), lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert_nothing_written_outside(tmp_path, result.run_dir, tmp_path / "data")


@pytest.mark.slow
def test_skip_corrupt_leaves_the_image_out_and_counts_it(tmp_path, run_in_process):
    args = corrupt_one_image(tmp_path / "data")
    result = run_in_process(*args, "data.skip_corrupt=true", "trainer.max_epochs=1")
    assert re.search(r"skipped 1 corrupt image\(s\) in train .*bees_001\.jpg", result.stdout)
    assert result.metrics["data/skipped_corrupt"] == 1


# ---- data.num_workers: auto or a count --------------------------------------------------


def test_num_workers_auto_is_none_on_the_cpu_and_one_per_core_up_to_8_on_cuda(monkeypatch):
    from torchcamp.trainer.app import data

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(data.os, "cpu_count", lambda: 16)
    assert data.num_workers("auto", cpu, 1) == 0
    assert data.num_workers("auto", cuda, 1) == 8
    assert data.num_workers("auto", cuda, 4) == 3  # 4 cores per DDP process, one trains
    assert data.num_workers(2, cpu, 1) == 2
    with pytest.raises(UserError, match=r"data\.num_workers=many .*auto or an integer"):
        validate(OmegaConf.create({"data": {"num_workers": "many"}}))


def test_every_key_torchcamp_reads_itself_has_a_rule():
    """A group's own keys (builders.OWN_KEYS) are left out of its `_target_`'s signature
    check: the rules table is what checks them."""
    from torchcamp.trainer.app.builders import OWN_KEYS
    from torchcamp.trainer.app.validation import RULES

    own = {f"{group}.{key}" for group, keys in OWN_KEYS.items() for key in keys}
    assert own and own <= set(RULES), own - set(RULES)
