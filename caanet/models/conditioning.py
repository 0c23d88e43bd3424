"""Device conditioning, paper Eq. 1: the term ``V_i * E_i`` added to a conv layer's output.

``E_i`` is the device one-hot expanded over the feature map and ``V_i`` a 1x1 convolution with
bias. Because ``E_i`` is constant over time and frequency, ``V_i * E_i`` is the same vector at
every bin: ``W @ onehot + b``, a per-sample bias. :class:`DeviceConditioning` computes exactly
that vector (cheap), while keeping the parameters in the 1x1-conv shapes ``(C, n_devices, 1, 1)``
and ``(C,)`` so the authors' checkpoints map onto it one to one.
:func:`expanded_one_hot_conv` is the literal form (expand, then 1x1 conv), kept for tests and
for the benchmark of "the authors' way".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from caanet.errors import ConfigError
from caanet.models.blocks import init_he_uniform
from caanet.vocab import REPLACING_POLICIES


def device_one_hot(device: torch.Tensor, n_devices: int, dtype: torch.dtype = torch.float32, *,
                   check: bool = True) -> torch.Tensor:
    """``(batch,)`` device indices -> ``(batch, n_devices)`` one-hot of ``dtype``.

    ``check`` tests the range (ConfigError outside ``[0, n_devices)``); that reads the values back
    to the host, a synchronisation per call on a GPU, so callers whose indices are in range by
    construction (CNN-d's argmax) pass ``check=False``.
    """
    if device.dim() != 1 or device.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ConfigError(
            f"device must be a 1-d integer tensor of device indices, got shape {tuple(device.shape)} "
            f"dtype {device.dtype}"
        )
    if check and device.numel() and bool(((device < 0) | (device >= n_devices)).any()):
        raise ConfigError(
            f"device indices must lie in [0, {n_devices}), got values from {int(device.min())} to {int(device.max())}"
        )
    # scatter rather than F.one_hot, which checks the range again (a host sync on a GPU)
    return torch.zeros(device.shape[0], n_devices, dtype=dtype, device=device.device).scatter_(
        1, device.long().unsqueeze(1), 1.0)


def as_device_one_hot(device: torch.Tensor, n_devices: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The true device of teacher forcing as a ``(batch, n_devices)`` one-hot of ``dtype``, from either form
    callers use: indices ``(batch,)`` (caanet's) or a one-hot ``(batch, n_devices)`` (the reference
    code's second input). A 2-d input must be a one-hot (each row one 1, the rest 0: the reference
    conditions on a one-hot, Eq. 1); else :class:`ConfigError` names the first bad row."""
    if not isinstance(device, torch.Tensor):
        raise ConfigError(f"device must be a tensor of indices (batch,) or a one-hot (batch, {n_devices}), "
                          f"got {type(device).__name__}")
    if device.dim() != 2:
        return device_one_hot(device, n_devices, dtype)
    if device.shape[1] != n_devices:
        raise ConfigError(f"device one-hot must have shape (batch, {n_devices}), got {tuple(device.shape)}")
    if device.dtype == torch.bool:
        device = device.to(torch.uint8)
    ones = device == 1
    bad = ~((device == 0) | ones).all(dim=1) | (ones.sum(dim=1) != 1)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ConfigError(f"device one-hot row {row} is {device[row].tolist()}: expected exactly one 1 and zeros")
    return device.to(dtype)


def conditioning_input(device: torch.Tensor, n_devices: int, unseen: str | None = None,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Eq. 1's device input ``(batch, n_devices)`` for device indices that may name unseen devices.

    Indices ``0..n_devices-1`` are the seen devices (one-hot rows). An index ``>= n_devices`` is a
    device absent from training (:mod:`caanet.devices`): with ``unseen="zero"`` its row is all zeros
    (the conditioning term is the bias alone), with ``"uniform"`` every entry is ``1 / n_devices``
    (the mean of the seen devices' terms); with ``None`` (the paper's closed set) it raises
    ConfigError, as does a negative index. ``"predicted"`` is not an input policy (CNN-d decides).
    A one-hot ``(batch, n_devices)`` (the reference code's form) is taken as it is
    (:func:`as_device_one_hot`).
    """
    if unseen is None or (isinstance(device, torch.Tensor) and device.dim() == 2):
        return as_device_one_hot(device, n_devices, dtype)
    if unseen not in REPLACING_POLICIES:
        raise ConfigError(f"unseen={unseen!r}: an oracle device input takes 'zero' or 'uniform' for unseen devices")
    if device.dim() != 1 or device.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ConfigError(
            f"device must be a 1-d integer tensor of device indices, got shape {tuple(device.shape)} "
            f"dtype {device.dtype}"
        )
    if device.numel() and int(device.min()) < 0:
        raise ConfigError(f"device indices must be >= 0, got {int(device.min())}")
    is_unseen = device >= n_devices
    one_hot = F.one_hot(torch.where(is_unseen, torch.zeros_like(device), device).long(), n_devices).to(dtype)
    return replace_unseen_rows(one_hot, is_unseen, unseen)


POSTERIOR_TEMPERATURE = 1.0
POSTERIOR_STRAIGHT_THROUGH = False
"""The posterior conditioning's one design choice, here only: the plain posterior (temperature 1, no
straight-through estimator). Measured (``benchmarks/bench_posterior.py``, default preset with CNN-d
``[4, 8, 8]``, atrous + attention conditioned at layer 3, switched lambda, seeds 0-2): scene Avg
35.7 % (posterior) / 34.0 % (straight-through) / 34.7 % (the paper's argmax) on embedded2018 and
28.1 / 26.1 / 25.3 % on embedded2020 (std over seeds 1-5 points): the estimator that forwards the
argmax is not better, so neither it nor a temperature below 1 (which moves the posterior toward the
argmax) is needed; the posterior is already peaked where CNN-d is sure (mean largest probability
0.85 on embedded2018's three devices, 0.62 on embedded2020's six seen ones)."""


def posterior_input(device_logprob: torch.Tensor, *, temperature: float | None = None,
                    straight_through: bool | None = None) -> torch.Tensor:
    """Eq. 1's device vector from CNN-d's log-probabilities ``(batch, n_devices)``, differentiable
    (strategies ``multi_task_posterior``, ``multi_task_learned_posterior``; beyond the paper).

    ``softmax(device_logprob / temperature)`` (float32, rows summing to 1), no detach: the scene loss
    reaches CNN-d. ``straight_through``: the forward value is the argmax one-hot, the gradient the
    softmax's. Both default to :data:`POSTERIOR_TEMPERATURE` / :data:`POSTERIOR_STRAIGHT_THROUGH` (the
    measured choice); the arguments exist for the experiment that made it.
    """
    t = POSTERIOR_TEMPERATURE if temperature is None else float(temperature)
    st = POSTERIOR_STRAIGHT_THROUGH if straight_through is None else bool(straight_through)
    soft = torch.softmax(device_logprob.float() / t, dim=1)
    if not st:
        return soft
    hard = device_one_hot(soft.detach().argmax(dim=1), soft.shape[1], soft.dtype, check=False)
    return hard + soft - soft.detach()


def replace_unseen_rows(one_hot: torch.Tensor, is_unseen: torch.Tensor, unseen: str) -> torch.Tensor:
    """``one_hot`` ``(batch, N)`` with the rows where ``is_unseen`` ``(batch,)`` holds set to zeros or 1/N."""
    if unseen not in REPLACING_POLICIES:
        raise ConfigError(f"unseen={unseen!r} is not one of {list(REPLACING_POLICIES)}")
    fill = 0.0 if unseen == "zero" else 1.0 / one_hot.shape[1]
    return torch.where(is_unseen[:, None].to(one_hot.device), torch.full_like(one_hot, fill), one_hot)


class DeviceConditioning(nn.Module):
    """Eq. 1's ``V_i * E_i`` as a per-sample bias: ``(batch, n_devices) -> (batch, out_channels)``."""

    def __init__(self, n_devices: int, out_channels: int):
        super().__init__()
        if n_devices < 1 or out_channels < 1:
            raise ConfigError(f"DeviceConditioning: n_devices={n_devices}, out_channels={out_channels} must be >= 1")
        self.n_devices = n_devices
        self.weight = nn.Parameter(torch.empty(out_channels, n_devices, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        init_he_uniform(self)

    def forward(self, one_hot: torch.Tensor) -> torch.Tensor:
        return F.linear(one_hot, self.weight.flatten(1), self.bias)

    def extra_repr(self) -> str:
        return f"n_devices={self.n_devices}, out_channels={self.weight.shape[0]}"


def expanded_one_hot_conv(cond: DeviceConditioning, one_hot: torch.Tensor, map_size: tuple[int, int]) -> torch.Tensor:
    """The literal Eq. 1 term: expand the one-hot to ``(batch, N, P, Q)`` and apply the 1x1 conv."""
    expanded = one_hot[:, :, None, None].expand(-1, -1, *map_size)
    return F.conv2d(expanded, cond.weight, cond.bias)
