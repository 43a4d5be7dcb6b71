"""Hostile values for real keys, many more than the suite tries: every run must end with exit
0, 2 or 3 and no traceback. Runs tests/test_hostile_overrides.py with N fresh Hypothesis
examples and prints the tally of what the runs ended with.

    python benchmarks/hostile_overrides.py              # 300 examples, a few minutes
    python benchmarks/hostile_overrides.py --examples 1000
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "cases.jsonl"
        env = os.environ | {
            "TORCHCAMP_HOSTILE_EXAMPLES": str(args.examples),
            "TORCHCAMP_HOSTILE_REPORT": str(report),
        }
        test = str(REPO / "tests" / "test_hostile_overrides.py")
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], env=env
        )
        cases = [json.loads(line) for line in report.read_text().splitlines()]
    exits = collections.Counter(case["exit"] for case in cases)
    keys = {case["override"].split("=", 1)[0] for case in cases}
    seconds = sum(case["seconds"] for case in cases)
    print(f"\n{len(cases)} runs over {len(keys)} keys in {seconds:.0f} s: ", end="")
    print(", ".join(f"exit {code}: {count}" for code, count in sorted(exits.items())))
    print("all clean" if done.returncode == 0 else "NOT all clean: see the failure above")
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
