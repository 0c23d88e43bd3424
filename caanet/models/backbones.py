"""The scene branch's four convolutional blocks in the three topologies of Sec. III-C / Fig. 3.

* ``cnn_pool``: 2x2 max pooling after every block (the map shrinks 16 times per axis);
* ``cnn_nopool``: no local pooling, dilation 1 (the map keeps the input size);
* ``atrous``: no local pooling, dilations 1, 2, 4, 8 (padding 2, 4, 8, 16 at kernel 5).
"""

from __future__ import annotations

import torch
from torch import nn

from caanet.errors import ConfigError
from caanet.models.blocks import ConvBlock
from caanet.vocab import TOPOLOGY_REGISTRY, Topology


def get_topology(name: str) -> Topology:
    """The topology ``name`` as registered in :data:`caanet.vocab.TOPOLOGY_REGISTRY`; unknown: ConfigError."""
    if name not in TOPOLOGY_REGISTRY:
        raise ConfigError(f"topology={name!r} is not one of {sorted(TOPOLOGY_REGISTRY.names())}")
    return TOPOLOGY_REGISTRY[name]


def pooled_size(size: tuple[int, int], n_pools: int) -> tuple[int, int]:
    """Map size after ``n_pools`` 2x2 max poolings (floor mode)."""
    t, m = size
    for _ in range(n_pools):
        t, m = t // 2, m // 2
    return t, m


def feature_map_shape(topology: str, input_shape: tuple[int, int], n_blocks: int = 4) -> tuple[int, int]:
    """``(P, Q)`` of the last block's map for a ``(time, mel)`` input."""
    topo = get_topology(topology)
    return pooled_size(tuple(input_shape), n_blocks if topo.pool else 0)


class Backbone(nn.Module):
    """Four :class:`ConvBlock` s; ``forward(x, cond, cond_layer)`` adds ``cond`` in block ``cond_layer``."""

    def __init__(self, topology: str, channels=(64, 128, 256, 512), kernel_size: int = 5, in_channels: int = 1):
        super().__init__()
        topo = get_topology(topology)
        if len(channels) != len(topo.dilations):
            raise ConfigError(f"channels={tuple(channels)!r} must have {len(topo.dilations)} entries for {topology!r}")
        self.topology = topo.name
        ins = (in_channels, *channels[:-1])
        self.blocks = nn.ModuleList(
            ConvBlock(i, o, kernel_size, dilation=d, pool=topo.pool) for i, o, d in zip(ins, channels, topo.dilations)
        )

    @property
    def out_channels(self) -> int:
        return self.blocks[-1].out_channels

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None, cond_layer: int | None = None) -> torch.Tensor:
        """``x`` is ``(batch, 1, time, mel)``; ``cond`` ``(batch, channels[cond_layer-1])``; layers count from 1."""
        for i, block in enumerate(self.blocks, start=1):
            x = block(x, cond if i == cond_layer else None)
        return x
