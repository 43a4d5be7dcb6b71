"""RMB banknotes: ``train task=rmb`` next to the course's hand-written LeNet loop, same machine.

    python benchmarks/rmb.py --data ../shared/data                  # the full recipe, 10 epochs
    python benchmarks/rmb.py --data ../shared/data --epochs 2
    python benchmarks/rmb.py --data ../shared/data --num-workers 2 --extra data.augment=false

Both train torchcamp's LeNet (the course's architecture and initialisation) on the same
train/valid split (the one ``train task=rmb`` reads, see ``rmb_splits``) with the course's
train_lenet.py recipe: Resize(32) + RandomCrop(32, padding=4) / Resize(32), batch 16, SGD lr
0.01 momentum 0.9, StepLR(10, 0.1), cross entropy. The course loop is its script: a Dataset that
opens each JPEG with PIL in ``__getitem__``, DataLoader with ``num_workers=0``, a train pass
then a validation pass per epoch, on the CPU (the course's script moves nothing to a GPU: on a
machine with one, add ``--extra device=cpu`` to compare like with like). ``--extra`` is appended
verbatim to the ``train`` command, so the same script A/Bs its settings. Fit time is first batch
to the end of the last validation, as ``metrics.json`` reports it.
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

import numpy as np
import torch
from hydra import compose, initialize_config_module
from PIL import Image
from torch import nn
from torchvision import transforms

from torchcamp.tasks.models import LeNet
from torchcamp.trainer.app.assembly import load_task
from torchcamp.trainer.app.data import build_datasets
from torchcamp.trainer.app.settings import read_settings

SEED = 42  # train's default seed: the same split where it is drawn (no split file), same torch seed


class RMBDataset(torch.utils.data.Dataset):
    """The course's Dataset: ``(path, label)`` pairs, each JPEG opened with PIL when indexed."""

    def __init__(self, data_info: list[tuple[Path, int]], transform=None) -> None:
        self.data_info = data_info
        self.transform = transform

    def __getitem__(self, index: int):
        path_img, label = self.data_info[index]
        img = Image.open(path_img).convert("RGB")  # 0~255
        if self.transform is not None:
            img = self.transform(img)
        return img, label

    def __len__(self) -> int:
        return len(self.data_info)


def rmb_splits(data: Path) -> dict[str, list[tuple[Path, int]]]:
    """``{split: [(path, label), ...]}`` as ``train task=rmb data.root=DATA`` reads them (the
    split CSV, the pre-split folders or the seeded 8:1:1 split), through the same code."""
    overrides = ["task=rmb", f"data.root={data.resolve()}", f"seed={SEED}"]
    with initialize_config_module("torchcamp.conf", version_base="1.3"):
        settings = read_settings(compose("config", overrides=overrides))
    with tempfile.TemporaryDirectory() as unused:  # only data.synthetic=true writes there
        splits, _ = build_datasets(settings, load_task(settings), Path(unused))
    return {name: dataset.samples for name, dataset in splits.items()}


def set_seed(seed: int) -> None:
    """The course's ``common_tools.set_seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed(seed)


def course_loop(data: Path, epochs: int) -> dict:
    """The course's train_lenet.py: RMBDataset, LeNet, SGD + StepLR, train then validate."""
    set_seed(SEED)
    norm_mean, norm_std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # train_lenet.py's
    train_transform = transforms.Compose(
        [
            transforms.Resize((32, 32)),
            transforms.RandomCrop(32, padding=4),
            transforms.ToTensor(),
            transforms.Normalize(norm_mean, norm_std),
        ]
    )
    valid_transform = transforms.Compose(
        [
            transforms.Resize((32, 32)),
            transforms.ToTensor(),
            transforms.Normalize(norm_mean, norm_std),
        ]
    )
    splits = rmb_splits(data)  # the split torchcamp reads: the same images
    train_data = RMBDataset(splits["train"], train_transform)
    valid_data = RMBDataset(splits["val"], valid_transform)
    train_loader = torch.utils.data.DataLoader(train_data, batch_size=16, shuffle=True)
    valid_loader = torch.utils.data.DataLoader(valid_data, batch_size=16)

    net = LeNet(num_classes=2)  # the course's LeNet(classes=2); initialize_weights() in __init__
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.1)

    accuracies, started = [], None
    for _ in range(epochs):
        # The course also sums the training loss and accuracy (it prints them every 10 steps).
        loss_mean, correct, total = 0.0, 0.0, 0.0
        net.train()
        for inputs, labels in train_loader:
            started = started or time.perf_counter()
            outputs = net(inputs)
            optimizer.zero_grad()
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            _, predicted = torch.max(outputs.data, 1)
            total += labels.size(0)
            correct += (predicted == labels).squeeze().sum().numpy()
            loss_mean += loss.item()
        scheduler.step()

        correct_val, total_val, loss_val = 0.0, 0.0, 0.0
        net.eval()
        with torch.no_grad():
            for inputs, labels in valid_loader:
                outputs = net(inputs)
                loss = criterion(outputs, labels)
                _, predicted = torch.max(outputs.data, 1)
                total_val += labels.size(0)
                correct_val += (predicted == labels).squeeze().sum().numpy()
                loss_val += loss.item()
        accuracies.append(float(correct_val / total_val))
    return {
        "val_acc": accuracies[-1],
        "best_val_acc": max(accuracies),
        "fit_seconds": time.perf_counter() - started,
        "train_images": len(train_data),
    }


def torchcamp_run(data: Path, epochs: int, num_workers: int | None, extra: list[str]) -> dict:
    """The same recipe through the CLI: ``train task=rmb``."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            sys.executable,
            "-m",
            "torchcamp.trainer.app.cli",
            "task=rmb",
            f"data.root={data.resolve()}",
            f"trainer.max_epochs={epochs}",
            "trainer.progress=false",
            f"hydra.run.dir={tmp}/run",
        ]
        if num_workers is not None:
            args.append(f"data.num_workers={num_workers}")
        args += extra
        done = subprocess.run(args, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
        metrics = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
    return {
        "val_acc": metrics["val/acc"],
        "best_val_acc": metrics["best/val/acc"],
        "fit_seconds": metrics["time/fit_seconds"],
        "train_images": len(rmb_splits(data)["train"]),
        "cached_mb": metrics.get("data/cached_mb"),  # decoded before the fit, when cached
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--num-workers", type=int, default=None, help="train's data.num_workers (default: its own)"
    )
    parser.add_argument(
        "--extra", nargs="*", default=[], help="more train overrides, appended verbatim"
    )
    args = parser.parse_args()
    runs = (
        ("course loop", lambda: course_loop(args.data, args.epochs)),
        (
            "train task=rmb",
            lambda: torchcamp_run(args.data, args.epochs, args.num_workers, args.extra),
        ),
    )
    rows = []
    for name, run in runs:
        wall = time.perf_counter()
        result = run()
        result["wall_seconds"] = time.perf_counter() - wall
        # Fit includes the validation passes (both halves), so this understates the pure
        # training throughput alike in each: comparable, not absolute.
        result["images_per_second"] = result["train_images"] * args.epochs / result["fit_seconds"]
        rows.append((name, result))
        print(name, json.dumps(result), flush=True)
    overrides = " ".join(
        ([f"data.num_workers={args.num_workers}"] if args.num_workers is not None else [])
        + args.extra
    )
    print(
        f"\nLeNet at 32 px, batch 16, {args.epochs} epochs, {torch.get_num_threads()} CPU threads"
        + (f"; train overrides: {overrides}" if overrides else "")
        + "\n"
    )
    print("| run | val acc (last) | val acc (best) | fit s | images/s | whole run s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in rows:
        print(
            f"| {name} | {r['val_acc']:.3f} | {r['best_val_acc']:.3f} | "
            f"{r['fit_seconds']:.1f} | {r['images_per_second']:.0f} | {r['wall_seconds']:.1f} |"
        )
    course, train = rows[0][1], rows[1][1]
    print(f"\ntrain fit / course fit: {train['fit_seconds'] / course['fit_seconds']:.2f}")


if __name__ == "__main__":
    main()
