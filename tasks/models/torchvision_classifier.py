"""``model=torchvision``: any torchvision classification model by name, with its classifier head
sized for the task's classes.

Everything goes through torchvision's own builder API (``list_models``, ``get_model``,
``get_model_weights``), so a model torchvision adds is available without a change here.
"""

from __future__ import annotations

import difflib
from typing import Any

from torch import nn

from torchcamp.tasks.models.weights import torchvision_weights
from torchcamp.trainer.errors import UserError, first_line

# Where a user finds every name model.name accepts.
CATALOGUE = "torchvision.models.list_models(module=torchvision.models)"

# Options for models built from scratch. googlenet and inception_v3: no auxiliary heads (a task's
# step wants one tensor of logits), and torchvision's current initialisation chosen explicitly,
# which silences its warning that the default will change.
_RANDOM_INIT_OPTIONS: dict[str, dict[str, Any]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


def torchvision_classifier(
    num_classes: int, name: str, weights: str | None = None, **kwargs: Any
) -> nn.Module:
    """torchvision's classification model ``name`` (``resnet50``, ``efficientnet_b0``,
    ``vit_b_16``, ...) with ``num_classes`` outputs.

    ``weights``: ``None`` builds the model from scratch with ``num_classes`` outputs;
    ``DEFAULT`` or a name of the model's weights (``IMAGENET1K_V1``) loads them (downloaded once
    into torchvision's cache) and replaces the classifier head, whatever the architecture calls
    it (``fc``, ``classifier[-1]``, ``heads.head``, SqueezeNet's 1x1 convolution), by a fresh
    one for ``num_classes``. ``kwargs`` go to torchvision's builder (``dropout``,
    ``stochastic_depth_prob``, ...).

    googlenet and inception_v3 lose their auxiliary heads, so that the forward returns a plain
    tensor. inception_v3 needs inputs of at least 75x75 and is made for 299x299: give it a task
    whose images are resized to 299. The ViTs want exactly their ``image_size`` (224).
    """
    name = _checked_name(name)
    if not weights:
        options = {**_RANDOM_INIT_OPTIONS.get(name, {}), **kwargs}
        return without_aux_logits(_build(name, None, num_classes=num_classes, **options))
    member = _checked_weights(name, weights)
    model = without_aux_logits(_build(name, member, **kwargs))
    replace_head(model, num_classes, len(member.meta["categories"]))
    return model


def classification_models() -> list[str]:
    """The names of torchvision's classification models: not its detection, segmentation,
    video, optical-flow or quantized ones (they live in sub-packages of ``torchvision.models``)."""
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def replace_head(model: nn.Module, num_classes: int, old_classes: int) -> None:
    """Replace ``model``'s classifier head by a fresh one with ``num_classes`` outputs.

    The head is the last ``nn.Linear`` with ``old_classes`` outputs, or the last 1x1
    ``nn.Conv2d`` with as many (SqueezeNet classifies with one); the new one keeps its inputs,
    its bias (or none), its device and dtype.
    """
    path, head = _find_head(model, old_classes)
    parent_path, _, attribute = path.rpartition(".")
    setattr(model.get_submodule(parent_path), attribute, _fresh_head(head, num_classes))


def without_aux_logits(model: nn.Module) -> nn.Module:
    """``model`` without the auxiliary classifiers of googlenet and inception_v3, which make its
    forward return a tuple in training; any other model is returned as it is."""
    if getattr(model, "aux_logits", False):
        model.aux_logits = False
        for attribute in ("AuxLogits", "aux1", "aux2"):  # inception_v3's, googlenet's
            if hasattr(model, attribute):
                setattr(model, attribute, None)
    return model


def _checked_name(name: Any) -> str:
    """``name`` if torchvision has a classification model of that name; else one line with the
    closest names."""
    models = classification_models()
    name = str(name)
    if name in models:
        return name
    close = difflib.get_close_matches(name, models, n=3)
    hint = f": did you mean {', '.join(close)}?" if close else ""
    raise UserError(
        f"model.name={name} is not a torchvision classification model{hint} (all: {CATALOGUE})"
    )


def _checked_weights(name: str, weights: Any) -> Any:
    """The member of ``name``'s weights enum that ``weights`` names (``DEFAULT``,
    ``IMAGENET1K_V1``, or the full ``ResNet18_Weights.IMAGENET1K_V1``)."""
    import torchvision

    enum = torchvision.models.get_model_weights(name)
    key = str(weights).removeprefix(f"{enum.__name__}.")
    if key not in enum.__members__:  # __members__ includes the DEFAULT alias
        raise UserError(
            f"model.weights={weights} is not a weights name torchvision has for {name}: use one "
            f"of {', '.join(enum.__members__)}, or null to train from scratch"
        )
    return enum[key]


def _build(name: str, weights: Any, **options: Any) -> nn.Module:
    """torchvision's builder for ``name``; options it refuses are one line."""
    import torchvision

    try:
        with torchvision_weights(name, weights and weights.name):
            return torchvision.models.get_model(name, weights=weights, **options)
    except (TypeError, ValueError) as error:  # an unknown option, or one the weights fix
        raise UserError(
            f"model.name={name}: torchvision cannot build it with these options "
            f"({first_line(error)})"
        ) from None


def _find_head(model: nn.Module, classes: int) -> tuple[str, nn.Module]:
    """The path and module of the last layer that outputs ``classes`` logits."""
    heads = [(path, module) for path, module in model.named_modules() if _is_head(module, classes)]
    if not heads:
        raise UserError(
            f"cannot find the classifier head of {type(model).__name__} (a Linear or 1x1 Conv2d "
            f"with {classes} outputs): use model.weights=null, or model=custom with your own model"
        )
    return heads[-1]


def _is_head(module: nn.Module, classes: int) -> bool:
    if isinstance(module, nn.Linear):
        return module.out_features == classes
    if isinstance(module, nn.Conv2d):
        return module.kernel_size == (1, 1) and module.out_channels == classes
    return False


def _fresh_head(head: nn.Module, num_classes: int) -> nn.Module:
    """A fresh ``head`` (Linear or 1x1 Conv2d) with its inputs and ``num_classes`` outputs."""
    like = {"bias": head.bias is not None, "device": head.weight.device, "dtype": head.weight.dtype}
    if isinstance(head, nn.Linear):
        return nn.Linear(head.in_features, num_classes, **like)
    return nn.Conv2d(head.in_channels, num_classes, kernel_size=1, **like)
