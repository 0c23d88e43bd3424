"""The convolutional building block shared by the scene backbone and CNN-d.

A block is ``conv -> (+ conditioning) -> BatchNorm -> ReLU -> (2x2 max pool)`` (paper Eq. 1 with
sigma = ReLU after BatchNorm, as the authors' code does it: reference item 6/7).
Tensors are ``(batch, channels, time, mel)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.nn.utils.fusion
from torch import nn

from caanet.errors import ConfigError


def init_he_uniform(layer: nn.Module) -> None:
    """He-uniform weights (fan-in, ReLU gain) and zero bias for a conv or linear layer."""
    nn.init.kaiming_uniform_(layer.weight, a=0.0, mode="fan_in", nonlinearity="relu")
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps the map size for an odd ``kernel_size`` at stride 1."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ConfigError(f"kernel_size={kernel_size!r} must be a positive odd integer")
    return dilation * (kernel_size // 2)


class ConvBlock(nn.Module):
    """``relu(bn(conv(x) + cond))`` followed by an optional 2x2 max pooling.

    ``cond`` is an optional per-sample, per-channel term ``(batch, out_ch)`` added to the conv
    output before BatchNorm: the device conditioning of Eq. 1 (see
    :class:`caanet.models.conditioning.DeviceConditioning`).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 5, dilation: int = 1, pool: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(
            in_ch, out_ch, kernel_size, padding=same_padding(kernel_size, dilation), dilation=dilation, bias=False
        )
        self.bn = nn.BatchNorm2d(out_ch)
        self.pool = pool
        self.cond_scale: torch.Tensor | None = None  # set by fuse_bn_()
        init_he_uniform(self.conv)

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        y = self.conv(x)
        if cond is not None:
            if self.cond_scale is not None:
                cond = cond * self.cond_scale
            y = y + cond.to(y.dtype)[:, :, None, None]
        y = F.relu(self.bn(y))
        if self.pool:
            y = F.max_pool2d(y, kernel_size=2)
        return y

    @torch.no_grad()
    def fuse_bn_(self) -> "ConvBlock":
        """Fold the (eval-mode) BatchNorm into the conv, in place; for inference copies only.

        ``bn(conv(x) + c) = s * conv(x) + (beta - s * mean) + s * c`` with ``s = gamma / sqrt(var + eps)``:
        the conv gets scaled weights and a bias, the conditioning term is scaled by ``s``.
        """
        if isinstance(self.bn, nn.Identity):
            return self
        scale = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
        fused = torch.nn.utils.fusion.fuse_conv_bn_eval(self.conv.eval(), self.bn.eval())
        self.conv = fused.to(memory_format=torch.channels_last)
        self.cond_scale = scale.detach().clone()
        self.bn = nn.Identity()
        return self

    def extra_repr(self) -> str:
        return f"pool={self.pool}"
