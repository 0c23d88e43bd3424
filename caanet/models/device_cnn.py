"""CNN-d, the device branch of multi-task conditional training (Sec. III-A, Fig. 1 and 2(d)).

Two conv blocks (5x5, BatchNorm, ReLU, 2x2 max pooling), global max pooling, a linear layer,
log_softmax over devices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from caanet.models.blocks import ConvBlock, init_he_uniform


class DeviceCNN(nn.Module):
    """``(batch, 1, time, mel) -> (batch, n_devices)`` device log-probabilities."""

    def __init__(self, n_devices: int, channels=(64, 128), kernel_size: int = 5, in_channels: int = 1):
        super().__init__()
        ins = (in_channels, *channels[:-1])
        self.blocks = nn.ModuleList(ConvBlock(i, o, kernel_size, pool=True) for i, o in zip(ins, channels))
        self.fc = nn.Linear(channels[-1], n_devices)
        init_he_uniform(self.fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        x = torch.amax(x, dim=(2, 3))
        return F.log_softmax(self.fc(x).float(), dim=-1)
