"""``task=imagefolder`` from the command line on folders the tests draw: the layouts, odd images,
bad input (one line, exit 2), models of every kind, and what a run leaves for later."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from torchcamp.trainer.checkpoint import load_checkpoint, save_checkpoint

SMALL = ["model=lenet", "data.image_size=32", "trainer.max_epochs=1", "data.batch_size=8"]


def draw(path: Path, seed: int, mode: str = "RGB", size: tuple[int, int] = (20, 16)) -> Path:
    """A small noisy image in ``mode``, saved in the format the suffix says."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if mode == "P":
        image = image.convert("P")
        image.info["transparency"] = 0
    elif mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def class_folders(root: Path, counts: dict[str, int]) -> Path:
    """``root/<class>/<i>.png`` with ``counts[class]`` images each."""
    for index, (name, count) in enumerate(counts.items()):
        for i in range(count):
            draw(root / name / f"{i}.png", seed=1000 * index + i)
    return root


def run_dir_files(run) -> set[str]:
    return {p.name for p in run.run_dir.iterdir()}


@pytest.mark.slow
def test_class_folders_of_every_mode_split_per_class_and_recorded(run_in_process, tmp_path):
    photos = class_folders(tmp_path / "photos", {"cat": 10, "dog": 10})
    draw(photos / "cat" / "grey.png", 1, "L")
    draw(photos / "cat" / "alpha.png", 2, "RGBA")
    draw(photos / "dog" / "palette.gif", 3, "P")
    draw(photos / "dog" / "big.jpg", 4, "RGB", size=(300, 90))
    draw(photos / "owl" / "only.png", 5)  # a 1-image class: it trains, and is not held out
    run = run_in_process("task=imagefolder", f"data.root={photos}", *SMALL)

    assert {"split.csv", "metrics.json", "checkpoints"} <= run_dir_files(run)
    with open(run.run_dir / "split.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 25 and {row["label"] for row in rows} == {"cat", "dog", "owl"}
    split_of = {row["file"]: row["split"] for row in rows}
    assert split_of["owl/only.png"] == "train"
    report = run.metrics["data_report"]
    assert report["images"]["train"] == {"cat": 10, "dog": 10, "owl": 1}
    assert report["total"] == {"train": 21, "val": 2, "test": 2}
    assert report["imbalance"] == 10.0 and report["duplicates"] == []
    meta = load_checkpoint(run.run_dir / "checkpoints" / "best.pt")["meta"]
    assert meta["data"]["classes"] == ["cat", "dog", "owl"]

    # The written split reads back as the same split.
    again = run_in_process(
        "task=imagefolder", f"data.root={photos}", f"data.splits={run.run_dir}/split.csv", *SMALL
    )
    assert (again.run_dir / "split.csv").read_text() == (run.run_dir / "split.csv").read_text()


@pytest.mark.slow
def test_split_folders_with_valid_and_test_are_scored(run_in_process, tmp_path):
    root = tmp_path / "split"
    for split, count in (("train", 6), ("valid", 2), ("test", 2)):
        class_folders(root / split, {"a": count, "b": count})
    run = run_in_process("task=imagefolder", f"data.root={root}", *SMALL)
    assert {"val/acc", "test/acc"} <= set(run.metrics)
    assert run.metrics["data_report"]["total"] == {"train": 12, "val": 4, "test": 4}
    assert "split folders" in (run.run_dir / "train.log").read_text()


@pytest.mark.slow
def test_a_csv_decides_the_split_and_duplicates_across_splits_are_warned(run_in_process, tmp_path):
    photos = class_folders(tmp_path / "photos", {"x": 4, "y": 4})
    (photos / "y" / "copy.png").write_bytes((photos / "x" / "0.png").read_bytes())
    rows = ["file,label,split"] + [
        f"{c}/{i}.png,{c},{'val' if i == 3 else 'train'}" for c in "xy" for i in range(4)
    ]
    rows.append("y/copy.png,y,val")  # the same picture as x/0.png, which is in train
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    run = run_in_process(
        "task=imagefolder", f"data.root={photos}", "data.splits=labels.csv", *SMALL
    )
    report = run.metrics["data_report"]
    assert report["total"] == {"train": 6, "val": 3}
    assert report["duplicates"] == [[str(photos / "x" / "0.png"), str(photos / "y" / "copy.png")]]
    assert "inflates validation accuracy" in run.stdout + (run.run_dir / "train.log").read_text()


@pytest.mark.slow
def test_two_hundred_classes_train(run_in_process, tmp_path):
    photos = class_folders(tmp_path / "many", {f"c{i:03d}": 2 for i in range(200)})
    run = run_in_process(
        "task=imagefolder", f"data.root={photos}", "data.val_fraction=0.5",
        "data.test_fraction=0", *SMALL, "callbacks=[checkpoint]",
    )  # fmt: skip
    assert run.metrics["data_report"]["total"] == {"train": 200, "val": 200}
    assert (
        len(load_checkpoint(run.run_dir / "checkpoints" / "best.pt")["meta"]["data"]["classes"])
        == 200
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("layout", "overrides", "message"),
    [
        ("empty class", [], "no images in"),
        ("one class", [], "at least 2"),
        ("missing", [], "no image folder"),
        ("flat", ["data.val_fraction=0.6", "data.test_fraction=0.5"], "fraction"),
        ("flat", ["data.splits=nope.csv"], "nope.csv"),
        ("flat", ["+data.foo=1"], "~data.foo"),
        ("corrupt", [], "cannot read image"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run_in_process, tmp_path, layout, overrides, message):
    photos = tmp_path / "photos"
    if layout != "missing":
        class_folders(photos, {"a": 3} if layout == "one class" else {"a": 3, "b": 3})
    if layout == "empty class":
        (photos / "c").mkdir()
    if layout == "corrupt":
        (photos / "b" / "9.jpg").write_bytes(b"not an image")
    run = run_in_process("task=imagefolder", f"data.root={photos}", *SMALL, *overrides, check=False)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], lines
    assert "Traceback" not in run.stderr
    assert not (run.run_dir / "checkpoints").exists()


@pytest.mark.slow
def test_a_corrupt_image_can_be_skipped_and_is_counted(run_in_process, tmp_path):
    photos = class_folders(tmp_path / "photos", {"a": 10, "b": 10})
    (photos / "b" / "9.jpg").write_bytes(b"not an image")
    run = run_in_process(
        "task=imagefolder", f"data.root={photos}", "data.skip_corrupt=true",
        "data.val_fraction=0.3", *SMALL,
    )  # fmt: skip
    assert run.metrics["data/skipped_corrupt"] == 1
    assert run.metrics["data_report"]["unreadable"] == 1


@pytest.mark.slow
def test_a_resume_refuses_a_folder_whose_classes_changed(run_in_process, tmp_path):
    photos = class_folders(tmp_path / "photos", {"a": 10, "b": 10})
    first = run_in_process("task=imagefolder", f"data.root={photos}", *SMALL)
    class_folders(photos, {"c": 10})
    resume = f"resume={first.run_dir}/checkpoints/last.pt"
    run = run_in_process(
        "task=imagefolder", f"data.root={photos}", *SMALL, "trainer.max_epochs=2", resume,
        check=False,
    )  # fmt: skip
    assert run.returncode == 2
    assert "trained on other classes" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.slow
def test_torchvision_and_custom_models_train_on_an_image_folder(
    run_in_process, tmp_path, monkeypatch
):
    photos = class_folders(tmp_path / "photos", {"a": 6, "b": 6})
    common = ["task=imagefolder", f"data.root={photos}", *SMALL, "callbacks=none"]
    tv = run_in_process(*common, "model=torchvision", "model.name=mobilenet_v3_small")
    assert tv.metrics["status"] == "completed"

    (tmp_path / "mynets.py").write_text(
        "from torch import nn\n\n"
        "class TinyNet(nn.Module):\n"
        "    def __init__(self, num_classes, width=8):\n"
        "        super().__init__()\n"
        "        self.width = width\n"
        "        self.body = nn.Sequential(nn.Conv2d(3, width, 3), nn.AdaptiveAvgPool2d(1),\n"
        "                                  nn.Flatten(), nn.Linear(width, num_classes))\n\n"
        "    def forward(self, x):\n"
        "        return self.body(x)\n"
    )
    monkeypatch.delitem(sys.modules, "mynets", raising=False)  # gone after the test, too
    custom = ["model=custom", "model._target_=mynets.TinyNet", "+model.width=4"]
    run = run_in_process(*common[:2], "data.image_size=32", "trainer.max_epochs=1", *custom)
    state = load_checkpoint(run.run_dir / "checkpoints" / "best.pt")
    assert state["model"]["body.0.weight"].shape[0] == 4  # +model.width reached the class

    bad = run_in_process(*common, "model=custom", "model._target_=nowhere.Net", check=False)
    assert bad.returncode == 2 and "cannot import nowhere" in bad.stderr
    sys.modules.pop("mynets", None)


@pytest.mark.slow
def test_evaluate_and_predict_from_an_image_folder_checkpoint(
    run_in_process, tmp_path, capsys, monkeypatch
):
    from torchcamp.trainer.app.cli import evaluate_main, predict_main

    photos = class_folders(tmp_path / "photos", {"ant": 10, "bee": 10})
    run = run_in_process(
        "task=imagefolder", f"data.root={photos}", *SMALL, "callbacks=[checkpoint]"
    )
    best = run.run_dir / "checkpoints" / "best.pt"
    for main, args in (
        (evaluate_main, [f"ckpt={best}", f"output_dir={tmp_path / 'eval'}"]),
        (predict_main, [f"ckpt={best}", f"inputs={photos / 'bee'}"]),
    ):
        monkeypatch.setattr(sys, "argv", [main.__name__, *args])
        main()
    out = capsys.readouterr().out
    metrics = json.loads(out[: out.index("}") + 1])
    assert {"val/acc", "test/acc"} <= set(metrics)
    records = [json.loads(line) for line in out[out.index("}") + 1 :].split("\n") if line]
    assert len(records) == 10 and {r["label"] for r in records} <= {"ant", "bee"}


@pytest.mark.slow
def test_synthetic_shapes_and_a_stronger_augmentation(run_in_process):
    run = run_in_process(
        "task=imagefolder", "data.synthetic=true", "transforms=trivialaugment", *SMALL
    )
    assert run.metrics["synthetic"] is True
    assert run.metrics["data_report"]["images"]["train"].keys() == {"circle", "square", "triangle"}


def written_before_tasks_were_objects(checkpoint: Path, **task_options) -> Path:
    """``checkpoint`` as a torchcamp of before the Task contract wrote it: no transforms group,
    the task's own options under ``task.options``."""
    state = load_checkpoint(checkpoint)
    config = {k: v for k, v in state["config"].items() if k != "transforms"}
    config["task"] = {**config["task"], "options": task_options}
    old = checkpoint.with_name("old.pt")
    save_checkpoint({**state, "config": config}, old)
    return old


@pytest.mark.slow
def test_an_old_rmb_checkpoint_is_refused_in_one_line_and_an_old_names_one_loads(
    run_in_process, capsys, monkeypatch
):
    from torchcamp.trainer.app.cli import predict_main

    rmb = run_in_process("task=rmb", "data.synthetic=true", *SMALL, "callbacks=[checkpoint]")
    old = written_before_tasks_were_objects(rmb.run_dir / "checkpoints" / "best.pt")
    monkeypatch.setattr(sys, "argv", ["predict", f"ckpt={old}", "inputs=whatever.jpg"])
    with pytest.raises(SystemExit) as exit_:
        predict_main()
    assert exit_.value.code == 2
    assert f"model.weights_path={old}" in capsys.readouterr().err

    names = run_in_process(
        "task=names", "data.synthetic=true", "trainer.max_epochs=1", "callbacks=[checkpoint]"
    )
    old = written_before_tasks_were_objects(names.run_dir / "checkpoints" / "best.pt")
    monkeypatch.setattr(sys, "argv", ["predict", f"ckpt={old}", "inputs=Nakamura"])
    predict_main()
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert record["name"] == "Nakamura" and len(record["top"]) == 3
