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
model file's training summary); :func:`complexity_table` gathers one row per distinct model of a
set of ``evaluation.json`` files (``results/tables/complexity.csv``). Only :func:`measure_model` needs
torch and torchinfo, imported when it runs: the workflow imports this module without torch.

``python3 -m caanet.complexity [preset]`` (in the checkout, beside ``config.yaml``) prints the three
topologies (attention, multi-task) at a preset's widths (default: ``default``) and at the paper's.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from caanet.errors import ResultsError
from caanet.io import TEXT_ENCODING

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
MODEL_KEYS = ["dataset", "topology", "pooling", "strategy", "cond_layer", "method"]
"""What tells the distinct models of :func:`complexity_table` apart (besides their complexity)."""
TABLE_COLUMNS = MODEL_KEYS + ["cell_ids", "n_cells"] + [k for k in COMPLEXITY_KEYS if k != "counted_with"]
"""The columns of ``results/tables/complexity.csv``."""


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


# --------------------------------------------------------------------------------------------- table

def _record_of(path: Path) -> tuple[dict, dict]:
    """``(spec dict, complexity)`` of one evaluation.json; ResultsError names the file and key."""
    try:
        ev = json.loads(Path(path).read_text(encoding=TEXT_ENCODING))
    except FileNotFoundError:
        raise ResultsError(f"{path}: evaluation file not found") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: not readable JSON ({exc})") from None
    spec, comp = ev.get("spec"), ev.get("complexity")
    if not isinstance(spec, Mapping):
        raise ResultsError(f"{path}: key 'spec' is missing")
    if not isinstance(comp, Mapping):
        raise ResultsError(f"{path}: key 'complexity' is missing (written before caanet counted complexity: "
                           "retrain the cell)")
    missing = [k for k in COMPLEXITY_KEYS if k not in comp]
    if missing:
        raise ResultsError(f"{path}: complexity lacks {missing}")
    return dict(spec), dict(comp)


def complexity_table(eval_json_paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One row per distinct model (:data:`MODEL_KEYS`: dataset, topology, pooling, strategy, layer,
    device-robustness method) of ``evaluation.json`` files: :data:`TABLE_COLUMNS`.

    The seeds of a model, and the single-device cells of a row (one architecture), share one row;
    ``cell_ids`` lists the cell ids (``;``-joined), ``n_cells`` counts the files. Two files of one model
    with different complexity (e.g. results of other widths mixed in) raise :class:`ResultsError`
    naming both. Rows are sorted by the model keys.
    """
    rows: dict[tuple, dict] = {}
    origin: dict[tuple, Path] = {}
    for path in map(Path, eval_json_paths):
        spec, comp = _record_of(path)
        key_values = {k: spec.get(k) for k in MODEL_KEYS}
        key_values["method"] = spec.get("method") or "none"
        key = tuple("" if v is None else str(v) for v in key_values.values())
        values = {k: comp[k] for k in COMPLEXITY_KEYS if k != "counted_with"}
        if key in rows:
            before = {k: rows[key][k] for k in values}
            if before != values:
                diff = sorted(k for k in values if before[k] != values[k])
                raise ResultsError(f"{path}: complexity {diff} differs from that of the same model in {origin[key]}")
            ids, cell_id = rows[key]["cell_ids"], _cell_id(spec)
            if cell_id and cell_id not in ids:
                ids.append(cell_id)
            rows[key]["n_cells"] += 1
            continue
        origin[key] = path
        cell_id = _cell_id(spec)
        rows[key] = {**key_values, "cell_ids": [cell_id] if cell_id else [], "n_cells": 1, **values}
    out = pd.DataFrame([{**r, "cell_ids": ";".join(r["cell_ids"])} for r in rows.values()], columns=TABLE_COLUMNS)
    if len(out):
        out = out.sort_values(MODEL_KEYS, key=lambda s: s.astype(str), kind="stable").reset_index(drop=True)
    return out.astype({"cond_layer": "Int64"}) if len(out) else out


def _cell_id(spec: Mapping) -> str:
    from caanet.spec import CellSpec

    try:
        return CellSpec.from_dict(dict(spec)).cell_id
    except Exception:  # noqa: BLE001 - an id is only a label here
        return str(spec.get("cell_id", ""))


def read_complexity_table(path) -> pd.DataFrame:
    """Read ``results/tables/complexity.csv``, checking its columns."""
    from caanet.io import read_results_csv

    return read_results_csv(path, "the complexity table", columns=TABLE_COLUMNS)


# --------------------------------------------------------------------------------------------- the paper's widths

def preset_and_paper_widths(config_path: str | os.PathLike = "config.yaml", preset: str = "default") -> list[dict]:
    """Complexity of CAA-Net's three topologies with attention, multi-task (CNN-d included, conditioning
    at layer 3), 10 scenes and 3 devices: at the widths and clip length of ``preset`` in ``config_path``
    (its Table I dataset's ``clip_seconds``, its ``features``) and at the paper's (``ModelConfig``'s
    default widths, 10-s clips). Returns ``[{"widths", "topology", **complexity_record}]``."""
    from caanet.config import read_yaml, resolve
    from caanet.features import FeatureParams
    from caanet.models import ModelConfig, build_model

    config = read_yaml(config_path)
    resolved = resolve({**config, "preset": preset})
    training, features = resolved.get("training") or {}, resolved.get("features") or {}
    dataset = resolved["datasets"][resolved["tables"]["table1"]["dataset"]]
    ours = FeatureParams.from_dict({**features, "clip_seconds": dataset.get("clip_seconds", 10.0)})
    out = []
    for label, channels, device_channels, fp in (
            (f"{preset} preset", training.get("channels", ModelConfig.channels),
             training.get("device_channels", ModelConfig.device_channels), ours),
            ("paper", ModelConfig.channels, ModelConfig.device_channels, FeatureParams())):
        for topology in ("atrous", "cnn_nopool", "cnn_pool"):
            cfg = ModelConfig(topology=topology, pooling="att", n_classes=10, n_devices=3, cond_layer=3,
                              device_source="predicted", channels=tuple(channels),
                              device_channels=tuple(device_channels), input_shape=(fp.n_frames, fp.n_mels))
            out.append({"widths": label, "topology": topology, **measure_model(build_model(cfg), fp.clip_seconds)})
    return out


if __name__ == "__main__":  # pragma: no cover - the README's figures: python3 -m caanet.complexity [preset]
    import sys

    for r in preset_and_paper_widths(preset=sys.argv[1] if len(sys.argv) > 1 else "default"):
        print(f"{r['widths']:>16}  {r['topology']:<10}  {r['params']:>10,} params  "
              f"{r['bytes_fp32']:>12,} B fp32  {r['bytes_fp16']:>12,} B fp16  {r['bytes_int8']:>11,} B int8  "
              f"{r['macs_per_second'] / 1e6:>10,.2f} MMAC/s ({r['input_frames']}x{r['input_mels']}, "
              f"{r['clip_seconds']:g} s)  fits DCASE: params {r['fits_dcase_params_int8']}, MACs {r['fits_dcase_macs']}")
