"""The commands' ``--help`` texts. ``train --help`` lists the groups from the config files' names
and composes the config the given overrides make, without importing torch."""

from __future__ import annotations

from importlib.resources import files

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
  inputs=[a,b,...]        items between commas, as written. rmb, hymenoptera, pennfudan: image
                          files, and folders searched at any depth for images; names: names,
                          or text files of one name per line; dcgan: none
  predict.threshold=0.5   pennfudan: the lowest detection score kept
  predict.num_images=64   dcgan: how many images to draw
  predict.seed=0          dcgan: the seed of the noise
  predict.top_k=3         names: how many languages per name
  predict.output_dir=DIR  where pennfudan and dcgan write images
                          (default: <output_root>/DATE/TIME-predict)
  key=value               changes to the checkpoint's config: device=auto|cpu|cuda,
                          data.batch_size=64 (images or names per batch), data.num_workers=2

Prints one JSON line per record: rmb, hymenoptera {"file", "label", "prob"}; names {"name",
"top": [{"label", "prob"}, ...]}; pennfudan {"file", "drawn", "boxes", "labels", "scores"} (also
in predictions.json); dcgan {"file"} per image written."""

TRAIN = """train: compose a training run from config groups and run it (torchcamp).

  train [group=option ...] [key=value ...]     e.g. train task=rmb optimizer=adam optimizer.lr=3e-4
  train -m key=a,b [...]                       a sweep: one job per combination
  train --cfg job [overrides]                  the composed config, without training
  train --hydra-help                           Hydra's own flags

== Configuration groups ==
Compose your configuration from those groups (group=option)

{groups}

== Config ==
Override anything in the config (foo.bar=value)

{config}"""


def print_train_help(overrides: list[str]) -> None:
    """``train --help``: the groups and their options, and the config these overrides compose.

    Hydra's own ``--help`` re-composes the whole config once per group option to list them
    (about 0.7 s here); reading the option files' names takes milliseconds.
    """
    conf = files("torchcamp.conf")
    groups = sorted(
        (
            group.name,
            sorted(f.name[: -len(".yaml")] for f in group.iterdir() if f.name.endswith(".yaml")),
        )
        for group in conf.iterdir()
        if group.is_dir() and group.name not in ("hydra", "__pycache__")
    )
    listing = "\n".join(f"{name}: {', '.join(options)}" for name, options in groups)
    with initialize_config_module("torchcamp.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    print(TRAIN.format(groups=listing, config=OmegaConf.to_yaml(cfg)))
