"""A model exported to a file that runs without torchcamp, and checked against the model it
came from: plain objects in (a model, example inputs, a path), files and figures out.

Three formats, each run back by its own runtime (:func:`load_exported`):

- ``onnx``: ``torch.onnx.export`` (the torch.export-based exporter), run with ONNX Runtime on
  the CPU (the ``export`` extra: onnx, onnxscript, onnxruntime);
- ``torchscript``: ``torch.jit.script`` (``torch.jit.trace`` where scripting fails), run with
  ``torch.jit.load``;
- ``exported_program``: ``torch.export.export`` and ``torch.export.save`` (a ``.pt2``), run
  with ``torch.export.load(...).module()``.

Dimensions named in ``dynamic`` (``{0: "batch"}``) are left free in the file: any batch size
runs, not only the example's. :func:`compare` runs the model and the exported file on the same
inputs and gives the largest absolute difference of their outputs and how often their top-1
classes agree.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchcamp.trainer.errors import UserError, first_line

# Each format's file suffix: the default output is the checkpoint's name with it.
FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "exported_program": ".pt2"}
# What format=onnx needs beyond torch: the exporter is written in onnxscript (on onnx), and the
# check runs the file with ONNX Runtime, the runtime a user of an .onnx file will have.
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
INSTALL_EXPORT = "pip install 'torchcamp[export]'"

log = logging.getLogger(__name__)

Dynamic = Sequence[Mapping[int, str]]  # per input: {dimension: name}, e.g. ({0: "batch"},)


@dataclass(frozen=True)
class Comparison:
    """The exported file's outputs against the model's on the same inputs, ``samples`` of them
    run as one batch: the largest absolute difference of any output and the share of samples
    whose top-1 class agrees. ``error``: why they could not be compared (the file refused the
    inputs, or its outputs have another shape or are not finite); the figures are then None."""

    samples: int
    max_abs_diff: float | None
    top1_agreement: float | None
    error: str | None = None

    def within(self, atol: float) -> bool:
        """Whether the file computes what the model does, to ``atol`` on every output."""
        return self.error is None and self.max_abs_diff is not None and self.max_abs_diff <= atol


def check_runtime(fmt: str) -> None:
    """Refuse an unknown format, or ``onnx`` without the packages it needs, in one line."""
    if fmt not in FORMATS:
        raise UserError(f"format={fmt} is not a format: use {', '.join(FORMATS)}")
    if fmt != "onnx":
        return
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(
            f"format=onnx needs {', '.join(missing)}, not installed here: {INSTALL_EXPORT}"
        )


def export_model(
    model: nn.Module,
    example: tuple[torch.Tensor, ...],
    path: str | Path,
    fmt: str,
    *,
    input_names: Sequence[str],
    output_name: str = "logits",
    dynamic: Dynamic = (),
    opset: int | None = None,
) -> dict[str, Any]:
    """Write ``model`` (in evaluation mode) to ``path`` in format ``fmt``, traced or captured
    on ``example`` (one tensor per input of ``forward``), the ``dynamic`` dimensions left free.
    Returns what the file's description needs to say: ``{"opset": N}`` for ONNX."""
    check_runtime(fmt)
    model.eval()
    path = Path(path)
    with torch.no_grad(), _quiet_torchscript():
        if fmt == "onnx":
            written = _to_onnx(model, example, path, input_names, output_name, dynamic, opset)
            return {"opset": written}
        if fmt == "torchscript":
            torch.jit.save(_to_torchscript(model, example), str(path))
        else:
            program = torch.export.export(model, example, dynamic_shapes=_dims(dynamic))
            torch.export.save(program, str(path))
    return {}


def _to_onnx(
    model: nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    input_names: Sequence[str],
    output_name: str,
    dynamic: Dynamic,
    opset: int | None,
) -> int:
    """The torch.export-based exporter (``dynamo=True``), writing the opset asked for (None: its
    default, 20 in torch 2.14); returns the opset written. Both of torch's exporters handle the
    image classifiers with a free batch size (ONNX Runtime agreed with PyTorch to 1e-6 on
    either), and both fail on names' packed sequences; this one is torch's default since 2.9
    and the one maintained, while the TorchScript-based one warns that it is deprecated.
    ``external_data=False``: one self-contained file (ONNX's 2 GB limit is far above these
    models)."""
    for name in ("onnxscript", "onnx_ir"):  # their INFO lines report every optimisation pass
        logging.getLogger(name).setLevel(logging.WARNING)
    program = torch.onnx.export(
        model,
        example,
        str(path),
        input_names=list(input_names),
        output_names=[output_name],
        dynamic_shapes=_dims(dynamic),
        opset_version=opset,
        dynamo=True,
        external_data=False,
        verbose=False,  # its progress lines would go to stdout
    )
    return int(program.model.opset_imports[""])


def _to_torchscript(model: nn.Module, example: tuple[torch.Tensor, ...]) -> torch.jit.ScriptModule:
    """``torch.jit.script`` keeps the model's loops and branches (names' letter-by-letter cell
    runs over a name of any length); a model that does not script is traced on ``example``,
    which records one run's operations (what :func:`compare` then checks on other inputs)."""
    try:
        return torch.jit.script(model)
    except Exception as error:  # scripting compiles Python source, and refuses much of Python
        log.info("torch.jit.script: %s; tracing the model instead", first_line(error))
        return torch.jit.trace(model, example)


def _dims(dynamic: Dynamic) -> tuple[dict[int, Any], ...] | None:
    """``({0: "batch"}, ...)`` as torch.export's ``dynamic_shapes``: one ``Dim`` per name, shared
    by every input that names it (tokens and lengths have the same batch)."""
    if not dynamic:
        return None
    dims: dict[str, Any] = {}
    return tuple(
        {axis: dims.setdefault(name, torch.export.Dim(name)) for axis, name in axes.items()}
        for axes in dynamic
    )


def load_exported(
    path: str | Path, fmt: str, input_names: Sequence[str]
) -> Callable[..., torch.Tensor]:
    """The exported file loaded by its own runtime, as a function of the model's input tensors
    (in ``input_names``' order) that returns the first output as a tensor."""
    check_runtime(fmt)
    if fmt == "onnx":
        return _onnx_session(Path(path), input_names)
    if fmt == "torchscript":
        with _quiet_torchscript():
            return torch.jit.load(str(path))
    return torch.export.load(str(path)).module()


def _onnx_session(path: Path, input_names: Sequence[str]) -> Callable[..., torch.Tensor]:
    """An ONNX Runtime session on the CPU, fed by name. An input the graph does not read (the
    exporter drops unused ones) is not fed."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wanted = {node.name for node in session.get_inputs()}

    def run(*inputs: torch.Tensor) -> torch.Tensor:
        feeds = {name: tensor.numpy() for name, tensor in zip(input_names, inputs, strict=True)}
        return torch.from_numpy(
            session.run(None, {k: v for k, v in feeds.items() if k in wanted})[0]
        )

    return run


def runtime_name(fmt: str) -> str:
    """The runtime that :func:`load_exported` runs ``fmt`` with, and its version."""
    if fmt == "onnx":
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__} (CPUExecutionProvider)"
    loader = "torch.jit.load" if fmt == "torchscript" else "torch.export.load"
    return f"{loader} (torch {torch.__version__})"


def verify(
    model: nn.Module,
    path: str | Path,
    fmt: str,
    input_names: Sequence[str],
    inputs: tuple[torch.Tensor, ...],
) -> Comparison:
    """The exported file at ``path``, loaded by its own runtime, :func:`compare`-d with
    ``model`` on ``inputs`` (one batch)."""
    try:
        exported = load_exported(path, fmt, input_names)
    except Exception as error:  # a file its own runtime cannot load is as wrong as it gets
        reason = f"{runtime_name(fmt)} cannot load it: {first_line(error)}"
        return Comparison(len(inputs[0]), None, None, reason)
    return compare(model, exported, inputs)


@torch.no_grad()
def compare(
    model: nn.Module, exported: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...]
) -> Comparison:
    """The model and the exported file on the same ``inputs`` (one batch): the largest absolute
    difference of their outputs ``[N, C]`` and the share of the N samples whose argmax agrees."""
    expected = model(*inputs).float()
    samples = expected.shape[0]

    def failed(reason: str) -> Comparison:
        return Comparison(samples, None, None, reason)

    try:
        got = torch.as_tensor(exported(*inputs)).float()
    except Exception as error:  # each runtime has its own errors for inputs it refuses
        return failed(f"it does not run on a batch of {samples}: {first_line(error)}")
    if got.shape != expected.shape:
        return failed(f"its outputs are {list(got.shape)}, the model's {list(expected.shape)}")
    difference = (got - expected).abs().max().item()
    if not math.isfinite(difference):
        return failed("its outputs or the model's are not finite (NaN or infinite)")
    agreement = (got.argmax(dim=1) == expected.argmax(dim=1)).float().mean().item()
    return Comparison(samples, difference, agreement)


@contextlib.contextmanager
def _quiet_torchscript() -> Iterator[None]:
    """torch 2.14 warns on every ``torch.jit`` call that TorchScript is deprecated: the user
    chose the format knowing that (docs/after-training/export.md says so), and the warnings
    say nothing more."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
        yield
