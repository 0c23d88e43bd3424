"""How the grid's results aggregate: ``evaluation.json`` files to the tables, Table I's layer
selection, and the paper's own values.

Which cells exist is :mod:`caanet.grid`; this module reads what they produced.

:func:`collect_cells` flattens ``evaluation.json`` files into one row per (cell, seed, device)
(``results/tables/cells.csv``); :func:`table_cells_frame` selects one table's rows of it;
:func:`summarise_table` reduces them over seeds to the long-format table (percent, mean, ``ddof=1`` std,
Student-t 95 % CI) with the per-device rows plus ``avg`` (mean over all devices: the paper's "Avg") and
``bc`` (mean over the non-reference devices: DCASE's official figure), and for a dataset with unseen
devices ``seen``/``unseen`` (means over each kind; :data:`caanet.vocab.SUMMARY_DEVICES`).
:func:`select_layers_table` picks each row's conditioning layer from Table I (``layers.csv``, read back
by :func:`read_layers`); :func:`paper_table` reads the paper's Tables I-III in our vocabulary.
"""

from __future__ import annotations

import importlib.resources
import math
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from caanet.errors import ConfigError, ResultsError, SpecError
from caanet.grid import GridConfig, Row, check_table, table_cells
from caanet.io import TEXT_ENCODING, read_results_json
from caanet.spec import METHODS, POOLINGS, STRATEGIES, TOPOLOGIES, CellSpec
from caanet.vocab import LAYER_SELECTIONS, SUMMARY_DEVICES

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
# Cells: evaluation.json files to cells.csv
# --------------------------------------------------------------------------------------------

def _json_key(obj: Mapping, key: str, path) -> object:
    if not isinstance(obj, Mapping) or key not in obj:
        raise ResultsError(f"{path}: key {key!r} is missing")
    return obj[key]


def _cell_rows(path: Path) -> list[dict]:
    """The (device) rows of one evaluation.json."""
    ev = read_results_json(path)
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
    """The rows of ``cells_df`` (``cells.csv``) that are ``table``'s cells: its :func:`caanet.grid.table_cells` on its
    dataset, matched on dataset, cell id and seed (:func:`filter_cells`). The one selection every
    figure, mark and summary of a table uses (``layers`` is needed for table2-table4)."""
    return filter_cells(cells_df, table_cells(preset, table, layers))


# --------------------------------------------------------------------------------------------
# Summaries over seeds
# --------------------------------------------------------------------------------------------

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
    # scipy.stats takes ~0.6 s to import: only here, where a CI is computed, since the workflow reads
    # layers.csv through this module (read_layers) when it builds its jobs.
    from scipy import stats as _sps

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

    ``cells_df`` holds the table's cells only (see :func:`filter_cells`/:func:`caanet.grid.table_cells`).
    Columns: ``table, dataset, topology, pooling, strategy, method, cond_layer, device, acc_mean, acc_std,
    acc_ci_low, acc_ci_high, n_seeds, ll_mean, ll_std, ll_ci_low, ll_ci_high`` (``method``: the
    device-robustness method, ``none`` outside Table V); ``device`` is each device label plus ``avg``
    (mean over all devices) and ``bc`` (mean over the non-reference devices), each computed per seed
    first. ``ll_*`` are the same statistics of DCASE's log loss (the cells frame's ``log_loss``,
    :data:`LOG_LOSS_COLUMNS`), its pseudo-devices the same means of the per-device log losses; NaN
    where a seed lacks it (a frame without the column: all NaN).
    ``reference_device`` (required: there is no silent default) is one label or a dataset -> label
    mapping (:func:`caanet.grid.reference_devices`). ``unseen_devices`` (dataset -> labels,
    :func:`caanet.grid.unseen_devices`) adds ``seen``/``unseen`` (the means over each kind, per seed
    first); a model lacking the unseen devices (single-device) then has no ``avg`` (see
    :func:`_model_seed_rows`).
    """
    check_table(table)
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
    check_table(table)
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


