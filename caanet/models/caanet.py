"""CAA-Net: the scene network (backbone + global pooling head), device conditioning and CNN-d.

``build_model(ModelConfig(...))`` composes one model for any topology x pooling x strategy.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from caanet.config import validate_section
from caanet.errors import ConfigError, SpecError, config_error, reject_unknown_keys
from caanet.models.backbones import Backbone, feature_map_shape
from caanet.models.blocks import ConvBlock
from caanet.models.conditioning import (
    DeviceConditioning,
    conditioning_input,
    device_one_hot,
    posterior_input,
    replace_unseen_rows,
)
from caanet.models.device_cnn import DeviceCNN
from caanet.models.heads import build_head, roi_output_shape
from caanet.vocab import (  # noqa: F401  (DEVICE_SOURCES re-exported)
    DEVICE_INPUTS,
    DEVICE_SOURCES,
    POOLING_REGISTRY,
    REPLACING_POLICIES,
    TOPOLOGY_REGISTRY,
    UNSEEN_POLICIES_BY_SOURCE,
)


def _plain(value):
    """``value`` with tuples as lists and numpy scalars as Python numbers (as JSON would hold them)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if hasattr(value, "item") and not isinstance(value, torch.Tensor) else value


@dataclass
class ModelConfig:
    """Everything that defines a CAA-Net's architecture (validated on construction).

    ``device_source``: ``none`` (no conditioning), ``oracle`` (the true device index is an input:
    teacher forcing) or ``predicted`` (CNN-d predicts it: multi-task). ``cond_layer`` (1-4) is the
    backbone block that receives the conditioning; required iff ``device_source != "none"``.
    ``n_devices`` counts the devices seen in training (Eq. 1's one-hot width, CNN-d's outputs).
    ``unseen_device`` (:mod:`caanet.devices`): what a device index ``>= n_devices`` (a device absent
    from training) becomes: ``None`` refuses it (the paper's closed set); ``zero`` / ``uniform``
    replace its one-hot by zeros / ``1/n_devices`` (oracle: the given index; predicted: CNN-d's
    argmax is replaced only where a given index is unseen); ``predicted`` (CNN-d only) keeps CNN-d's
    argmax for every clip.
    ``device_input`` (``device_source="predicted"`` only, :data:`caanet.vocab.DEVICE_INPUTS`): how
    CNN-d's prediction becomes Eq. 1's device vector: ``argmax`` (the paper's one-hot, no gradient
    into CNN-d; ``None`` given for a CNN-d model reads as ``argmax``, so older model files load) or
    ``posterior`` (:func:`caanet.models.conditioning.posterior_input`, differentiable); the
    unseen-device policies act on either as on the one-hot (rows of unseen clips replaced).
    ``input_shape`` is ``(n_frames, n_mels)``; the ``flatten`` and ``roi`` heads' linear layers
    depend on it, the other heads accept any input size.
    """

    topology: str
    pooling: str
    n_classes: int = 10
    n_devices: int = 3
    cond_layer: int | None = None
    device_source: str = "none"
    channels: tuple[int, ...] = (64, 128, 256, 512)
    device_channels: tuple[int, ...] = (64, 128)
    kernel_size: int = 5
    roi_size: int = 16
    input_shape: tuple[int, int] = (320, 64)
    fidelity: str = "paper"
    unseen_device: str | None = None
    device_input: str | None = None

    def __post_init__(self):
        for name in ("channels", "device_channels", "input_shape"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                setattr(self, name, tuple(value))
        if self.device_source == "predicted" and self.device_input is None:
            self.device_input = "argmax"  # the paper's (and every model file written before posteriors)
        self.validate()

    def validate(self) -> "ModelConfig":
        """Each field checked against the schema's ``model_config`` (types, ranges, enums), the topology
        and pooling against the registries, then the rules that span fields: one width per block,
        ``cond_layer`` iff conditioned (and within the blocks), the unseen-device policies of the
        device source, a feature map large enough for the input and the ROI. ConfigError names
        ``ModelConfig.<field>``."""
        validate_section(_plain(dataclasses.asdict(self)), "#/$defs/model_config", "ModelConfig")

        def bad(key, expected):
            raise config_error(f"ModelConfig.{key}", getattr(self, key), expected)

        if self.topology not in TOPOLOGY_REGISTRY:
            bad("topology", f"one of {list(TOPOLOGY_REGISTRY.names())}")
        if self.pooling not in POOLING_REGISTRY:
            bad("pooling", f"one of {list(POOLING_REGISTRY.names())}")
        n_blocks = len(TOPOLOGY_REGISTRY[self.topology].dilations)
        if len(self.channels) != n_blocks:
            bad("channels", f"{n_blocks} positive integers (one per block of {self.topology!r})")
        if self.device_source == "none":
            if self.cond_layer is not None:
                bad("cond_layer", "None when device_source='none'")
        elif self.cond_layer is None or not 1 <= self.cond_layer <= n_blocks:
            bad("cond_layer", f"an integer 1..{n_blocks} when device_source={self.device_source!r}")
        if self.device_source == "predicted":
            if self.device_input not in DEVICE_INPUTS:
                bad("device_input", f"one of {list(DEVICE_INPUTS)} when device_source='predicted'")
        elif self.device_input is not None:
            bad("device_input", f"None when device_source={self.device_source!r} (no CNN-d)")
        if self.unseen_device is not None:
            allowed = UNSEEN_POLICIES_BY_SOURCE[self.device_source]
            if self.unseen_device not in allowed:
                bad("unseen_device", f"None or one of {list(allowed)} for device_source={self.device_source!r}")
        map_shape = self.feature_map_shape
        if min(map_shape) < 1:
            bad("input_shape", f"a shape large enough for topology {self.topology!r} (feature map {map_shape})")
        if POOLING_REGISTRY[self.pooling].roi and min(map_shape) < self.roi_size:
            bad("roi_size", f"at most the {self.topology} feature map {map_shape} of input {self.input_shape}")
        if self.device_source == "predicted":
            n_pool = len(self.device_channels)
            if min(self.input_shape) < 2**n_pool:
                bad("input_shape", f"a shape of at least {2**n_pool} per axis for CNN-d's {n_pool} 2x2 poolings")
        return self

    @property
    def feature_map_shape(self) -> tuple[int, int]:
        """``(P, Q)`` of the backbone's output for an ``input_shape`` input."""
        return feature_map_shape(self.topology, self.input_shape)

    @property
    def attention_map_shape(self) -> tuple[int, int] | None:
        """``(P, Q)`` of ``ModelOutput.attention``, or None for heads without attention."""
        head = POOLING_REGISTRY[self.pooling]
        if not head.attention:
            return None
        return roi_output_shape(self.feature_map_shape, self.roi_size) if head.roi else self.feature_map_shape

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key in ("channels", "device_channels", "input_shape"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        reject_unknown_keys(d, {f.name for f in dataclasses.fields(cls)}, "ModelConfig")
        return cls(**d)

    @classmethod
    def from_spec(
        cls,
        spec,
        *,
        n_classes: int = 10,
        n_devices: int = 3,
        channels=(64, 128, 256, 512),
        device_channels=(64, 128),
        input_shape=(320, 64),
        **overrides,
    ) -> "ModelConfig":
        """The model of a table cell (:class:`caanet.spec.CellSpec`): strategy -> device_source/cond_layer."""
        try:
            spec.validate()
        except AttributeError:
            raise SpecError(f"ModelConfig.from_spec needs a CellSpec, got {type(spec).__name__}") from None
        return cls(
            topology=spec.topology,
            pooling=spec.pooling,
            n_classes=n_classes,
            n_devices=n_devices,
            cond_layer=spec.cond_layer if spec.device_source != "none" else None,
            device_source=spec.device_source,
            device_input=spec.device_input,
            channels=channels,
            device_channels=device_channels,
            input_shape=input_shape,
            fidelity=spec.fidelity,
            **overrides,
        )


class ModelOutput(NamedTuple):
    """``scene`` (B, K) log-scores; ``device`` (B, N) CNN-d log-probabilities or None;
    ``attention`` (B, K, P, Q) normalised attention A' or None."""

    scene: torch.Tensor
    device: torch.Tensor | None
    attention: torch.Tensor | None


class CAANet(nn.Module):
    """Scene backbone + pooling head, conditioned on the device (oracle or CNN-d's prediction).

    ``forward(x, device=None)`` takes ``x`` ``(batch, time, mel)`` float and, for
    ``device_source="oracle"``, the true device as indices ``(batch,)`` or as the reference code's
    one-hot ``(batch, n_devices)`` (indices are also read, for CNN-d models with ``unseen_device``
    zero/uniform, to spot clips of unseen devices; ignored otherwise).

    ``device_net_seed``: when given, CNN-d is initialised from its own random stream, seeded from it
    (:func:`device_net_init_seed`), not from torch's global one: its initial weights are then the
    same whatever the scene network (topology, pooling, widths, layer) built before it. Without it
    (loading a model file, counting FLOPs) CNN-d draws from the global stream like the rest.
    """

    def __init__(self, cfg: ModelConfig, *, device_net_seed: int | None = None):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.backbone = Backbone(cfg.topology, cfg.channels, cfg.kernel_size)
        self.head = build_head(
            cfg.pooling,
            self.backbone.out_channels,
            cfg.n_classes,
            cfg.feature_map_shape,
            roi_size=cfg.roi_size,
            fidelity=cfg.fidelity,
        )
        self.conditioning = (
            DeviceConditioning(cfg.n_devices, cfg.channels[cfg.cond_layer - 1]) if cfg.device_source != "none" else None
        )
        self.device_net = None
        if cfg.device_source == "predicted":
            if device_net_seed is None:
                self.device_net = DeviceCNN(cfg.n_devices, cfg.device_channels, cfg.kernel_size)
            else:
                with torch.random.fork_rng(devices=[]):  # the global stream is left as it was
                    torch.manual_seed(device_net_init_seed(device_net_seed))
                    self.device_net = DeviceCNN(cfg.n_devices, cfg.device_channels, cfg.kernel_size)
        # channels-last (NHWC) convolutions are about twice as fast with oneDNN on CPU and use
        # tensor cores on CUDA; parameters keep their logical shapes, so checkpoints are unaffected
        self.to(memory_format=torch.channels_last)

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ConfigError(f"CAANet input must be (batch, time, mel), got {shape}")
        if not x.is_floating_point():
            raise ConfigError(f"CAANet input must be a float tensor, got dtype {x.dtype}")
        return x.unsqueeze(1).contiguous(memory_format=torch.channels_last)

    def device_vector(self, x4: torch.Tensor, device: torch.Tensor | None):
        """``(Eq. 1's device vector (batch, n_devices) or None, CNN-d log-probabilities or None)`` for the
        configured device source: the true one-hot (oracle), CNN-d's argmax one-hot or its posterior
        (predicted, :attr:`ModelConfig.device_input`), unseen clips' rows replaced by the policy."""
        cfg = self.config
        if cfg.device_source == "none":
            return None, None
        if cfg.device_source == "oracle":
            if device is None:
                raise ConfigError(
                    "CAANet with device_source='oracle' (teacher forcing) needs the true device indices: "
                    "call model(x, device)"
                )
            if device.shape[:1] != x4.shape[:1]:
                raise ConfigError(f"device has shape {tuple(device.shape)} but the batch is {x4.shape[0]}")
            return conditioning_input(device.to(x4.device), cfg.n_devices, cfg.unseen_device, torch.float32), None
        device_logprob = self.device_net(x4)
        if cfg.device_input == "posterior":
            # beyond the paper: differentiable, so the scene loss also trains CNN-d
            one_hot = posterior_input(device_logprob)
        else:
            # argmax: no gradient flows from the scene loss into CNN-d (reference item 4)
            one_hot = device_one_hot(device_logprob.detach().argmax(dim=1), cfg.n_devices, torch.float32, check=False)
        if device is not None and cfg.unseen_device in REPLACING_POLICIES:
            if device.shape[:1] != x4.shape[:1]:
                raise ConfigError(f"device has shape {tuple(device.shape)} but the batch is {x4.shape[0]}")
            one_hot = replace_unseen_rows(one_hot, device.to(x4.device) >= cfg.n_devices, cfg.unseen_device)
        return one_hot, device_logprob

    def forward(self, x: torch.Tensor, device: torch.Tensor | None = None, *,
                device_x: torch.Tensor | None = None) -> ModelOutput:
        """``device_x`` (training with a device-robustness transform, :mod:`caanet.methods`): the
        untransformed batch. CNN-d then runs once over both; the scene network is conditioned on its
        output for ``x`` (what the scene network sees, as at test time) and the returned device
        log-probabilities, the device loss's, are those of ``device_x`` (whose device labels are true)."""
        x4 = self._check_input(x)
        if device_x is not None and self.device_net is not None:
            n = x4.shape[0]
            twice = None if device is None else torch.cat([device, device])
            one_hot, device_logprob = self.device_vector(torch.cat([x4, self._check_input(device_x)]), twice)
            one_hot, device_logprob = one_hot[:n], device_logprob[n:]
        else:
            one_hot, device_logprob = self.device_vector(x4, device)
        cond = self.conditioning(one_hot) if one_hot is not None else None
        feats = self.backbone(x4, cond, self.config.cond_layer)
        scene, attention = self.head(feats)
        return ModelOutput(scene, device_logprob, attention)

    @torch.no_grad()
    def predict_log_proba(self, x: torch.Tensor, device: torch.Tensor | None = None):
        """``(scene, device_logprob or None)`` in eval mode without gradients (the mode is restored).

        ``device`` (teacher forcing): indices ``(batch,)`` or a one-hot ``(batch, n_devices)``.
        """
        was_training = self.training
        self.eval()
        try:
            out = self(x, device)
        finally:
            self.train(was_training)
        return out.scene, out.device

    def inference_copy(self) -> "CAANet":
        """A copy in eval mode with every BatchNorm folded into its conv: same outputs, faster.

        Use it under ``torch.inference_mode()`` for evaluation; it cannot be trained (no BatchNorm).
        """
        model = copy.deepcopy(self).eval()
        for module in model.modules():
            if isinstance(module, ConvBlock):
                module.fuse_bn_()
        return model.requires_grad_(False)


def device_net_init_seed(seed: int) -> int:
    """The seed of CNN-d's own initialisation stream for a cell of seed ``seed`` (>= 0): a value derived
    from it (numpy's SeedSequence with a fixed salt), so that CNN-d's first draws are not the scene
    network's first draws of the same seed."""
    import numpy as np

    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"device_net_seed={seed!r} must be an integer >= 0")
    return int(np.random.SeedSequence([seed, 0xCD]).generate_state(1, dtype=np.uint64)[0] >> 1)


def build_model(cfg: ModelConfig, *, device_net_seed: int | None = None) -> CAANet:
    """The :class:`CAANet` described by ``cfg``; ``device_net_seed``: CNN-d's own initialisation seed
    (see :class:`CAANet`)."""
    if not isinstance(cfg, ModelConfig):
        raise ConfigError(f"build_model needs a ModelConfig, got {type(cfg).__name__}")
    return CAANet(cfg, device_net_seed=device_net_seed)
