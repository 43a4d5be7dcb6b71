"""The Trainer's cost per step against a hand-written loop doing identical work.

    python benchmarks/overhead.py                 # LeNet, ResNet18 and a linear layer
    python benchmarks/overhead.py --only lenet --epochs 10
    python benchmarks/overhead.py --only linear --cpu-time  # CPU time: on a busy machine

For each model: the same initial weights, the same in-memory batches in the same order, SGD,
cross entropy, a validation pass after every epoch. The raw loop is the course's §2.1 loop
(forward, zero_grad, loss, backward, step; running loss and accuracy). The Trainer runs as
``train`` builds it by default: the task's classification step, ModelCheckpoint (last.pt when
worth writing, best.pt), TensorBoardLogger (per-step scalars, per-epoch scalars; histograms
and confusion matrices on the extras' time budget), ModelViewsLogger (input batch and graph at
the start; kernels, feature maps and Grad-CAM on 4 validation images on the time budget),
metrics.csv and curves.png (on the time budget; confusion_matrix.png at the end), the progress
bar when stdout is a terminal. It also runs with every view off and TensorBoard without its
confusion matrices (``views off``), to show what the views cost side by side.

The first epoch of each run is a warm-up and is not timed (it also gets every extra: the first
and the last epoch always do); each loop runs ``--repeats`` times, alternating with the others,
and every run's epoch mean losses must agree to 5 decimals. Each epoch is timed from the end of
the one before (so what the callbacks do after an epoch counts in the next), and the table
gives the median epoch and the mean of the timed epochs. Data loading is left out on purpose
(tensors already in memory): what is measured is what the Trainer adds around the step.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from torchcamp.tasks.classification import build_loss, summarize
from torchcamp.tasks.classification import classification_step as step
from torchcamp.tasks.models import LeNet
from torchcamp.trainer import visualize
from torchcamp.trainer.callbacks.checkpointing import ModelCheckpoint
from torchcamp.trainer.callbacks.csv_logger import CSVLogger
from torchcamp.trainer.callbacks.model_views import ModelViewsLogger
from torchcamp.trainer.callbacks.run_plots import RunPlots
from torchcamp.trainer.callbacks.tensorboard import TensorBoardLogger
from torchcamp.trainer.options import Limits, Monitor
from torchcamp.trainer.trainer import Trainer

CASES = {  # name -> (model factory, image size, training images, validation images)
    "lenet": (lambda: LeNet(num_classes=2), 32, 1600, 160),
    # hymenoptera's training set: 244 images, 16 steps an epoch
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=2), 224, 240, 48),
    # A step of next to nothing (a linear layer on 8x8 images): what is left is the Trainer's
    # own cost per step, in microseconds.
    "linear": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)), 8, 8000, 160),
}
BATCH = 16
# Wall-clock time; --cpu-time: this process's CPU time (all its threads), which other
# processes on a shared machine disturb far less.
now = time.perf_counter


def make_loaders(size: int, train_n: int, val_n: int) -> tuple[DataLoader, DataLoader]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(train_n + val_n, 3, size, size, generator=generator)
    labels = torch.randint(0, 2, (train_n + val_n,), generator=generator)
    train = TensorDataset(images[:train_n], labels[:train_n])
    val = TensorDataset(images[train_n:], labels[train_n:])
    return DataLoader(train, batch_size=BATCH), DataLoader(val, batch_size=BATCH)


def raw_train_pass(
    model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module, loader: Any
) -> tuple[float, int]:
    """One training pass as the course writes it: forward, loss, backward, step, and the
    running loss and accuracy read each step (``.item()``); returns (loss sum, samples)."""
    loss_sum, correct, total = 0.0, 0, 0
    model.train()
    for inputs, labels in loader:
        outputs = model(inputs)
        optimizer.zero_grad()
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(labels)
        correct += (outputs.argmax(1) == labels).sum().item()
        total += len(labels)
    return loss_sum, total


def raw_loop(make_model, loaders, epochs: int) -> tuple[list[float], list[float]]:
    """The course's loop; returns each epoch's mean training loss and its seconds."""
    train_loader, val_loader = loaders
    torch.manual_seed(0)
    model = make_model()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses, seconds = [], []
    for _ in range(epochs):
        started = now()
        loss_sum, total = raw_train_pass(model, optimizer, criterion, train_loader)
        model.eval()
        with torch.no_grad():
            for inputs, labels in val_loader:
                criterion(model(inputs), labels).item()
        seconds.append(now() - started)
        losses.append(loss_sum / total)
    return losses, seconds


class EpochClock:
    """A callback noting when each epoch ends (after validation), as the raw loop does."""

    order = 5  # before the checkpoint and logger: they are the Trainer's cost, timed too

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.losses: list[float] = []

    def on_epoch_end(self, trainer, metrics) -> None:
        self.losses.append(metrics["train/loss"])
        self.ends.append(now())


def default_views(model: nn.Module, tensorboard: TensorBoardLogger, loaders) -> ModelViewsLogger:
    """The views ``train`` draws by default (every model_views switch on, 4 images)."""
    train_images, _ = next(iter(loaders[0]))
    val_images, _ = next(iter(loaders[1]))
    first_conv = visualize.first_conv(model)
    return ModelViewsLogger(
        tensorboard,
        train_images=train_images,
        graph_inputs=(train_images[:1],),
        images=val_images[:4],
        kernel_layer=first_conv,
        feature_layer=first_conv,
        grad_cam_layer=visualize.grad_cam_layer(model),
    )


def trainer_loop(make_model, loaders, epochs: int, run_dir: Path, views: bool = True):
    """The Trainer with train's default callbacks (``views``: with the model views and
    TensorBoard's confusion matrices, as by default); returns epoch losses and seconds."""
    torch.manual_seed(0)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    clock = EpochClock()
    tensorboard = TensorBoardLogger(run_dir / "tb", class_names=["a", "b"])
    pictures = (run_dir / "curves.png", run_dir / "confusion_matrix.png")
    plots = RunPlots(*pictures, "val/loss", "min", class_names=["a", "b"])
    callbacks = [ModelCheckpoint(run_dir / "checkpoints"), tensorboard, clock]
    callbacks += [CSVLogger(run_dir / "metrics.csv"), plots]
    if views:
        callbacks.append(default_views(model, tensorboard, loaders))
    else:
        tensorboard.confusion_matrix = False
    trainer = Trainer(
        model,
        step,
        optimizer,
        build_loss(nn.CrossEntropyLoss()),
        limits=Limits(max_epochs=epochs),
        monitor=Monitor("val/loss"),
        callbacks=callbacks,
        summarize_fn=summarize,
    )
    started = now()
    trainer.fit(*loaders)
    # Each epoch's seconds: from the previous epoch's end (or the start) to its own end.
    starts = [started, *clock.ends[:-1]]
    return clock.losses, [end - start for start, end in zip(starts, clock.ends, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6, help="epochs per run (first: warm-up)")
    parser.add_argument("--only", choices=sorted(CASES), help="one model only")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each loop, alternating (machine drift)"
    )
    parser.add_argument(
        "--cpu-time", action="store_true", help="time with the process's CPU time (shared machine)"
    )
    args = parser.parse_args()
    if args.cpu_time:
        global now
        now = time.process_time
    torch.set_num_threads(torch.get_num_threads())  # as each run finds the machine
    rows = []
    for name in [args.only] if args.only else list(CASES):
        make_model, size, train_n, val_n = CASES[name]
        loaders = make_loaders(size, train_n, val_n)
        seconds = {"raw": [], "views off": [], "default": []}
        reference = None  # the raw loop's epoch losses: every run must give the same
        ratios = {"views off": [], "default": []}  # median epoch / raw's, within each repeat
        for repeat in range(args.repeats):
            this_repeat = {}
            # Every other repeat in reverse order: a loop that always ran last would pay for
            # whatever the process accumulates (allocator, caches) on its own.
            loops = ("raw", "views off", "default")
            for loop in loops if repeat % 2 == 0 else loops[::-1]:
                if loop == "raw":
                    losses, timed = raw_loop(make_model, loaders, args.epochs)
                else:
                    with tempfile.TemporaryDirectory() as tmp:
                        views = loop == "default"
                        losses, timed = trainer_loop(
                            make_model, loaders, args.epochs, Path(tmp), views
                        )
                reference = reference or losses  # repeat 1 runs the raw loop first
                check_losses(f"{name} {loop}", reference, losses)
                seconds[loop] += timed[1:]
                this_repeat[loop] = statistics.median(timed[1:])
            for loop in ("views off", "default"):
                ratios[loop].append(this_repeat[loop] / this_repeat["raw"])
            print(
                f"{name} repeat {repeat + 1}: views off / raw {ratios['views off'][-1]:.3f}, "
                f"default / raw {ratios['default'][-1]:.3f}",
                flush=True,
            )
        rows.append((name, size, -(-train_n // BATCH), seconds, ratios))
    timed = args.repeats * (args.epochs - 1)
    print(f"\nepochs of in-memory batches of {BATCH}: {timed} timed (each run's first epoch")
    print(f"is a warm-up; {args.repeats} runs of each loop, alternating)")
    print(f"{torch.get_num_threads()} CPU threads; epoch losses agree to 5 decimals")
    print("ratio: median epoch / the raw loop's median epoch; per repeat: that ratio within each")
    print("repeat (its loops ran back to back), median [lowest, highest]; mean: of all epochs\n")
    print("| model | input | steps/epoch | raw s/epoch | views off | default |", end="")
    print(" default per repeat | mean: default | default - raw, µs/step |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, size, steps, seconds, ratios in rows:
        median = {loop: statistics.median(times) for loop, times in seconds.items()}
        mean = {loop: statistics.mean(times) for loop, times in seconds.items()}
        per_repeat = ratios["default"]
        print(f"| {name} | {size} px | {steps} | {median['raw']:.3f} ", end="")
        print(f"| {median['views off'] / median['raw']:.3f} ", end="")
        print(f"| {median['default'] / median['raw']:.3f} ", end="")
        print(f"| {statistics.median(per_repeat):.3f} [{min(per_repeat):.3f}, ", end="")
        print(f"{max(per_repeat):.3f}] | {mean['default'] / mean['raw']:.3f} ", end="")
        print(f"| {(median['default'] - median['raw']) / steps * 1e6:.0f} |")


def check_losses(name: str, raw: list[float], ours: list[float]) -> None:
    for epoch, (a, b) in enumerate(zip(raw, ours, strict=True), start=1):
        assert round(a, 5) == round(b, 5), f"{name} epoch {epoch}: loss {a} vs {b}"


if __name__ == "__main__":
    main()
