"""``task=dcgan``: 64x64 image generation with the course's DCGAN.

A GAN trains two parts against each other, so this task names them for the Trainer
(:func:`optimized_modules`: ``D`` then ``G``, one optimizer each) and gives :func:`step` a
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
from torchcamp.trainer import distributed
from torchcamp.trainer.errors import UserError

if TYPE_CHECKING:
    from torchcamp.trainer.inference import PredictOptions

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
    "optimized_modules",
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


class Generator(nn.Module):
    """The course's generator: noise ``[B, nz, 1, 1]`` -> image ``[B, 3, 64, 64]`` in [-1, 1]."""

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3) -> None:
        super().__init__()

        def up(c_in: int, c_out: int, stride: int, padding: int) -> list[nn.Module]:
            conv = nn.ConvTranspose2d(c_in, c_out, 4, stride, padding, bias=False)
            return [conv, nn.BatchNorm2d(c_out), nn.ReLU(True)]

        self.main = nn.Sequential(
            *up(nz, ngf * 8, 1, 0),  # 4x4
            *up(ngf * 8, ngf * 4, 2, 1),  # 8x8
            *up(ngf * 4, ngf * 2, 2, 1),  # 16x16
            *up(ngf * 2, ngf, 2, 1),  # 32x32
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),  # 64x64
            nn.Tanh(),
        )

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.main(noise)


class Discriminator(nn.Module):
    """The course's discriminator: image ``[B, 3, 64, 64]`` -> probability of "real" ``[B]``."""

    def __init__(self, ndf: int = 64, nc: int = 3) -> None:
        super().__init__()

        def down(c_in: int, c_out: int) -> list[nn.Module]:
            conv = nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False)
            return [conv, nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True)]

        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),  # 32x32, no BatchNorm on the input layer
            nn.LeakyReLU(0.2, inplace=True),
            *down(ndf, ndf * 2),  # 16x16
            *down(ndf * 2, ndf * 4),  # 8x8
            *down(ndf * 4, ndf * 8),  # 4x4
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),  # 1x1
            nn.Sigmoid(),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.main(images).view(-1)


class DCGAN(nn.Module):
    """Generator and discriminator in one module, so that DDP and checkpoints see one model.

    ``forward(real, phase)`` runs what a phase needs through this module's own ``__call__``
    (DDP synchronises gradients only for work done inside the wrapped forward).
    """

    def __init__(self, nz: int = 100, ngf: int = 64, ndf: int = 64) -> None:
        super().__init__()
        self.nz = nz
        self.generator = Generator(nz, ngf)
        self.discriminator = Discriminator(ndf)
        self.apply(_course_init)

    def forward(self, real: torch.Tensor, phase: str) -> dict[str, torch.Tensor]:
        """``phase="D"``: scores of ``real`` and of fresh fakes; ``"G"``: scores of fresh fakes.

        Each phase draws its own noise, as the course's recipe re-samples z for the G step.
        """
        fake = self.generator(self._noise(len(real), real.device))
        if phase == "D":  # D learns; G is held fixed (detach: no gradient flows into G)
            return {"real": self.discriminator(real), "fake": self.discriminator(fake.detach())}
        return {"fake": self.discriminator(fake)}

    def _noise(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """z ~ N(0, 1). Under DDP every rank holds the same global RNG state (so that a
        checkpoint's state fits all of them): a seed drawn from it, offset by the rank, gives
        each rank its own fakes, still reproducible on resume."""
        seed = int(torch.randint(2**62, ())) + distributed.rank()
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(batch_size, self.nz, 1, 1, generator=generator).to(device)


def _course_init(module: nn.Module) -> None:
    """The course's initialisation: conv weights N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class AdversarialLoss(nn.Module):
    """A criterion on D's probabilities against constant targets: 1 for real, 0 for fake, or
    ``1 - s`` and ``s`` with label smoothing ``s`` (the course's tip: 0.9 and 0.1)."""

    def __init__(self, criterion: Callable, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.criterion, self.label_smoothing = criterion, label_smoothing

    def forward(self, scores: torch.Tensor, real: bool) -> torch.Tensor:
        target = 1.0 - self.label_smoothing if real else self.label_smoothing
        # BCE on probabilities is unsafe in float16 (autocast refuses it): compute it in fp32.
        with torch.autocast(scores.device.type, enabled=False):
            scores = scores.float()
            return self.criterion(scores, torch.full_like(scores, target))


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


def optimized_modules(model: DCGAN) -> dict[str, nn.Module]:
    """The parts the Trainer optimises separately, in the order it steps them on each batch."""
    return {"D": model.discriminator, "G": model.generator}


# Criteria that compare probabilities with targets of the same shape.
GAN_CRITERIA = (nn.BCELoss, nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss)


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
