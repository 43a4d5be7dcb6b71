"""The course's DCGAN: a generator and a discriminator for 64x64 images, in one module."""

from __future__ import annotations

import torch
from torch import nn

from torchcamp.trainer import distributed


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
