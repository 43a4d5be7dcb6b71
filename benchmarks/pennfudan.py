"""Penn-Fudan: seconds per training step of both detectors, and the recipe's mAP via ``train``.

    python benchmarks/pennfudan.py --data ../shared/data              # step times only
    python benchmarks/pennfudan.py --data ../shared/data --epochs 5   # and a full run of each

Step time: batch 1 (the course's), real photos, each model at its config's image size, SGD as
the task preset; the first steps are warm-up and not counted. The runs go through
``train task=pennfudan model=...`` and report the held-out COCO mAP from ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from hydra.utils import instantiate

from torchcamp.tasks import pennfudan

MODELS = ("fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_resnet50_fpn")
CONF = Path(pennfudan.__file__).resolve().parents[1] / "conf"


def seconds_per_step(data: Path, model_name: str, steps: int, warmup: int = 2) -> float:
    """Mean wall seconds of one training step (forward, backward, SGD) at batch 1."""
    torch.manual_seed(0)
    node = yaml.safe_load((CONF / "model" / f"{model_name}.yaml").read_text())
    model = instantiate(node)(num_classes=2).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
    train_set = pennfudan.build_datasets(data, seed=42)["train"]
    times = []
    for index in range(warmup + steps):
        image, target = train_set[index]
        started = time.perf_counter()
        losses = model([image], [target])
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return sum(times[warmup:]) / steps


def train_run(data: Path, model_name: str, epochs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            sys.executable, "-m", "torchcamp.trainer.app.cli", "task=pennfudan",
            f"model={model_name}", f"data.root={data.resolve()}", f"trainer.max_epochs={epochs}",
            "trainer.progress=false", f"hydra.run.dir={tmp}/run",
        ]  # fmt: skip
        subprocess.run(args, check=True, capture_output=True)
        return json.loads((Path(tmp) / "run" / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=0, help="also run train for this many")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}\n")
    print("| model | s / training step (batch 1) | val mAP | val mAP@0.5 | fit s |")
    print("| --- | --- | --- | --- | --- |")
    for name in args.models:
        step = seconds_per_step(args.data, name, args.steps)
        row = f"| {name} | {step:.2f} |"
        if args.epochs:
            metrics = train_run(args.data, name, args.epochs)
            row += (
                f" {metrics['val/map']:.3f} | {metrics['val/map_50']:.3f} | "
                f"{metrics['time/fit_seconds']:.0f} |"
            )
        else:
            row += " – | – | – |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
