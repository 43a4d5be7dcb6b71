"""The commands' ``--help`` texts. ``train --help`` lists the groups from the config files' names
and composes the config the given overrides make, without importing torch."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

EVALUATE = """evaluate: score a checkpoint on its run's val and test data (torchcamp).

  evaluate ckpt=PATH [output_dir=DIR] [key=value ...]

  ckpt=PATH        a run's checkpoints/best.pt or last.pt: model, data and loss are rebuilt
                   from the config inside it
  output_dir=DIR   where metrics.json and evaluate.log go
                   (default: <output_root>/DATE/TIME-evaluate)
  key=value        changes to the checkpoint's config, e.g. data.root=/path/to/data,
                   device=auto|cpu|cuda, data.batch_size=64, data.num_workers=2

Prints the val/* and test/* metrics as JSON and writes them to metrics.json."""

PREDICT = """predict: run a checkpoint's model on images or names (torchcamp).

  predict ckpt=PATH inputs=[a.jpg,folder/] [predict.<option>=value ...] [key=value ...]

  ckpt=PATH               a run's checkpoints/best.pt or last.pt: the config and class names
                          inside it rebuild the model, no training data needed
  inputs=[a,b,...]        items between commas, as written. imagefolder, rmb, hymenoptera,
                          pennfudan: image files, and folders searched at any depth for
                          images; names: names, or text files of one name per line; dcgan:
                          none; your own task: what its predict reads
  predict.threshold=0.5   pennfudan: the lowest detection score kept
  predict.num_images=64   dcgan: how many images to draw
  predict.seed=0          dcgan: the seed of the noise
  predict.top_k=3         names: how many languages per name
  predict.output_dir=DIR  where pennfudan and dcgan write images
                          (default: <output_root>/DATE/TIME-predict)
  key=value               changes to the checkpoint's config: device=auto|cpu|cuda,
                          data.batch_size=64 (images or names per batch), data.num_workers=2

Prints one JSON line per record: imagefolder, rmb, hymenoptera {"file", "label", "prob"};
names {"name", "top": [{"label", "prob"}, ...]}; pennfudan {"file", "drawn", "boxes", "labels",
"scores"} (also in predictions.json); dcgan {"file"} per image written."""

# export-model's own options (EXPORT describes them); any other key=value changes the config.
EXPORT_OPTIONS = ("ckpt", "format", "output", "atol", "num_samples", "opset")

EXPORT = """export-model: write a checkpoint's model as ONNX, TorchScript or an ExportedProgram,
and check the file against the checkpoint (torchcamp).

  export-model ckpt=PATH [format=onnx] [output=FILE] [atol=1e-4] [num_samples=32] [key=value ...]

  ckpt=PATH         a run's checkpoints/best.pt or last.pt: the model is rebuilt from the
                    config and class names inside it
  format=onnx       onnx (run with ONNX Runtime; pip install 'torchcamp[export]'),
                    torchscript (torch.jit.load) or exported_program (torch.export.load)
  output=FILE       the file to write (default: beside the checkpoint, best.onnx,
                    best.torchscript.pt or best.pt2); its description goes to FILE.json
  atol=1e-4         the largest difference of any output from the checkpoint's model allowed
  num_samples=32    how many inputs to check on: the run's data (val first) when it is at
                    data.root, else random inputs of the right shape
  opset=N           format=onnx: the ONNX opset (default: the exporter's)
  key=value         changes to the checkpoint's config, e.g. data.root=/path/to/data

Supported: image classifiers (task=imagefolder, rmb, hymenoptera; any model=) in every format;
task=names in format=torchscript. Every input's batch size is free. The file is run by its own
runtime on the CPU and compared with the model in PyTorch; max_abs_diff and top1_agreement are
printed and written to the JSON. Beyond atol: exit 2, and the JSON says "verified": false."""

TRAIN = """train: compose a training run from config groups and run it (torchcamp).

  train [group=option ...] [key=value ...]     e.g. train task=rmb optimizer=adam optimizer.lr=3e-4
  train -m key=a,b [...]                       a sweep: one job per combination
  train --cfg job [overrides]                  the composed config, without training
  train --config-dir ./configs task=mytask     your own config files (task/mytask.yaml) too
  train --hydra-help                           Hydra's own flags

== Configuration groups ==
Compose your configuration from those groups (group=option)

{groups}

== Config ==
Override anything in the config (foo.bar=value)

{config}"""


def print_train_help(args: list[str]) -> None:
    """``train --help``: the groups and their options (the user's ``--config-dir`` ones too),
    and the config these arguments' overrides compose.

    Hydra's own ``--help`` re-composes the whole config once per group option to list them
    (about 0.7 s here); reading the option files' names takes milliseconds.
    """
    config_dir, overrides = _config_dir(args)
    folders = [files("torchcamp.conf")] + ([Path(config_dir)] if config_dir else [])
    options: dict[str, set[str]] = {}
    for folder in folders:
        for group in folder.iterdir():
            if group.is_dir() and group.name not in ("hydra", "__pycache__"):
                names = {
                    f.name[: -len(".yaml")] for f in group.iterdir() if f.name.endswith(".yaml")
                }
                options.setdefault(group.name, set()).update(names)
    listing = "\n".join(f"{name}: {', '.join(sorted(options[name]))}" for name in sorted(options))
    if config_dir:
        overrides = [f"hydra.searchpath=[file://{Path(config_dir).resolve()}]", *overrides]
    with initialize_config_module("torchcamp.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    print(TRAIN.format(groups=listing, config=OmegaConf.to_yaml(cfg)))


def _config_dir(args: list[str]) -> tuple[str | None, list[str]]:
    """Hydra's ``--config-dir DIR`` (``-cd DIR``, ``--config-dir=DIR``) and the overrides."""
    config_dir, overrides, rest = None, [], iter(args)
    for arg in rest:
        if arg in ("--config-dir", "-cd"):
            config_dir = next(rest, None)
        elif arg.startswith("--config-dir="):
            config_dir = arg.partition("=")[2]
        elif not arg.startswith("-"):
            overrides.append(arg)
    return config_dir, overrides
