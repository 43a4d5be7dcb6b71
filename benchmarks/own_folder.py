"""An image folder nobody tuned torchcamp for: pedestrians vs background, cut from PennFudan.

    python benchmarks/own_folder.py --data ../shared/data
    python benchmarks/own_folder.py --data ../shared/data --epochs 3 --models lenet

Writes a class-folder tree the way a user would have one — ``pedestrian/`` (every annotated
box, cropped) and ``background/`` (as many patches of the same sizes, drawn where they overlap
no box) — then runs ``train task=imagefolder data.root=<tree>`` on it with ``model=lenet``,
``model=torchvision`` with ``model.name=mobilenet_v3_small`` and ``resnet18`` (from scratch:
no download) and
``model=custom`` (a small CNN the script writes into the working folder as ``crop_nets.py``),
each as one whole process. Prints a Markdown table: final train, val and test accuracy,
training images per second (images x epochs / fit seconds), whole-run seconds.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from torchcamp.datasets.pennfudan import find_pennfudan, read_boxes

MODELS = {
    "lenet": ["model=lenet"],
    "mobilenet_v3_small": ["model=torchvision", "model.name=mobilenet_v3_small"],
    "resnet18": ["model=torchvision", "model.name=resnet18"],
    "custom": ["model=custom", "model._target_=crop_nets.SmallCNN", "+model.width=32"],
}

CUSTOM_MODEL = '''
from torch import nn


class SmallCNN(nn.Module):
    """Three conv blocks and a linear head: a model of the user's own."""

    def __init__(self, num_classes: int, width: int = 32):
        super().__init__()
        blocks, channels = [], 3
        for out in (width, 2 * width, 4 * width):
            blocks += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(),
                       nn.MaxPool2d(2)]
            channels = out
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)
        )

    def forward(self, x):
        return self.head(self.features(x))
'''


def write_crops(data: Path, out: Path, seed: int = 0) -> dict[str, int]:
    """Pedestrian crops and background patches of the same sizes, as class folders."""
    rng = random.Random(seed)
    counts = {"pedestrian": 0, "background": 0}
    for name in counts:
        (out / name).mkdir(parents=True, exist_ok=True)
    for sample in find_pennfudan(data):
        image = Image.open(sample.image).convert("RGB")
        boxes = [tuple(int(v) for v in box) for box in read_boxes(sample).tolist()]
        for index, (x0, y0, x1, y1) in enumerate(boxes):
            image.crop((x0, y0, x1 + 1, y1 + 1)).save(
                out / "pedestrian" / f"{sample.image.stem}_{index}.png"
            )
            counts["pedestrian"] += 1
            patch = _background_patch(rng, image.size, boxes, (x1 - x0 + 1, y1 - y0 + 1))
            if patch is not None:
                image.crop(patch).save(out / "background" / f"{sample.image.stem}_{index}.png")
                counts["background"] += 1
    return counts


def _background_patch(rng, size, boxes, patch_size, tries: int = 100):
    """A window of ``patch_size`` that overlaps no box (shrunk step by step where none fits:
    pedestrians are tall, and the training transform resizes every image anyway), or None."""
    width, height = size
    for scale in (1.0, 0.75, 0.5, 0.35):
        w = max(8, min(int(patch_size[0] * scale), width - 1))
        h = max(8, min(int(patch_size[1] * scale), height - 1))
        for _ in range(tries):
            x, y = rng.randrange(0, width - w + 1), rng.randrange(0, height - h + 1)
            if all(x + w <= x0 or x > x1 or y + h <= y0 or y > y1 for x0, y0, x1, y1 in boxes):
                return (x, y, x + w, y + h)
    return None


def run(work: Path, tree: Path, name: str, epochs: int, extra: list[str]) -> dict:
    run_dir = work / f"run_{name}"
    command = [
        sys.executable, "-m", "torchcamp.trainer.app.cli", "task=imagefolder",
        f"data.root={tree}", "data.image_size=64", f"trainer.max_epochs={epochs}",
        "optimizer=adam", "optimizer.lr=0.001", "trainer.progress=false",
        f"hydra.run.dir={run_dir}", *MODELS[name], *extra,
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, cwd=work, check=True, capture_output=True, text=True)
    whole = time.perf_counter() - start
    metrics = json.loads((run_dir / "metrics.json").read_text())
    train_images = metrics["data_report"]["total"]["train"]
    return {
        "model": name,
        "train_acc": metrics["train/acc"],
        "val_acc": metrics["val/acc"],
        "test_acc": metrics["test/acc"],
        "images_per_s": train_images * epochs / metrics["time/fit_seconds"],
        "whole_s": whole,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the folder with PennFudanPed/")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--extra", nargs="*", default=[], help="more train overrides")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "crop_nets.py").write_text(CUSTOM_MODEL)
        counts = write_crops(args.data.resolve(), work / "crops")
        print(f"crops: {counts}, {args.epochs} epochs, 64x64, Adam lr 0.001, batch 16")
        rows = [run(work, work / "crops", name, args.epochs, args.extra) for name in args.models]
    print("| model | train acc | val acc | test acc | train images/s | whole run s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['model']} | {row['train_acc']:.3f} | {row['val_acc']:.3f} | "
            f"{row['test_acc']:.3f} | "
            f"{row['images_per_s']:.0f} | {row['whole_s']:.1f} |"
        )


if __name__ == "__main__":
    main()
