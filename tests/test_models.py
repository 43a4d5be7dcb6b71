"""tasks/models/: old ``_target_``s still import, ``model=torchvision`` fits any torchvision
classifier to a task (never downloading weights here), and ``model=custom``'s helpers import and
build the user's own model with one-line errors."""

from __future__ import annotations

import functools
import sys
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from hydra.utils import get_class, get_method, instantiate
from omegaconf import OmegaConf
from torch import nn
from torchvision.models._api import WeightsEnum

from torchcamp.tasks import classification, dcgan, losses
from torchcamp.tasks.models import custom, recurrent
from torchcamp.tasks.models import dcgan as gan_models
from torchcamp.tasks.models.custom import build_custom, import_model_target
from torchcamp.tasks.models.torchvision_classifier import torchvision_classifier
from torchcamp.trainer.errors import UserError

CONF_MODEL = Path(__file__).resolve().parents[1] / "conf" / "model"

# Every model `_target_` conf/model/*.yaml named before models moved to tasks/models/: resolved
# configs in checkpoints written before keep them, so they must keep importing.
OLD_CLASS_TARGETS = [
    "torchcamp.tasks.dcgan.DCGAN",
    "torchcamp.tasks.models.LeNet",
    "torchcamp.tasks.names.CourseRNN",
    "torchcamp.tasks.names.GRUClassifier",
    "torchcamp.tasks.names.LSTMClassifier",
    "torchcamp.tasks.names.RNNClassifier",
]
OLD_FUNCTION_TARGETS = [
    "torchcamp.tasks.models.fasterrcnn",
    "torchcamp.tasks.models.resnet18",
]


@pytest.mark.parametrize("target", OLD_CLASS_TARGETS)
def test_old_class_targets_still_import(target):
    assert issubclass(get_class(target), nn.Module)


@pytest.mark.parametrize("target", OLD_FUNCTION_TARGETS)
def test_old_function_targets_still_import(target):
    assert callable(get_method(target))


def test_old_targets_are_the_moved_objects():
    assert get_class("torchcamp.tasks.names.GRUClassifier") is recurrent.GRUClassifier
    assert get_class("torchcamp.tasks.dcgan.DCGAN") is gan_models.DCGAN


def test_every_model_config_target_imports():
    for path in sorted(CONF_MODEL.glob("*.yaml")):
        node = OmegaConf.load(path)
        if not OmegaConf.is_missing(node, "_target_"):  # model=custom: the user names it
            assert callable(get_method(node._target_)), path.name


def test_losses_keep_their_old_homes():
    assert classification.AdaptedLoss is losses.AdaptedLoss
    assert classification.INPUTS is losses.INPUTS and classification.TARGETS is losses.TARGETS
    assert dcgan.AdversarialLoss is losses.AdversarialLoss
    assert dcgan.GAN_CRITERIA is losses.GAN_CRITERIA


# ---- model=torchvision -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Any attempt to fetch weights fails as offline would: tests never download."""

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline in tests")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("resnet18", "fc"),
        ("efficientnet_b0", "classifier.1"),
        ("mobilenet_v3_small", "classifier.3"),
        ("squeezenet1_0", "classifier.1"),  # a 1x1 convolution
        ("convnext_tiny", "classifier.2"),
        ("vit_b_16", "heads.head"),
        ("googlenet", "fc"),
    ],
)
def test_random_init_head_has_num_classes(name, head):
    model = torchvision_classifier(num_classes=5, name=name)
    layer = model.get_submodule(head)
    assert getattr(layer, "out_features", getattr(layer, "out_channels", None)) == 5


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "squeezenet1_0"])
def test_forward_gives_one_logit_per_class(name):
    model = torchvision_classifier(num_classes=3, name=name).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)


def test_googlenet_training_forward_is_a_tensor():
    model = torchvision_classifier(num_classes=3, name="googlenet").train()
    assert model.aux1 is None and model.aux2 is None
    out = model(torch.randn(2, 3, 64, 64))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UserError, match=r"model\.name=resnet5 .*did you mean .*resnet50"):
        torchvision_classifier(num_classes=3, name="resnet5")


def test_detection_models_are_not_classifiers():
    with pytest.raises(UserError, match="not a torchvision classification model"):
        torchvision_classifier(num_classes=3, name="fasterrcnn_resnet50_fpn")


def test_unknown_weights_lists_the_models_weights():
    with pytest.raises(UserError, match=r"model\.weights=IMAGENET9K .*IMAGENET1K_V1, DEFAULT"):
        torchvision_classifier(num_classes=3, name="resnet18", weights="IMAGENET9K")


def test_builder_options_it_refuses_are_one_line():
    with pytest.raises(UserError, match="unexpected keyword argument 'width'"):
        torchvision_classifier(num_classes=3, name="resnet18", width=3)


def test_offline_weights_are_one_line():
    with pytest.raises(UserError, match="cannot download them"):
        torchvision_classifier(num_classes=3, name="mobilenet_v3_small", weights="DEFAULT")


@pytest.mark.parametrize(
    ("name", "head", "builder_options"),
    [
        ("resnet18", "fc", {}),
        ("squeezenet1_0", "classifier.1", {}),
        # torchvision builds pretrained googlenet with its auxiliary heads, then drops them.
        ("googlenet", "fc", {"aux_logits": True, "init_weights": False}),
    ],
)
def test_pretrained_head_is_replaced_and_the_rest_loaded(monkeypatch, name, head, builder_options):
    pretrained = torchvision.models.get_model(name, **builder_options).state_dict()
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, *a, **k: pretrained)

    model = torchvision_classifier(num_classes=4, name=name, weights="IMAGENET1K_V1")

    state = model.state_dict()
    assert state[f"{head}.weight"].shape[0] == 4 and state[f"{head}.bias"].shape == (4,)
    for key, value in state.items():
        if not key.startswith(f"{head}."):
            assert torch.equal(value, pretrained[key]), key
    out = model.train()(torch.randn(2, 3, 64, 64))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 4)


def test_config_builds_through_hydra():
    factory = instantiate(OmegaConf.load(CONF_MODEL / "torchvision.yaml"))
    assert factory(num_classes=3).fc.out_features == 3


# ---- model=custom ------------------------------------------------------------------------

MYNETS = """
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, num_classes, width=8):
        super().__init__()
        self.fc = nn.Linear(width, num_classes)


def fixed_head(width=2):
    return nn.Linear(width, 3)


def anything(**kwargs):
    return nn.Linear(1, kwargs["num_classes"])


def broken(num_classes):
    raise RuntimeError("boom\\nsecond line")


def not_a_model(num_classes):
    return {"fc": num_classes}
"""


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A working directory to write the user's modules in; they leave sys.modules after."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for name in [n for n in sys.modules if n.split(".")[0] in ("mynets", "badnets", "needy")]:
        del sys.modules[name]


def test_imports_a_class_from_the_working_directory(user_dir):
    (user_dir / "mynets.py").write_text(MYNETS)
    target = import_model_target("mynets.TinyNet")
    assert target.__name__ == "TinyNet"
    assert str(user_dir) not in sys.path  # only for the import


def test_builds_a_class_that_takes_num_classes(user_dir):
    (user_dir / "mynets.py").write_text(MYNETS)
    factory = functools.partial(import_model_target("mynets.TinyNet"), width=16)  # as Hydra's
    model = build_custom(factory, num_classes=5)
    assert (model.fc.in_features, model.fc.out_features) == (16, 5)


def test_builds_a_function_without_num_classes(user_dir):
    (user_dir / "mynets.py").write_text(MYNETS)
    model = build_custom(import_model_target("mynets.fixed_head"), num_classes=5, width=4)
    assert (model.in_features, model.out_features) == (4, 3)


def test_kwargs_receive_num_classes(user_dir):
    (user_dir / "mynets.py").write_text(MYNETS)
    assert build_custom(import_model_target("mynets.anything"), num_classes=6).out_features == 6


def test_failing_constructor_is_one_line(user_dir):
    (user_dir / "mynets.py").write_text(MYNETS)
    with pytest.raises(UserError) as caught:
        build_custom(import_model_target("mynets.broken"), num_classes=2)
    expected = "model._target_=mynets.broken: building it raised RuntimeError: boom"
    assert str(caught.value) == expected  # the first line only


def test_result_must_be_a_module(user_dir):
    (user_dir / "mynets.py").write_text(MYNETS)
    with pytest.raises(UserError, match=r"returned a dict, not a torch\.nn\.Module"):
        build_custom(import_model_target("mynets.not_a_model"), num_classes=2)


def test_missing_module_says_where_to_put_it(user_dir):
    with pytest.raises(UserError) as caught:
        import_model_target("mynets.TinyNet")
    assert str(caught.value) == (
        "model._target_=mynets.TinyNet: cannot import mynets (No module named 'mynets'): "
        "put mynets.py in the working directory or install it"
    )


def test_missing_attribute_is_named(user_dir):
    (user_dir / "mynets.py").write_text(MYNETS)
    with pytest.raises(UserError, match="mynets has no TinyNte: did you mean TinyNet"):
        import_model_target("mynets.TinyNte")


def test_syntax_error_in_the_module_is_one_line(user_dir):
    (user_dir / "badnets.py").write_text("class TinyNet(nn.Module)\n    pass\n")
    with pytest.raises(UserError, match=r"importing badnets raised SyntaxError: .*badnets\.py"):
        import_model_target("badnets.TinyNet")


def test_missing_dependency_of_the_module_is_not_the_module_missing(user_dir):
    (user_dir / "needy.py").write_text("import torchcamp_no_such_dependency\n")
    with pytest.raises(UserError, match="importing needy raised ModuleNotFoundError"):
        import_model_target("needy.Net")


def test_a_bare_name_is_refused():
    with pytest.raises(UserError, match=r"give module\.Name"):
        import_model_target("TinyNet")


def test_config_leaves_the_target_to_the_user():
    node = OmegaConf.load(CONF_MODEL / "custom.yaml")
    assert OmegaConf.is_missing(node, "_target_") and node._partial_ is True
    assert custom.build_custom is build_custom
