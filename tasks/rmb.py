"""``task=rmb``: 1-yuan vs 100-yuan banknotes, LeNet at 32x32, as the course's train_lenet.py.

An image-folder task (conf/task/rmb.yaml sets the folder, the transforms and the recipe); what
is its own is the synthetic stand-in: drawn "1" and "100" notes in the real layout.
"""

from __future__ import annotations

from dataclasses import replace

from torchcamp.datasets.rmb import render_synthetic_rmb
from torchcamp.tasks import imagefolder

TASK = replace(imagefolder.TASK, make_synthetic_data=render_synthetic_rmb)
