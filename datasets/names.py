"""Surnames by language (the PyTorch char-RNN tutorial's ``data/names``): reading, splitting,
encoding, and a synthetic stand-in.

Layout under a data root: ``names/<Language>.txt``, one surname per line, UTF-8 — the
``data/names/`` folder of the PyTorch tutorial's https://download.pytorch.org/tutorial/data.zip
(18 languages, 20,074 lines).

Names are reduced to ASCII as the course does (``unicodeToAscii``: NFD, drop combining marks,
keep ASCII letters and `` .,;'``); duplicates inside a language are dropped (Arabic.txt has 108
unique names in 2,000 lines); each language's unique names are split 80/10/10, fixed by the seed.
"""

from __future__ import annotations

import logging
import random
import string
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence

from torchcamp.datasets.download import download_archive
from torchcamp.datasets.errors import DataError
from torchcamp.datasets.folds import check_folds, describe_fold, split_fold

log = logging.getLogger(__name__)

# The course's alphabet: 52 letters and 5 punctuation marks.
ALL_LETTERS = string.ascii_letters + " .,;'"
PAD, UNK = "<pad>", "<unk>"
PAD_INDEX, UNK_INDEX = 0, 1  # fixed, so that collate_names needs no vocabulary
FRACTIONS = (0.8, 0.1, 0.1)  # train, val, test, per language

URL = "https://download.pytorch.org/tutorial/data.zip"  # names/ is its data/names/
LAYOUT_HELP = (
    "expected names/<Language>.txt under data.root, one name per line, UTF-8 (18 files, e.g. "
    "names/Arabic.txt ... names/Vietnamese.txt) — the data/names/ folder of the PyTorch "
    f"tutorial's {URL}; set data.root to the folder that holds names/ (or TORCHCAMP_DATA), run "
    "with data.download=true, or with data.synthetic=true"
)


def to_ascii(name: str) -> str:
    """The course's ``unicodeToAscii``: "Ślusàrski" -> "Slusarski"; other characters vanish."""
    return "".join(
        c
        for c in unicodedata.normalize("NFD", name)
        if unicodedata.category(c) != "Mn" and c in ALL_LETTERS
    )


def download_names(root: str | Path) -> None:
    """Fetch the tutorial's ``data.zip`` and keep its ``data/names/`` as ``root/names``."""
    download_archive(URL, root, keep="data/names")


# ---- reading and splitting ---------------------------------------------------------------


def read_names(root: str | Path) -> dict[str, list[str]]:
    """``{language: unique ASCII names in file order}`` from ``root/names/*.txt``, sorted by
    language. Raises :class:`DataError` for a missing folder, an unreadable or empty file."""
    folder = Path(root) / "names"
    if not folder.is_dir():
        raise DataError(
            f"names data not found: no folder {folder} (data.root={root}); {LAYOUT_HELP}"
        )
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise DataError(f"no .txt files in {folder}; {LAYOUT_HELP}")
    languages: dict[str, list[str]] = {}
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise DataError(f"{path} is not UTF-8 (byte {error.start}): {LAYOUT_HELP}") from error
        names = (to_ascii(line.strip()) for line in text.splitlines())
        unique = list(dict.fromkeys(name for name in names if name))
        if not unique:
            raise DataError(f"{path} holds no names (empty, or no ASCII letters): {LAYOUT_HELP}")
        languages[path.stem] = unique
    return languages


def split_names(
    languages: Mapping[str, Sequence[str]], seed: int, fractions: Sequence[float] = FRACTIONS
) -> dict[str, list[tuple[str, int]]]:
    """``{"train"|"val"|"test": [(name, label), ...]}``, stratified by language.

    Each language's unique names are shuffled with a generator seeded by ``(seed, language)``
    (so adding a language leaves the others' splits alone), then cut into val, test and train.
    A language with 3 or more names gets at least one val and one test name; with 2, one val.
    """
    splits: dict[str, list[tuple[str, int]]] = {"train": [], "val": [], "test": []}
    for label, language in enumerate(sorted(languages)):
        names = sorted(languages[language])
        random.Random(f"{seed}/{language}").shuffle(names)
        n = len(names)
        n_val = max(1, round(fractions[1] * n)) if n >= 2 else 0
        n_test = max(1, round(fractions[2] * n)) if n >= 3 else 0
        splits["val"] += [(name, label) for name in names[:n_val]]
        splits["test"] += [(name, label) for name in names[n_val : n_val + n_test]]
        splits["train"] += [(name, label) for name in names[n_val + n_test :]]
    return splits


# ---- encoding ----------------------------------------------------------------------------


class Vocab:
    """Characters -> indices: ``<pad>`` is 0, ``<unk>`` 1 (any character unseen in training),
    then the training names' characters in sorted order."""

    def __init__(self, names: Sequence[str]) -> None:
        self.itos: tuple[str, ...] = (PAD, UNK, *sorted({c for name in names for c in name}))
        self.stoi = {token: index for index, token in enumerate(self.itos)}

    @classmethod
    def from_itos(cls, itos: Sequence[str]) -> Vocab:
        """The vocabulary whose ``itos`` this is (as a checkpoint keeps it): its characters,
        each taken as a one-letter name, give back the same sorted table."""
        if tuple(itos[:2]) != (PAD, UNK):
            raise DataError(f"not a names vocabulary (it must start with {PAD}, {UNK}): {itos[:5]}")
        return cls(list(itos[2:]))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, name: str) -> torch.Tensor:
        """A name's character indices, ``[len(name)]`` long (unseen characters -> ``<unk>``)."""
        return torch.tensor([self.stoi.get(c, UNK_INDEX) for c in name], dtype=torch.long)

    @property
    def pad_index(self) -> int:
        return PAD_INDEX

    @property
    def unk_index(self) -> int:
        return UNK_INDEX


class NameList:
    """Map-style dataset of ``(name, label)``: items are ``(indices [len] long, label)``."""

    def __init__(
        self, samples: Sequence[tuple[str, int]], classes: tuple[str, ...], vocab: Vocab
    ) -> None:
        self.samples = list(samples)
        self.classes = classes
        self.vocab = vocab
        self.encoded = [vocab.encode(name) for name, _ in self.samples]  # once, not every epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.encoded[index], self.samples[index][1]

    @property
    def targets(self) -> list[int]:
        """Every sample's label, in order (what class balancing counts)."""
        return [label for _, label in self.samples]


def load_names(
    root: str | Path, seed: int, folds: int | None = None, fold: int = 0
) -> dict[str, NameList]:
    """Read, split and encode: ``{"train", "val", "test"}`` sharing the training vocabulary.
    With ``folds``, val is fold ``fold`` of train and val pooled (datasets/folds.py), test
    the split it is without folds."""
    check_folds(folds, fold)
    languages = read_names(root)
    classes = tuple(sorted(languages))
    splits = split_names(languages, seed)
    if folds is not None:
        splits = split_fold(splits, folds, fold, seed)
        log.info("names: %s", describe_fold(folds, fold, seed))
    vocab = Vocab([name for name, _ in splits["train"]])
    return {split: NameList(samples, classes, vocab) for split, samples in splits.items()}


def collate_names(
    samples: Sequence[tuple[torch.Tensor, int]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(inputs [B, T] long padded with PAD_INDEX, lengths [B] long, labels [B] long)``."""
    sequences = [indices for indices, _ in samples]
    inputs = pad_sequence(sequences, batch_first=True, padding_value=PAD_INDEX)
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    labels = torch.tensor([label for _, label in samples], dtype=torch.long)
    return inputs, lengths, labels


# ---- synthetic stand-in ------------------------------------------------------------------

# Made-up "languages", each with its own letters and endings, so a char-RNN can tell them apart.
SYNTHETIC_LANGUAGES: dict[str, dict[str, Sequence[str]]] = {
    "Lamonic": {"prefixes": ("",), "onsets": "lmnv", "vowels": "aeiou", "endings": ("o", "ino")},
    "Krzakish": {
        "prefixes": ("",),
        "onsets": ("kr", "zd", "sz"),
        "vowels": "ay",
        "endings": ("ak", "ski"),
    },
    "Hansen": {"prefixes": ("",), "onsets": "bdghjt", "vowels": "aei", "endings": ("sen", "berg")},
    "Okuyan": {
        "prefixes": ("",),
        "onsets": ("k", "t", "y", "sh"),
        "vowels": "aiou",
        "endings": ("ama", "oto"),
    },
    "Celtach": {
        "prefixes": ("O'", "Mac", "Mc"),
        "onsets": "bdfgl",
        "vowels": "aeo",
        "endings": ("ach", "aigh"),
    },
}


def write_synthetic_names(root: str | Path, seed: int, per_language: int = 60) -> Path:
    """Write ``per_language`` unique names for each of five made-up languages into
    ``root/names/<Language>.txt`` (the real layout), plus one repeated line and, in one language,
    accented spellings, so duplicate removal and ASCII conversion run as on the real files.
    Deterministic given ``seed``. Returns ``root``."""
    rng = random.Random(seed)
    folder = Path(root) / "names"
    folder.mkdir(parents=True, exist_ok=True)
    for language, parts in SYNTHETIC_LANGUAGES.items():
        names: dict[str, str] = {}  # ASCII form -> as written
        while len(names) < per_language:
            body = rng.choice(parts["onsets"])
            for _ in range(rng.randint(1, 3)):
                body += rng.choice(parts["vowels"]) + rng.choice("lmnrt")
            name = (
                rng.choice(parts["prefixes"]) + (body + rng.choice(parts["endings"])).capitalize()
            )
            if language == "Lamonic" and rng.random() < 0.2:
                name = name.replace("e", "é", 1)  # to_ascii turns it back into "e"
            names.setdefault(to_ascii(name), name)
        lines = [*names.values(), next(iter(names.values()))]  # one duplicate line
        (folder / f"{language}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(root)
