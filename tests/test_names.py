"""``task=names``: reading, splitting and encoding surnames, the four models, and runs
through the ``train`` entry point on the synthetic stand-in (and the real data)."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import train_in_process

from torchcamp.datasets.errors import DataError
from torchcamp.datasets.names import (
    PAD_INDEX,
    UNK_INDEX,
    load_names,
    read_names,
    split_names,
    to_ascii,
    write_synthetic_names,
)
from torchcamp.tasks import names as task

REPO = Path(__file__).resolve().parents[1]
NAMES_DATA = REPO.parent / "shared" / "data"  # like conftest's SHARED_DATA


def write_language(root: Path, language: str, lines: list[str], encoding: str = "utf-8") -> None:
    folder = root / "names"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{language}.txt").write_text("\n".join(lines) + "\n", encoding=encoding)


# ---- reading, splitting, encoding -------------------------------------------------------


def test_names_become_ascii_as_in_the_course():
    assert to_ascii("Ślusàrski") == "Slusarski"
    assert to_ascii("Nguyễn") == "Nguyen"
    assert to_ascii("O'Néill") == "O'Neill"
    assert to_ascii("Müller-Lüdenscheidt") == "MullerLudenscheidt"  # "-" is not a course letter


def test_duplicates_inside_a_file_are_removed_after_ascii_conversion(tmp_path):
    write_language(tmp_path, "Spanish", ["José", "Jose", "Garcia", "", "  Garcia  ", "Lopez"])
    write_language(tmp_path, "Czech", ["Novak", "Novák", "Dvorak"])
    languages = read_names(tmp_path)
    assert list(languages) == ["Czech", "Spanish"]
    assert languages["Spanish"] == ["Jose", "Garcia", "Lopez"]
    assert languages["Czech"] == ["Novak", "Dvorak"]


def make_languages(sizes: dict[str, int]) -> dict[str, list[str]]:
    return {lang: [f"{lang[:2]}{i:03d}x" for i in range(n)] for lang, n in sizes.items()}


def test_split_is_stratified_deterministic_and_disjoint():
    languages = make_languages({"Big": 200, "Mid": 31, "Small": 3, "Pair": 2, "One": 1})
    splits = split_names(languages, seed=7)
    per_language = {
        split: Counter(label for _, label in samples) for split, samples in splits.items()
    }
    # labels follow the sorted language names: Big, Mid, One, Pair, Small
    assert [per_language[s][0] for s in ("train", "val", "test")] == [160, 20, 20]
    assert [per_language[s][1] for s in ("train", "val", "test")] == [25, 3, 3]
    assert [per_language[s][4] for s in ("train", "val", "test")] == [1, 1, 1]
    assert [per_language[s][3] for s in ("train", "val", "test")] == [1, 1, 0]
    assert [per_language[s][2] for s in ("train", "val", "test")] == [1, 0, 0]
    everything = [item for samples in splits.values() for item in samples]
    assert len(everything) == len(set(everything)) == 237  # disjoint, nothing lost
    assert split_names(languages, seed=7) == splits
    assert split_names(languages, seed=8) != splits
    # Another language does not move the existing languages' splits.
    more = split_names({**languages, "Extra": make_languages({"Extra": 10})["Extra"]}, seed=7)
    big = {name for name, label in splits["test"] if label == 0}
    assert big == {name for name, label in more["test"] if label == 0}


def test_vocab_comes_from_training_names_and_unseen_letters_are_unknown(tmp_path):
    names = ["".join(letters) for letters in itertools.product("Abc", "abc", "abc")]
    write_language(tmp_path, "Testish", [*names, "Qabc"])
    for seed in range(50):  # a seed that holds "Qabc" out of training
        splits = load_names(tmp_path, seed=seed)
        if ("Qabc", 0) not in splits["train"].samples:
            break
    train, vocab = splits["train"], splits["train"].vocab
    assert vocab.itos[PAD_INDEX] == "<pad>" and vocab.itos[UNK_INDEX] == "<unk>"
    assert set(vocab.itos[2:]) == {c for name, _ in train.samples for c in name} == set("Aabc")
    assert splits["val"].vocab is vocab and splits["val"].classes == ("Testish",)
    assert vocab.encode("Qbz").tolist() == [UNK_INDEX, vocab.stoi["b"], UNK_INDEX]


def test_missing_folder_says_where_the_data_comes_from(tmp_path):
    with pytest.raises(DataError) as error:
        task.build_datasets(tmp_path, seed=0)
    message = str(error.value)
    assert str(tmp_path / "names") in message
    assert "names/<Language>.txt" in message and "UTF-8" in message
    assert "https://download.pytorch.org/tutorial/data.zip" in message and "data/names/" in message


def test_empty_and_non_utf8_files_are_named(tmp_path):
    write_language(tmp_path, "Good", ["Alpha", "Beta"])
    (tmp_path / "names" / "Empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match=r"Empty\.txt holds no names"):
        read_names(tmp_path)
    (tmp_path / "names" / "Empty.txt").unlink()
    (tmp_path / "names" / "Latin1.txt").write_bytes("Muñoz\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"Latin1\.txt is not UTF-8"):
        read_names(tmp_path)


def test_synthetic_data_is_deterministic_and_in_the_real_layout(tmp_path):
    write_synthetic_names(tmp_path / "a", seed=3)
    write_synthetic_names(tmp_path / "b", seed=3)
    files = sorted(p.name for p in (tmp_path / "a" / "names").glob("*.txt"))
    assert len(files) == 5
    for name in files:
        assert (tmp_path / "a" / "names" / name).read_bytes() == (
            tmp_path / "b" / "names" / name
        ).read_bytes()
    splits = task.build_datasets(tmp_path / "a", seed=3)
    assert {split: len(data) for split, data in splits.items()} == {
        "train": 240,
        "val": 30,
        "test": 30,
    }


# ---- batches and models -----------------------------------------------------------------


def test_collate_pads_names_into_a_batch():
    samples = [(torch.tensor([5, 6, 7]), 2), (torch.tensor([8]), 0), (torch.tensor([9, 9]), 1)]
    inputs, lengths, labels = task.collate_fn(samples)
    assert inputs.dtype == lengths.dtype == labels.dtype == torch.long
    assert inputs.tolist() == [[5, 6, 7], [8, PAD_INDEX, PAD_INDEX], [9, 9, PAD_INDEX]]
    assert lengths.tolist() == [3, 1, 2] and labels.tolist() == [2, 0, 1]


MODELS = {
    "rnn_cell": (task.CourseRNN, {"hidden_size": 16}),
    "rnn": (task.RNNClassifier, {"hidden_size": 16, "embedding_dim": 8}),
    "gru": (task.GRUClassifier, {"hidden_size": 16, "embedding_dim": 8}),
    "lstm": (task.LSTMClassifier, {"hidden_size": 16, "embedding_dim": 8}),
    "gru_one_hot": (task.GRUClassifier, {"hidden_size": 16, "embedding_dim": None}),
    "lstm_bidirectional_2_layers": (
        task.LSTMClassifier,
        {"hidden_size": 16, "embedding_dim": None, "bidirectional": True, "num_layers": 2},
    ),
    "rnn_bidirectional": (
        task.RNNClassifier,
        {"hidden_size": 16, "embedding_dim": 8, "bidirectional": True, "dropout": 0.5},
    ),
}


@pytest.mark.parametrize("key", MODELS)
def test_models_give_logits_that_padding_does_not_change(key):
    cls, options = MODELS[key]
    torch.manual_seed(0)
    model = cls(num_classes=5, vocab_size=12, padding_idx=PAD_INDEX, **options).eval()
    short, longer = torch.tensor([3, 4, 5]), torch.tensor([6, 7, 8, 9, 10, 11, 2])
    alone = model(*task.collate_fn([(short, 0)])[:2])
    inputs, lengths, _ = task.collate_fn([(longer, 1), (short, 0), (longer[:2], 2)])
    batched = model(inputs, lengths)
    assert alone.shape == (1, 5) and batched.shape == (3, 5)
    torch.testing.assert_close(batched[1:2], alone)
    # The model learns through a training step: gradients reach its first layer.
    model.train()
    out = task.step(model, (inputs, lengths, torch.tensor([1, 0, 2])), torch.nn.CrossEntropyLoss())
    out["loss"].backward()
    assert set(out) == {"loss", "confusion"} and out["confusion"].tensor().sum() == 3
    first = next(model.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_build_model_sizes_the_model_from_the_data(tmp_path):
    write_synthetic_names(tmp_path, seed=0)
    train = task.build_datasets(tmp_path, seed=0)["train"]
    model = task.build_model(lambda **kw: task.GRUClassifier(hidden_size=8, **kw), train)
    assert model.embedding.num_embeddings == len(train.vocab)
    assert model.fc.out_features == len(train.classes) == 5
    with pytest.raises(ValueError, match="use it with task=names"):  # model=gru, task=rmb
        task.GRUClassifier(num_classes=2)


# ---- through the entry point ------------------------------------------------------------


def train_names(monkeypatch, tmp_path: Path, *args: str) -> tuple[int, dict]:
    """``train ARGS`` in this process; (exit code, metrics of a finished run or {})."""
    code, run_dir = train_in_process(monkeypatch, tmp_path, *args)
    if code:
        return code, {}
    return 0, json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_train_task_names_on_synthetic_data(run_in_process):
    metrics = run_in_process("task=names", "data.synthetic=true", "trainer.max_epochs=2").metrics
    for key in ("val/acc", "val/macro_acc", "test/acc", "test/macro_acc", "best/val/acc"):
        assert isinstance(metrics[key], float), key
    assert metrics["task"] == "names" and metrics["synthetic"] is True
    assert metrics["global_step"] == 8  # 240 training names in batches of 64, twice
    assert metrics["best/val/acc"] > 0.5  # five made-up languages: chance is 0.2


MODEL_RUNS = {
    "rnn_cell": ("model=rnn_cell",),
    "rnn": ("model=rnn",),
    "gru": ("model=gru",),
    "lstm": ("model=lstm",),
    "lstm_bidirectional_one_hot": (
        "model=lstm",
        "model.bidirectional=true",
        "model.embedding_dim=null",
        "model.num_layers=2",
        "model.dropout=0.2",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("key", MODEL_RUNS)
def test_every_model_option_trains(monkeypatch, tmp_path, key):
    code, metrics = train_names(
        monkeypatch,
        tmp_path,
        "task=names",
        *MODEL_RUNS[key],
        "data.synthetic=true",
        "trainer.max_epochs=1",
    )
    assert code == 0
    assert metrics["global_step"] == 4 and metrics["val/macro_acc"] == metrics["val/macro_acc"]


@pytest.mark.slow
@pytest.mark.parametrize("balance", ["sampler", "weights"])
def test_balance_options_train(monkeypatch, tmp_path, balance):
    code, metrics = train_names(
        monkeypatch,
        tmp_path,
        "task=names",
        f"data.balance={balance}",
        "data.synthetic=true",
        "trainer.max_epochs=1",
    )
    assert code == 0 and metrics["global_step"] == 4


@pytest.mark.slow
def test_balance_weights_refuses_a_loss_without_class_weights(monkeypatch, tmp_path, capsys):
    code, _ = train_names(
        monkeypatch, tmp_path, "task=names", "data.balance=weights", "loss=mse",
        "data.synthetic=true", "trainer.max_epochs=1",
    )  # fmt: skip
    assert code == 2
    assert "data.balance=weights needs a loss with per-class weights" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.realdata
def test_names_gru_beats_the_course_on_real_data(run_in_process):
    if not (NAMES_DATA / "names").is_dir():
        pytest.skip(f"real data not found at {NAMES_DATA / 'names'}")
    metrics = run_in_process("task=names", f"data.root={NAMES_DATA}").metrics
    assert metrics["synthetic"] is False
    assert metrics["best/val/acc"] >= 0.70, metrics
    assert metrics["test/macro_acc"] >= 0.43, metrics  # the course's loop: about 0.43
