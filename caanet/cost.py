"""What one training iteration of a cell costs, and the share of a GPU a cell's job declares.

* :func:`train_step_flops` counts the floating-point operations of one training step (forward and
  backward, all of CNN-d included) with :class:`torch.utils.flop_counter.FlopCounterMode` on the
  ``meta`` device: exact for the model as built, no memory, no arithmetic (milliseconds).
  Convolutions and matrix products count 2 FLOPs per multiply-add; element-wise work is not
  counted (it is memory-bound and small beside the convolutions).
* :func:`gpu_share` turns that into the percent of one card a training job asks for (the
  ``gpu_share`` resource of ``rules/train.smk``): a paper-scale full-resolution cell (about 8.6
  TFLOP per iteration at batch 16) takes a whole card; a pooled CNN (about 0.3 TFLOP) or a
  default-preset cell a small slice, so several share one card (``profiles/local-gpu``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math

from caanet.errors import ConfigError

# A step of this many FLOPs keeps a current data-centre GPU busy on its own (at 35 % of an H100's
# ~989 dense bf16 TFLOP/s, 2 TFLOP take ~6 ms: shorter steps leave it waiting on the host).
FULL_CARD_FLOPS = 2e12
MIN_SHARE = 5  # percent: even the smallest cell holds some memory and a CUDA context (~300-500 MB)


def train_step_flops(model_cfg, batch_size: int) -> int:
    """FLOPs of one training step (forward + backward) of ``model_cfg`` (a ModelConfig) at ``batch_size``.

    Raises ConfigError for a batch size below 1.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be an integer >= 1")
    return _flops(json.dumps(model_cfg.to_dict(), sort_keys=True), batch_size)


@functools.lru_cache(maxsize=256)
def _flops(cfg_json: str, batch_size: int) -> int:
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    from caanet.models import ModelConfig, build_model

    cfg = ModelConfig(**json.loads(cfg_json))
    if cfg.device_source == "oracle":
        # teacher forcing adds only the conditioning bias (n_devices x channels per clip) to the plain
        # network, and its input check reads the device labels, which fake tensors do not have
        cfg = dataclasses.replace(cfg, device_source="none", cond_layer=None)
    model = build_model(cfg).train()  # real parameters (megabytes at the paper's widths)
    counter = FlopCounterMode(display=False)
    # fake activations: shapes and dtypes propagate, nothing is allocated or computed
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.empty(batch_size, *cfg.input_shape)
        with counter:
            out = model(x)
            loss = out.scene.float().sum() + (out.device.float().sum() if out.device is not None else 0)
            loss.backward()
    return int(counter.get_total_flops())


def gpu_share(flops_per_step: float, *, full_card_flops: float = FULL_CARD_FLOPS, step: int = 5) -> int:
    """Percent of one GPU (``MIN_SHARE``..100, a multiple of ``step``) a job of ``flops_per_step`` asks for.

    ``100 * flops / full_card_flops`` rounded up, so a job at or above ``full_card_flops`` per
    iteration gets a card to itself and smaller ones share.
    """
    if not flops_per_step >= 0 or not full_card_flops > 0:
        raise ConfigError(f"gpu_share: flops_per_step={flops_per_step!r} and full_card_flops={full_card_flops!r} "
                          "must be >= 0 and > 0")
    share = math.ceil(100.0 * flops_per_step / full_card_flops / step) * step
    return int(min(100, max(MIN_SHARE, share)))


# Dense bf16 tensor-core peaks without sparsity, TFLOP/s, from the vendors' data sheets; matched
# against torch.cuda.get_device_name() (first key contained in the name, case-insensitive).
BF16_PEAK_TFLOPS = {
    "H200": 989.0,  # "NVIDIA H200"
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,  # the SXM card reports itself as "NVIDIA H100 80GB HBM3"
    "GH200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "A800": 312.0,
    "A30": 165.0,
    "A10G": 70.0,
    "A10": 125.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "RTX 6000 Ada": 364.0,
    "RTX A6000": 155.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
    "V100": None,  # no bf16 tensor cores
    "T4": None,
}


def bf16_peak_tflops(device_name: str) -> float | None:
    """The card's dense bf16 peak in TFLOP/s from :data:`BF16_PEAK_TFLOPS`, None if unknown or without bf16."""
    name = device_name.lower()
    for key in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):  # "H100 SXM" before "H100"
        if key.lower() in name:
            return BF16_PEAK_TFLOPS[key]
    return None
