"""The course's char-RNN name classifier vs ``train task=names``, on the same held-out split.

    python benchmarks/names.py --data /work/shared/data            # the full comparison
    python benchmarks/names.py --data /work/shared/data --iterations 5000   # a quick check

1. The course's loop (``rnn_demo.py``), written from its description: one name at a time as
   one-hot letters through the hand-written cell (``u``, ``w``, ``v`` linear layers, tanh,
   log-softmax), ``NLLLoss``, and the hand-written SGD update ``p.data.add_(p.grad, alpha=-lr)``
   with lr 0.005, for 200,000 iterations that each pick a language uniformly, then one of its
   training names. It trains on the training split of ``task=names`` (same seed) and is scored
   on that task's test split.
2. ``train task=names data.root=DATA seed=SEED`` (the default recipe) in a subprocess.
3. A Markdown table of both: test accuracy, test macro accuracy (mean per-language recall),
   training time and the whole command's wall time.
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

import torch
from torch import nn

from torchcamp.datasets.names import ALL_LETTERS, read_names, split_names
from torchcamp.tasks.classification import confusion_counts, summarize


class CourseCell(nn.Module):
    """The course's RNN: ``hidden = tanh(u(x) + w(hidden))``, ``out = log_softmax(v(hidden))``."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.u = nn.Linear(input_size, hidden_size)
        self.w = nn.Linear(hidden_size, hidden_size)
        self.v = nn.Linear(hidden_size, output_size)
        self.tanh = nn.Tanh()
        self.softmax = nn.LogSoftmax(dim=1)

    def forward(self, inputs: torch.Tensor, hidden: torch.Tensor):
        hidden = self.tanh(self.w(hidden) + self.u(inputs))
        return self.softmax(self.v(hidden)), hidden

    def init_hidden(self) -> torch.Tensor:
        return torch.zeros(1, self.hidden_size)


def line_to_tensor(line: str) -> torch.Tensor:
    """``[len, 1, 57]``: one one-hot row per letter of the course's alphabet."""
    tensor = torch.zeros(len(line), 1, len(ALL_LETTERS))
    for index, letter in enumerate(line):
        tensor[index][0][ALL_LETTERS.find(letter)] = 1
    return tensor


def run_course_loop(
    train: dict[int, list[str]], test: list[tuple[str, int]], args: argparse.Namespace
) -> dict[str, float]:
    """Train the course's way for ``args.iterations`` names; score on ``test``."""
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    classes = sorted(train)
    rnn = CourseCell(len(ALL_LETTERS), 128, len(classes))
    criterion = nn.NLLLoss()
    start = time.perf_counter()
    running = 0.0
    for iteration in range(1, args.iterations + 1):
        label = rng.choice(classes)  # a language, uniformly
        line = rng.choice(train[label])  # then one of its training names
        line_tensor, target = line_to_tensor(line), torch.tensor([label])
        hidden = rnn.init_hidden()
        rnn.zero_grad()
        for letter in line_tensor:
            output, hidden = rnn(letter, hidden)
        loss = criterion(output, target)
        loss.backward()
        for p in rnn.parameters():  # the course's hand-written SGD step
            p.data.add_(p.grad, alpha=-args.lr)
        running += loss.item()
        if iteration % args.print_every == 0:
            print(
                f"  course loop: {iteration:>7}/{args.iterations}  "
                f"loss {running / args.print_every:.4f}  {time.perf_counter() - start:6.1f} s",
                flush=True,
            )
            running = 0.0
    train_seconds = time.perf_counter() - start
    confusion = torch.zeros(len(classes), len(classes), dtype=torch.long)
    with torch.no_grad():
        for line, label in test:
            hidden = rnn.init_hidden()
            for letter in line_to_tensor(line):
                output, hidden = rnn(letter, hidden)
            confusion += confusion_counts(
                torch.tensor([label]), output.argmax(1), len(classes)
            ).tensor()
    return {
        "test/acc": (confusion.trace() / confusion.sum()).item(),
        "test/macro_acc": summarize({"confusion": confusion})["macro_acc"],
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - start,
    }


def run_train_command(args: argparse.Namespace) -> dict[str, float]:
    """``train task=names`` in a subprocess; its metrics.json plus the command's wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        command = [
            sys.executable,
            "-m",
            "torchcamp.trainer.app.cli",
            "task=names",
            f"data.root={args.data}",
            f"seed={args.seed}",
            f"hydra.run.dir={run_dir}",
            "trainer.progress=false",
            *args.override,
        ]
        print("  $ train " + " ".join(command[3:]), flush=True)
        start = time.perf_counter()
        completed = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if completed.returncode != 0:
            sys.exit(f"train failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
        metrics = json.loads((run_dir / "metrics.json").read_text())
    return metrics | {"train_seconds": metrics["time/fit_seconds"], "wall_seconds": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the folder that holds names/")
    parser.add_argument("--iterations", type=int, default=200_000, help="course loop length")
    parser.add_argument("--lr", type=float, default=0.005, help="course loop learning rate")
    parser.add_argument("--seed", type=int, default=42, help="the split's seed (and the runs')")
    parser.add_argument("--print-every", type=int, default=20_000)
    parser.add_argument(
        "--override", action="append", default=[], help="extra train override (repeatable)"
    )
    args = parser.parse_args()
    args.print_every = min(args.print_every, args.iterations)

    splits = split_names(read_names(args.data), args.seed)
    train: dict[int, list[str]] = {}
    for name, label in splits["train"]:
        train.setdefault(label, []).append(name)
    print(
        f"split (seed {args.seed}): {len(splits['train'])} train, {len(splits['val'])} val, "
        f"{len(splits['test'])} test names, {len(train)} languages; torch threads: "
        f"{torch.get_num_threads()}",
        flush=True,
    )

    print(f"1. the course's loop, {args.iterations:,} iterations", flush=True)
    course = run_course_loop(train, splits["test"], args)
    print(f"   {course}", flush=True)
    print("2. train task=names", flush=True)
    ours = run_train_command(args)
    print(f"   { {k: ours[k] for k in ('test/acc', 'test/macro_acc', 'wall_seconds')} }")

    course_name = f"course loop: 1 name/step, hand SGD, {args.iterations:,} iterations"
    overrides = " ".join(args.override)
    rows = [
        (course_name, course),
        (f"`train task=names{' ' + overrides if overrides else ''}`", ours),
    ]
    print("\n| run | test acc | test macro acc | training s | wall s |")
    print("| --- | --- | --- | --- | --- |")
    for name, m in rows:
        print(
            f"| {name} | {m['test/acc']:.3f} | {m['test/macro_acc']:.3f} | "
            f"{m['train_seconds']:.1f} | {m['wall_seconds']:.1f} |"
        )
    print(
        f"\nSame split (seed {args.seed}): {len(splits['test'])} held-out test names. Training s: "
        "the course loop's iterations / the Trainer's time/fit_seconds (first batch to the last "
        "validation); wall s: the course loop with its scoring / the whole train command."
    )


if __name__ == "__main__":
    main()
