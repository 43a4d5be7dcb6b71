"""The Trainer's own cost per optimizer step, in microseconds over a raw loop, on a model whose
step costs next to nothing (overhead.py's ``linear`` case: 500 steps an epoch).

overhead.py times whole runs, which on a shared machine swing by more than this cost; here a
raw epoch and a Trainer epoch (``train_one_epoch``, with the checkpoint and TensorBoard
callbacks) alternate in one process and the lowest epochs are compared: noise only ever adds
time, so the minimum is the steadiest figure. Run it a few times and quote the spread::

    OMP_NUM_THREADS=1 python benchmarks/step_overhead.py --epochs 16

It also runs against an older checkout (its Trainer took the ``trainer:`` keys as keyword
arguments before they were grouped), which is how a change's before and after are compared.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import overhead

from torchcamp.tasks.classification import build_loss, summarize
from torchcamp.tasks.classification import classification_step as step
from torchcamp.trainer.callbacks import run_callbacks
from torchcamp.trainer.callbacks.checkpointing import ModelCheckpoint
from torchcamp.trainer.callbacks.tensorboard import TensorBoardLogger
from torchcamp.trainer.trainer import Trainer


def raw_epoch(model: nn.Module, optimizer, criterion, batches) -> float:
    """Seconds for one pass of the course's loop (overhead.py's raw loop, less validation)."""
    started = time.perf_counter()
    overhead.raw_train_pass(model, optimizer, criterion, batches)
    return time.perf_counter() - started


def trainer_options() -> dict:
    """Many epochs and no progress bar, for this Trainer's constructor or an older one's."""
    if "limits" in inspect.signature(Trainer).parameters:
        from torchcamp.trainer.options import Limits, Reporting

        return {"limits": Limits(max_epochs=1000), "reporting": Reporting(progress=False)}
    return {"max_epochs": 1000, "progress": False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=16, help="epochs of each loop")
    parser.add_argument("--lowest", type=int, default=3, help="lowest epochs averaged")
    args = parser.parse_args()
    torch.set_num_threads(1)
    make_model, size, train_n, val_n = overhead.CASES["linear"]
    train, _ = overhead.make_loaders(size, train_n, val_n)
    steps = len(train)

    raw_model = make_model()
    raw_optimizer = torch.optim.SGD(raw_model.parameters(), lr=0.01, momentum=0.9)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    folder = Path(tempfile.mkdtemp())
    callbacks = [ModelCheckpoint(folder / "checkpoints"), TensorBoardLogger(folder / "tb")]
    trainer = Trainer(
        model,
        step,
        optimizer,
        build_loss(nn.CrossEntropyLoss()),
        callbacks=callbacks,
        summarize_fn=summarize,
        **trainer_options(),
    )
    run_callbacks(trainer.callbacks, "on_fit_start", trainer)
    raw, ours = [], []
    for _ in range(args.epochs):  # alternating: both see the machine as it is just then
        raw.append(raw_epoch(raw_model, raw_optimizer, nn.CrossEntropyLoss(), train))
        started = time.perf_counter()
        trainer.train_one_epoch(train)
        ours.append(time.perf_counter() - started)
        trainer.epoch += 1
        trainer.batch_in_epoch = 0
    raw.sort()
    ours.sort()
    k = args.lowest
    print(
        f"raw loop {raw[0] / steps * 1e6:.1f} us/step, Trainer {ours[0] / steps * 1e6:.1f}; "
        f"Trainer over raw: lowest epochs {(ours[0] - raw[0]) / steps * 1e6:.1f} us/step, "
        f"mean of the {k} lowest {(sum(ours[:k]) - sum(raw[:k])) / k / steps * 1e6:.1f} us/step"
    )


if __name__ == "__main__":
    main()
