"""Ants vs bees: ``train task=hymenoptera`` next to the course's hand-written loop, same machine.

    python benchmarks/hymenoptera.py --data ../shared/data                  # the full recipe
    python benchmarks/hymenoptera.py --data ../shared/data --epochs 2 --image-size 112

Both train ResNet18 with the course's recipe (SGD lr 0.001 momentum 0.9, StepLR(7, 0.1),
batch 16, RandomResizedCrop + flip / Resize + CenterCrop, ImageNet statistics) for the same
epochs at the same size, from scratch or from the same ``--weights-path``. Fit time is first
batch to the end of the last validation, as ``metrics.json`` reports it.
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
import torchvision
from torch import nn
from torchvision import transforms


def course_loop(data: Path, epochs: int, size: int, weights_path: str | None) -> dict:
    """The course's finetune script: ImageFolder, resnet18, a plain train/val loop per epoch."""
    torch.manual_seed(42)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    train_tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    val_tf = transforms.Compose(
        [
            transforms.Resize(round(size * 256 / 224)),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    root = data / "hymenoptera_data"
    train_set = torchvision.datasets.ImageFolder(root / "train", train_tf)
    val_set = torchvision.datasets.ImageFolder(root / "val", val_tf)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=16, shuffle=True)
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=16)

    model = torchvision.models.resnet18()
    if weights_path:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        model.load_state_dict(
            {k: v for k, v in state.items() if not k.startswith("fc.")}, strict=False
        )
    model.fc = nn.Linear(model.fc.in_features, 2)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)

    accuracies, started = [], None
    for _ in range(epochs):
        model.train()
        for inputs, labels in train_loader:
            started = started or time.perf_counter()
            optimizer.zero_grad()
            loss = criterion(model(inputs), labels)
            loss.backward()
            optimizer.step()
        scheduler.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for inputs, labels in val_loader:
                correct += (model(inputs).argmax(1) == labels).sum().item()
        accuracies.append(correct / len(val_set))
    return {
        "val_acc": accuracies[-1],
        "best_val_acc": max(accuracies),
        "fit_seconds": time.perf_counter() - started,
        "train_images": len(train_set),
    }


def torchcamp_run(data: Path, epochs: int, size: int, weights_path: str | None) -> dict:
    """The same recipe through the CLI: ``train task=hymenoptera``."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            sys.executable,
            "-m",
            "torchcamp.trainer.app.cli",
            "task=hymenoptera",
            f"data.root={data.resolve()}",
            f"trainer.max_epochs={epochs}",
            f"data.image_size={size}",
            "trainer.progress=false",
            f"hydra.run.dir={tmp}/run",
        ]
        if weights_path:
            args.append(f"model.weights_path={Path(weights_path).resolve()}")
        subprocess.run(args, check=True, capture_output=True)
        metrics = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
    return {
        "val_acc": metrics["val/acc"],
        "best_val_acc": metrics["best/val/acc"],
        "fit_seconds": metrics["time/fit_seconds"],
        "train_images": None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--weights-path", default=None, help="ImageNet resnet18 state dict")
    args = parser.parse_args()
    rows = []
    for name, run in (("course loop", course_loop), ("train task=hymenoptera", torchcamp_run)):
        wall = time.perf_counter()
        result = run(args.data, args.epochs, args.image_size, args.weights_path)
        result["wall_seconds"] = time.perf_counter() - wall
        rows.append((name, result))
        print(name, json.dumps(result), flush=True)
    start = "ImageNet weights" if args.weights_path else "from scratch"
    print(
        f"\nResNet18, {start}, {args.epochs} epochs at {args.image_size} px, "
        f"{torch.get_num_threads()} CPU threads\n"
    )
    print("| run | val acc (last) | val acc (best) | fit s | whole run s |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in rows:
        print(
            f"| {name} | {r['val_acc']:.3f} | {r['best_val_acc']:.3f} | "
            f"{r['fit_seconds']:.1f} | {r['wall_seconds']:.1f} |"
        )


if __name__ == "__main__":
    main()
