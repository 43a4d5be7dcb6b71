"""The ``callbacks`` group's objects: a method named like an event that is none is refused in
one line, and two callbacks of one class keep their own state across a resume (checkpoints
written when states were keyed by class still load)."""

from __future__ import annotations

import json
import sys

from conftest import train_in_process

from torchcamp.trainer.callbacks import callback_states, load_callback_states

FAST = ("task=rmb", "data.synthetic=true", "callbacks=[checkpoint]")

COUNTERS = """
import json


class Counter:
    '''Counts the epochs it saw in its life, over resumes; writes the count at the end.'''

    def __init__(self, path, start=0):
        self.path, self.count = path, start

    def on_epoch_end(self, trainer, metrics):
        self.count += 1

    def on_fit_end(self, trainer, metrics):
        with open(self.path, "w") as file:
            json.dump(self.count, file)

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


class Misnamed(Counter):
    def on_epoch_ends(self, trainer, metrics):
        self.count += 1
"""


class Counter:
    def __init__(self, count: int = 0):
        self.count = count

    def state_dict(self) -> dict:
        return {"count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.count = state["count"]


def named(name: str, count: int = 0) -> Counter:
    counter = Counter(count)
    counter.state_key = name
    return counter


def test_two_callbacks_of_one_class_keep_their_own_state():
    saved = callback_states([named("fast", 1), named("slow", 2)])
    assert saved == {"fast": {"count": 1}, "slow": {"count": 2}}
    fast, slow = named("fast"), named("slow")
    load_callback_states([slow, fast], saved)
    assert (fast.count, slow.count) == (1, 2)


def test_a_checkpoint_keyed_by_class_restores_the_one_callback_of_that_class():
    old = {"Counter": {"count": 7}}  # written before states were keyed by name
    alone = named("counter")
    load_callback_states([alone], old)
    assert alone.count == 7
    pair = [named("a"), named("b")]  # whose would it be? neither gets it
    load_callback_states(pair, old)
    assert [c.count for c in pair] == [0, 0]
    unnamed = Counter()  # built by hand, not from the config: keyed by class as before
    assert callback_states([unnamed]) == {"Counter": {"count": 0}}


def test_two_callbacks_of_one_class_in_the_config_resume_with_their_own_state(
    tmp_path, monkeypatch
):
    (tmp_path / "counters.py").write_text(COUNTERS)
    monkeypatch.delitem(sys.modules, "counters", raising=False)
    mine = [
        "+callbacks.fast._target_=counters.Counter",
        "+callbacks.fast.path=fast.json",
        "+callbacks.slow._target_=counters.Counter",
        "+callbacks.slow.path=slow.json",
        "+callbacks.slow.start=100",
    ]
    code, run_dir = train_in_process(monkeypatch, tmp_path, *FAST, *mine, "trainer.max_epochs=1")
    assert code == 0
    last = run_dir / "checkpoints" / "last.pt"
    code, _ = train_in_process(
        monkeypatch, tmp_path, *FAST, *mine, "trainer.max_epochs=2", f"resume={last}"
    )
    assert code == 0
    counts = [json.loads((tmp_path / f"{name}.json").read_text()) for name in ("fast", "slow")]
    assert counts == [2, 102]  # each continued from its own count


def test_a_method_named_like_an_event_that_is_none_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "counters.py").write_text(COUNTERS)
    monkeypatch.delitem(sys.modules, "counters", raising=False)
    mine = ["+callbacks.mine._target_=counters.Misnamed", "+callbacks.mine.path=mine.json"]
    code, _ = train_in_process(monkeypatch, tmp_path, *FAST, *mine, "trainer.max_epochs=1")
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and "Traceback" not in err, err
    assert errors == [
        "error: callbacks.mine: Misnamed.on_epoch_ends is not a callback event and would never "
        "be called (did you mean on_epoch_end?)"
    ]
