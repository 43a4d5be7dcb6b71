"""Where the Trainer's time beyond the raw loop goes, item by item (see overhead.py).

    python benchmarks/overhead_breakdown.py                 # LeNet
    python benchmarks/overhead_breakdown.py --only resnet18 --epochs 4

Runs overhead.py's default Trainer loop with each callback's ``on_epoch_end``, the validation
pass and the training pass timed, and prints the median and the largest time of each per
epoch (the largest: the epochs where a budgeted extra or a checkpoint write ran), and after
which epochs ``last.pt`` was written.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from overhead import CASES, make_loaders, trainer_loop

from torchcamp.trainer import callbacks as callback_events
from torchcamp.trainer import trainer as trainer_module
from torchcamp.trainer.callbacks.checkpointing import ModelCheckpoint

seconds: dict[str, list[float]] = defaultdict(list)


def timed(name: str, function):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        result = function(*args, **kwargs)
        seconds[name].append(time.perf_counter() - started)
        return result

    return wrapper


def run_callbacks_timed(callbacks, event: str, *args) -> None:
    """The Trainer's run_callbacks, timing each callback's on_epoch_end."""
    for method in callback_events.callback_methods(callbacks, event):
        if event == "on_epoch_end":
            timed(type(method.__self__).__name__, method)(*args)
        else:
            method(*args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(CASES), default="lenet")
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    trainer_module.Trainer.train_one_epoch = timed(
        "training pass", trainer_module.Trainer.train_one_epoch
    )
    trainer_module.Trainer.evaluate = timed("validation pass", trainer_module.Trainer.evaluate)
    trainer_module.run_callbacks = run_callbacks_timed
    writes = []
    save_last = ModelCheckpoint._save_last
    ModelCheckpoint._save_last = lambda self, trainer, *a: (
        writes.append(trainer.epoch),
        save_last(self, trainer, *a),
    )
    make_model, size, train_n, val_n = CASES[args.only]
    with tempfile.TemporaryDirectory() as tmp:
        trainer_loop(make_model, make_loaders(size, train_n, val_n), args.epochs, Path(tmp))
    print(f"{args.only}, {args.epochs} epochs: last.pt written after epochs {writes}\n")
    print("| per epoch | median ms | largest ms |")
    print("| --- | --- | --- |")
    for name, times in seconds.items():
        if name != "EpochClock":
            print(f"| {name} | {statistics.median(times) * 1e3:.2f} | {max(times) * 1e3:.1f} |")


if __name__ == "__main__":
    main()
