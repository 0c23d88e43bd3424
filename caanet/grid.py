"""The paper's table grid as data: which cells to train and where they live.

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
``bc`` mean: evaluation (``train_cell``), aggregation (:func:`caanet.aggregate.summarise_table`), tables
and report all take it from here. ``layer_selection`` (:data:`caanet.vocab.LAYER_SELECTIONS`) says how
Table I picks each row's conditioning layer: ``test``, the paper's method (the best of the four **test**
accuracies, which gives the conditional strategies of Tables II/III a winner's-curse advantage), or
``validation`` (Table I's cells hold out a validation split and the best validation Avg picks the layer;
leak-free).

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

How their results aggregate (``evaluation.json`` files to the tables, Table I's layer selection, the
paper's values) is :mod:`caanet.aggregate`. This module is imported by the Snakefile at parse time:
it imports no pandas, numpy or scipy (``tests/test_speed.py`` keeps it so).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from caanet.config import MISSING, validate_section
from caanet.errors import ConfigError, config_error
from caanet.spec import CONDITIONAL, LAYERS, METHODS, PAPER_STRATEGIES, POOLINGS, STRATEGIES, CellSpec
from caanet.vocab import METHOD_REGISTRY

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
    check_table(table)
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
    check_table(table)
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


def cell_dir(results_root: str | os.PathLike, spec: CellSpec) -> Path:
    """``{results_root}/cells/{dataset}/{cell_id}/seed{seed}``: the folder of one training job
    (:func:`caanet.paths.cell_dir`)."""
    from caanet import paths

    return paths.cell_dir(spec, results_root)


def check_table(table: str) -> None:
    """Raise :class:`ConfigError` unless ``table`` is one of :data:`TABLES`."""
    if table not in TABLES:
        raise ConfigError(f"table {table!r} is not one of {list(TABLES)}")
