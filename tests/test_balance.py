"""``data.balance``: inverse class frequencies, the balanced sampler, and image tasks using it."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import train_in_process

from torchcamp.datasets.balance import (
    WeightedEpochSampler,
    balanced_sampler,
    class_weighted_loss,
    inverse_frequency_weights,
)
from torchcamp.datasets.errors import DataError


class Labelled:
    def __init__(self, counts: list[int]) -> None:
        self.targets = [label for label, n in enumerate(counts) for _ in range(n)]
        self.classes = tuple(str(label) for label in range(len(counts)))

    def __len__(self) -> int:
        return len(self.targets)


def test_weights_are_inverse_class_frequencies():
    weights = inverse_frequency_weights([0] * 90 + [1] * 9 + [2] * 1, num_classes=3)
    assert weights == pytest.approx([100 / 270, 100 / 27, 100 / 3])
    assert inverse_frequency_weights([0, 0, 1, 1], 3) == pytest.approx([4 / 6, 4 / 6, 0.0])
    node = class_weighted_loss({"weight": None, "adapt": {}}, Labelled([90, 9, 1]), "nll")
    assert node["weight"] == pytest.approx(weights)
    assert class_weighted_loss({"alpha": None}, Labelled([1, 3]), "focal")["alpha"] == [2, 2 / 3]
    with pytest.raises(DataError, match="loss=mse has none"):
        class_weighted_loss({"reduction": "mean"}, Labelled([1, 3]), "mse")
    with pytest.raises(DataError, match=r"loss\.weight=.* is set too"):
        class_weighted_loss({"weight": [1.0, 2.0]}, Labelled([1, 3]), "cross_entropy")


def test_balanced_sampler_draws_classes_evenly_and_replays_each_epoch():
    data = Labelled([900, 90, 10])
    sampler = balanced_sampler(data, seed=5)
    assert len(sampler) == len(data) == 1000
    drawn = list(sampler)
    counts = Counter(data.targets[i] for i in drawn)
    assert all(250 <= counts[label] <= 420 for label in range(3)), counts
    assert list(balanced_sampler(data, seed=5)) == drawn  # a resumed run replays epoch 0
    sampler.set_epoch(1)
    assert list(sampler) != drawn
    # Under DDP the ranks share one draw and split it; an odd length is rounded up.
    ranks = [WeightedEpochSampler([1.0] * 8, seed=0, num_replicas=2, rank=r) for r in (0, 1)]
    merged = [i for pair in zip(*[list(r) for r in ranks], strict=True) for i in pair]
    assert merged == list(WeightedEpochSampler([1.0] * 8, seed=0))
    odd = [WeightedEpochSampler([1.0] * 7, seed=0, num_replicas=2, rank=r) for r in (0, 1)]
    assert [len(r) for r in odd] == [len(list(r)) for r in odd] == [4, 4]


def test_balance_needs_labels(tmp_path):
    with pytest.raises(DataError, match=r"data\.balance=sampler needs a training set"):
        balanced_sampler(object(), seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("balance", ["sampler", "weights"])
def test_image_tasks_balance_their_classes(monkeypatch, tmp_path, balance):
    # ImageList lists its labels as ImageFolder does, so balance is not a names-only option.
    code, run_dir = train_in_process(
        monkeypatch, tmp_path, "task=rmb", "data.synthetic=true", f"data.balance={balance}",
        "trainer.max_epochs=1",
    )  # fmt: skip
    assert code == 0 and (run_dir / "metrics.json").is_file()
