"""The course's custom losses against formulas written out by hand, and the loss catalogue."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from torchcamp.tasks.losses import AsymmetricLoss, DiceLoss, FocalLoss

LOSS_DIR = Path(__file__).resolve().parents[1] / "conf" / "loss"

# A 3x4 example: three samples, four classes.
LOGITS = torch.tensor(
    [
        [2.0, 0.5, -1.0, 0.0],
        [0.1, 0.2, 3.0, -0.5],
        [-1.0, 1.5, 0.3, 0.8],
    ]
)
TARGETS = torch.tensor([0, 2, 3])


def _focal_by_hand(
    logits: torch.Tensor, targets: torch.Tensor, alpha: list[float] | float | None, gamma: float
) -> list[float]:
    """Per-sample focal loss with nothing but exp, log and sums."""
    losses = []
    for row, t in zip(logits.tolist(), targets.tolist(), strict=True):
        denom = sum(math.exp(z) for z in row)
        pt = math.exp(row[t]) / denom
        if alpha is None:
            a = 1.0
        elif isinstance(alpha, list):
            a = alpha[t]
        else:
            a = alpha
        losses.append(-a * (1.0 - pt) ** gamma * math.log(pt))
    return losses


# --- FocalLoss ------------------------------------------------------------------------------


def test_focal_matches_hand_formula() -> None:
    expected = _focal_by_hand(LOGITS, TARGETS, alpha=None, gamma=2.0)
    got = FocalLoss(gamma=2.0)(LOGITS, TARGETS)
    assert got.ndim == 0
    assert got.item() == pytest.approx(sum(expected) / 3, rel=1e-6)


def test_focal_first_sample_explicit() -> None:
    # Sample 0: logits [2, 0.5, -1, 0], true class 0.
    pt = math.exp(2.0) / (math.exp(2.0) + math.exp(0.5) + math.exp(-1.0) + math.exp(0.0))
    expected = -((1 - pt) ** 2) * math.log(pt)
    got = FocalLoss(gamma=2.0, reduction="none")(LOGITS[:1], TARGETS[:1])
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_focal_gamma0_no_alpha_is_cross_entropy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(8, 5)
    targets = torch.randint(0, 5, (8,))
    focal = FocalLoss(alpha=None, gamma=0.0)
    torch.testing.assert_close(focal(logits, targets), F.cross_entropy(logits, targets))
    focal_none = FocalLoss(gamma=0.0, reduction="none")
    torch.testing.assert_close(
        focal_none(logits, targets), F.cross_entropy(logits, targets, reduction="none")
    )


def test_focal_gamma_downweights_easy_examples() -> None:
    # A confident correct prediction loses far more of its loss to the focusing term than an
    # uncertain one.
    logits = torch.tensor([[5.0, 0.0], [0.1, 0.0]])
    targets = torch.tensor([0, 0])
    ce = F.cross_entropy(logits, targets, reduction="none")
    fl = FocalLoss(gamma=2.0, reduction="none")(logits, targets)
    ratio = fl / ce
    assert torch.all(fl < ce)
    assert ratio[0] < 0.001 < 0.2 < ratio[1]


def test_focal_per_class_alpha() -> None:
    alpha = [0.1, 0.2, 0.3, 0.4]
    expected = _focal_by_hand(LOGITS, TARGETS, alpha=alpha, gamma=2.0)
    loss = FocalLoss(alpha=alpha, gamma=2.0, reduction="none")
    got = loss(LOGITS, TARGETS)
    torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-6, atol=1e-7)
    # Targets 0, 2, 3 pick alphas 0.1, 0.3, 0.4.
    plain = FocalLoss(gamma=2.0, reduction="none")(LOGITS, TARGETS)
    torch.testing.assert_close(got, plain * torch.tensor([0.1, 0.3, 0.4]))


def test_focal_scalar_alpha_and_sum() -> None:
    expected = _focal_by_hand(LOGITS, TARGETS, alpha=0.25, gamma=1.5)
    got = FocalLoss(alpha=0.25, gamma=1.5, reduction="sum")(LOGITS, TARGETS)
    assert got.item() == pytest.approx(sum(expected), rel=1e-6)


def test_focal_alpha_is_a_buffer() -> None:
    loss = FocalLoss(alpha=[1.0, 2.0])
    assert "alpha" in dict(loss.named_buffers())
    assert loss.alpha.dtype == torch.float32
    loss = loss.to(torch.float64)
    assert loss.alpha.dtype == torch.float64
    assert FocalLoss().alpha is None


def test_focal_gradient_matches_autograd_of_formula() -> None:
    logits = LOGITS.clone().requires_grad_(True)
    FocalLoss(gamma=2.0)(logits, TARGETS).backward()
    ref = LOGITS.clone().requires_grad_(True)
    pt = F.softmax(ref, dim=1).gather(1, TARGETS[:, None]).squeeze(1)
    (-((1 - pt) ** 2) * torch.log(pt)).mean().backward()
    torch.testing.assert_close(logits.grad, ref.grad)


def test_focal_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        FocalLoss(reduction="avg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="class weights"):
        FocalLoss(alpha=[1.0, 2.0])(LOGITS, TARGETS)


# --- DiceLoss -------------------------------------------------------------------------------


def test_dice_matches_hand_formula() -> None:
    logits = torch.tensor([[0.0, 2.0], [-1.0, 3.0]])
    targets = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    p = [1 / (1 + math.exp(-z)) for z in (0.0, 2.0, -1.0, 3.0)]
    t = [0.0, 1.0, 1.0, 1.0]
    intersection = sum(a * b for a, b in zip(p, t, strict=True))
    dice = (2 * intersection + 1.0) / (sum(p) + sum(t) + 1.0)
    got = DiceLoss(smooth=1.0)(logits, targets)
    assert got.ndim == 0
    assert got.item() == pytest.approx(1 - dice, rel=1e-6)


def test_dice_smooth_changes_result_and_flattens_shapes() -> None:
    logits = torch.tensor([1.0, -2.0, 0.5, 0.0])
    targets = torch.tensor([1.0, 0.0, 1.0, 0.0])
    p = torch.sigmoid(logits)
    for smooth in (1.0, 1e-3):
        dice = (2 * (p * targets).sum() + smooth) / (p.sum() + targets.sum() + smooth)
        got = DiceLoss(smooth=smooth)(logits.reshape(2, 2), targets.reshape(2, 2))
        torch.testing.assert_close(got, 1 - dice)
    # Flattening means the layout does not matter, only the pairing of elements.
    torch.testing.assert_close(
        DiceLoss()(logits.reshape(2, 2), targets.reshape(2, 2)), DiceLoss()(logits, targets)
    )


def test_dice_limits() -> None:
    # Near-perfect logits give a loss near 0; exactly wrong ones a loss near 1.
    targets = torch.tensor([[1.0, 0.0, 1.0]])
    good = torch.tensor([[50.0, -50.0, 50.0]])
    assert DiceLoss(smooth=1e-6)(good, targets).item() == pytest.approx(0.0, abs=1e-6)
    assert DiceLoss(smooth=1e-6)(-good, targets).item() == pytest.approx(1.0, abs=1e-6)
    # Empty prediction and empty target: smooth / smooth, so no loss.
    assert DiceLoss()(torch.full((4,), -100.0), torch.zeros(4)).item() == pytest.approx(0.0)


# --- AsymmetricLoss -------------------------------------------------------------------------


def test_asymmetric_course_example() -> None:
    # Over by 1 costs 1, under by 1 costs 10: (1 + 10) / 2.
    loss = AsymmetricLoss()(torch.tensor([3.0, 1.0]), torch.tensor([2.0, 2.0]))
    assert loss.item() == pytest.approx(5.5)


def test_asymmetric_reductions_and_weights() -> None:
    pred = torch.tensor([5.0, 2.0, 4.0, 0.5])
    target = torch.tensor([2.0, 2.0, 6.0, 1.0])
    # over 2 per unit, under 3 per unit: over by 3 -> 6; exact -> 0; under by 2 -> 6;
    # under by 0.5 -> 1.5.
    elementwise = AsymmetricLoss(over=2.0, under=3.0, reduction="none")(pred, target)
    torch.testing.assert_close(elementwise, torch.tensor([6.0, 0.0, 6.0, 1.5]))
    total = AsymmetricLoss(over=2.0, under=3.0, reduction="sum")(pred, target)
    assert total.item() == pytest.approx(13.5)
    mean = AsymmetricLoss(over=2.0, under=3.0)(pred, target)
    assert mean.item() == pytest.approx(13.5 / 4)


def test_asymmetric_symmetric_case_is_l1_and_gradients() -> None:
    torch.manual_seed(0)
    pred = torch.randn(3, 4)
    target = torch.randn(3, 4)
    torch.testing.assert_close(
        AsymmetricLoss(over=1.0, under=1.0)(pred, target), F.l1_loss(pred, target)
    )
    # The gradient of each element is +over/n above the target and -under/n below it.
    pred = torch.tensor([3.0, 1.0], requires_grad=True)
    AsymmetricLoss()(pred, torch.tensor([2.0, 2.0])).backward()
    torch.testing.assert_close(pred.grad, torch.tensor([0.5, -5.0]))


def test_asymmetric_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        AsymmetricLoss()(torch.zeros(4, 1), torch.zeros(4))
    with pytest.raises(ValueError, match="reduction"):
        AsymmetricLoss(reduction="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        AsymmetricLoss(over=-1.0)


# --- The loss catalogue ---------------------------------------------------------------------

# loss=none is no loss object (for pennfudan's detector): see test_config_groups, test_catalogue.
LOSS_FILES = [p for p in sorted(LOSS_DIR.glob("*.yaml")) if p.stem != "none"]
ALLOWED_INPUTS = {"logits", "log_softmax", "softmax", "sigmoid"}
ALLOWED_TARGETS = {"index", "one_hot", "signed"}
EXPECTED = {
    "cross_entropy",
    "nll",
    "bce",
    "bce_with_logits",
    "l1",
    "mse",
    "smooth_l1",
    "huber",
    "kl_div",
    "poisson_nll",
    "soft_margin",
    "multilabel_soft_margin",
    "multi_margin",
    "focal",
    "dice",
    "asymmetric",
}


def _build(cfg: dict) -> torch.nn.Module:
    """Construct the ``_target_`` class with the file's own keys, lists turned into tensors."""
    kwargs = {k: v for k, v in cfg.items() if k not in ("_target_", "adapt", "binary_only")}
    kwargs = {k: torch.tensor(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    module_name, _, class_name = cfg["_target_"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**kwargs)


def _adapt(logits: torch.Tensor, labels: torch.Tensor, adapt: dict) -> tuple:
    """How a single-label classifier's outputs are fed to the loss, per the file's ``adapt``."""
    inputs = {
        "logits": lambda z: z,
        "log_softmax": lambda z: z.log_softmax(1),
        "softmax": lambda z: z.softmax(1),
        "sigmoid": torch.sigmoid,
    }[adapt["input"]](logits)
    one_hot = F.one_hot(labels, logits.shape[1]).float()
    target = {"index": labels, "one_hot": one_hot, "signed": 2 * one_hot - 1}[adapt["target"]]
    return inputs, target


def test_catalogue_is_complete() -> None:
    assert {p.stem for p in LOSS_FILES} >= EXPECTED


@pytest.mark.parametrize("path", LOSS_FILES, ids=lambda p: p.stem)
def test_loss_file_schema_and_construction(path: Path) -> None:
    text = path.read_text()
    first = text.splitlines()[0]
    assert first.startswith("# ") and len(first) > 10, "first line must describe the loss"
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    assert isinstance(cfg, dict)
    assert isinstance(cfg["_target_"], str)
    assert cfg["_target_"].startswith(("torch.nn.", "torchcamp.tasks.losses."))
    assert set(cfg["adapt"]) == {"input", "target"}
    assert cfg["adapt"]["input"] in ALLOWED_INPUTS
    assert cfg["adapt"]["target"] in ALLOWED_TARGETS
    assert isinstance(cfg["binary_only"], bool)
    assert cfg["binary_only"] is (path.stem in {"bce", "bce_with_logits"})

    loss_fn = _build(cfg)
    assert isinstance(loss_fn, torch.nn.Module)

    # Fed from a classifier as the file says, the loss is a finite scalar, and lower for a
    # confident right answer than for a confident wrong one.
    n_classes = 2 if cfg["binary_only"] else 3
    labels = torch.tensor([0, 1, 1, 0])
    right = F.one_hot(labels, n_classes).float() * 8 - 4
    wrong = -right
    loss_right = loss_fn(*_adapt(right, labels, cfg["adapt"]))
    loss_wrong = loss_fn(*_adapt(wrong, labels, cfg["adapt"]))
    assert loss_right.ndim == 0 and torch.isfinite(loss_right)
    assert loss_right < loss_wrong


def test_loss_files_expose_torch_defaults() -> None:
    def load(name: str) -> dict:
        return OmegaConf.to_container(OmegaConf.load(LOSS_DIR / f"{name}.yaml"))

    ce = load("cross_entropy")
    assert (ce["weight"], ce["label_smoothing"], ce["ignore_index"]) == (None, 0.0, -100)
    assert load("bce_with_logits")["pos_weight"] is None
    kl = load("kl_div")
    assert (kl["reduction"], kl["log_target"]) == ("batchmean", False)
    assert load("poisson_nll")["log_input"] is True
    assert load("smooth_l1")["beta"] == 1.0
    assert load("huber")["delta"] == 1.0
    mm = load("multi_margin")
    assert (mm["p"], mm["margin"]) == (1, 1.0)
    focal = load("focal")
    assert (focal["alpha"], focal["gamma"]) == (None, 2.0)
    asym = load("asymmetric")
    assert (asym["over"], asym["under"]) == (1.0, 10.0)


def test_list_values_become_tensors() -> None:
    cfg = OmegaConf.to_container(OmegaConf.load(LOSS_DIR / "focal.yaml"))
    cfg["alpha"] = [0.2, 0.3, 0.5]
    loss_fn = _build(cfg)
    assert torch.equal(loss_fn.alpha, torch.tensor([0.2, 0.3, 0.5]))
    cfg = OmegaConf.to_container(OmegaConf.load(LOSS_DIR / "cross_entropy.yaml"))
    cfg["weight"] = [1.0, 2.0, 3.0]
    ce = _build(cfg)
    torch.testing.assert_close(
        ce(LOGITS[:, :3], torch.tensor([0, 2, 1])),
        F.cross_entropy(LOGITS[:, :3], torch.tensor([0, 2, 1]), weight=torch.tensor([1.0, 2, 3])),
    )
