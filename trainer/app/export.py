"""The ``export-model`` command: a checkpoint's model written as ONNX, TorchScript or an
ExportedProgram, described in a JSON file beside it, and checked against the checkpoint.

The checkpoint is read and its model rebuilt as ``predict`` does it (app/inference.py). Real
inputs of the task — the run's data when it is at ``data.root`` (a synthetic run's is rendered
again), else random inputs of the right shape — go through the model in PyTorch and through the
exported file in its own runtime (trainer/export.py), and their outputs are compared. A file
whose outputs differ by more than ``atol`` is kept for inspection, but marked ``"verified":
false`` in its JSON, and the command ends with one line giving the figures and exit code 2:
nobody gets a wrong model without being told.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch.utils.data import default_collate

from torchcamp.tasks.contract import ModelInputs, PredictOptions, Task, describe_training_data
from torchcamp.trainer import export
from torchcamp.trainer.app.assembly import load_task
from torchcamp.trainer.app.data import build_datasets, build_transforms
from torchcamp.trainer.app.help import EXPORT_OPTIONS
from torchcamp.trainer.app.inference import checkpoint_config, checkpoint_model, read_checkpoint
from torchcamp.trainer.app.process import setup_process
from torchcamp.trainer.app.settings import Settings, read_settings
from torchcamp.trainer.app.signatures import check_targets
from torchcamp.trainer.errors import USER_ERRORS, UserError, first_line
from torchcamp.trainer.inference import check_same_data

log = logging.getLogger("torchcamp")

# float32 logits computed by another runtime differ from PyTorch's by rounding alone: kernels
# that sum in another order, fused operations. Over the models exported for the docs that was
# at most 2e-6, and 1.9e-5 where ONNX Runtime averaged a 224x224 map (PyTorch was within 1e-7
# of float64 there): 1e-4 leaves room for that, while a real mistake (a batch size baked in,
# a layer in training mode, other weights) moves logits by 1e-2 and more.
DEFAULT_ATOL = 1e-4
DEFAULT_NUM_SAMPLES = 32  # a batch of the run's data: enough to cross many kinds of input


SUPPORTED = "image classifiers (task=imagefolder, rmb, hymenoptera) and task=names"


def export_command(options: dict[str, str], overrides: list[str]) -> None:
    """``export-model``: write the checkpoint's model in ``format=``, its JSON description
    beside it, and check the file against the model; prints a short report. Raises a
    :class:`UserError` (exit 2) when the file's outputs differ by more than ``atol``."""
    fmt, atol, num_samples, opset = _read_options(options)
    path, state = read_checkpoint(options.get("ckpt"))
    output = _output_path(options.get("output"), path, fmt)
    settings = _export_settings(path, state, overrides, output.parent)
    task = load_task(settings)
    data = (state.get("meta") or {}).get("data") or {}
    inputs = supported_inputs(task, settings.task.name, fmt, _input_options(settings, data))
    check_targets(settings, task)
    device, _ = setup_process(settings)
    model = checkpoint_model(settings, task, path, state, device)
    items, source = _sample_items(settings, task, inputs, path, data, num_samples)
    batch, example = _batch_and_example(items, task.collate_fn or default_collate)

    output.parent.mkdir(parents=True, exist_ok=True)
    log.info("exporting %s to %s (format=%s)", path, output, fmt)
    facts = _export(model, example, output, fmt, inputs, opset, settings.task.name)
    comparison = export.verify(model, output, fmt, inputs.names, batch)
    with torch.no_grad():
        logits = model(*example)
    description = {
        **_provenance(settings, state, path, output, fmt),
        **_signature(inputs, example, logits),
        **inputs.describe(example),
        **_preprocessing(settings),
        "opset": facts.get("opset"),
        "verification": _verification(comparison, fmt, source, len(example[0]), atol),
    }
    described = output.with_name(output.name + ".json")
    described.write_text(json.dumps(description, indent=2) + "\n")
    if not comparison.within(atol):
        raise UserError(_mismatch(output, described, comparison, atol, fmt))
    print(_report(output, described, fmt, facts, comparison, atol, source))


def supported_inputs(task: Task, task_name: str, fmt: str, options: PredictOptions) -> ModelInputs:
    """What the task's model reads (its ``export_inputs(options)``), for a task that declares
    it and can be exported in format ``fmt``. Any other task or format is refused in one
    line."""
    if task.export_inputs is None:
        raise UserError(
            f"task={task_name} is not supported by export-model, which exports the {SUPPORTED}"
        )
    inputs = task.export_inputs(options)
    formats = _formats(inputs)
    if fmt not in formats:
        raise UserError(
            f"format={fmt} is not supported for task={task_name}: {inputs.why_not}; "
            f"use format={', '.join(formats)}"
        )
    return inputs


def _formats(inputs: ModelInputs) -> tuple[str, ...]:
    """The formats the task's models can be exported in: all, unless it names some."""
    return tuple(inputs.formats) if inputs.formats is not None else tuple(export.FORMATS)


def _input_options(settings: Settings, data: Mapping[str, Any]) -> PredictOptions:
    """What the task's ``export_inputs`` gets: what ``predict`` gets, on the CPU."""
    return PredictOptions(
        device=torch.device("cpu"),
        output_dir=settings.run_dir,
        data=dict(data),
        data_options=settings.data.options,
        transforms=build_transforms(settings.transforms),
        seed=settings.seed,
    )


def _preprocessing(settings: Settings) -> dict[str, Any]:
    """The run's evaluation transform as configured, for a run with a ``transforms`` group."""
    return {"preprocessing": settings.transforms.get("eval")} if settings.transforms else {}


def _output_path(given: str | None, path: Path, fmt: str) -> Path:
    """``output=``, by default the checkpoint's name with the format's suffix beside it."""
    output = Path(given or path.with_name(path.stem + export.FORMATS[fmt]))
    if output.resolve() == path.resolve():
        raise UserError(f"output={output} is the checkpoint itself: give another file name")
    return output


def _read_options(options: Mapping[str, str]) -> tuple[str, float, int, int | None]:
    """``(format, atol, num_samples, opset)`` from the command's own options, checked."""
    unknown = sorted(key for key in options if key not in EXPORT_OPTIONS)
    if unknown:
        raise UserError(f"{unknown[0]} is not an option of export-model: see export-model --help")
    fmt = options.get("format", "onnx")
    export.check_runtime(fmt)
    atol = _number(options, "atol", float, DEFAULT_ATOL, 0)
    num_samples = _number(options, "num_samples", int, DEFAULT_NUM_SAMPLES, 1)
    opset = _number(options, "opset", int, None, 1)
    if opset is not None and fmt != "onnx":
        raise UserError(f"opset={opset} is for format=onnx, and this is format={fmt}")
    return fmt, atol, num_samples, opset


def _number(options: Mapping[str, str], key: str, kind: type, default: Any, least: float) -> Any:
    """``options[key]`` read as ``kind`` (int or float), at least ``least``; ``default`` when
    it is not given."""
    text = options.get(key)
    if text is None:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or value < least:
        what = "a whole number" if kind is int else "a number"
        raise UserError(f"{key}={text}: give {what} of at least {least:g}")
    return value


def _export_settings(
    path: Path, state: dict[str, Any], overrides: list[str], run_dir: Path
) -> Settings:
    """The checkpoint's config, changed by ``overrides``, as settings for exporting: on the
    CPU, where the check runs (ONNX Runtime's CPU provider), in float32; the data never
    downloaded, and read through the evaluation transform."""
    if any(override.partition("=")[0] == "device" for override in overrides):
        raise UserError("export-model runs on the CPU, where it checks the file: leave out device=")
    cfg = checkpoint_config(path, state, overrides)
    for key, value in {
        "device.accelerator": "cpu",
        "trainer.precision": "32",
        "data.download": False,
        "data.augment": False,
    }.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return read_settings(cfg, run_dir)


def _sample_items(
    settings: Settings,
    task: Task,
    inputs: ModelInputs,
    path: Path,
    data: Mapping[str, Any],
    n: int,
) -> tuple[list[Any], str]:
    """``n`` dataset items to check the export on, and where they come from: the first of the
    run's val, then test, then train data (a synthetic run's rendered again, the same for the
    same seed), or, when there is no data at ``data.root``, random ones of the right shape."""
    with tempfile.TemporaryDirectory() as scratch:
        try:
            splits, _ = build_datasets(settings, task, Path(scratch))
        except USER_ERRORS as error:
            log.warning(
                "no data to check the export on (%s): checking on %d random inputs",
                first_line(error),
                n,
            )
            where = f"no data at data.root={settings.data.root}"
            return inputs.random_items(n), f"random inputs of the right shape ({where})"
        check_same_data(path, data or None, describe_training_data(task, splits["train"]))
        items: list[Any] = []
        used = []
        for split in ("val", "test", "train"):
            dataset = splits.get(split, [])
            taken = min(len(dataset), n - len(items))
            items += [dataset[i] for i in range(taken)]
            used += [split] if taken else []
    where = "synthetic data" if settings.data.synthetic else f"data.root={settings.data.root}"
    return items, f"the run's {', '.join(used)} data ({where})"


def _batch_and_example(
    items: list[Any], collate: Callable[[list[Any]], Any]
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """The model's inputs (a collated batch less its labels) for the check, all ``items`` in
    one batch, and for the export, a batch of another size: the check then shows that the
    file takes any batch size. Never of 1, which torch.export would fix as a constant."""
    example_size = 3 if len(items) == 2 else 2
    example = [items[i % len(items)] for i in range(example_size)]
    return tuple(collate(items))[:-1], tuple(collate(example))[:-1]


def _export(
    model: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    output: Path,
    fmt: str,
    inputs: ModelInputs,
    opset: int | None,
    task_name: str,
) -> dict[str, Any]:
    """:func:`export.export_model`, its failures one line: a model that this format's exporter
    cannot capture is the user's to change (or another format to choose)."""
    try:
        return export.export_model(
            model,
            example,
            output,
            fmt,
            input_names=inputs.names,
            dynamic=inputs.dynamic,
            opset=opset,
        )
    except Exception as error:  # each exporter has its own errors, for reasons of many kinds
        others = ", ".join(f for f in _formats(inputs) if f != fmt)
        hint = f"; try format={others}" if others else ""
        raise UserError(
            f"cannot export task={task_name}'s model {type(model).__name__} to format={fmt}: "
            f"{type(error).__name__}: {first_line(error)}{hint}"
        ) from error


def _provenance(
    settings: Settings, state: dict[str, Any], path: Path, output: Path, fmt: str
) -> dict[str, Any]:
    """The file, and what it was made from and with."""
    choices = (state.get("meta") or {}).get("choices") or {}
    return {
        "format": fmt,
        "file": output.name,
        "checkpoint": str(path),
        "epoch": state.get("epoch"),
        "task": settings.task.name,
        "model": choices.get("model") or settings.model.get("_target_"),
        "torchcamp_version": version("torchcamp"),
        "torch_version": torch.__version__,
    }


def _signature(
    inputs: ModelInputs, example: tuple[torch.Tensor, ...], logits: torch.Tensor
) -> dict[str, Any]:
    """The file's inputs and output: names, shapes (free dimensions by name) and dtypes."""
    specs = zip(inputs.names, example, inputs.dynamic, strict=True)
    meaning = "one score per class, in the order of classes; softmax gives probabilities"
    return {
        "inputs": [_tensor_spec(name, tensor, axes) for name, tensor, axes in specs],
        "outputs": [_tensor_spec("logits", logits, {0: "batch"}) | {"meaning": meaning}],
    }


def _tensor_spec(name: str, tensor: torch.Tensor, axes: Mapping[int, str]) -> dict[str, Any]:
    shape = [axes.get(axis, size) for axis, size in enumerate(tensor.shape)]
    return {"name": name, "shape": shape, "dtype": str(tensor.dtype).removeprefix("torch.")}


def _verification(
    comparison: export.Comparison, fmt: str, source: str, exported_batch: int, atol: float
) -> dict[str, Any]:
    """The check's figures for the JSON; ``verified`` is what a deployment should read."""
    figures = {
        "runtime": export.runtime_name(fmt),
        "inputs": source,
        "samples": comparison.samples,
        "batch_size": comparison.samples,
        "exported_batch_size": exported_batch,
        "max_abs_diff": comparison.max_abs_diff,
        "top1_agreement": comparison.top1_agreement,
        "atol": atol,
        "verified": comparison.within(atol),
    }
    return figures | ({"error": comparison.error} if comparison.error else {})


def _mismatch(
    output: Path, described: Path, comparison: export.Comparison, atol: float, fmt: str
) -> str:
    """The one line for a file that does not compute what the checkpoint's model does."""
    if comparison.error:
        problem = comparison.error
    else:
        problem = (
            f"max_abs_diff={comparison.max_abs_diff:.3g} > atol={atol:g}, "
            f"top1_agreement={comparison.top1_agreement:.3f} on {comparison.samples} inputs"
        )
    return (
        f"the exported file {output} does not match the checkpoint's model in "
        f"{export.runtime_name(fmt)}: {problem}. It is kept for inspection, marked "
        f'"verified": false in {described.name}: do not use it'
    )


def _report(
    output: Path,
    described: Path,
    fmt: str,
    facts: Mapping[str, Any],
    comparison: export.Comparison,
    atol: float,
    source: str,
) -> str:
    """Two lines for stdout: what was written, and how it was checked."""
    opset = f", opset {facts['opset']}" if "opset" in facts else ""
    return (
        f"exported {output} (format={fmt}{opset}), described in {described.name}\n"
        f"verified with {export.runtime_name(fmt)} on {comparison.samples} inputs, {source}: "
        f"max_abs_diff={comparison.max_abs_diff:.3g} (atol={atol:g}), "
        f"top1_agreement={comparison.top1_agreement:.3f}"
    )
