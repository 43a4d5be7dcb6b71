"""Looking inside a model: what it is fed, its kernels, its feature maps and where it looks.

Plain functions on a model and tensors, as the course's TensorBoard and hook chapters draw
them (make_grid, forward hooks) and Grad-CAM, which the course leaves unfinished. The
``callbacks.model_views`` views in TensorBoard are drawn with them (``ModelViewsLogger``). Every
``*_grid`` function returns a uint8 ``[3, H, W]`` image, what ``SummaryWriter.add_image`` and
PNG files take.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.utils import make_grid

from torchcamp.trainer.errors import UserError

MAX_TILES = 64  # kernels or feature maps drawn at most: an 8x8 grid still reads
MIN_SIDE = 64  # smaller images (LeNet's 32x32) are enlarged to this, pixels kept square
GLOBAL_POOLING = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)

# How the views run a model on a batch of images; a task whose model takes more than images
# (a GAN's phase) gives its own as ``forward_images(model, images)``.
Forward = Callable[[nn.Module, torch.Tensor], Any]


def call_model(model: nn.Module, images: torch.Tensor) -> Any:
    """``model(images)``: the forward of every model that takes a batch of images."""
    return model(images)


class ImagesForward(nn.Module):
    """A task's ``forward_images(model, images)`` as a module of its own, for what takes a
    module (add_graph traces one)."""

    def __init__(self, model: nn.Module, forward: Forward) -> None:
        super().__init__()
        self.model, self.run = model, forward

    def forward(self, images: torch.Tensor) -> Any:
        return self.run(self.model, images)


def batch_inputs(batch: Any) -> tuple[Any, ...]:
    """What the model takes from a batch: a bare tensor (a GAN's images) is all input; a
    tuple is its inputs followed by the targets (``(images, labels)``, ``(letters, lengths,
    labels)``, ``(images, boxes)``), as every task's ``step`` unpacks it."""
    if isinstance(batch, torch.Tensor):
        return (batch,)
    return tuple(batch[:-1])


def image_inputs(inputs: Sequence[Any]) -> torch.Tensor | list[torch.Tensor] | None:
    """The images among a batch's model inputs: a float ``[N, C, H, W]`` tensor or a list of
    ``[C, H, W]`` tensors (detection) with 1 or 3 channels; None when the model reads
    something else (a text model's letter indices)."""
    first = inputs[0] if inputs else None
    if isinstance(first, torch.Tensor):
        is_images = first.ndim == 4 and first.is_floating_point() and first.shape[1] in (1, 3)
        return first if is_images else None
    if (
        isinstance(first, (list, tuple))
        and first
        and all(isinstance(x, torch.Tensor) and x.ndim == 3 and x.shape[0] in (1, 3) for x in first)
    ):
        return list(first)
    return None


def denormalize(
    images: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None
) -> torch.Tensor:
    """Undo ``transforms.Normalize(mean, std)``: images in [0, 1] again (None: unchanged)."""
    images = images.detach().float().cpu()
    if mean is not None and std is not None:
        mean_ = torch.tensor(mean, dtype=images.dtype).view(-1, 1, 1)
        std_ = torch.tensor(std, dtype=images.dtype).view(-1, 1, 1)
        images = images * std_ + mean_
    return images.clamp(0, 1)


def input_grid(
    images: torch.Tensor | Sequence[torch.Tensor],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    nrow: int = 8,
) -> torch.Tensor:
    """A batch as the model sees it (after resizing, cropping, augmentation), de-normalised
    with the task's ``mean`` and ``std``, in a grid of ``nrow`` images a row. Images of
    different sizes (detection) are resized to the first one's."""
    if not isinstance(images, torch.Tensor):
        size = images[0].shape[-2:]
        images = torch.stack(
            [F.interpolate(x[None].float(), size=size, mode="bilinear")[0] for x in images]
        )
    shown = _enlarged(torch.stack([denormalize(x, mean, std) for x in images]))
    return to_uint8(make_grid(shown, nrow=nrow, padding=2))


def kernel_grid(weight: torch.Tensor, tile: int = 40) -> torch.Tensor:
    """A convolution's kernels ``[out, in, k, k]``, each scaled to its own range (the course's
    ``normalize=True, scale_each=True``) and enlarged to about ``tile`` pixels.

    Kernels over 3 input channels (a first layer on RGB) are one colour tile each; otherwise
    every input channel of a kernel is a grey tile, one row per kernel. At most MAX_TILES tiles.
    """
    weight = weight.detach().float().cpu()
    _, in_channels, height, width = weight.shape
    if in_channels == 3:
        tiles, nrow = weight[:MAX_TILES], 8
    else:
        shown = min(in_channels, MAX_TILES)
        kernels = max(1, MAX_TILES // shown)
        tiles, nrow = weight[:kernels, :shown].reshape(-1, 1, height, width), shown
    scale = max(1, tile // max(height, width))
    tiles = tiles.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    return to_uint8(make_grid(tiles, nrow=nrow, padding=2, normalize=True, scale_each=True))


def first_conv(model: nn.Module) -> str | None:
    """The name of the model's first ``Conv2d`` (whose kernels look at the pixels), or None."""
    convs = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    return convs[0] if convs else None


def grad_cam_layer(model: nn.Module) -> str | None:
    """Where Grad-CAM looks by default: the top-level block just before the model's global
    pooling (ResNet's ``layer4``: the last feature maps, after the residual sum), else the
    last ``Conv2d``; None for a model without convolutions."""
    previous = None
    for name, child in model.named_children():
        if isinstance(child, GLOBAL_POOLING) and previous is not None:
            return previous
        previous = name
    convs = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    return convs[-1] if convs else None


def find_layer(model: nn.Module, name: str, setting: str = "layer") -> nn.Module:
    """The module called ``name`` in ``model.named_modules()``; a :class:`UserError` that
    lists some of the valid names when there is none (``setting`` names the option)."""
    modules = dict(model.named_modules())
    if name and name in modules:
        return modules[name]
    # The top-level blocks, then every convolution: the layers worth looking at.
    candidates = [n for n, _ in model.named_children()]
    candidates += [
        n for n, m in modules.items() if isinstance(m, nn.Conv2d) and n not in candidates
    ]
    listed = ", ".join(candidates[:12]) + (
        f", ... ({len(candidates)} in all)" if len(candidates) > 12 else ""
    )
    raise UserError(
        f"{setting}={name}: {type(model).__name__} has no module of that name; use one of "
        f"{listed} (names as model.named_modules() gives them)"
    )


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """The model in eval mode for the block (BatchNorm's running statistics, no dropout);
    every submodule gets its own mode back afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


class _LayerReached(Exception):
    """Ends a forward pass at the hooked layer: nothing after it is needed."""


@contextmanager
def captured_output(layer: nn.Module, stop: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """``{"output": ...}`` filled by a forward hook on ``layer`` during the block (the first
    call's output, should the layer run twice); the hook is removed afterwards. ``stop``: the
    forward pass ends right there (the block ends quietly), so that looking at a detector's
    first convolution does not run the whole detector."""
    captured: dict[str, torch.Tensor] = {}

    def keep(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        captured.setdefault("output", output)
        if stop:
            raise _LayerReached

    handle = layer.register_forward_hook(keep)
    try:
        yield captured
    except _LayerReached:
        pass
    finally:
        handle.remove()


def feature_maps(
    model: nn.Module, layer: nn.Module, image: torch.Tensor, forward: Forward = call_model
) -> torch.Tensor:
    """``layer``'s output ``[C, h, w]`` for one normalised image ``[C, H, W]`` (eval mode; the
    model runs up to ``layer`` only)."""
    with torch.no_grad(), evaluating(model), captured_output(layer, stop=True) as captured:
        forward(model, image[None])
    output = captured.get("output")
    if output is None:
        raise UserError(
            f"the images never pass through this {type(layer).__name__}: pick a layer of the "
            "part of the model that reads them"
        )
    if not isinstance(output, torch.Tensor) or output.ndim != 4:
        got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise UserError(
            f"this {type(layer).__name__} gives {got}, not feature maps [N, C, H, W]: pick a "
            "convolutional layer"
        )
    return output[0].detach().float().cpu()


def feature_map_grid(
    model: nn.Module, layer: nn.Module, image: torch.Tensor, forward: Forward = call_model
) -> torch.Tensor:
    """``layer``'s feature maps for ``image`` in a square grid, each map scaled to its own
    range (the course's hook example); at most MAX_TILES maps."""
    maps = feature_maps(model, layer, image, forward)[:MAX_TILES, None]
    nrow = math.ceil(math.sqrt(len(maps)))
    maps = _enlarged(maps)
    return to_uint8(make_grid(maps, nrow=nrow, padding=2, normalize=True, scale_each=True))


def grad_cam(
    model: nn.Module,
    layer: nn.Module,
    images: torch.Tensor,
    target_classes: torch.Tensor | None = None,
    forward: Forward = call_model,
) -> torch.Tensor | None:
    """Grad-CAM heatmaps ``[N, H, W]`` in [0, 1]: where in each image ``layer``'s features
    made the model score ``target_classes`` (default: its predicted class).

    As Selvaraju et al.: the gradient of the class score with respect to the layer's
    activations, averaged over space, weighs each channel; the ReLU of the weighted sum of the
    channels is upsampled to the image and scaled to [0, 1]. The model runs in eval mode; its
    modes, ``requires_grad`` flags and gradients are left as they were (the gradient is taken
    with ``torch.autograd.grad`` with respect to the activations alone). None when the model
    does not give class scores ``[N, C]`` (a detector, a GAN): there is no class to explain.
    """
    # The input takes gradients so that the activations do even when the layers are frozen.
    inputs = images.detach().clone().requires_grad_(True)
    with torch.enable_grad(), evaluating(model), captured_output(layer) as captured:
        scores = forward(model, inputs)
        if not isinstance(scores, torch.Tensor) or scores.ndim != 2:
            return None
        activations = captured["output"]
        if target_classes is None:
            target_classes = scores.argmax(dim=1)
        # The samples are independent in eval mode: one backward pass serves them all.
        chosen = scores.gather(1, target_classes.view(-1, 1).to(scores.device)).sum()
        (gradients,) = torch.autograd.grad(chosen, activations)
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activations).sum(dim=1, keepdim=True)).detach()
    cam = F.interpolate(cam.float(), size=images.shape[-2:], mode="bilinear", align_corners=False)
    low = cam.amin(dim=(2, 3), keepdim=True)
    high = cam.amax(dim=(2, 3), keepdim=True)
    return ((cam - low) / (high - low).clamp(min=1e-8))[:, 0].cpu()


def heat_colours(heatmaps: torch.Tensor) -> torch.Tensor:
    """Heatmaps ``[N, H, W]`` in [0, 1] as RGB ``[N, 3, H, W]``: blue (0) through green and
    yellow to red (1), the usual "jet" ramp, as piecewise-linear channels."""
    heat = heatmaps.clamp(0, 1)[:, None]
    return torch.cat([(1.5 - (4 * heat - c).abs()).clamp(0, 1) for c in (3, 2, 1)], dim=1)


def grad_cam_grid(images: torch.Tensor, heatmaps: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """The images (``[N, C, H, W]`` in [0, 1], de-normalised) in a row, and below each its
    heatmap laid over it (``alpha``: the heatmap's share)."""
    images = images.float().cpu().expand(-1, 3, -1, -1)  # grey images drawn in RGB
    overlays = (1 - alpha) * images + alpha * heat_colours(heatmaps)
    panels = _enlarged(torch.cat([images, overlays]))
    return to_uint8(make_grid(panels, nrow=len(images), padding=2))


def to_uint8(grid: torch.Tensor) -> torch.Tensor:
    """A float image in [0, 1] as uint8 [0, 255]."""
    return (grid * 255).round().clamp(0, 255).to(torch.uint8)


def _enlarged(images: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` enlarged by a whole factor (pixels repeated) so that the shorter side
    is at least MIN_SIDE: TensorBoard shows a 32x32 image at 32x32 screen pixels."""
    factor = math.ceil(MIN_SIDE / min(images.shape[-2:]))
    if factor <= 1:
        return images
    return images.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)
