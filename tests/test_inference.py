"""``evaluate`` and ``predict`` from a checkpoint alone: predictions match the model's own
forward, evaluation reproduces the run's metrics, and mistakes are one line with exit code 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import preset_settings, train_in_process
from PIL import Image
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d
from torchvision.transforms.functional import to_tensor

from torchcamp.datasets.names import load_names, to_ascii
from torchcamp.tasks import dcgan, hymenoptera, names, rmb
from torchcamp.tasks.contract import PredictOptions
from torchcamp.tasks.contract import describe_training_data as describe
from torchcamp.tasks.models import LeNet
from torchcamp.trainer.app.data import build_transforms
from torchcamp.trainer.checkpoint import load_checkpoint, load_weights, save_checkpoint
from torchcamp.trainer.errors import UserError
from torchcamp.trainer.inference import check_same_data


def run_command(monkeypatch, capsys, command: str, *args: str) -> tuple[int, str, str]:
    """``evaluate ARGS`` or ``predict ARGS`` in this process (what the console script runs):
    ``(exit code, stdout, stderr)``."""
    from torchcamp.trainer.app import cli

    monkeypatch.setattr(sys, "argv", [command, *args])
    entry = {"evaluate": cli.evaluate_main, "predict": cli.predict_main}[command]
    try:
        entry()
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def records(out: str) -> list[dict]:
    """The JSON lines ``predict`` printed (a ``train`` run in this process may log to stdout)."""
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def metrics_printed(out: str) -> dict:
    """The JSON object ``evaluate`` printed (indented: from a line ``{`` to a line ``}``)."""
    lines = out.splitlines()
    start = lines.index("{")
    return json.loads("\n".join(lines[start : lines.index("}", start) + 1]))


@pytest.fixture(scope="module")
def rmb_run(tmp_path_factory) -> Path:
    """A finished two-epoch LeNet run on the synthetic banknotes (its run directory)."""
    tmp_path = tmp_path_factory.mktemp("rmb")
    with pytest.MonkeyPatch.context() as monkeypatch:
        code, run_dir = train_in_process(
            monkeypatch, tmp_path, "task=rmb", "data.synthetic=true", "trainer.max_epochs=2"
        )
    assert code == 0
    return run_dir


# ---- evaluate -------------------------------------------------------------------------------


@pytest.mark.slow
def test_evaluate_reproduces_the_runs_final_metrics(rmb_run, monkeypatch, capsys, tmp_path):
    run_metrics = json.loads((rmb_run / "metrics.json").read_text())
    # The run's rendered data, read as real data: data.* overrides change the saved config.
    data = ("data.synthetic=false", f"data.root={rmb_run / 'synthetic_data'}")
    checkpoints = rmb_run / "checkpoints"

    # metrics.json has the last epoch's val/* ...
    code, out, err = run_command(
        monkeypatch, capsys, "evaluate", f"ckpt={checkpoints / 'last.pt'}", *data,
        f"output_dir={tmp_path / 'last'}",
    )  # fmt: skip
    assert code == 0, err
    last = metrics_printed(out)
    val_keys = [key for key in run_metrics if key.startswith("val/")]
    assert {"val/loss", "val/acc", "val/macro_acc"} <= set(val_keys)
    for key in val_keys:
        assert last[key] == pytest.approx(run_metrics[key], abs=1e-6), key
    assert last["status"] == "evaluated" and last["checkpoint"] == str(checkpoints / "last.pt")
    assert json.loads((tmp_path / "last" / "metrics.json").read_text()) == last

    # ... and test/* with the best weights; best.pt's val metric is the run's best.
    monkeypatch.chdir(tmp_path)  # the default output directory: outputs/DATE/TIME-evaluate
    code, out, err = run_command(
        monkeypatch, capsys, "evaluate", f"ckpt={checkpoints / 'best.pt'}", *data
    )
    assert code == 0, err
    best = metrics_printed(out)
    test_keys = [key for key in run_metrics if key.startswith("test/")]
    assert {"test/loss", "test/acc"} <= set(test_keys)
    for key in test_keys:
        assert best[key] == pytest.approx(run_metrics[key], abs=1e-6), key
    saved_best = load_checkpoint(checkpoints / "best.pt")["best"]
    assert best["val/acc"] == pytest.approx(saved_best, abs=1e-6)
    (written,) = (tmp_path / "outputs").glob("*/*-evaluate/metrics.json")
    assert json.loads(written.read_text()) == best


# ---- predict --------------------------------------------------------------------------------


@pytest.mark.slow
def test_rmb_predict_matches_the_models_own_forward(rmb_run, monkeypatch, capsys, tmp_path):
    # The checkpoint alone, moved away from its run and its data.
    checkpoint = tmp_path / "elsewhere" / "lenet.pt"
    checkpoint.parent.mkdir()
    shutil.copy(rmb_run / "checkpoints" / "best.pt", checkpoint)
    notes = rmb_run / "synthetic_data" / "RMB_data"
    ones = sorted((notes / "1").glob("*.jpg"))[:2]
    folder = shutil.copytree(notes / "100", tmp_path / "hundreds")
    (folder / "notes.txt").write_text("not an image: skipped in a folder")
    code, out, err = run_command(
        monkeypatch, capsys, "predict", f"ckpt={checkpoint}",
        f"inputs=[{ones[0]},{ones[1]},{folder}]", "data.batch_size=16", "device=cpu",
    )  # fmt: skip
    assert code == 0, err
    files = [*ones, *sorted(folder.glob("*.jpg"))]
    predicted = records(out)
    assert [record["file"] for record in predicted] == [str(path) for path in files]

    model = LeNet(num_classes=2)
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    model.eval()
    # The course's evaluation transform, as task=rmb configures it (conf/transforms/rmb.yaml).
    transform = build_transforms(preset_settings("rmb", tmp_path).transforms)["eval"]
    images = torch.stack([transform(Image.open(path).convert("RGB")) for path in files])
    with torch.no_grad():
        probs = model(images).softmax(dim=1)
    for record, row in zip(predicted, probs, strict=True):
        assert record["label"] == ("1", "100")[int(row.argmax())]
        assert record["prob"] == pytest.approx(float(row.max()), abs=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_predict_and_evaluate_on_cuda_match_the_cpu(rmb_run, monkeypatch, capsys, tmp_path):
    checkpoint = rmb_run / "checkpoints" / "best.pt"
    notes = str(rmb_run / "synthetic_data" / "RMB_data")
    data = ("data.synthetic=false", f"data.root={rmb_run / 'synthetic_data'}")
    outputs = {}
    for device in ("cpu", "cuda"):
        code, out, err = run_command(
            monkeypatch, capsys, "predict", f"ckpt={checkpoint}", f"inputs={notes}",
            f"device={device}",
        )  # fmt: skip
        assert code == 0, err
        code, evaluated, err = run_command(
            monkeypatch, capsys, "evaluate", f"ckpt={checkpoint}", *data, f"device={device}",
            f"output_dir={tmp_path / device}",
        )  # fmt: skip
        assert code == 0, err
        outputs[device] = (records(out), metrics_printed(evaluated))
    (cpu_records, cpu_metrics), (cuda_records, cuda_metrics) = outputs["cpu"], outputs["cuda"]
    assert [r["label"] for r in cuda_records] == [r["label"] for r in cpu_records]
    for a, b in zip(cuda_records, cpu_records, strict=True):
        assert a["prob"] == pytest.approx(b["prob"], abs=1e-4)
    assert cuda_metrics["test/acc"] == pytest.approx(cpu_metrics["test/acc"], abs=1e-6)


def test_hymenoptera_predict_uses_the_runs_image_size(tmp_path):
    photo = tmp_path / "ant.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), np.uint8)).save(photo)
    torch.manual_seed(0)
    model = LeNet(num_classes=2).eval()
    # What predict builds from the run's config: its data.* keys and its transforms.
    settings = preset_settings("hymenoptera", tmp_path, "data.image_size=48")
    options = PredictOptions(
        device=torch.device("cpu"), output_dir=tmp_path, data={"classes": ["ants", "bees"]},
        data_options=settings.data.options, transforms=build_transforms(settings.transforms),
    )  # fmt: skip
    (record,) = hymenoptera.TASK.predict(model, [str(photo)], options)
    image = build_transforms(settings.transforms)["eval"](Image.open(photo).convert("RGB"))
    assert image.shape == (3, 48, 48)
    with torch.no_grad():
        probs = model(image[None]).softmax(dim=1)[0]
    assert record == {
        "file": str(photo),
        "label": ["ants", "bees"][int(probs.argmax())],
        "prob": pytest.approx(float(probs.max()), abs=1e-6),
    }


@pytest.mark.slow
def test_names_predict_gives_the_top_three_languages_of_the_models_softmax(
    monkeypatch, capsys, tmp_path
):
    code, run_dir = train_in_process(
        monkeypatch, tmp_path, "task=names", "data.synthetic=true", "trainer.max_epochs=1",
        "model.hidden_size=16", "model.embedding_dim=8",
    )  # fmt: skip
    assert code == 0
    listed = tmp_path / "more_names.txt"
    listed.write_text("Okamoto\n\nHansberg\n", encoding="utf-8")
    given = ["Lamino", "O'Bradaigh", "Krzysztofski", "Müller", "No"]  # No: a name, not false
    code, out, err = run_command(
        monkeypatch, capsys, "predict", f"ckpt={run_dir / 'checkpoints' / 'last.pt'}",
        f"inputs=[{','.join(given)},{listed}]", "data.batch_size=4", "device=cpu",
    )  # fmt: skip
    assert code == 0, err
    predicted = records(out)
    assert [record["name"] for record in predicted] == [*given, "Okamoto", "Hansberg"]

    # The vocabulary and languages of the training data, and the model one name at a time.
    train_set = load_names(run_dir / "synthetic_data", seed=42)["train"]
    model = names.GRUClassifier(
        num_classes=len(train_set.classes), vocab_size=len(train_set.vocab), hidden_size=16,
        embedding_dim=8,
    )  # fmt: skip
    model.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"])
    model.eval()
    for record in predicted:
        tokens = train_set.vocab.encode(to_ascii(record["name"]))
        with torch.no_grad():
            probs = model(tokens[None], torch.tensor([len(tokens)])).softmax(dim=1)[0]
        top = probs.topk(3)
        assert [entry["label"] for entry in record["top"]] == [
            train_set.classes[index] for index in top.indices.tolist()
        ]
        for entry, prob in zip(record["top"], top.values.tolist(), strict=True):
            assert entry["prob"] == pytest.approx(prob, abs=1e-6)


@pytest.mark.slow
def test_dcgan_predict_writes_n_images_and_a_grid(monkeypatch, capsys, tmp_path):
    code, run_dir = train_in_process(
        monkeypatch, tmp_path, "task=dcgan", "data.synthetic=true", "model.ngf=4",
        "model.ndf=4", "data.batch_size=96", "trainer.max_epochs=1",
    )  # fmt: skip
    assert code == 0
    checkpoint = run_dir / "checkpoints" / "last.pt"
    out_dir = tmp_path / "drawn"
    code, out, err = run_command(
        monkeypatch, capsys, "predict", f"ckpt={checkpoint}", "predict.num_images=5",
        "predict.seed=3", f"predict.output_dir={out_dir}", "data.batch_size=5", "device=cpu",
    )  # fmt: skip
    assert code == 0, err
    samples = sorted(out_dir.glob("sample_*.png"))
    assert [record["file"] for record in records(out)] == [
        *map(str, samples),
        str(out_dir / "grid.png"),
    ]
    assert len(samples) == 5 and records(out)[-1]["grid"] is True
    with Image.open(out_dir / "grid.png") as grid:
        assert grid.size == (3 * 66 + 2, 2 * 66 + 2)  # 3 columns, 2 rows, 2 px padding

    # The first image is the generator's own output for the seeded noise.
    model = dcgan.DCGAN(nz=100, ngf=4, ndf=4)
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    model.eval()
    noise = torch.randn(5, 100, 1, 1, generator=torch.Generator().manual_seed(3))
    expected = dcgan.generate(model.generator, noise)[0]
    pixels = (expected * 0.5 + 0.5).mul(255).add(0.5).clamp(0, 255).to(torch.uint8)
    with Image.open(samples[0]) as first:
        written = torch.from_numpy(np.array(first)).permute(2, 0, 1)
    assert written.shape == (3, 64, 64)
    assert (written.int() - pixels.int()).abs().max() <= 1

    # No held-out data: nothing to evaluate.
    code, _, err = run_command(
        monkeypatch, capsys, "evaluate", f"ckpt={checkpoint}", "data.synthetic=false",
        f"data.root={run_dir / 'synthetic_data'}",
    )  # fmt: skip
    assert code == 2 and "task=dcgan has no val or test data" in err


@pytest.mark.slow
def test_pennfudan_predict_writes_the_detectors_boxes_above_the_threshold(
    monkeypatch, capsys, tmp_path
):
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from torchcamp.tasks import pennfudan
    from torchcamp.trainer.app import builders

    # A checkpoint as train writes it, of an untrained small detector (training one for an
    # epoch takes about 30 s on two cores; predict does not care how good the weights are).
    fast_detector = (
        "model.min_size=128", "model.max_size=192", "+model.rpn_post_nms_top_n_test=50",
        "+model.box_detections_per_img=20",
    )  # fmt: skip
    with initialize_config_module("torchcamp.conf", version_base="1.3"):
        config = OmegaConf.to_container(
            compose("config", overrides=["task=pennfudan", *fast_detector]), resolve=True
        )
    train_set = SimpleNamespace(classes=("background", "pedestrian"))
    torch.manual_seed(0)
    model = builders.build_model(config["model"], pennfudan.TASK, train_set).eval()
    meta = {"task": "pennfudan", "choices": {}, "data": pennfudan.describe_data(train_set)}
    checkpoint = tmp_path / "detector.pt"
    save_checkpoint(
        {"model": model.state_dict(), "epoch": 0, "config": config, "meta": meta}, checkpoint
    )

    pennfudan.make_synthetic_data(tmp_path / "data", seed=0)
    photos = sorted((tmp_path / "data" / "PennFudanPed" / "PNGImages").glob("*.png"))[:3]
    out_dir = tmp_path / "detections"
    code, out, err = run_command(
        monkeypatch, capsys, "predict", f"ckpt={checkpoint}",
        f"inputs=[{','.join(map(str, photos))}]", "predict.threshold=0.3",
        f"predict.output_dir={out_dir}", "data.batch_size=4", "device=cpu",
    )  # fmt: skip
    assert code == 0, err
    predicted = records(out)
    assert json.loads((out_dir / "predictions.json").read_text()) == predicted
    assert [record["file"] for record in predicted] == [str(photo) for photo in photos]

    # The detector's own forward on the same batch, kept at the same threshold.
    with torch.no_grad():
        detections = model([to_tensor(Image.open(photo).convert("RGB")) for photo in photos])
    assert any(record["boxes"] for record in predicted)  # an untrained detector, unsure of all
    for record, detection, photo in zip(predicted, detections, photos, strict=True):
        keep = detection["scores"] >= 0.3
        assert record["scores"] == pytest.approx(detection["scores"][keep].tolist(), abs=1e-5)
        assert torch.allclose(
            torch.tensor(record["boxes"]).reshape(-1, 4), detection["boxes"][keep], atol=1e-3
        )
        assert record["labels"] == ["pedestrian"] * int(keep.sum())
        assert record["drawn"] == str(out_dir / photo.name)
        with Image.open(photo) as original, Image.open(record["drawn"]) as drawn:
            assert drawn.size == original.size


def test_weights_from_frozen_batchnorm_load_into_batchnorm_and_compute_the_same():
    # A detector finetuned from COCO has FrozenBatchNorm2d; rebuilt without downloading COCO's
    # weights it has BatchNorm2d, which has one more buffer (num_batches_tracked).
    torch.manual_seed(0)
    frozen = nn.Sequential(nn.Conv2d(3, 4, 3), FrozenBatchNorm2d(4))
    for buffer in frozen[1].buffers():
        buffer.uniform_(0.5, 1.5)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    load_weights(plain, frozen.state_dict(), "checkpoint ckpt.pt")
    images = torch.randn(2, 3, 8, 8)
    assert torch.allclose(plain(images), frozen(images), atol=1e-6)
    wider = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5))
    with pytest.raises(UserError, match=r"ckpt.pt does not fit .*size mismatch"):
        load_weights(wider, frozen.state_dict(), "checkpoint ckpt.pt")


def test_evaluate_refuses_data_with_other_classes_than_the_checkpoints():
    other = SimpleNamespace(classes=("1", "50"))
    with pytest.raises(UserError, match=r"trained on other classes .* \['1', '100'\] vs"):
        check_same_data(Path("best.pt"), {"classes": ["1", "100"]}, describe(rmb.TASK, other))
    check_same_data(Path("best.pt"), None, describe(rmb.TASK, other))  # older: unchecked


# ---- mistakes -------------------------------------------------------------------------------


def old_checkpoint(source: Path, target: Path) -> Path:
    """``source`` as an older torchcamp wrote it: no ``meta["data"]``."""
    state = load_checkpoint(source)
    state["meta"] = {k: v for k, v in state["meta"].items() if k != "data"}
    save_checkpoint(state, target)
    return target


def other_format(source: Path, target: Path) -> Path:
    torch.save(load_checkpoint(source) | {"format": 1}, target)
    return target


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("predict", ["inputs=a.jpg"], "no checkpoint: give ckpt="),
        ("evaluate", ["ckpt=missing.pt"], "ckpt=missing.pt: no such checkpoint file"),
        ("predict", ["ckpt={garbage}", "inputs=a.jpg"], "cannot read checkpoint"),
        ("predict", ["ckpt={format1}", "inputs=a.jpg"], "is a format-1 checkpoint"),
        ("predict", ["ckpt={old}", "inputs={image}"], "has no description of its training data"),
        ("predict", ["ckpt={best}", "inputs=[{image},nowhere.jpg]"], "no such file or folder"),
        ("predict", ["ckpt={best}", "inputs={garbage}"], "cannot read image"),
        ("predict", ["ckpt={best}"], "no inputs: give images with inputs="),
        ("predict", ["ckpt={best}", "inputs={empty}"], "no images"),
        ("predict", ["ckpt={best}", "inputs={image}", "predict.colour=red"], "is not an option"),
        ("predict", ["ckpt={best}", "predict.threshold=2"], "predict.threshold=2 is not allowed"),
        ("predict", ["ckpt={best}", "predict.threshold=[0.5"], "cannot read predict.threshold"),
        ("evaluate", ["ckpt={best}", "data.nope=1"], "cannot apply data.nope=1"),
        ("evaluate", ["ckpt={best}", "data.batch_size=[1"], "cannot apply data.batch_size=[1"),
        ("evaluate", ["ckpt={best}", "device=ddp"], "device=ddp: evaluate and predict run in"),
        ("evaluate", ["ckpt={best}", "data.batch_size=0"], "data.batch_size=0 is not allowed"),
        ("evaluate", ["ckpt={best}", "data.synthetic=false", "data.root={empty}"], "RMB_data"),
        ("evaluate", ["best.pt"], "'best.pt' is not key=value"),
    ],
)
def test_mistakes_are_one_line_with_exit_code_2(
    rmb_run, monkeypatch, capsys, tmp_path, command, args, message
):
    best = rmb_run / "checkpoints" / "best.pt"
    (tmp_path / "empty").mkdir()
    (tmp_path / "garbage").write_bytes(b"not a checkpoint, not an image")
    paths = {
        "best": best,
        "garbage": tmp_path / "garbage",
        "empty": tmp_path / "empty",
        "image": next((rmb_run / "synthetic_data" / "RMB_data" / "1").glob("*.jpg")),
        "old": old_checkpoint(best, tmp_path / "old.pt"),
        "format1": other_format(best, tmp_path / "format1.pt"),
    }
    monkeypatch.chdir(tmp_path)
    code, out, err = run_command(monkeypatch, capsys, command, *(a.format(**paths) for a in args))
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and message in errors[0], err
    assert "Traceback" not in err and records(out) == []


@pytest.mark.slow
@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_console_scripts_answer_help_without_importing_torch(tmp_path, command):
    probe = (
        f"import sys; sys.argv = [{command!r}, '--help']\n"
        "from torchcamp.trainer.app import cli\n"
        f"cli.{command}_main()\n"
        "print(sorted({'torch', 'torchvision', 'tensorboard'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert f"{command} ckpt=PATH" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout[-500:]
