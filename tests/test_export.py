"""``export-model``: a checkpoint's model written as ONNX, TorchScript and an ExportedProgram,
described in a JSON file, and checked against the checkpoint; the files run in their own
runtimes on other batch sizes, and a wrong export or a mistake is one line with exit code 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CUSTOM_MODEL_MODULE, CUSTOM_MODEL_SOURCE, train_in_process

from torchcamp.datasets.names import PAD_INDEX
from torchcamp.tasks.models import LeNet
from torchcamp.tasks.models.recurrent import GRUClassifier
from torchcamp.trainer import export
from torchcamp.trainer.checkpoint import load_checkpoint, save_checkpoint

# The tests run the files with torch.jit.load themselves, which torch 2.14 says is deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")

FAST = ("data.synthetic=true", "trainer.max_epochs=1", "callbacks=[checkpoint]")
ONNX_NEEDS = (
    "format=onnx needs onnx, onnxscript, onnxruntime, not installed here: "
    "pip install 'torchcamp[export]'"
)


def run_export(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``export-model ARGS`` in this process (what the console script runs):
    ``(exit code, stdout, stderr)``."""
    from torchcamp.trainer.app import cli

    monkeypatch.setattr(sys, "argv", ["export-model", *args])
    try:
        cli.export_main()
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def one_error(code: int, err: str) -> str:
    """The single ``error:`` line of a failed command (and no traceback)."""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def trained(tmp_path_factory, *args: str) -> Path:
    tmp_path = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as monkeypatch:
        code, run_dir = train_in_process(monkeypatch, tmp_path, *args, *FAST)
    assert code == 0
    return run_dir / "checkpoints" / "best.pt"


@pytest.fixture(scope="module")
def rmb_ckpt(tmp_path_factory) -> Path:
    """best.pt of a one-epoch LeNet run on the synthetic banknotes (32x32, two classes)."""
    return trained(tmp_path_factory, "task=rmb")


@pytest.fixture(scope="module")
def names_ckpt(tmp_path_factory) -> Path:
    """best.pt of a one-epoch GRU run on the synthetic names (five languages)."""
    return trained(tmp_path_factory, "task=names")


def lenet_of(ckpt: Path) -> LeNet:
    model = LeNet(num_classes=2)
    model.load_state_dict(load_checkpoint(ckpt)["model"])
    return model.eval()


def run_file(path: Path, fmt: str, *inputs: torch.Tensor) -> torch.Tensor:
    """The exported file in its own runtime, used directly (not through torchcamp)."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [node.name for node in session.get_inputs()]
        feeds = {name: tensor.numpy() for name, tensor in zip(names, inputs, strict=True)}
        return torch.from_numpy(session.run(None, feeds)[0])
    if fmt == "torchscript":
        return torch.jit.load(str(path))(*inputs)
    return torch.export.load(str(path)).module()(*inputs)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "exported_program"])
def test_an_image_classifier_exports_and_runs_on_any_batch_size(rmb_ckpt, fmt, monkeypatch, capsys):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    code, out, err = run_export(monkeypatch, capsys, f"ckpt={rmb_ckpt}", f"format={fmt}")
    assert code == 0, err
    path = rmb_ckpt.with_name("best" + export.FORMATS[fmt])  # beside the checkpoint
    described = json.loads(path.with_name(path.name + ".json").read_text())

    check = described["verification"]
    assert check["verified"] and check["max_abs_diff"] <= 1e-4 == check["atol"]
    assert check["top1_agreement"] == 1.0 and check["samples"] == 32
    assert check["exported_batch_size"] == 2 and check["inputs"].startswith("the run's val")
    assert f"max_abs_diff={check['max_abs_diff']:.3g}" in out and "top1_agreement=1.000" in out
    assert described["inputs"] == [
        {"name": "images", "shape": ["batch", 3, 32, 32], "dtype": "float32"}
    ]
    assert described["outputs"][0]["shape"] == ["batch", 2]
    assert described["classes"] == ["1", "100"] and described["image_size"] == [32, 32]
    assert described["normalization"] == {"mean": [0.5] * 3, "std": [0.25] * 3}
    assert described["file"] == path.name and described["task"] == "rmb"
    assert described["model"] == "lenet" and (described["opset"] is None) == (fmt != "onnx")
    assert described["torch_version"] == torch.__version__ and described["torchcamp_version"]

    images = torch.randn(5, 3, 32, 32)  # another batch size than the check's 32 and export's 2
    with torch.no_grad():
        torch.testing.assert_close(
            run_file(path, fmt, images), lenet_of(rmb_ckpt)(images), atol=1e-4, rtol=0
        )


@pytest.mark.slow
def test_names_export_to_torchscript_and_take_names_of_any_length(
    names_ckpt, tmp_path, monkeypatch, capsys
):
    output = tmp_path / "names.pt"
    code, _, err = run_export(
        monkeypatch, capsys, f"ckpt={names_ckpt}", "format=torchscript", f"output={output}"
    )
    assert code == 0, err
    described = json.loads((tmp_path / "names.pt.json").read_text())
    assert described["verification"]["verified"]
    assert described["verification"]["top1_agreement"] == 1.0
    assert [spec["shape"] for spec in described["inputs"]] == [["batch", "length"], ["batch"]]
    assert described["vocab"][:2] == ["<pad>", "<unk>"] and described["padding_index"] == 0
    assert len(described["classes"]) == 5

    state = load_checkpoint(names_ckpt)
    model = GRUClassifier(num_classes=5, vocab_size=len(described["vocab"]))
    model.load_state_dict(state["model"])
    tokens = torch.tensor([[5, 6, 7, 8, 9, 10, 11], [3, 4, PAD_INDEX, 0, 0, 0, 0], [9] + [0] * 6])
    lengths = torch.tensor([7, 2, 1])
    with torch.no_grad():
        expected = model.eval()(tokens, lengths)
    torch.testing.assert_close(torch.jit.load(str(output))(tokens, lengths), expected)


@pytest.mark.slow
def test_names_refuse_the_formats_torch_export_cannot_capture(names_ckpt, monkeypatch, capsys):
    code, _, err = run_export(monkeypatch, capsys, f"ckpt={names_ckpt}", "format=exported_program")
    line = one_error(code, err)
    assert "format=exported_program is not supported for task=names" in line
    assert line.endswith("use format=torchscript")


@pytest.mark.slow
def test_an_export_that_differs_from_the_model_is_refused_with_its_figures(
    rmb_ckpt, tmp_path, monkeypatch, capsys
):
    exported = export.export_model

    def export_then_change_the_weights(model, *args, **kwargs):
        facts = exported(model, *args, **kwargs)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.05)  # the file now holds other weights than the model
        return facts

    monkeypatch.setattr(export, "export_model", export_then_change_the_weights)
    output = tmp_path / "wrong.pt"
    code, out, err = run_export(
        monkeypatch, capsys, f"ckpt={rmb_ckpt}", "format=torchscript", f"output={output}"
    )
    line = one_error(code, err)
    assert "does not match the checkpoint's model" in line and "max_abs_diff=" in line
    assert "> atol=0.0001" in line and "top1_agreement=" in line and "do not use it" in line
    check = json.loads((tmp_path / "wrong.pt.json").read_text())["verification"]
    assert check["verified"] is False and check["max_abs_diff"] > 1e-4
    assert f"max_abs_diff={check['max_abs_diff']:.3g}" in line
    assert output.is_file() and out == ""  # kept for inspection; no success report


def test_a_file_that_refuses_the_batch_is_not_verified():
    model = torch.nn.Linear(4, 3).eval()
    inputs = (torch.randn(5, 4),)
    baked = export.compare(model, lambda x: model(x[:2]), inputs)  # a batch of 2 baked in
    assert not baked.within(1.0) and baked.error == "its outputs are [2, 3], the model's [5, 3]"

    def refuses(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("Got invalid dimensions for input: index: 0 Got: 5 Expected: 2")

    refused = export.compare(model, refuses, inputs)
    assert not refused.within(1.0) and "does not run on a batch of 5: Got invalid" in refused.error


@pytest.mark.slow
def test_without_data_it_checks_on_random_inputs_of_the_right_shape(
    rmb_ckpt, tmp_path, monkeypatch, capsys
):
    output = tmp_path / "model.pt"
    args = ("data.synthetic=false", f"data.root={tmp_path / 'nowhere'}", f"output={output}")
    code, _, err = run_export(monkeypatch, capsys, f"ckpt={rmb_ckpt}", "format=torchscript", *args)
    assert code == 0, err
    check = json.loads((tmp_path / "model.pt.json").read_text())["verification"]
    assert check["inputs"].startswith("random inputs of the right shape (no data at data.root=")
    assert check["verified"] and check["samples"] == 32


@pytest.fixture
def dcgan_ckpt(rmb_ckpt, tmp_path) -> Path:
    """The rmb checkpoint, as if task=dcgan had written it."""
    state = load_checkpoint(rmb_ckpt)
    state["config"]["task"] = {"name": "dcgan", "module": "torchcamp.tasks.dcgan"}
    save_checkpoint(state, tmp_path / "dcgan.pt")
    return tmp_path / "dcgan.pt"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no checkpoint: give ckpt="),
        (["ckpt=missing.pt"], "ckpt=missing.pt: no such checkpoint file"),
        (["ckpt={dcgan}"], "task=dcgan is not supported by export-model, which exports the image"),
        (["ckpt={rmb}", "format=tflite"], "format=tflite is not a format: use onnx, torchscript"),
        (["ckpt={rmb}", "atol=small"], "atol=small: give a number of at least 0"),
        (["ckpt={rmb}", "num_samples=0"], "num_samples=0: give a whole number of at least 1"),
        (["ckpt={rmb}", "format=torchscript", "opset=18"], "opset=18 is for format=onnx"),
        (["ckpt={rmb}", "device=cuda"], "export-model runs on the CPU"),
        (["ckpt={rmb}", "output={rmb}", "format=torchscript"], "is the checkpoint itself"),
    ],
)
def test_mistakes_are_one_line(rmb_ckpt, dcgan_ckpt, args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [arg.format(rmb=rmb_ckpt, dcgan=dcgan_ckpt) for arg in args]
    code, out, err = run_export(monkeypatch, capsys, *args)
    assert message in one_error(code, err) and out == ""


def test_onnx_without_the_extra_says_how_to_install_it(monkeypatch, capsys):
    find_spec = export.importlib.util.find_spec
    monkeypatch.setattr(  # as without the extra, whether or not this environment has it
        export.importlib.util,
        "find_spec",
        lambda name, *rest: None if name in export.ONNX_PACKAGES else find_spec(name, *rest),
    )
    code, out, err = run_export(monkeypatch, capsys, "ckpt=best.pt", "format=onnx")
    assert one_error(code, err) == f"error: {ONNX_NEEDS}" and out == ""


@pytest.mark.slow
def test_the_console_script_answers_help_without_importing_torch(tmp_path):
    script = Path(sys.executable).with_name("export-model")
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}  # every import, on stderr
    result = subprocess.run(
        [script, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    assert "export-model ckpt=PATH" in result.stdout and "format=onnx" in result.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert "torch" not in imported


@pytest.mark.slow
def test_a_run_moved_elsewhere_exports_its_users_model_from_any_folder(
    tmp_path, monkeypatch, capsys
):
    """The run records where model._target_'s module was imported from; copied to another
    folder and exported from a third, it imports the module from there (saying so), and names
    the file in one line once it is gone."""
    project, archive, elsewhere = (tmp_path / name for name in ("project", "archive", "other"))
    project.mkdir()
    elsewhere.mkdir()
    (project / f"{CUSTOM_MODEL_MODULE}.py").write_text(CUSTOM_MODEL_SOURCE)
    model = ("model=custom", f"model._target_={CUSTOM_MODEL_MODULE}.TinyNet")
    code, run_dir = train_in_process(monkeypatch, project, "task=rmb", *model, *FAST)
    assert code == 0, capsys.readouterr().err
    shutil.copytree(run_dir, archive / "run")
    shutil.rmtree(run_dir)
    monkeypatch.chdir(elsewhere)

    def not_importable_here() -> None:
        monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in (str(project), "")])
        monkeypatch.delitem(sys.modules, CUSTOM_MODEL_MODULE, raising=False)

    not_importable_here()
    best = archive / "run" / "checkpoints" / "best.pt"
    code, _, err = run_export(monkeypatch, capsys, f"ckpt={best}", "format=torchscript")
    assert code == 0, err
    assert f"importing it from {project / CUSTOM_MODEL_MODULE}.py, where the run found it" in err
    described = json.loads(best.with_name("best.torchscript.pt.json").read_text())
    assert described["verification"]["verified"]

    (project / f"{CUSTOM_MODEL_MODULE}.py").rename(project / "renamed.py")
    not_importable_here()
    code, _, err = run_export(monkeypatch, capsys, f"ckpt={best}", "format=torchscript")
    assert f"the run imported it from {project / CUSTOM_MODEL_MODULE}.py, which is not there" in (
        one_error(code, err)
    )
