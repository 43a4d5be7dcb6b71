"""LeNet-5 as the course builds it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LeNet(nn.Module):
    """LeNet-5: conv 6@5 -> pool -> conv 16@5 -> pool -> 120 -> 84 -> classes.

    Built for 32x32 inputs, as the course's; any larger input is average-pooled to the 5x5 map
    the classifier expects, so the model also serves tasks with bigger images.
    """

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)
        self.initialize_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.max_pool2d(F.relu(self.conv1(x)), 2)
        out = F.max_pool2d(F.relu(self.conv2(out)), 2)
        # 5x5 already at the course's 32x32 input; larger inputs (hymenoptera) are pooled to it.
        out = F.adaptive_avg_pool2d(out, 5).flatten(1)
        out = F.relu(self.fc1(out))
        out = F.relu(self.fc2(out))
        return self.fc3(out)

    def initialize_weights(self) -> None:
        """The course's initialisation: Xavier-normal convolutions, N(0, 0.1) linear layers."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.1)
                nn.init.zeros_(module.bias)
