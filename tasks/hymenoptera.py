"""``task=hymenoptera``: ants vs bees, finetuning ResNet18 as the course's transfer-learning job.

An image-folder task (conf/task/hymenoptera.yaml sets the folder, the transforms and the
recipe); what is its own is the public download (the tutorial's zip) and a synthetic
stand-in: drawn ants and bees in the real layout.
"""

from __future__ import annotations

from dataclasses import replace

from torchcamp.datasets.hymenoptera import download_hymenoptera, render_synthetic_hymenoptera
from torchcamp.tasks import imagefolder

TASK = replace(
    imagefolder.TASK,
    make_synthetic_data=render_synthetic_hymenoptera,
    download=download_hymenoptera,
)
