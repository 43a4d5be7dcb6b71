"""Does the input pipeline keep up with the model? hymenoptera's training images per second as
``train`` loads them, against what ResNet18 trains on per second, on this machine.

    python benchmarks/pipeline.py --data ../shared/data
    python benchmarks/pipeline.py --data ../shared/data --workers 0 2 4 --image-size 224

Loading: the task's training split (decode cache as ``data.cache_mb`` sets it, RandomResizedCrop
and flip on every read) through the same DataLoader ``train`` builds (per-sample seeding,
batch 16), for each ``--workers``; one warm-up pass, then a timed pass, nothing trained.
Consumption: ResNet18 training steps (forward, backward, SGD step) on random batches of the same
shape, a few after a warm-up one.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from hydra import compose, initialize_config_module
from torch import nn

from torchcamp.trainer.app.assembly import load_task
from torchcamp.trainer.app.data import build_datasets, build_loaders, cache_decoded
from torchcamp.trainer.app.settings import read_settings


def loading_rate(data: Path, workers: int, size: int, cache_mb: float) -> float:
    """Training images per second through train's DataLoader (second pass)."""
    overrides = [
        "task=hymenoptera",
        f"data.root={data.resolve()}",
        f"data.image_size={size}",
        "data.batch_size=16",
        f"data.num_workers={workers}",
        "seed=42",
    ]
    with initialize_config_module("torchcamp.conf", version_base="1.3"):
        settings = read_settings(compose("config", overrides=overrides))
    with tempfile.TemporaryDirectory() as unused:  # only data.synthetic=true writes there
        splits, _ = build_datasets(settings, load_task(settings), Path(unused))
    cache_decoded(splits, cache_mb)
    loader = build_loaders(settings, splits, None, torch.device("cpu"))["train"]
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        started = time.perf_counter()
        count = sum(len(images) for images, _ in loader)
    return count / (time.perf_counter() - started)


def training_rate(size: int, device: torch.device, steps: int) -> float:
    """Images per second ResNet18 trains on (batch 16, fp32), after one warm-up step."""
    model = torchvision.models.resnet18(num_classes=2).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    images = torch.randn(16, 3, size, size, device=device)
    labels = torch.randint(0, 2, (16,), device=device)
    for step in range(steps + 1):
        if step == 1:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 16 * steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the folder with hymenoptera_data")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--cache-mb", type=float, default=1024, help="data.cache_mb (0: off)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    consumed = training_rate(args.image_size, device, steps=50 if device.type == "cuda" else 4)
    print(f"{torch.get_num_threads()} CPU threads, {args.image_size} px, batch 16\n")
    print("| what | images/s |")
    print("| --- | --- |")
    print(f"| ResNet18 trains on ({args.device}, fp32) | {consumed:.1f} |")
    for workers in args.workers:
        rate = loading_rate(args.data, workers, args.image_size, args.cache_mb)
        print(f"| loading, num_workers={workers}, cache_mb={args.cache_mb:g} | {rate:.1f} |")


if __name__ == "__main__":
    main()
