"""Global pooling heads of Sec. III-D: ``(batch, C, P, Q)`` feature map -> scene log-scores.

Every head returns ``(scene, attention)``: ``scene`` is ``(batch, n_classes)`` (log-probabilities,
or log-scores for attention heads; the loss is always ``nll_loss``), ``attention`` the normalised
attention ``A'`` ``(batch, n_classes, P, Q)`` for ``att``/``roi_att`` and ``None`` otherwise.

=========  ================  =====================================================================
pooling    builder           head
=========  ================  =====================================================================
flatten    ``flatten_head``  the whole ``C x P x Q`` map -> linear -> log_softmax
max        ``max_head``      Eq. 3, global max over time-frequency -> linear -> log_softmax
avg        ``avg_head``      Eq. 4, global mean -> linear -> log_softmax
roi        ``roi_head``      max over ``roi x roi`` regions (ceil mode) -> flattened -> linear -> log_softmax
att        ``att_head``      Eq. 5-6 attention over all time-frequency bins (no linear layer)
roi_att    ``roi_att_head``  the ``roi`` regions fed to the attention head instead of being flattened
=========  ================  =====================================================================

Each pooling is registered once in :mod:`caanet.vocab` (``register_pooling``), naming its builder
here; :func:`build_head` looks the builder up there. A new head is one registration plus its builder.

The attention maths depends on the fidelity (``caanet.fidelity``): the paper's text (softmax
per bin, sigmoid attention, output ``log(Y)``) or the authors' code (log_softmax per bin,
attention ``clamp(sigmoid + 0.1, 0.1, 0.9)``, output the attention-weighted sum of the per-bin
log-probabilities). The normalisation and logs always run in float32, also under autocast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from caanet.errors import ConfigError
from caanet.fidelity import Fidelity, get_fidelity
from caanet.models.blocks import init_he_uniform
from caanet.vocab import POOLING_REGISTRY

POOLINGS = POOLING_REGISTRY.names()
PAPER_LOG_EPS = 1e-7  # paper-mode output is log(max(Y, eps)), so a zero Y cannot give -inf
ATT_NORM_EPS = 1e-12  # guards Eq. 5's denominator when every sigmoid underflows to 0


class GlobalMaxPool(nn.Module):
    """Eq. 3: ``(B, C, P, Q) -> (B, C)`` maximum over time-frequency."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.amax(x, dim=(2, 3))


class GlobalAvgPool(nn.Module):
    """Eq. 4: ``(B, C, P, Q) -> (B, C)`` mean over time-frequency."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mean(x, dim=(2, 3))


class RoiPool(nn.Module):
    """Global ROI pooling: max over ``size x size`` regions; ``(B, C, P, Q) -> (B, C, ceil(P/s), ceil(Q/s))``."""

    def __init__(self, size: int = 16):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, kernel_size=self.size, stride=self.size, ceil_mode=True)

    def extra_repr(self) -> str:
        return f"size={self.size}"


def roi_output_shape(map_shape: tuple[int, int], roi_size: int) -> tuple[int, int]:
    """Number of ROI regions along each axis (ceil mode)."""
    return tuple(math.ceil(s / roi_size) for s in map_shape)


def attention_pooling(cla: torch.Tensor, att: torch.Tensor, fidelity: Fidelity) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 5-6 on the 1x1-conv outputs ``cla`` and ``att`` (both ``(B, K, P, Q)``).

    Returns ``(scene (B, K), A' (B, K, P, Q))``; ``A'`` sums to 1 over ``P x Q`` for every class.
    Runs in float32 whatever the autocast state (:func:`attention_pooling_classes_first` on the maps laid
    out classes first).
    """
    b, k, p, q = cla.shape
    scene, norm = attention_pooling_classes_first(cla.transpose(0, 1).reshape(k, b, p * q),
                                                  att.transpose(0, 1).reshape(k, b, p * q), fidelity)
    return scene.t(), norm.view(k, b, p, q).transpose(0, 1)


def attention_pooling_classes_first(cla: torch.Tensor, att: torch.Tensor,
                                    fidelity: Fidelity) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 5-6 on ``cla`` and ``att`` laid out ``(K, B, N)``: classes first, ``N = P x Q`` positions
    innermost (what one matrix product over a channels-last map's channels gives).

    Returns ``(scene (K, B), A' (K, B, N))``. Eq. 5's normalisation is folded into Eq. 6
    (``sum_n A' C = sum_n a C / sum_n a``), so the loss's backward pass never goes through ``A'``, which
    is returned for the figures and ``caanet explain``. The layout keeps every reduction and the softmax
    over classes on contiguous memory: on the CPU the head then costs 0.65 of the (B, K, P, Q) form's
    time forward and backward (``benchmarks/bench_conv_layout.py --parts head``). Float32 whatever the
    autocast state.
    """
    with torch.autocast(device_type=cla.device.type, enabled=False):
        cla, att = cla.float(), att.float()
        if fidelity.attention_weight == "sigmoid":
            a = torch.sigmoid(att)
        elif fidelity.attention_weight == "sigmoid_plus_0.1_clamped":
            a = torch.clamp(torch.sigmoid(att) + 0.1, 0.1, 0.9)
        else:
            raise ConfigError(f"attention_weight={fidelity.attention_weight!r} is not implemented")
        total = a.sum(dim=2, keepdim=True).clamp_min(ATT_NORM_EPS)   # Eq. 5's denominator
        if fidelity.attention_class_act == "softmax":
            y = (a * torch.softmax(cla, dim=0)).sum(dim=2) / total.squeeze(2)
            scene = torch.log(y.clamp_min(PAPER_LOG_EPS))
        elif fidelity.attention_class_act == "log_softmax":
            scene = (a * torch.log_softmax(cla, dim=0)).sum(dim=2) / total.squeeze(2)
        else:
            raise ConfigError(f"attention_class_act={fidelity.attention_class_act!r} is not implemented")
        return scene, a / total


class LinearHead(nn.Module):
    """``pool`` (a reduction of the map), flatten, linear, log_softmax."""

    def __init__(self, pool: nn.Module, in_features: int, n_classes: int):
        super().__init__()
        self.pool = pool
        self.fc = nn.Linear(in_features, n_classes)
        init_he_uniform(self.fc)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        z = self.pool(x).flatten(1)
        if z.shape[1] != self.fc.in_features:
            raise ConfigError(
                f"{type(self.pool).__name__} head: the feature map {tuple(x.shape[1:])} gives {z.shape[1]} "
                f"features but the linear layer expects {self.fc.in_features}; the input size differs from "
                "ModelConfig.input_shape"
            )
        return F.log_softmax(self.fc(z).float(), dim=-1), None


class PointwiseConv2d(nn.Conv2d):
    """A 1x1 convolution ``C -> K`` (with bias) computed as one matrix product over the channels of
    every bin, ``(K, C) @ (C, B*P*Q)``, on a channels-last map a view. The result is laid out classes
    first, ``(K, B, P, Q)``, and returned as its ``(B, K, P, Q)`` view, so the module stays an
    ``nn.Conv2d`` to everything that inspects it (parameter shapes, checkpoints, torchinfo's MAC count)
    while the attention pooling reads classes first without a copy. On the CPU it avoids oneDNN's slow
    backward of 1x1 convolutions with few channels (``benchmarks/bench_conv_layout.py --parts head``).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, p, q = x.shape
        xt = x.permute(0, 2, 3, 1).reshape(b * p * q, c).t()  # (C, B*P*Q)
        y = torch.addmm(self.bias[:, None].to(x.dtype), self.weight.view(self.out_channels, c).to(x.dtype), xt)
        return y.view(self.out_channels, b, p, q).transpose(0, 1)


class AttentionHead(nn.Module):
    """Global attention pooling (Eq. 5-6): 1x1 classification and attention convs ``C -> K``.

    ``pre`` optionally reduces the map first (``RoiPool`` for ``roi_att``).
    """

    def __init__(self, in_channels: int, n_classes: int, fidelity: str | Fidelity = "paper", pre: nn.Module | None = None):
        super().__init__()
        self.fidelity = get_fidelity(fidelity)
        self.pre = pre if pre is not None else nn.Identity()
        self.cla = PointwiseConv2d(in_channels, n_classes)
        self.att = PointwiseConv2d(in_channels, n_classes)
        init_he_uniform(self.cla)
        init_he_uniform(self.att)
        if self.fidelity.attention_init_zero:
            nn.init.zeros_(self.att.weight)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``(B, C, P, Q)`` -> ``(scene (B, K), A' (B, K, P, Q))``: both 1x1 convolutions
        (:class:`PointwiseConv2d`, classes-first underneath) feed Eq. 5-6 in the classes-first layout of
        :func:`attention_pooling_classes_first`. ``A'`` is returned as a view."""
        x = self.pre(x)
        b, _, p, q = x.shape
        k = self.cla.out_channels
        cla = self.cla(x).transpose(0, 1).reshape(k, b, p * q)   # views: the products are (K, B, P, Q) already
        att = self.att(x).transpose(0, 1).reshape(k, b, p * q)
        scene, norm = attention_pooling_classes_first(cla, att, self.fidelity)
        return scene.t(), norm.view(k, b, p, q).transpose(0, 1)

    def extra_repr(self) -> str:
        return f"fidelity={self.fidelity.name!r}"


def flatten_head(in_channels: int, n_classes: int, map_shape: tuple[int, int], **_) -> nn.Module:
    """``flatten``: the whole ``(in_channels, P, Q)`` map -> linear -> log_softmax."""
    return LinearHead(nn.Identity(), in_channels * map_shape[0] * map_shape[1], n_classes)


def max_head(in_channels: int, n_classes: int, map_shape: tuple[int, int], **_) -> nn.Module:
    """``max`` (Eq. 3): global max -> linear -> log_softmax."""
    return LinearHead(GlobalMaxPool(), in_channels, n_classes)


def avg_head(in_channels: int, n_classes: int, map_shape: tuple[int, int], **_) -> nn.Module:
    """``avg`` (Eq. 4): global mean -> linear -> log_softmax."""
    return LinearHead(GlobalAvgPool(), in_channels, n_classes)


def roi_head(in_channels: int, n_classes: int, map_shape: tuple[int, int], *, roi_size: int = 16, **_) -> nn.Module:
    """``roi``: max over ``roi_size`` regions (ceil mode) -> flattened -> linear -> log_softmax."""
    p, q = roi_output_shape(map_shape, roi_size)
    return LinearHead(RoiPool(roi_size), in_channels * p * q, n_classes)


def att_head(in_channels: int, n_classes: int, map_shape: tuple[int, int], *,
             fidelity: str | Fidelity = "paper", **_) -> nn.Module:
    """``att`` (Eq. 5-6): attention over every time-frequency bin."""
    return AttentionHead(in_channels, n_classes, fidelity)


def roi_att_head(in_channels: int, n_classes: int, map_shape: tuple[int, int], *, roi_size: int = 16,
                 fidelity: str | Fidelity = "paper", **_) -> nn.Module:
    """``roi_att``: the ``roi`` regions fed to the attention head."""
    return AttentionHead(in_channels, n_classes, fidelity, pre=RoiPool(roi_size))


def build_head(
    pooling: str,
    in_channels: int,
    n_classes: int,
    map_shape: tuple[int, int],
    *,
    roi_size: int = 16,
    fidelity: str | Fidelity = "paper",
) -> nn.Module:
    """The head for ``pooling`` (its builder registered in :data:`caanet.vocab.POOLING_REGISTRY`) over a
    ``(in_channels, *map_shape)`` feature map. An unknown pooling raises ConfigError."""
    if pooling not in POOLING_REGISTRY:
        raise ConfigError(f"pooling={pooling!r} is not one of {list(POOLINGS)}")
    return POOLING_REGISTRY[pooling].build_fn()(in_channels, n_classes, tuple(map_shape),
                                                roi_size=roi_size, fidelity=fidelity)
