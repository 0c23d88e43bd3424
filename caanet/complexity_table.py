"""DCASE's complexity counts gathered: one row per distinct model (``results/tables/complexity.csv``),
and CAA-Net's counts at a preset's widths beside the paper's.

The counts themselves are made where each cell trains (:mod:`caanet.complexity`, ``evaluation.json``'s
``complexity``); this module reads them back, torch-free (:func:`complexity_table`, used by the
``aggregate_tables`` rule). :func:`preset_and_paper_widths` builds the models to count them (torch):
``python3 -m caanet.complexity_table [preset]`` (in the checkout, beside ``config.yaml``) prints the
three topologies (attention, multi-task) at a preset's widths (default: ``default``) and at the paper's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from caanet.complexity import COMPLEXITY_KEYS, measure_model
from caanet.errors import ResultsError
from caanet.io import read_results_json

MODEL_KEYS = ["dataset", "topology", "pooling", "strategy", "cond_layer", "method"]
"""What tells the distinct models of :func:`complexity_table` apart (besides their complexity)."""
TABLE_COLUMNS = MODEL_KEYS + ["cell_ids", "n_cells"] + [k for k in COMPLEXITY_KEYS if k != "counted_with"]
"""The columns of ``results/tables/complexity.csv``."""


def _record_of(path: Path) -> tuple[dict, dict]:
    """``(spec dict, complexity)`` of one evaluation.json; ResultsError names the file and key."""
    ev = read_results_json(path)
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


if __name__ == "__main__":  # pragma: no cover - the README's figures: python3 -m caanet.complexity_table [preset]
    import sys

    for r in preset_and_paper_widths(preset=sys.argv[1] if len(sys.argv) > 1 else "default"):
        print(f"{r['widths']:>16}  {r['topology']:<10}  {r['params']:>10,} params  "
              f"{r['bytes_fp32']:>12,} B fp32  {r['bytes_fp16']:>12,} B fp16  {r['bytes_int8']:>11,} B int8  "
              f"{r['macs_per_second'] / 1e6:>10,.2f} MMAC/s ({r['input_frames']}x{r['input_mels']}, "
              f"{r['clip_seconds']:g} s)  fits DCASE: params {r['fits_dcase_params_int8']}, MACs {r['fits_dcase_macs']}")
