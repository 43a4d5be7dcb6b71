"""Property: any value for any real key of the composed config ends ``train`` in a clean run
(exit 0), one line (exit 2) or a clean stop (exit 3): never a traceback.

Hypothesis draws a key of ``train --cfg job task=rmb`` and a hostile value for it, and the run
goes through the console script's ``main`` in this process. The suite runs a fixed
(derandomized) set of examples; ``TORCHCAMP_HOSTILE_EXAMPLES=N`` draws N fresh ones, and
``TORCHCAMP_HOSTILE_REPORT=file.jsonl`` records every case (``python
benchmarks/hostile_overrides.py`` does both and prints the tally).
"""

from __future__ import annotations

import json
import os
import time

import pytest
from conftest import train_in_process
from hydra import compose, initialize_config_module
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

BASE = ("task=rmb", "data.synthetic=true", "trainer.max_epochs=1", "device=cpu")
# Left out: trainer.compile (true is valid and takes Inductor ~50 s to compile LeNet here;
# tests/test_compile.py covers it), and what BASE or the test harness pins.
SKIPPED = {"trainer.compile", "trainer.max_epochs", "trainer.progress", "data.synthetic"}
HOSTILE = [
    "abc", "/no/such/path", "null", "0", "-1", "1", "2", "0.5", "-0.5", "1e-9", "nan", "inf",
    "true", "false", "[]", "[1,2]", "{}", "{a:1}", "''", "auto", "none", "val/acc",
]  # fmt: skip
EXAMPLES = int(os.environ.get("TORCHCAMP_HOSTILE_EXAMPLES", "0"))
REPORT = os.environ.get("TORCHCAMP_HOSTILE_REPORT")


def real_keys() -> list[str]:
    """Every leaf key of the composed config (Hydra's own node aside)."""
    with initialize_config_module("torchcamp.conf", version_base="1.3"):
        cfg = compose("config", overrides=list(BASE))
    container = OmegaConf.to_container(cfg, resolve=False)

    def leaves(node, prefix):
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict) and value:
                yield from leaves(value, f"{path}.")
            elif not key.startswith("_"):  # a _target_ is not a value a user tunes
                yield path

    return sorted(set(leaves(container, "")) - SKIPPED)


KEYS = real_keys()


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES or 30,
    derandomize=not EXAMPLES,  # the suite's set is fixed; a longer run draws new ones
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(key=st.sampled_from(KEYS), value=st.sampled_from(HOSTILE))
def test_any_value_of_any_key_ends_cleanly(key, value, monkeypatch, tmp_path_factory, capsys):
    tmp_path = tmp_path_factory.mktemp("hostile")
    started = time.perf_counter()
    code, _ = train_in_process(monkeypatch, tmp_path, *BASE, f"{key}={value}")
    err = capsys.readouterr().err
    if REPORT:
        seconds = time.perf_counter() - started
        case = {"override": f"{key}={value}", "exit": code, "seconds": seconds}
        with open(REPORT, "a") as report:
            report.write(json.dumps(case | {"error": err.strip()[-300:]}) + "\n")
    assert code in (0, 2, 3), f"{key}={value}: exit {code}\n{err[-2000:]}"
    assert "Traceback" not in err, f"{key}={value}:\n{err[-2000:]}"
    if code == 2:
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, f"{key}={value}:\n{err[-2000:]}"


# The overrides that ended in a traceback before the signature checks (issue 16), each now one
# line naming the key and what is allowed.
NAMED_CASES = [
    ("task.module=0.5", "task.module=0.5 is not allowed: use an importable module"),
    ("task.module=abc", "task.module=abc defines no TASK: a task module ends with TASK ="),
    ("scheduler.step_size=abc", "scheduler.step_size='abc' is not allowed: StepLR takes step_size"),
    ("optimizer.dampening=/no/such/path", "optimizer.dampening='/no/such/path' is not allowed"),
    ("loss.ignore_index=null", "loss.ignore_index=null is not allowed: CrossEntropyLoss takes"),
    ("loss.label_smoothing=null", "loss.label_smoothing=null is not allowed: CrossEntropyLoss"),
    ("loss.adapt.input=0", "loss.adapt.input=0 is not allowed: use one of log_softmax"),
    ("loss.adapt.target=null", "loss.adapt.target=null is not allowed: use one of index"),
    ("loss.adapt.target=[]", "loss.adapt.target=[] is not allowed: use one of index"),
    ("+optimizer.nope=1", "cannot build optimizer: SGD() got an unexpected keyword argument 'n"),
    ("model.in_channels=abc", "model.in_channels='abc' is not allowed: LeNet takes in_channels"),
    ("scheduler.step_size=0", "the first epoch failed with ZeroDivisionError"),
    ("regularizer=null", "cannot compose the config from"),
    ("seed=-1", "seed=-1 is not allowed: use an integer in [0, 2**32)"),
    ("+data.foo=1", "cannot build data: build_datasets() got an unexpected keyword argument "
                    "'foo' (drop it with ~data.foo); it takes"),
    ("+trainer.foo=1", "cannot build trainer: Trainer() got an unexpected keyword argument 'foo'"),
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("override", "message"), NAMED_CASES, ids=[c for c, _ in NAMED_CASES])
def test_values_that_once_gave_a_traceback_give_one_line(
    override, message, monkeypatch, tmp_path, capsys
):
    code, run_dir = train_in_process(monkeypatch, tmp_path, *BASE, override)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert err.strip().startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert message in err, err
    assert not (run_dir / "checkpoints" / "best.pt").exists()


def test_the_rules_table_knows_the_classifiers_loss_adapters():
    from torchcamp.tasks.classification import INPUTS, TARGETS
    from torchcamp.trainer.app.validation import LOSS_INPUTS, LOSS_TARGETS

    assert sorted(INPUTS) == list(LOSS_INPUTS) and sorted(TARGETS) == list(LOSS_TARGETS)
