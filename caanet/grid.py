"""The paper's table grid as data: which cells to train, where they live, and their aggregates.

The grid of a preset (``config.yaml``, already merged) is read from these keys::

    grid:
      rows:         [[topology, pooling], ...]   # Tables I/II rows; default DEFAULT_ROWS (the paper's 14)
      layers:       [1, 2, 3, 4]                 # conditioning layers tried in Table I
      table3_rows:  [[topology, pooling], ...]   # default TABLE3_ROWS
      strategies:   [single_device, joint, teacher_forcing, multi_task]   # Tables II/III columns
      layer_selection: test                      # test (the paper's) | validation (leak-free)
    tables: {table1: {dataset: D1}, table2: {dataset: D2}, table3: {dataset: D3},
             table4: {dataset: D4, seeds: [0]},        # table4 optional; its seeds override seeds*
             table5: {dataset: D4, rows: [[atrous, att]], strategies: [joint, multi_task],
                      methods: [none, freq_mixstyle, ...], seeds: [0, 1, 2]}}     # optional
    seeds: [0]                                   # default seeds of every cell
    seeds_by_pooling: {att: [0, 1, 2]}           # optional per-pooling override
    fidelity: paper
    datasets: {D: {devices: [a, b, c], reference_device: a}}   # reference_device defaults to the first
                                                               # unseen_devices: [..] (test split only)

``reference_device`` (:func:`reference_devices`) is the one definition of the device left out of the
``bc`` mean: evaluation (``train_cell``), aggregation (:func:`summarise_table`), tables and report all
take it from here. ``layer_selection`` (:data:`LAYER_SELECTIONS`) says how Table I picks each row's
conditioning layer: ``test``, the paper's method (the best of the four **test** accuracies, which
gives the conditional strategies of Tables II/III a winner's-curse advantage), or ``validation``
(Table I's cells hold out a validation split and the best validation Avg picks the layer; leak-free).

Only ``tables.table1`` is required among the tables; an absent ``table2``/``table3``/``table4``/``table5`` has
no cells.

Expansion (Sec. IV-C):

* Table I: teacher forcing, every row x layer x seed on table1's dataset.
* Table II: per row, ``single_device`` (one cell per device of the dataset), ``joint``,
  ``teacher_forcing`` and ``multi_task`` at the layer Table I selected for the row. The teacher-forcing
  cell is the very same :class:`CellSpec` as Table I's when both tables use one dataset, so the job is
  reused, not retrained.
* Table III: ``table3_rows`` on table3's dataset, conditioned at Table I's layer for the same
  (topology, pooling), as the paper does.
* Table IV (beyond the paper): ``table3_rows`` x ``tables.table4.strategies`` (default every registered
  strategy, :data:`TABLE4_STRATEGIES`: the learned lambda's ``multi_task_learned`` and the posterior
  conditioning's ``multi_task_posterior`` and ``multi_task_learned_posterior`` included) on table4's
  dataset (2020-style, with unseen devices), conditioned at Table I's layer like Table III;
  ``tables.table4.seeds`` replaces ``seeds``/``seeds_by_pooling`` for its cells when given.
* Table V (beyond the paper): ``tables.table5``'s rows x strategies x device-robustness methods
  (:data:`caanet.vocab.METHOD_REGISTRY`), each method with the strategies it combines with
  (``Method.combines_with``), conditional strategies at Table I's layer. Its cells of method ``none``
  are the very same :class:`CellSpec` s as Table IV's when both use one dataset and seeds: shared jobs.

Training data, like for like: when any cell on a dataset uses a validation split, every cell on it
holds out the same one (:func:`holds_validation`, :mod:`caanet.holdout`).

Single-device cells exist for the seen devices only (:func:`seen_devices_of`): a device of
``datasets.D.unseen_devices`` has no training clip.

Aggregation: :func:`collect_cells` flattens ``evaluation.json`` files into one row per
(cell, seed, device); :func:`summarise_table` reduces them over seeds to the long-format table
(percent, mean, ``ddof=1`` std, Student-t 95 % CI) with the per-device rows plus ``avg`` (mean over
all devices: the paper's "Avg") and ``bc`` (mean over the non-reference devices: DCASE's official
figure), and for a dataset with unseen devices ``seen``/``unseen`` (means over each kind).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as _sps

from caanet.config import MISSING, validate_section
from caanet.errors import ConfigError, ResultsError, SpecError, config_error
from caanet.io import TEXT_ENCODING
from caanet.spec import CONDITIONAL, LAYERS, METHODS, PAPER_STRATEGIES, POOLINGS, STRATEGIES, TOPOLOGIES, CellSpec
from caanet.vocab import LAYER_SELECTIONS, METHOD_REGISTRY

Row = tuple[str, str]

DEFAULT_ROWS: tuple[Row, ...] = (
    ("cnn_pool", "flatten"), ("cnn_pool", "max"), ("cnn_pool", "avg"), ("cnn_pool", "att"),
    ("cnn_nopool", "max"), ("cnn_nopool", "avg"), ("cnn_nopool", "roi"), ("cnn_nopool", "att"),
    ("cnn_nopool", "roi_att"),
    ("atrous", "max"), ("atrous", "avg"), ("atrous", "roi"), ("atrous", "att"), ("atrous", "roi_att"),
)
"""The 14 (topology, pooling) rows of the paper's Tables I and II, in the paper's order."""

TABLE3_ROWS: tuple[Row, ...] = (("cnn_pool", "att"), ("cnn_nopool", "att"), ("atrous", "att"))
"""The rows of Table III (DCASE 2019): the attention models of the three topologies."""

TABLES = ("table1", "table2", "table3", "table4", "table5")
TABLE4_STRATEGIES: tuple[str, ...] = STRATEGIES
"""Table IV's columns (beyond the paper): every registered strategy, i.e. the paper's four, multi-task with
the learned lambda, and both multi-task rules with CNN-d's posterior as the device input."""
DEFAULT_TABLE5_ROWS: tuple[Row, ...] = (("atrous", "att"),)
"""Table V's rows by default: the CAA-Net row (atrous + attention)."""
DEFAULT_TABLE5_STRATEGIES: tuple[str, ...] = ("joint", "multi_task")
"""Table V's strategies by default: joint training and the multi-task variant (``tables.table5.strategies``
names the variant Table IV shows best)."""
DEFAULT_TABLE5_METHODS: tuple[str, ...] = METHODS
"""Table V's methods by default: every registered one."""
DEFAULT_SEEDS = (0,)
DEFAULT_FIDELITY = "paper"
DEFAULT_LAYER_SELECTION = "test"
"""The defaults of ``seeds``, ``fidelity`` and ``grid.layer_selection`` (the schema documents them:
tests/test_schema.py keeps both equal), beside :data:`DEFAULT_ROWS`, :data:`TABLE3_ROWS`,
:data:`caanet.spec.LAYERS` and :data:`caanet.spec.PAPER_STRATEGIES`."""
SUMMARY_DEVICES = ("avg", "bc", "seen", "unseen")
"""Pseudo-devices of the summaries: ``avg`` over all devices, ``bc`` over the non-reference ones, and,
for a dataset with unseen devices (``datasets.D.unseen_devices``), ``seen``/``unseen`` over each kind."""

CELL_COLUMNS = ["dataset", "cell_id", "topology", "pooling", "strategy", "method", "cond_layer", "device", "seed",
                "accuracy", "n", "n_correct"]
SUMMARY_COLUMNS = ["table", "dataset", "topology", "pooling", "strategy", "method", "cond_layer", "device",
                   "acc_mean", "acc_std", "acc_ci_low", "acc_ci_high", "n_seeds",
                   "ll_mean", "ll_std", "ll_ci_low", "ll_ci_high"]
LAYER_COLUMNS = ["topology", "pooling", "cond_layer", "acc_mean", "selected_on"]
CLIP_COLUMNS = ["n_train_clips", "n_validation_clips", "validation_accuracy"]
"""Optional columns of :func:`collect_cells` (NaN for an evaluation.json written before they existed)."""
LOG_LOSS_COLUMNS = ["log_loss"]
"""Optional column of :func:`collect_cells`: DCASE's log loss of the device's test clips
(``evaluation.json``'s ``log_loss.per_device``; NaN for a file written before it existed)."""
LAMBDA_COLUMNS = ["lambda_switched_at", "device_accuracy", "device_accuracy_seen"]
"""Optional columns of :func:`collect_cells` (NaN where absent: cells without CNN-d, older files): the
iteration after which Eq. 2's switch set lambda low (NaN: it never fired, or the cell has no switch),
and CNN-d's test accuracy in percent over all devices and over the seen devices (the same on each of a
cell's device rows)."""
POLICY_COLUMNS = ["unseen_device_policy", "bf16_autocast"]
"""Optional columns of :func:`collect_cells`: the cell's policy for test clips of unseen devices
(``evaluation.json``'s ``unseen_device_policy``; empty where no unseen device was evaluated) and
whether it trained and evaluated under bf16 autocast (``bf16_autocast``; empty where not recorded)."""
PAPER_FILES = {
    "table1": "table1_teacher_forcing_by_layer.csv",
    "table2": "table2_strategies_dcase2018.csv",
    "table3": "table3_strategies_dcase2019.csv",
}
"""The paper's values per table; Table IV goes beyond the paper and has none."""
_LAYER_TIE_TOL = 1e-9


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GridConfig:
    """A validated, normalised grid section of a preset (see the module docstring)."""

    rows: tuple[Row, ...]
    layers: tuple[int, ...]
    table3_rows: tuple[Row, ...]
    strategies: tuple[str, ...]
    table_datasets: Mapping[str, str]          # table name -> dataset (absent tables left out)
    seeds: tuple[int, ...]
    seeds_by_pooling: Mapping[str, tuple[int, ...]]
    fidelity: str
    devices: Mapping[str, tuple[str, ...]]     # dataset -> device labels
    reference_device: Mapping[str, str]        # dataset -> reference device
    layer_selection: str = "test"              # LAYER_SELECTIONS
    unseen_devices: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # dataset -> unseen
    table_seeds: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)     # tables.<t>.seeds
    table5: "Table5Config | None" = None                   # tables.table5 (None: no Table V)
    table4_strategies: tuple[str, ...] = ()                # tables.table4.strategies (() : every registered one)


@dataclass(frozen=True)
class Table5Config:
    """Table V's grid (``tables.table5``): rows, strategies and methods (defaults
    :data:`DEFAULT_TABLE5_ROWS`, :data:`DEFAULT_TABLE5_STRATEGIES`, :data:`DEFAULT_TABLE5_METHODS`)."""

    rows: tuple[Row, ...] = DEFAULT_TABLE5_ROWS
    strategies: tuple[str, ...] = DEFAULT_TABLE5_STRATEGIES
    methods: tuple[str, ...] = DEFAULT_TABLE5_METHODS


def _table5(value: Mapping | None) -> Table5Config | None:
    """``tables.table5`` normalised (already checked by the schema); a method combined with none of the
    strategies is refused (it would have no cell)."""
    if value is None:
        return None
    cfg = Table5Config(rows=_rows(value.get("rows", DEFAULT_TABLE5_ROWS)),
                       strategies=tuple(value.get("strategies", DEFAULT_TABLE5_STRATEGIES)),
                       methods=tuple(value.get("methods", DEFAULT_TABLE5_METHODS)))
    if "single_device" in cfg.strategies:
        raise config_error("tables.table5.strategies", list(cfg.strategies),
                           "multi-device strategies (single-device training has a model per device; no method "
                           "is combined with it)")
    for method in cfg.methods:
        if not any(METHOD_REGISTRY[method].combines_with(s) for s in cfg.strategies):
            allowed = [s for s in STRATEGIES if METHOD_REGISTRY[method].combines_with(s)]
            raise config_error("tables.table5.methods", method,
                               f"a method combined with one of the strategies {list(cfg.strategies)} "
                               f"({method} is combined with {allowed})")
    return cfg


# The schema's subschema of each preset key that grid_config reads (rules/schemas/config.schema.yaml).
_PRESET_KEYS = {
    "grid": "#/$defs/grid",
    "tables": "#/$defs/tables",
    "seeds": "#/$defs/seeds",
    "seeds_by_pooling": "#/$defs/preset/properties/seeds_by_pooling",
    "fidelity": "#/$defs/fidelity",
}
_DATASET_KEYS = ("devices", "unseen_devices", "reference_device")


def _rows(value) -> tuple[Row, ...]:
    return tuple((t, p) for t, p in value)


def _datasets(value) -> tuple[dict, dict]:
    """``({dataset: devices}, {dataset: reference device})``; each entry's ``devices``,
    ``unseen_devices`` and ``reference_device`` checked against the schema's ``dataset``, and the
    rules that span them (devices given, the reference device one of them)."""
    if not isinstance(value, Mapping) or not value:
        raise config_error("datasets", value, "a non-empty mapping of dataset name to its settings")
    devices, reference = {}, {}
    for name, entry in value.items():
        if not isinstance(entry, Mapping):
            raise config_error(f"datasets.{name}", entry, "a mapping")
        if "devices" not in entry:
            raise config_error(f"datasets.{name}.devices", MISSING, "a list of device labels (required)")
        for key in _DATASET_KEYS:
            if key in entry:
                validate_section(entry[key], f"#/$defs/dataset/properties/{key}", f"datasets.{name}.{key}")
        devs = tuple(entry["devices"])
        ref = entry.get("reference_device", devs[0])
        if ref not in devs:
            raise config_error(f"datasets.{name}.reference_device", ref, f"one of the dataset's devices {list(devs)}")
        devices[name], reference[name] = devs, ref
    return devices, reference


def _unseen_devices(value: Mapping) -> dict[str, tuple[str, ...]]:
    """``{dataset: unseen devices}`` (``datasets.D.unseen_devices``; datasets without any left out)."""
    out = {}
    for name, entry in value.items():
        unseen = entry.get("unseen_devices") or []
        stray = [u for u in unseen if u not in entry["devices"]]
        if stray:
            raise config_error(f"datasets.{name}.unseen_devices", list(unseen),
                               f"devices of 'datasets.{name}.devices' {list(entry['devices'])}")
        if unseen:
            out[name] = tuple(unseen)
    return out


def _tables(value: Mapping, devices: Mapping) -> dict:
    """``{table: dataset}``: table1 given, every table's dataset under ``datasets``."""
    if "table1" not in value:
        raise config_error("tables.table1", MISSING, "Table I's settings (it selects the conditioning layers)")
    out = {}
    for table in TABLES:
        if table not in value:
            continue
        dataset = value[table]["dataset"]
        if dataset not in devices:
            raise config_error(f"tables.{table}.dataset", dataset, f"a dataset under 'datasets' (known: {sorted(devices)})")
        out[table] = dataset
    return out


def grid_config(preset: Mapping | GridConfig) -> GridConfig:
    """Validate the grid keys of a merged preset and return them normalised.

    Each key read (``grid``, ``tables``, ``seeds``, ``seeds_by_pooling``, ``fidelity`` and the datasets'
    devices) is checked against its subschema (:func:`caanet.config.validate_section`); here only the
    rules that span keys: table1 given, tables naming known datasets, reference and unseen devices
    among the devices. Defaults are the code's (:data:`DEFAULT_ROWS`, ...; the schema documents
    them). Raises :class:`ConfigError` naming the offending key. A :class:`GridConfig` passes through.
    """
    if isinstance(preset, GridConfig):
        return preset
    if not isinstance(preset, Mapping):
        raise config_error("<preset>", type(preset).__name__, "a mapping")
    try:
        key = json.dumps(preset, sort_keys=True)
    except (TypeError, ValueError):   # not JSON data (a caller's own objects): no cache
        return _grid_config(preset)
    return _grid_config_of_json(key)


@functools.lru_cache(maxsize=64)
def _grid_config_of_json(preset_json: str) -> GridConfig:
    """:func:`_grid_config` of a preset given as canonical JSON: the workflow asks for the same preset's
    grid for every job (params, inputs), and a schema validation costs milliseconds."""
    return _grid_config(json.loads(preset_json))


def _grid_config(preset: Mapping) -> GridConfig:
    for key in ("datasets", "tables"):
        if key not in preset:
            raise config_error(key, MISSING, "a value (required)")
    for key, pointer in _PRESET_KEYS.items():
        if key in preset:
            validate_section(preset[key], pointer, key)
    grid = preset.get("grid") or {}
    devices, reference = _datasets(preset["datasets"])
    by_pooling = preset.get("seeds_by_pooling") or {}
    return GridConfig(
        rows=_rows(grid.get("rows", DEFAULT_ROWS)),
        layers=tuple(grid.get("layers", LAYERS)),
        table3_rows=_rows(grid.get("table3_rows", TABLE3_ROWS)),
        strategies=tuple(grid.get("strategies", PAPER_STRATEGIES)),
        table_datasets=_tables(preset["tables"], devices),
        seeds=tuple(preset.get("seeds", DEFAULT_SEEDS)),
        seeds_by_pooling={p: tuple(s) for p, s in by_pooling.items()},
        fidelity=preset.get("fidelity", DEFAULT_FIDELITY),
        devices=devices,
        reference_device=reference,
        layer_selection=grid.get("layer_selection", DEFAULT_LAYER_SELECTION),
        unseen_devices=_unseen_devices(preset["datasets"]),
        table_seeds={t: tuple(e["seeds"]) for t, e in preset["tables"].items() if "seeds" in e},
        table5=_table5(preset["tables"].get("table5")),
        table4_strategies=tuple((preset["tables"].get("table4") or {}).get("strategies", TABLE4_STRATEGIES)),
    )


def unseen_devices(preset: Mapping | GridConfig) -> dict[str, tuple[str, ...]]:
    """``{dataset: unseen devices}`` of a preset (``datasets.D.unseen_devices``; only datasets having some)."""
    if isinstance(preset, GridConfig):
        return dict(preset.unseen_devices)
    if not isinstance(preset, Mapping) or "datasets" not in preset:
        raise config_error("datasets", MISSING, "a value (required)")
    _datasets(preset["datasets"])
    return _unseen_devices(preset["datasets"])


def reference_devices(preset: Mapping | GridConfig) -> dict[str, str]:
    """``{dataset: reference device}`` of a preset (``datasets.D.reference_device``, default the first).

    Only the ``datasets`` key is read (and checked: an unknown reference device raises ConfigError)."""
    if isinstance(preset, GridConfig):
        return dict(preset.reference_device)
    if not isinstance(preset, Mapping) or "datasets" not in preset:
        raise config_error("datasets", MISSING, "a value (required)")
    return _datasets(preset["datasets"])[1]


def holds_validation(preset: Mapping, dataset: str) -> bool:
    """Whether every cell of the preset's grid on ``dataset`` holds out a validation split (issue 17 §3:
    like for like; :mod:`caanet.holdout`).

    True when any cell of a table on ``dataset`` uses one itself
    (:func:`caanet.holdout.cell_uses_validation`): a strategy of one of those tables whose switched
    lambda is measured on validation (``training.lambda_on``, else the fidelity's default), every cell
    under ``training.selection: best_val``, Table I's cells under ``grid.layer_selection: validation``.
    All of them then hold out the same clips (same seed, same locations), so every cell of a row trains
    on the same clips. ``preset``: the merged preset (its ``training`` mapping is read; absent keys take
    the schema's defaults, which equal :class:`caanet.training.TrainConfig`'s). False for a dataset no
    table uses.
    """
    from caanet.config import subschema
    from caanet.fidelity import lambda_source
    from caanet.holdout import cell_uses_validation

    cfg = grid_config(preset)
    training = dict((preset.get("training") if isinstance(preset, Mapping) else None) or {})
    defaults = subschema("#/$defs/training")["properties"]
    selection = training.get("selection", defaults["selection"]["default"])
    source = lambda_source(cfg.fidelity, training.get("lambda_on", defaults["lambda_on"]["default"]))
    scored = cfg.layer_selection == "validation" and cfg.table_datasets["table1"] == dataset
    for table, table_dataset in cfg.table_datasets.items():
        if table_dataset != dataset:
            continue
        strategies = ("teacher_forcing",) if table == "table1" else table_strategies(cfg, table)
        if any(cell_uses_validation(s, selection=selection, lambda_source=source,
                                    score_validation=scored and table == "table1") for s in strategies):
            return True
    return False


def scores_validation(preset: Mapping | GridConfig, spec: CellSpec) -> bool:
    """Whether the cell ``spec`` must hold out and score a validation split for the layer selection:
    a Table I cell (teacher forcing on table1's dataset, a grid row and layer) under
    ``layer_selection: validation``."""
    cfg = grid_config(preset)
    return (cfg.layer_selection == "validation" and spec.strategy == "teacher_forcing"
            and spec.dataset == cfg.table_datasets["table1"] and (spec.topology, spec.pooling) in cfg.rows
            and spec.cond_layer in cfg.layers)


# --------------------------------------------------------------------------------------------
# Expansion
# --------------------------------------------------------------------------------------------

def seeds_for(preset: Mapping | GridConfig, pooling: str, table: str | None = None) -> list[int]:
    """The seeds of every cell with this global pooling (``seeds_by_pooling`` overrides ``seeds``), or,
    for a ``table`` giving its own (``tables.table4.seeds``), that table's seeds for all its cells."""
    cfg = grid_config(preset)
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling {pooling!r} is not one of {list(POOLINGS)}")
    if table is not None and table in cfg.table_seeds:
        return list(cfg.table_seeds[table])
    return list(cfg.seeds_by_pooling.get(pooling, cfg.seeds))


def _cells(cfg: GridConfig, dataset: str, topology: str, pooling: str, strategy: str,
           cond_layer: int | None = None, device: str | None = None, table: str | None = None,
           method: str = "none") -> list[CellSpec]:
    """One cell per seed of this pooling (of ``table``'s own seeds where it gives them), validated."""
    return [
        CellSpec(dataset=dataset, topology=topology, pooling=pooling, strategy=strategy,
                 cond_layer=cond_layer, device=device, seed=seed, fidelity=cfg.fidelity, method=method).validate()
        for seed in seeds_for(cfg, pooling, table)
    ]


def seen_devices_of(preset: Mapping | GridConfig, dataset: str) -> tuple[str, ...]:
    """The devices of ``dataset`` with training clips: all but ``datasets.D.unseen_devices``, in order.
    These are the devices that get a single-device cell."""
    cfg = grid_config(preset)
    if dataset not in cfg.devices:
        raise ConfigError(f"dataset {dataset!r} is not under 'datasets' (known: {sorted(cfg.devices)})")
    unseen = set(cfg.unseen_devices.get(dataset, ()))
    return tuple(d for d in cfg.devices[dataset] if d not in unseen)


def _layer_of(layers: Mapping[Row, int], row: Row, table: str) -> int:
    try:
        layer = layers[row]
    except (KeyError, TypeError):
        raise ConfigError(f"{table}: no selected conditioning layer for row {row[0]}-{row[1]} "
                          f"(selected layers cover {sorted(layers) if layers else []})") from None
    if layer not in LAYERS:
        raise ConfigError(f"{table}: selected layer {layer!r} of row {row[0]}-{row[1]} is not one of {list(LAYERS)}")
    return int(layer)


def table1_cells(preset: Mapping | GridConfig) -> list[CellSpec]:
    """Table I: teacher forcing for every row x conditioning layer x seed on table1's dataset."""
    cfg = grid_config(preset)
    dataset = cfg.table_datasets["table1"]
    return [spec for topology, pooling in cfg.rows for layer in cfg.layers
            for spec in _cells(cfg, dataset, topology, pooling, "teacher_forcing", cond_layer=layer)]


def table_strategies(preset: Mapping | GridConfig, table: str) -> tuple[str, ...]:
    """The strategy columns of ``table``: ``grid.strategies`` for Tables II/III, ``tables.table4.strategies``
    for Table IV (default every registered one, :data:`TABLE4_STRATEGIES`), ``tables.table5.strategies`` for
    Table V (empty without it)."""
    _check_table(table)
    cfg = grid_config(preset)
    if table == "table5":
        return cfg.table5.strategies if cfg.table5 is not None else ()
    if table == "table4":
        return cfg.table4_strategies or TABLE4_STRATEGIES
    return cfg.strategies


def _strategy_cells(cfg: GridConfig, table: str, rows: Iterable[Row],
                    layers: Mapping[Row, int] | None) -> list[CellSpec]:
    """Tables II-IV: the strategies of each row (:func:`table_strategies`); conditional ones at the
    selected layer; single-device cells for the seen devices only (an unseen device has no training clip).

    With ``layers=None`` only the unconditioned strategies are expanded (they need no selection).
    """
    if table not in cfg.table_datasets:
        return []
    dataset = cfg.table_datasets[table]
    out: list[CellSpec] = []
    for row in rows:
        topology, pooling = row
        for strategy in table_strategies(cfg, table):
            if strategy == "single_device":
                for device in seen_devices_of(cfg, dataset):
                    out += _cells(cfg, dataset, topology, pooling, strategy, device=device, table=table)
            elif strategy in CONDITIONAL:
                if layers is not None:
                    out += _cells(cfg, dataset, topology, pooling, strategy, cond_layer=_layer_of(layers, row, table),
                                  table=table)
            else:
                out += _cells(cfg, dataset, topology, pooling, strategy, table=table)
    return out


def table2_cells(preset: Mapping | GridConfig, layers: Mapping[Row, int]) -> list[CellSpec]:
    """Table II: every row x strategy (single_device per device) at Table I's selected layer."""
    cfg = grid_config(preset)
    return _strategy_cells(cfg, "table2", cfg.rows, layers)


def table3_cells(preset: Mapping | GridConfig, layers: Mapping[Row, int]) -> list[CellSpec]:
    """Table III: the table3 rows x strategy on table3's dataset, conditioned at Table I's layer."""
    cfg = grid_config(preset)
    return _strategy_cells(cfg, "table3", cfg.table3_rows, layers)


def table4_cells(preset: Mapping | GridConfig, layers: Mapping[Row, int]) -> list[CellSpec]:
    """Table IV (beyond the paper): the table3 rows x its strategies (:func:`table_strategies`) on table4's
    dataset (single-device, where it has it, for each seen device), conditioned at Table I's layer as
    Table III; seeds from ``tables.table4.seeds`` where given. Empty when the preset has no ``tables.table4``."""
    cfg = grid_config(preset)
    return _strategy_cells(cfg, "table4", cfg.table3_rows, layers)


def _table5_cells(cfg: GridConfig, layers: Mapping[Row, int] | None) -> list[CellSpec]:
    """Table V's cells (see :func:`table5_cells`); with ``layers=None`` only the unconditioned ones."""
    if cfg.table5 is None or "table5" not in cfg.table_datasets:
        return []
    dataset = cfg.table_datasets["table5"]
    out: list[CellSpec] = []
    for row in cfg.table5.rows:
        topology, pooling = row
        for strategy in cfg.table5.strategies:
            conditional = strategy in CONDITIONAL
            if conditional and layers is None:
                continue
            layer = _layer_of(layers, row, "table5") if conditional else None
            for method in cfg.table5.methods:
                if METHOD_REGISTRY[method].combines_with(strategy):
                    out += _cells(cfg, dataset, topology, pooling, strategy, cond_layer=layer, table="table5",
                                  method=method)
    return out


def table5_cells(preset: Mapping | GridConfig, layers: Mapping[Row, int]) -> list[CellSpec]:
    """Table V (beyond the paper): ``tables.table5``'s rows x strategies x methods on its dataset, each
    method with the strategies it combines with (``caanet.vocab.Method.combines_with``), conditional
    strategies at Table I's layer for the row; seeds from ``tables.table5.seeds`` where given. The cells
    of method ``none`` equal Table IV's (same dataset, strategy, layer and seeds): shared jobs. Empty
    without ``tables.table5``. Single-device training is not a column (no method combines with it)."""
    return _table5_cells(grid_config(preset), layers)


def table_cells(preset: Mapping | GridConfig, table: str, layers: Mapping[Row, int] | None = None) -> list[CellSpec]:
    """The cells of one table by name (``layers`` is needed for table2 to table5)."""
    _check_table(table)
    if table == "table1":
        return table1_cells(preset)
    if layers is None:
        raise ConfigError(f"{table}: needs the conditioning layers selected from Table I")
    return {"table2": table2_cells, "table3": table3_cells, "table4": table4_cells,
            "table5": table5_cells}[table](preset, layers)


def all_cells(preset: Mapping | GridConfig, layers: Mapping[Row, int] | None = None) -> list[CellSpec]:
    """Every distinct training job of the grid, in table order.

    With ``layers=None`` (Table I not yet aggregated) this is Table I plus the unconditioned cells of
    Tables II/III, i.e. everything that can start before the layer selection. Cells shared between
    tables (Table II's teacher forcing = Table I's) appear once.
    """
    cfg = grid_config(preset)
    cells = table1_cells(cfg)
    cells += _strategy_cells(cfg, "table2", cfg.rows, layers)
    cells += _strategy_cells(cfg, "table3", cfg.table3_rows, layers)
    cells += _strategy_cells(cfg, "table4", cfg.table3_rows, layers)
    cells += _table5_cells(cfg, layers)
    return list(dict.fromkeys(cells))


def best_seed(cells_df: pd.DataFrame, spec: CellSpec) -> int:
    """The seed of ``spec``'s cell with the best Avg (mean over its devices of the per-device accuracy,
    as in ``cells.csv``); ties go to the lowest seed. The paper shows "the best result" in Figs. 6 and 7.
    Raises :class:`ResultsError` when ``cells_df`` has no row of that cell."""
    sel = cells_df[(cells_df["dataset"].astype(str) == spec.dataset) & (cells_df["cell_id"] == spec.cell_id)
                   & ~cells_df["device"].astype(str).isin(SUMMARY_DEVICES)]
    if sel.empty:
        raise ResultsError(f"cells table: no results of cell {spec.cell_id} of {spec.dataset} to pick a seed from")
    per_seed = sel.groupby("seed")["accuracy"].mean().reset_index()
    per_seed = per_seed.sort_values(["accuracy", "seed"], ascending=[False, True], kind="stable")
    return int(per_seed.iloc[0]["seed"])


def cell_dir(results_root: str | os.PathLike, spec: CellSpec) -> Path:
    """``{results_root}/cells/{dataset}/{cell_id}/seed{seed}``: the folder of one training job
    (:func:`caanet.paths.cell_dir`)."""
    from caanet import paths

    return paths.cell_dir(spec, results_root)


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------

def _check_table(table: str) -> None:
    if table not in TABLES:
        raise ConfigError(f"table {table!r} is not one of {list(TABLES)}")


def _json_key(obj: Mapping, key: str, path) -> object:
    if not isinstance(obj, Mapping) or key not in obj:
        raise ResultsError(f"{path}: key {key!r} is missing")
    return obj[key]


def _cell_rows(path: Path) -> list[dict]:
    """The (device) rows of one evaluation.json."""
    try:
        ev = json.loads(Path(path).read_text(encoding=TEXT_ENCODING))
    except FileNotFoundError:
        raise ResultsError(f"{path}: evaluation file not found") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: not readable JSON ({exc})") from None
    try:
        spec = CellSpec.from_dict(dict(_json_key(ev, "spec", path)))
    except (SpecError, TypeError) as exc:
        raise ResultsError(f"{path}: key 'spec' is not a valid cell spec ({exc})") from None
    if ev.get("cell_id", spec.cell_id) != spec.cell_id:
        raise ResultsError(f"{path}: key 'cell_id' {ev['cell_id']!r} disagrees with its spec ({spec.cell_id!r})")
    per_device = _json_key(ev, "per_device", path)
    if not isinstance(per_device, Mapping) or not per_device:
        raise ResultsError(f"{path}: key 'per_device' is empty")
    rows = []
    for device, entry in per_device.items():
        where = f"{path}: per_device.{device}"
        acc, n, k = (_json_key(entry, key, where) for key in ("accuracy", "n", "n_correct"))
        if not isinstance(acc, (int, float)) or not 0.0 <= acc <= 1.0:
            raise ResultsError(f"{where}.accuracy = {acc!r} is not a fraction in [0, 1]")
        if not isinstance(n, int) or not isinstance(k, int) or n <= 0 or not 0 <= k <= n:
            raise ResultsError(f"{where}: n = {n!r}, n_correct = {k!r} must be ints with 0 <= n_correct <= n, n > 0")
        val_acc = ev.get("validation_accuracy")
        lam = {key: ev.get(key) for key in LAMBDA_COLUMNS}
        rows.append(dict(dataset=spec.dataset, cell_id=spec.cell_id, topology=spec.topology, pooling=spec.pooling,
                         strategy=spec.strategy, method=spec.method, cond_layer=spec.cond_layer, device=str(device),
                         seed=spec.seed,
                         accuracy=100.0 * float(acc), n=n, n_correct=k,
                         n_train_clips=(ev.get("n_train_clips_per_device") or {}).get(device, math.nan),
                         n_validation_clips=(ev.get("n_validation_clips_per_device") or {}).get(device, math.nan),
                         validation_accuracy=math.nan if val_acc is None else 100.0 * float(val_acc),
                         log_loss=_log_loss_of(ev, device, path),
                         lambda_switched_at=math.nan if lam["lambda_switched_at"] is None
                         else int(lam["lambda_switched_at"]),
                         **{k: math.nan if lam[k] is None else 100.0 * float(lam[k])
                            for k in ("device_accuracy", "device_accuracy_seen")},
                         unseen_device_policy=ev.get("unseen_device_policy"),
                         bf16_autocast=ev.get("bf16_autocast")))
    return rows


def _log_loss_of(ev: Mapping, device: str, path) -> float:
    """The device's log loss in ``evaluation.json`` (NaN where the file has none); a value that is not
    a finite number >= 0 raises :class:`ResultsError` naming the file."""
    value = ((ev.get("log_loss") or {}).get("per_device") or {}).get(device)
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ResultsError(f"{path}: log_loss.per_device.{device} = {value!r} is not a number >= 0")
    return float(value)


def collect_cells(eval_json_paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One row per (cell, seed, device) of ``evaluation.json`` files; ``accuracy`` in percent.

    Columns: ``dataset, cell_id, topology, pooling, strategy, method, cond_layer, device, seed, accuracy, n,
    n_correct`` and :data:`CLIP_COLUMNS`: the device's training and held-out validation clips, and the
    cell's validation Avg in percent (the same on each of its device rows; NaN where none), then
    :data:`LOG_LOSS_COLUMNS` (DCASE's log loss of the device's clips), :data:`LAMBDA_COLUMNS` (when Eq. 2's
    switch fired, CNN-d's accuracy) and :data:`POLICY_COLUMNS` (the unseen-device policy, empty where
    none applied). A file read twice, or two files of the same (cell, seed), raise :class:`ResultsError`.
    """
    rows: list[dict] = []
    seen: dict[tuple, Path] = {}
    for path in eval_json_paths:
        path = Path(path)
        cell_rows = _cell_rows(path)
        key = (cell_rows[0]["dataset"], cell_rows[0]["cell_id"], cell_rows[0]["seed"])
        if key in seen:
            raise ResultsError(f"{path}: cell {key[1]} seed {key[2]} of {key[0]} was already read from {seen[key]}")
        seen[key] = path
        rows += cell_rows
    df = pd.DataFrame(rows, columns=CELL_COLUMNS + CLIP_COLUMNS + LOG_LOSS_COLUMNS + LAMBDA_COLUMNS + POLICY_COLUMNS)
    return df.astype({"cond_layer": "Int64", "seed": "int64", "n": "int64", "n_correct": "int64",
                      "accuracy": "float64", "n_train_clips": "float64", "n_validation_clips": "float64",
                      "validation_accuracy": "float64", "log_loss": "float64", "lambda_switched_at": "Int64",
                      "device_accuracy": "float64", "device_accuracy_seen": "float64"})


def filter_cells(cells_df: pd.DataFrame, specs: Iterable[CellSpec]) -> pd.DataFrame:
    """The rows of ``cells_df`` that belong to ``specs`` (matched on dataset, cell id and seed)."""
    keys = pd.DataFrame([(s.dataset, s.cell_id, s.seed) for s in specs], columns=["dataset", "cell_id", "seed"])
    keys = keys.drop_duplicates()
    out = cells_df.merge(keys.astype({"seed": "int64"}), on=["dataset", "cell_id", "seed"], how="inner")
    return out[list(cells_df.columns)]


def table_cells_frame(cells_df: pd.DataFrame, preset: Mapping | GridConfig, table: str,
                      layers: Mapping[Row, int] | None = None) -> pd.DataFrame:
    """The rows of ``cells_df`` (``cells.csv``) that are ``table``'s cells: its :func:`table_cells` on its
    dataset, matched on dataset, cell id and seed (:func:`filter_cells`). The one selection every
    figure, mark and summary of a table uses (``layers`` is needed for table2-table4)."""
    return filter_cells(cells_df, table_cells(preset, table, layers))


def with_method(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its ``method`` column filled: ``none`` where absent or empty (frames and CSVs written
    before Table V had none; the paper's training)."""
    df = df.copy()
    if "method" not in df.columns:
        df["method"] = "none"
    else:
        method = df["method"].astype(object)
        df["method"] = method.where(method.notna() & (method != ""), "none")
    return df


def _check_cells_frame(cells_df: pd.DataFrame) -> None:
    missing = [c for c in CELL_COLUMNS if c not in cells_df.columns and c != "method"]
    if missing:
        raise ResultsError(f"cells frame: columns {missing} are missing (expected {CELL_COLUMNS})")
    dup = cells_df.duplicated(["dataset", "cell_id", "seed", "device"], keep=False)
    if dup.any():
        first = cells_df[dup].iloc[0]
        raise ResultsError(f"cells frame: duplicate rows for cell {first['cell_id']} seed {first['seed']} "
                           f"device {first['device']}")


def _model_seed_rows(cells_df: pd.DataFrame, reference_device: str | Mapping[str, str],
                     unseen_devices: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """Per model (a row x strategy x layer) and seed: the device rows plus the ``avg``/``bc`` rows, and
    ``seen``/``unseen`` for a dataset with unseen devices (``unseen_devices[dataset]``).

    ``bc`` is the mean over the seen devices other than the reference one (DCASE's B/C figure: unseen
    devices are not in it). Single-device models are three cells; grouping ignores the cell id, so their devices join into one
    model. The pseudo-devices of a seed are only formed when the seed has every device the model has in
    any seed (an incomplete seed would bias them); ``bc`` needs at least one non-reference device.
    ``seen`` is the mean over the model's devices that are not unseen, ``unseen`` over its unseen ones.
    A model without the dataset's unseen devices (single-device: no cell can train on them) gets no
    ``avg`` and no ``unseen``: its mean over the seen devices alone is not the Avg of the others.
    """
    unseen_devices = unseen_devices or {}
    keys = ["dataset", "topology", "pooling", "strategy", "method", "cond_layer"]
    df = with_method(cells_df)
    df["cond_layer"] = df["cond_layer"].astype("Int64")
    df["_layer"] = df["cond_layer"].fillna(0).astype(int)   # groupby drops NA keys
    gkeys = ["dataset", "topology", "pooling", "strategy", "method", "_layer"]
    values = ["accuracy"] + [c for c in LOG_LOSS_COLUMNS if c in df.columns]  # each averaged alike
    out = [df[keys + ["device", "seed"] + values]]
    for _, model in df.groupby(gkeys, sort=False):
        dataset = model["dataset"].iloc[0]
        if isinstance(reference_device, Mapping):
            if dataset not in reference_device:
                raise ConfigError(f"no reference device for dataset {dataset!r} (known: {sorted(reference_device)})")
            ref = reference_device[dataset]
        else:
            ref = reference_device
        all_devices = set(model["device"])
        unseen = set(unseen_devices.get(dataset, ()))
        covers_unseen = unseen <= all_devices
        for seed, one in model.groupby("seed"):
            if set(one["device"]) != all_devices:
                continue
            base = one.iloc[0][keys].to_dict()
            means = {}
            if covers_unseen:
                means["avg"] = one[values].mean(skipna=False)
            others = one[(one["device"] != ref) & ~one["device"].isin(unseen)]
            if len(others):
                means["bc"] = others[values].mean(skipna=False)
            if unseen:
                is_unseen = one["device"].isin(unseen)
                if (~is_unseen).any():
                    means["seen"] = one.loc[~is_unseen, values].mean(skipna=False)
                if covers_unseen:
                    means["unseen"] = one.loc[is_unseen, values].mean(skipna=False)
            out.append(pd.DataFrame([{**base, "device": d, "seed": seed, **{c: float(v[c]) for c in values}}
                                     for d, v in means.items()]))
    return pd.concat(out, ignore_index=True)


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, float, int]:
    """``(mean, std, ci_low, ci_high, n)`` of ``values``: std with ddof=1, Student-t CI (NaN when n < 2)."""
    x = np.asarray(values, dtype=float)
    n = int(x.size)
    if n == 0:
        return (math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return (mean, math.nan, math.nan, math.nan, n)
    std = float(x.std(ddof=1))
    half = float(_sps.t.ppf(0.5 + confidence / 2.0, n - 1)) * std / math.sqrt(n)
    return (mean, std, mean - half, mean + half, n)


def _order_key(series: pd.Series, order: Sequence) -> pd.Series:
    rank = {v: i for i, v in enumerate(order)}
    return series.map(lambda v: rank.get(v, len(rank)))


def summarise_table(cells_df: pd.DataFrame, table: str, *,
                    reference_device: str | Mapping[str, str],
                    unseen_devices: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """Aggregate (cell, seed, device) rows over seeds into one table's long format.

    ``cells_df`` holds the table's cells only (see :func:`filter_cells`/:func:`table_cells`).
    Columns: ``table, dataset, topology, pooling, strategy, method, cond_layer, device, acc_mean, acc_std,
    acc_ci_low, acc_ci_high, n_seeds, ll_mean, ll_std, ll_ci_low, ll_ci_high`` (``method``: the
    device-robustness method, ``none`` outside Table V); ``device`` is each device label plus ``avg``
    (mean over all devices) and ``bc`` (mean over the non-reference devices), each computed per seed
    first. ``ll_*`` are the same statistics of DCASE's log loss (the cells frame's ``log_loss``,
    :data:`LOG_LOSS_COLUMNS`), its pseudo-devices the same means of the per-device log losses; NaN
    where a seed lacks it (a frame without the column: all NaN).
    ``reference_device`` (required: there is no silent default) is one label or a dataset -> label
    mapping (:func:`reference_devices`). ``unseen_devices`` (dataset -> labels, :func:`unseen_devices`)
    adds ``seen``/``unseen`` (the means over each kind, per seed first); a model lacking the unseen
    devices (single-device) then has no ``avg`` (see :func:`_model_seed_rows`).
    """
    _check_table(table)
    _check_cells_frame(cells_df)
    if cells_df.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    long = _model_seed_rows(cells_df, reference_device, unseen_devices)
    keys = ["dataset", "topology", "pooling", "strategy", "method", "cond_layer", "device"]
    long["_layer"] = long["cond_layer"].fillna(0).astype(int)
    rows = []
    for _, g in long.groupby(["dataset", "topology", "pooling", "strategy", "method", "_layer", "device"], sort=False):
        mean, std, lo, hi, n = mean_ci(g["accuracy"].to_numpy())
        ll = g["log_loss"] if "log_loss" in g.columns else pd.Series([math.nan])
        ll_mean, ll_std, ll_lo, ll_hi, _ = mean_ci(ll.to_numpy()) if ll.notna().all() else (math.nan,) * 5
        rows.append({"table": table, **g.iloc[0][keys].to_dict(), "acc_mean": mean, "acc_std": std,
                     "acc_ci_low": lo, "acc_ci_high": hi, "n_seeds": n, "ll_mean": ll_mean, "ll_std": ll_std,
                     "ll_ci_low": ll_lo, "ll_ci_high": ll_hi})
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS).astype({"cond_layer": "Int64", "n_seeds": "int64"})
    devices = sorted(set(out["device"]) - set(SUMMARY_DEVICES)) + list(SUMMARY_DEVICES)
    order = pd.DataFrame({
        "ds": _order_key(out["dataset"], list(dict.fromkeys(out["dataset"]))),
        "t": _order_key(out["topology"], TOPOLOGIES), "p": _order_key(out["pooling"], POOLINGS),
        "s": _order_key(out["strategy"], STRATEGIES), "l": out["cond_layer"].fillna(0).astype(int),
        "m": _order_key(out["method"], METHODS), "d": _order_key(out["device"], devices),
    })
    idx = order.sort_values(["ds", "t", "p", "s", "l", "m", "d"], kind="stable").index
    return out.loc[idx].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Layer selection
# --------------------------------------------------------------------------------------------

def layers_table(table1_summary_df: pd.DataFrame, selected_on: str = "test") -> pd.DataFrame:
    """The selected layer per row: ``topology, pooling, cond_layer, acc_mean, selected_on``
    (``results/tables/layers.csv``).

    The layer with the best mean over seeds of the all-device average (``device == "avg"``) of the
    teacher-forcing cells; ties (within 1e-9) go to the lowest layer. Rows keep Table I's order.
    ``selected_on`` names what ``acc_mean`` measures: ``test`` (Table I's summary, the paper) or
    ``validation`` (a :func:`validation_summary`).
    """
    if selected_on not in LAYER_SELECTIONS:
        raise ConfigError(f"layer selection {selected_on!r} is not one of {list(LAYER_SELECTIONS)}")
    need = ["topology", "pooling", "strategy", "cond_layer", "device", "acc_mean"]
    missing = [c for c in need if c not in table1_summary_df.columns]
    if missing:
        raise ResultsError(f"Table I summary: columns {missing} are missing")
    avg = table1_summary_df[(table1_summary_df["device"] == "avg")
                            & (table1_summary_df["strategy"] == "teacher_forcing")
                            & table1_summary_df["cond_layer"].notna()]
    rows = []
    for (topology, pooling), g in avg.groupby(["topology", "pooling"], sort=False):
        g = g[g["acc_mean"].notna()]
        if g.empty:
            raise ResultsError(f"Table I summary: row {topology}-{pooling} has no finite avg accuracy")
        best = float(g["acc_mean"].max())
        layer = int(g.loc[g["acc_mean"] >= best - _LAYER_TIE_TOL, "cond_layer"].astype(int).min())
        rows.append({"topology": topology, "pooling": pooling, "cond_layer": layer,
                     "acc_mean": float(g.loc[g["cond_layer"].astype(int) == layer, "acc_mean"].iloc[0]),
                     "selected_on": selected_on})
    if not rows:
        raise ResultsError("Table I summary: no teacher_forcing rows with device 'avg'")
    return pd.DataFrame(rows, columns=LAYER_COLUMNS)


def validation_summary(cells_df: pd.DataFrame) -> pd.DataFrame:
    """Table I's cells scored on their validation split: one ``device == "avg"`` row per (row, strategy,
    layer) with ``acc_mean`` = the mean over seeds of each cell's validation Avg (percent), the input of
    :func:`layers_table` under ``layer_selection: validation``. A cell without a validation score
    raises :class:`ResultsError` naming it."""
    _check_cells_frame(cells_df)
    if "validation_accuracy" not in cells_df.columns:
        raise ResultsError("cells frame: column 'validation_accuracy' is missing (layer_selection: validation)")
    per_cell = cells_df.drop_duplicates(["dataset", "cell_id", "seed"])
    missing = per_cell[per_cell["validation_accuracy"].isna()]
    if len(missing):
        first = missing.iloc[0]
        raise ResultsError(f"cell {first['cell_id']} seed {first['seed']} of {first['dataset']} has no validation "
                           "accuracy (it was trained without a validation split; rerun it under "
                           "layer_selection: validation)")
    rows = []
    for _, g in per_cell.groupby(["topology", "pooling", "strategy", "cond_layer"], sort=False):
        r = g.iloc[0]
        rows.append({"topology": r["topology"], "pooling": r["pooling"], "strategy": r["strategy"],
                     "cond_layer": r["cond_layer"], "device": "avg", "acc_mean": float(g["validation_accuracy"].mean()),
                     "n_seeds": len(g)})
    return pd.DataFrame(rows).astype({"cond_layer": "Int64"})


def select_layers_table(cells_df: pd.DataFrame, table1_summary_df: pd.DataFrame,
                        layer_selection: str = "test") -> pd.DataFrame:
    """``layers.csv`` by the preset's ``layer_selection``: on Table I's test Avg (the paper) or on the
    validation Avg of the same cells (:func:`validation_summary`)."""
    if layer_selection == "validation":
        return layers_table(validation_summary(cells_df), selected_on="validation")
    return layers_table(table1_summary_df, selected_on=layer_selection)


def layers_from_frame(layers_df: pd.DataFrame) -> dict[Row, int]:
    """``{(topology, pooling): layer}`` from a :func:`layers_table` frame (e.g. read from layers.csv)."""
    missing = [c for c in LAYER_COLUMNS[:3] if c not in layers_df.columns]
    if missing:
        raise ResultsError(f"layers table: columns {missing} are missing")
    return {(r.topology, r.pooling): int(r.cond_layer) for r in layers_df.itertuples(index=False)}


def read_layers(path: str | os.PathLike) -> dict[Row, int]:
    """``{(topology, pooling): layer}`` from ``results/tables/layers.csv``."""
    return layers_from_frame(pd.read_csv(path, encoding=TEXT_ENCODING))


def select_layers(table1_summary_df: pd.DataFrame) -> dict[Row, int]:
    """``{(topology, pooling): layer}``: Table I's best layer per row (ties -> lowest layer)."""
    return layers_from_frame(layers_table(table1_summary_df))


# --------------------------------------------------------------------------------------------
# The paper's numbers
# --------------------------------------------------------------------------------------------

def paper_table(table: str) -> pd.DataFrame:
    """The paper's Table I/II/III (packaged CSV) in our vocabulary; empty for Table IV.

    Columns: ``table, dataset, topology, pooling, strategy, cond_layer, device, paper_acc`` (percent;
    ``cond_layer`` is only given by Table I, missing elsewhere).
    """
    _check_table(table)
    if table not in PAPER_FILES:   # Table IV goes beyond the paper: no values
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in (
            ("table", object), ("dataset", object), ("topology", object), ("pooling", object),
            ("strategy", object), ("cond_layer", "Int64"), ("device", object), ("paper_acc", "float64"))})
    resource = importlib.resources.files("caanet") / "paper" / PAPER_FILES[table]
    with resource.open("r", encoding=TEXT_ENCODING) as fh:
        df = pd.read_csv(fh, dtype={"device": str})
    df = df.rename(columns={"network": "topology", "accuracy_percent": "paper_acc"})
    if "cond_layer" not in df.columns:
        df["cond_layer"] = pd.NA
    df["table"] = table
    df = df.astype({"cond_layer": "Int64", "paper_acc": "float64"})
    return df[["table", "dataset", "topology", "pooling", "strategy", "cond_layer", "device", "paper_acc"]]


