"""ResNet18 training speed under the Trainer's accelerator options: precision, NHWC, compile.

    python benchmarks/precision.py                        # CPU: 32 vs bf16-mixed (+ NHWC)
    python benchmarks/precision.py --variants 32 bf16-mixed+compile
    python benchmarks/precision.py --device cuda --batch-size 64 --images 2048 \\
        --variants 32 bf16-mixed 16-mixed 16-mixed+channels_last 16-mixed+channels_last+compile

A variant is a precision (``32``, ``bf16-mixed``, ``16-mixed``) with optional ``+channels_last``
and ``+compile`` (``trainer.channels_last``, ``trainer.compile``). Each trains ResNet18 from the
same weights on the same in-memory 224 px batches (data loading is measured by pipeline.py)
through the Trainer, for ``--epochs`` epochs; the first is a warm-up (compiling, cuDNN's
choices) and is not timed. Printed: training images/s, the ratio to the first variant, the
last epoch's mean loss, and on CUDA the mean GPU utilization sampled during the timed epochs.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from torchcamp.tasks.classification import build_loss, classification_step
from torchcamp.trainer.options import Compute, Limits, Monitor, Reporting
from torchcamp.trainer.trainer import Trainer


class EpochClock:
    """Notes when each epoch ends."""

    order = 0

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_epoch_end(self, trainer, metrics) -> None:
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())


class UtilizationSampler:
    """Samples ``torch.cuda.utilization()`` (needs nvidia-ml-py) every 0.2 s while running."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.samples, self._stop = device, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.samples.append((time.perf_counter(), torch.cuda.utilization(self.device)))

    def __enter__(self) -> UtilizationSampler:
        if self.device.type == "cuda":
            try:
                torch.cuda.utilization(self.device)
                self._thread.start()
            except Exception as error:  # no NVML: leave the column empty
                print(f"GPU utilization not sampled: {error}")
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def mean_after(self, start: float) -> str:
        timed = [value for when, value in self.samples if when > start]
        return f"{statistics.mean(timed):.0f} %" if timed else "n/a"


def run_variant(variant: str, loader: DataLoader, device: str, epochs: int) -> tuple:
    precision, *flags = variant.split("+")
    unknown = set(flags) - {"channels_last", "compile"}
    if unknown:
        raise SystemExit(f"unknown option {unknown} in {variant!r}")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    clock = EpochClock()
    trainer = Trainer(
        model,
        classification_step,
        optimizer,
        build_loss(nn.CrossEntropyLoss()),
        device=device,
        compute=Compute(precision, "channels_last" in flags, "compile" in flags),
        limits=Limits(max_epochs=epochs),
        monitor=Monitor(metric=None),
        callbacks=[clock],
        reporting=Reporting(progress=False),
    )
    with UtilizationSampler(trainer.device) as utilization:
        started = time.perf_counter()
        metrics = trainer.fit(loader)
    starts = [started, *clock.ends[:-1]]
    seconds = [end - start for start, end in zip(starts, clock.ends, strict=True)][1:]
    images_per_second = len(loader.dataset) / statistics.median(seconds)
    return images_per_second, metrics["train/loss"], utilization.mean_after(clock.ends[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", nargs="+", default=["32", "bf16-mixed", "32+channels_last"])
    parser.add_argument("--images", type=int, default=160, help="training images per epoch")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per variant (1st: warm-up)")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.images, 3, 224, 224, generator=generator)
    labels = torch.randint(0, 2, (args.images,), generator=generator)
    pin = args.device.startswith("cuda")
    loader = DataLoader(TensorDataset(images, labels), batch_size=args.batch_size, pin_memory=pin)
    rows = []
    for variant in args.variants:
        rows.append((variant, *run_variant(variant, loader, args.device, args.epochs)))
        print(f"{variant}: {rows[-1][1]:.1f} images/s", flush=True)
    where = torch.cuda.get_device_name() if pin else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nResNet18 at 224 px, batch {args.batch_size}, {where}, torch {torch.__version__};")
    print(f"median of {args.epochs - 1} epochs of {args.images} images after a warm-up\n")
    print("| variant | train images/s | vs first | last loss | GPU utilization |")
    print("| --- | --- | --- | --- | --- |")
    for variant, speed, loss, utilization in rows:
        print(
            f"| {variant} | {speed:.1f} | {speed / rows[0][1]:.2f} | {loss:.4f} | {utilization} |"
        )


if __name__ == "__main__":
    main()
