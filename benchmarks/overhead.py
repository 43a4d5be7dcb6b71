"""The Trainer's cost per step against a hand-written loop doing identical work.

    python benchmarks/overhead.py                 # LeNet at 32 px and ResNet18 at 224 px
    python benchmarks/overhead.py --only lenet --epochs 5

For each model: the same initial weights, the same in-memory batches in the same order, SGD,
cross entropy, a validation pass after every epoch. The raw loop is the course's §2.1 loop
(forward, zero_grad, loss, backward, step; running loss and accuracy). The Trainer runs as
``train`` builds it: the task's classification step, ModelCheckpoint (last.pt and best.pt every
epoch), TensorBoardLogger (per-step scalars, per-epoch histograms and confusion matrices) and
ModelViewsLogger with its defaults (input batch and graph at the start; kernels, feature
maps and Grad-CAM on 4 validation images every epoch), the progress bar when
stdout is a terminal (checkpoints are written on a thread while the next epoch trains, so
an epoch's time includes writing the previous epoch's files only where the write is slower
than the epoch), and the run's metrics.csv and pictures (curves.png within its 0.5% time
budget, confusion_matrix.png at the end). The Trainer also runs without those two
(``before #18``: what ``train`` ran by default before them), to show what they cost side by
side, and with every model view off (confusion matrices included), to show what the views
cost. The first epoch of each run is a warm-up and is not
timed; each loop runs ``--repeats`` times, alternating with the others, and every run's epoch
mean losses must agree to 5 decimals. Data loading is left out on purpose (tensors already in
memory): what is measured is what the Trainer adds around the step.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

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
from torchcamp.trainer.trainer import Trainer

CASES = {  # name -> (model factory, image size, training images, validation images)
    "lenet": (lambda: LeNet(num_classes=2), 32, 1600, 160),
    # hymenoptera's training set: 244 images, 16 steps an epoch
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=2), 224, 240, 48),
}
BATCH = 16


def make_loaders(size: int, train_n: int, val_n: int) -> tuple[DataLoader, DataLoader]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(train_n + val_n, 3, size, size, generator=generator)
    labels = torch.randint(0, 2, (train_n + val_n,), generator=generator)
    train = TensorDataset(images[:train_n], labels[:train_n])
    val = TensorDataset(images[train_n:], labels[train_n:])
    return DataLoader(train, batch_size=BATCH), DataLoader(val, batch_size=BATCH)


def raw_loop(make_model, loaders, epochs: int) -> tuple[list[float], list[float]]:
    """The course's loop; returns each epoch's mean training loss and its seconds."""
    train_loader, val_loader = loaders
    torch.manual_seed(0)
    model = make_model()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses, seconds = [], []
    for _ in range(epochs):
        started = time.perf_counter()
        loss_sum, correct, total = 0.0, 0, 0
        model.train()
        for inputs, labels in train_loader:
            outputs = model(inputs)
            optimizer.zero_grad()
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(labels)
            correct += (outputs.argmax(1) == labels).sum().item()
            total += len(labels)
        model.eval()
        with torch.no_grad():
            for inputs, labels in val_loader:
                criterion(model(inputs), labels).item()
        seconds.append(time.perf_counter() - started)
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
        self.ends.append(time.perf_counter())


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


def trainer_loop(
    make_model, loaders, epochs: int, run_dir: Path, views: bool = True, history: bool = True
) -> tuple[list[float], list]:
    """The Trainer with train's default callbacks (``views``: with the model views, as by
    default; without: every view switched off; ``history``: with metrics.csv and the
    pictures, as by default); returns epoch losses and seconds."""
    torch.manual_seed(0)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    clock = EpochClock()
    tensorboard = TensorBoardLogger(run_dir / "tb", class_names=["a", "b"])
    callbacks = [ModelCheckpoint(run_dir / "checkpoints"), tensorboard, clock]
    if history:
        plots = RunPlots(run_dir, "val/loss", "min", class_names=["a", "b"])
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
        max_epochs=epochs,
        monitor="val/loss",
        callbacks=callbacks,
        summarize_fn=summarize,
    )
    started = time.perf_counter()
    trainer.fit(*loaders)
    # Each epoch's seconds: from the previous epoch's end (or the start) to its own end.
    starts = [started, *clock.ends[:-1]]
    return clock.losses, [end - start for start, end in zip(starts, clock.ends, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (first: warm-up)")
    parser.add_argument("--only", choices=sorted(CASES), help="one model only")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each loop, alternating (machine drift)"
    )
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())  # as each run finds the machine
    rows = []
    for name in [args.only] if args.only else list(CASES):
        make_model, size, train_n, val_n = CASES[name]
        loaders = make_loaders(size, train_n, val_n)
        seconds = {"raw": [], "no views": [], "before #18": [], "default": []}
        for repeat in range(args.repeats):
            raw_losses, raw_seconds = raw_loop(make_model, loaders, args.epochs)
            seconds["raw"] += raw_seconds[1:]
            # Every other repeat in reverse order: a variant that always ran last would pay
            # for whatever the process accumulates (allocator, caches) on its own.
            variants = ("no views", "before #18", "default")
            for variant in variants if repeat % 2 == 0 else variants[::-1]:
                with tempfile.TemporaryDirectory() as tmp:
                    views, history = variant != "no views", variant != "before #18"
                    losses, ours = trainer_loop(
                        make_model, loaders, args.epochs, Path(tmp), views, history
                    )
                seconds[variant] += ours[1:]
                for epoch, (a, b) in enumerate(zip(raw_losses, losses, strict=True), start=1):
                    assert round(a, 5) == round(b, 5), f"{name} epoch {epoch}: loss {a} vs {b}"
            print(f"{name}: {seconds}", flush=True)
            last = -(args.epochs - 1)
            ratio = statistics.median(seconds["default"][last:]) / statistics.median(
                seconds["before #18"][last:]
            )
            print(f"{name} repeat {repeat + 1}: default / before #18 = {ratio:.3f}", flush=True)
        medians = {variant: statistics.median(times) for variant, times in seconds.items()}
        rows.append((name, size, -(-train_n // BATCH), medians))
    timed = args.repeats * (args.epochs - 1)
    print(f"\nepochs of in-memory batches of {BATCH}: median of {timed} (each run's first epoch")
    print(f"is a warm-up; {args.repeats} runs of each loop, alternating)")
    print(f"{torch.get_num_threads()} CPU threads; epoch losses agree to 5 decimals\n")
    print("| model | input | steps/epoch | raw s/epoch | views off | ratio |", end="")
    print(" before #18 | ratio | default | ratio | default / before #18 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, size, steps, medians in rows:
        raw, bare = medians["raw"], medians["no views"]
        before, full = medians["before #18"], medians["default"]
        print(
            f"| {name} | {size} px | {steps} | {raw:.3f} | {bare:.3f} | {bare / raw:.3f} ", end=""
        )
        print(f"| {before:.3f} | {before / raw:.3f} | {full:.3f} | {full / raw:.3f} ", end="")
        print(f"| {full / before:.3f} |")


if __name__ == "__main__":
    main()
