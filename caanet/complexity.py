"""Model complexity as DCASE Task 1 counts it: parameters, parameter memory, multiply-accumulates.

Since 2022 the low-complexity ASC task limits a system to **128,000 bytes of parameters** and
**30 million multiply-accumulates (MACs) per 1-s clip** (:data:`DCASE_MAX_PARAM_BYTES`,
:data:`DCASE_MAX_MACS_PER_SECOND`), counted for PyTorch models with torchinfo: the DCASE 2024/2025
baselines (CPJKU/dcase2024_task1_baseline ``helpers/nessi.py``, after NeSsi,
AlbertoAncilotto/NeSsi) take ``torchinfo.summary(model, input_size=...)``'s ``total_mult_adds`` and
``total_params`` for one clip. caanet does the same (:func:`measure_model`), so its numbers compare
with the challenge's:

* the model **as it runs at inference**: the scene network and, for multi-task models, CNN-d (whose
  device prediction conditions the scene network); teacher-forcing models get a device index as input;
* the model **as given**: BatchNorm is not folded into the convolutions (NeSsi counts what it is
  given; folded, each BatchNorm's 2 parameters per channel would vanish into the conv's bias and its
  per-bin scale-and-shift from the MACs, a few per mille at these widths);
* torchinfo counts the weights and bias of each convolution times its output positions, and batch x
  parameters for other layers with parameters (linear, BatchNorm, Eq. 1's conditioning); pooling,
  activations, softmax and the attention's normalisation are not counted;
* one clip of the model's input shape (``n_frames x n_mels``, the cell's ``clip_seconds``), batch 1;
  ``macs_per_second`` divides by the clip length, so 10-s and 1-s models compare (the convolutions'
  MACs grow in proportion to the frames);
* parameter memory is ``params x`` 4 (fp32), 2 (fp16) or 1 (int8) bytes; DCASE 2022's limit is for
  int8 (128 K parameters), its 2023-2025 editions allow any format within 128 kB.

:func:`complexity_record` is the plain-data dict of ``evaluation.json``'s ``complexity`` (and the
model file's training summary). Only :func:`measure_model` needs torch and torchinfo, imported when it
runs: the workflow imports this module without torch. This module is training code (its counts are a
training job's output): :mod:`caanet.complexity_table` gathers them into ``results/tables/complexity.csv``
and compares widths, so that changing those reruns no training.
"""

from __future__ import annotations

import math

DCASE_MAX_PARAM_BYTES = 128_000
"""DCASE Task 1's parameter memory limit since 2022, in bytes (NeSsi's ``MAX_PARAMS_MEMORY``)."""
DCASE_MAX_MACS_PER_SECOND = 30_000_000
"""DCASE Task 1's MAC limit since 2022 for one 1-s clip (NeSsi's ``MAX_MACS``)."""
BYTES_PER_PARAM = {"fp32": 4, "fp16": 2, "int8": 1}
"""Parameter memory per precision."""
COUNTED_WITH = "torchinfo's total_params and total_mult_adds"
"""How the counts are made (the DCASE baselines' NeSsi helper counts PyTorch models the same way)."""

COMPLEXITY_KEYS = ("params", "bytes_fp32", "bytes_fp16", "bytes_int8", "macs_per_clip", "clip_seconds",
                   "macs_per_second", "input_frames", "input_mels", "device_cnn", "batchnorm_folded",
                   "fits_dcase_params_int8", "fits_dcase_macs", "counted_with")
"""The keys of :func:`complexity_record`, in order."""


def complexity_record(params: int, macs_per_clip: int, clip_seconds: float, *, input_shape=(None, None),
                      device_cnn: bool = False, batchnorm_folded: bool = False) -> dict:
    """The ``complexity`` entry of ``evaluation.json``: plain numbers and flags (:data:`COMPLEXITY_KEYS`).

    ``params``: parameter count; ``macs_per_clip``: multiply-accumulates of one clip of
    ``clip_seconds`` seconds (``input_shape`` = (frames, mels)); ``device_cnn``: CNN-d is counted;
    ``batchnorm_folded``: whether BatchNorm was folded before counting. Memory is ``params`` times
    :data:`BYTES_PER_PARAM`; ``macs_per_second = macs_per_clip / clip_seconds``; the ``fits_dcase_*``
    flags compare the int8 memory and the MACs per second with :data:`DCASE_MAX_PARAM_BYTES` and
    :data:`DCASE_MAX_MACS_PER_SECOND`. Raises ValueError for a negative count or a clip length <= 0.
    """
    params, macs_per_clip, clip_seconds = int(params), int(macs_per_clip), float(clip_seconds)
    if params < 0 or macs_per_clip < 0:
        raise ValueError(f"params={params}, macs_per_clip={macs_per_clip}: counts must be >= 0")
    if not clip_seconds > 0 or not math.isfinite(clip_seconds):
        raise ValueError(f"clip_seconds={clip_seconds!r} must be a positive number")
    frames, mels = input_shape
    macs_per_second = macs_per_clip / clip_seconds
    return {
        "params": params,
        **{f"bytes_{p}": params * b for p, b in BYTES_PER_PARAM.items()},
        "macs_per_clip": macs_per_clip, "clip_seconds": clip_seconds, "macs_per_second": macs_per_second,
        "input_frames": None if frames is None else int(frames), "input_mels": None if mels is None else int(mels),
        "device_cnn": bool(device_cnn), "batchnorm_folded": bool(batchnorm_folded),
        "fits_dcase_params_int8": params * BYTES_PER_PARAM["int8"] <= DCASE_MAX_PARAM_BYTES,
        "fits_dcase_macs": macs_per_second <= DCASE_MAX_MACS_PER_SECOND,
        "counted_with": COUNTED_WITH,
    }


def measure_model(model, clip_seconds: float) -> dict:
    """:func:`complexity_record` of a :class:`caanet.models.CAANet`, counted with torchinfo.

    One clip of ``model.config.input_shape`` (batch 1) runs through a CPU copy of the model in eval
    mode (the model itself is untouched): the scene network, CNN-d for multi-task models, and for
    teacher forcing device index 0 as the conditioning input. ``clip_seconds`` is the clip length the
    input shape stands for (the feature parameters' ``clip_seconds``).
    """
    import copy

    import torch
    import torchinfo

    m = copy.deepcopy(model).to("cpu").float().eval()
    cfg = m.config
    x = torch.zeros(1, *cfg.input_shape)
    inputs = [x, torch.zeros(1, dtype=torch.long)] if cfg.device_source == "oracle" else [x]
    stats = torchinfo.summary(m, input_data=inputs, device="cpu", mode="eval", verbose=0)
    return complexity_record(stats.total_params, stats.total_mult_adds, clip_seconds, input_shape=cfg.input_shape,
                             device_cnn=m.device_net is not None, batchnorm_folded=False)


def model_file_complexity(mf) -> dict:
    """:func:`measure_model` of a loaded model file (:class:`caanet.modelfile.ModelFile`): its model at
    its feature parameters' clip length (``caanet inspect``)."""
    return measure_model(mf.model, mf.clip_seconds)
