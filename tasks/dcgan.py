"""``task=dcgan``: 64x64 image generation with the course's DCGAN.

A GAN trains two parts against each other, so this task names them for the Trainer
(:func:`parts`: ``D`` then ``G``, one optimizer each) and gives :func:`step` a
``phase``. The Trainer runs both phases on every batch with only that part's parameters taking
gradients, and keeps AMP, accumulation, clipping and checkpoints for both optimizers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torchvision import transforms
from torchvision.utils import make_grid, save_image

from torchcamp.datasets.faces import render_synthetic_faces
from torchcamp.datasets.images import ImageFiles, find_images
from torchcamp.tasks.contract import Task
from torchcamp.tasks.losses import GAN_CRITERIA, AdversarialLoss

# The models live in tasks/models/dcgan.py; imported here because configs and checkpoints
# written before name them as torchcamp.tasks.dcgan.DCGAN.
from torchcamp.tasks.models.dcgan import DCGAN, Discriminator, Generator
from torchcamp.trainer.errors import UserError

if TYPE_CHECKING:
    from torchcamp.tasks.contract import PredictOptions

__all__ = [
    "DCGAN",
    "AdversarialLoss",
    "Discriminator",
    "Generator",
    "build_datasets",
    "build_loss",
    "build_model",
    "epoch_images",
    "forward_images",
    "generate",
    "make_synthetic_data",
    "parts",
    "predict",
    "step",
]

IMAGE_SIZE = 64  # the architecture below is built for 64x64 images
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # images scaled to [-1, 1], as the generator's tanh
SAMPLE_GRID = 8  # epoch_images draws an 8x8 grid
SAMPLE_SEED = 0  # the fixed noise behind every epoch's grid, so epochs compare like for like
LAYOUT_HELP = (
    "task=dcgan reads every image (jpg, png, ...) under data.root, at any depth, e.g. a folder "
    "of aligned face crops such as CelebA's img_align_celeba/; set data.root to that folder, or "
    "run with data.synthetic=true"
)


def build_datasets(
    root: str | Path, seed: int, augment: bool = True, skip_corrupt: bool = False
) -> dict[str, ImageFiles]:
    """Every image under ``root`` as a training set: Resize + CenterCrop 64, scaled to [-1, 1].

    There is no held-out split (nothing to validate a GAN against); ``seed`` and ``augment``
    are accepted for the CLI's sake. ``skip_corrupt`` leaves out images that cannot be decoded.
    """
    transform = transforms.Compose(
        [
            transforms.Resize(IMAGE_SIZE),
            transforms.CenterCrop(IMAGE_SIZE),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
    files = find_images(root, LAYOUT_HELP)
    return {"train": ImageFiles(files, transform, skip_corrupt=skip_corrupt, split="train")}


def build_model(model_factory: Callable[..., nn.Module], train_set: ImageFiles) -> nn.Module:
    """The GAN (``model=dcgan``); nothing about it depends on the data."""
    return model_factory()


def parts(model: DCGAN) -> dict[str, nn.Module]:
    """The parts the Trainer optimises separately, in the order it steps them on each batch."""
    return {"D": model.discriminator, "G": model.generator}


def build_loss(loss: Callable | None, adapt: Mapping[str, Any] | None) -> AdversarialLoss:
    """``loss=bce`` (the course's) or ``mse`` (least-squares GAN) against real/fake targets;
    ``loss.adapt.label_smoothing`` moves the targets to ``1 - s`` and ``s``."""
    if not isinstance(loss, GAN_CRITERIA):
        raise UserError(
            "task=dcgan scores the discriminator's probabilities against real/fake targets: "
            "use loss=bce (the course's) or loss=mse (a least-squares GAN)"
        )
    smoothing = float((adapt or {}).get("label_smoothing", 0.0))
    if not 0.0 <= smoothing < 0.5:
        raise UserError(
            f"loss.adapt.label_smoothing={smoothing}: use a value in [0, 0.5) (the course: 0.1)"
        )
    return AdversarialLoss(loss, smoothing)


def forward_images(model: DCGAN, images: torch.Tensor) -> torch.Tensor:
    """The discriminator on real images, for TensorBoard's views of the model (its kernels
    and feature maps look at the images; the generator sees only noise)."""
    return model.discriminator(images)


def step(
    model: nn.Module, batch: torch.Tensor, loss_fn: AdversarialLoss, phase: str
) -> dict[str, torch.Tensor]:
    """``D``: real images should score real, fakes fake. ``G``: fakes should score real."""
    scores = model(batch, phase=phase)
    if phase == "D":
        loss = loss_fn(scores["real"], real=True) + loss_fn(scores["fake"], real=False)
        return {"loss": loss, "D_x": scores["real"].mean(), "D_G_z": scores["fake"].mean()}
    return {"loss": loss_fn(scores["fake"], real=True)}


@torch.no_grad()
def generate(generator: Generator, noise: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] from ``noise``, with the generator in training mode, as the course draws
    its samples (its BatchNorm uses the batch's statistics); its running statistics and mode
    are put back afterwards."""
    saved = {name: buffer.clone() for name, buffer in generator.named_buffers()}
    was_training = generator.training
    generator.train()
    fakes = generator(noise)
    generator.train(was_training)
    for name, buffer in generator.named_buffers():
        buffer.copy_(saved[name])
    return fakes


@torch.no_grad()
def epoch_images(model: DCGAN, dataset: Any, device: torch.device) -> dict[str, torch.Tensor]:
    """``{"samples": an 8x8 grid}`` from the same noise every epoch, as uint8 ``[3, H, W]``."""
    noise = torch.randn(
        SAMPLE_GRID**2, model.nz, 1, 1, generator=torch.Generator().manual_seed(SAMPLE_SEED)
    )
    fakes = generate(model.generator, noise.to(device)).float().cpu()
    grid = make_grid(fakes, nrow=SAMPLE_GRID, padding=2, normalize=True, value_range=(-1, 1))
    return {"samples": (grid * 255).round().to(torch.uint8)}


@torch.no_grad()
def predict(model: DCGAN, inputs: Sequence[str], options: PredictOptions) -> list[dict[str, Any]]:
    """Draw ``options.num_images`` images from noise seeded by ``options.seed``, in batches of
    ``options.batch_size``: ``<output_dir>/sample_NNNN.png`` each and ``grid.png`` of all,
    one ``{"file"}`` record per file written (the grid's with ``"grid": true``)."""
    if inputs:
        raise UserError(
            "task=dcgan draws images from noise and reads no inputs: drop inputs=, and set "
            "predict.num_images=N"
        )
    seeded = torch.Generator().manual_seed(options.seed)
    noise = torch.randn(options.num_images, model.nz, 1, 1, generator=seeded)
    fakes = torch.cat(
        [
            generate(model.generator, batch.to(options.device)).float().cpu()
            for batch in noise.split(options.batch_size)
        ]
    )
    options.output_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for index, fake in enumerate(fakes):
        path = options.output_dir / f"sample_{index:04d}.png"
        save_image(fake, path, normalize=True, value_range=(-1, 1))
        records.append({"file": str(path)})
    grid = options.output_dir / "grid.png"
    columns = math.ceil(math.sqrt(len(fakes)))
    save_image(fakes, grid, nrow=columns, padding=2, normalize=True, value_range=(-1, 1))
    return [*records, {"file": str(grid), "grid": True}]


def make_synthetic_data(root: str | Path, seed: int) -> None:
    """Drawn cartoon faces under ``root`` (a stand-in for aligned face crops)."""
    render_synthetic_faces(root, seed)


def normalization(train_set: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Images are scaled to [-1, 1] (mean 0.5, std 0.5), as the generator's tanh makes them."""
    return MEAN, STD


TASK = Task(
    build_datasets=build_datasets,
    build_model=build_model,
    step=step,
    build_loss=build_loss,
    predict=predict,
    make_synthetic_data=make_synthetic_data,
    parts=parts,
    epoch_images=epoch_images,
    forward_images=forward_images,
    normalization=normalization,
)
