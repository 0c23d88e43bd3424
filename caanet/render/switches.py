"""Whether and when Eq. 2's λ switched, per multi-task cell: the tables' marks and the report's count.

Eq. 2 sets λ to ``lambda_low`` once CNN-d's device accuracy reaches ``lambda_switch_acc``
(``multi_task`` and every strategy registered with ``lambda_rule="switch"``). Each cell's
``evaluation.json`` records the iteration it switched at (``lambda_switched_at``, null when it never
did), and ``cells.csv`` carries it as the column :data:`SWITCH_COLUMN`. A table's multi-task Avg cell
is marked † when λ switched in every seed of the cell, †k/n when in k of its n seeds, and not at all
when it never switched; the footnote gives the iterations. Every function takes one table's rows of
``cells.csv`` (:func:`caanet.aggregate.table_cells_frame`) and returns nothing to mark where ``cells.csv``
lacks the column (results written before it existed).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import pandas as pd

from caanet import aggregate
from caanet.vocab import POOLING_REGISTRY, STRATEGY_REGISTRY, TOPOLOGY_REGISTRY

SWITCH_COLUMN = "lambda_switched_at"
MARK = "†"
CELL_KEYS = ["dataset", "cell_id", "seed"]


def switch_strategies() -> tuple[str, ...]:
    """The strategies whose λ follows Eq. 2's switch (``lambda_rule == "switch"``)."""
    return tuple(s.name for s in STRATEGY_REGISTRY if s.lambda_rule == "switch")


def switch_cells(table_cells: pd.DataFrame | None) -> pd.DataFrame | None:
    """One row per (cell, seed) of a switched-λ strategy in ``table_cells``: ``topology, pooling,
    strategy, cond_layer, cell_id, seed, switched_at`` (NaN: never switched), in the table's order. None
    when ``cells.csv`` does not record :data:`SWITCH_COLUMN`."""
    if table_cells is None or SWITCH_COLUMN not in table_cells.columns:
        return None
    df = table_cells[table_cells["strategy"].isin(switch_strategies())].drop_duplicates(CELL_KEYS)
    out = df[["topology", "pooling", "strategy", "cond_layer", "cell_id", "seed"]].copy()
    out["switched_at"] = pd.to_numeric(df[SWITCH_COLUMN], errors="coerce").to_numpy()
    seen = df["device_accuracy_seen"] if "device_accuracy_seen" in df.columns else pd.Series(math.nan, index=df.index)
    out["device_accuracy_seen"] = pd.to_numeric(seen, errors="coerce").to_numpy()
    return out.sort_values(["topology", "pooling", "strategy", "seed"], kind="stable").reset_index(drop=True)


def switch_count(table_cells: pd.DataFrame | None) -> tuple[int, int] | None:
    """``(switched, cells)``: how many (cell, seed) of a switched-λ strategy switched; None unrecorded."""
    cells = switch_cells(table_cells)
    if cells is None:
        return None
    return int(cells["switched_at"].notna().sum()), len(cells)


def unswitched_device_accuracy(table_cells: pd.DataFrame | None) -> tuple[float, float] | None:
    """``(mean, max)`` of CNN-d's final device accuracy on the seen devices' test clips (percent,
    ``cells.csv``'s ``device_accuracy_seen``) over the switched-λ cells (cell x seed) whose λ never
    switched: how far CNN-d stayed from Eq. 2's threshold. None when every cell switched or nothing
    is recorded."""
    cells = switch_cells(table_cells)
    if cells is None:
        return None
    acc = cells.loc[cells["switched_at"].isna(), "device_accuracy_seen"].dropna()
    return (float(acc.mean()), float(acc.max())) if len(acc) else None


def _row_name(topology: str, pooling: str, strategy: str) -> str:
    return (f"{TOPOLOGY_REGISTRY[topology].display} + {POOLING_REGISTRY[pooling].display}, "
            f"{STRATEGY_REGISTRY[strategy].display}")


def switch_marks(table_cells: pd.DataFrame | None) -> tuple[dict[tuple[str, str, str], str], str]:
    """``({(topology, pooling, strategy): mark}, footnote)`` of one table: † when λ switched in every
    seed of the cell, †k/n in k of n seeds, no entry when it never switched; the footnote explains the
    marks and gives each marked cell's iterations (— for a seed that never switched). ``({}, "")``
    when nothing is recorded or the table has no switched-λ cell."""
    cells = switch_cells(table_cells)
    if cells is None or cells.empty:
        return {}, ""
    marks, where = {}, []
    for (topology, pooling, strategy), g in cells.groupby(["topology", "pooling", "strategy"], sort=False):
        k, n = int(g["switched_at"].notna().sum()), len(g)
        if k == 0:
            continue
        marks[(topology, pooling, strategy)] = MARK if k == n else f"{MARK}{k}/{n}"
        its = ", ".join("—" if math.isnan(v) else str(int(v)) for v in g["switched_at"])
        where.append(f"{_row_name(topology, pooling, strategy)}: {its}")
    if not marks:
        return {}, (f"λ of Eq. (2) never switched to λ_low in this table's {len(cells)} switched-λ cells "
                    "(CNN-d never reached the switch accuracy).")
    switched, total = switch_count(table_cells)
    note = (f"{MARK}: λ of Eq. (2) switched to λ_low (CNN-d reached the switch accuracy) in every seed of the "
            f"cell; {MARK}k/n: in k of its n seeds; no mark: never. It switched in {switched} of {total} "
            f"switched-λ cells (cell x seed), at iteration (per seed) " + "; ".join(where) + ".")
    return marks, note


def marks_for_tables(cells_df: pd.DataFrame | None, preset: Mapping, layers: Mapping,
                     tables: Sequence[str]) -> dict[str, tuple[dict, str]]:
    """:func:`switch_marks` of each of ``tables`` from the whole ``cells.csv`` frame, each table's own
    cells selected by :func:`caanet.aggregate.table_cells_frame`."""
    if cells_df is None:
        return {t: ({}, "") for t in tables}
    return {t: switch_marks(aggregate.table_cells_frame(cells_df, preset, t, layers)) for t in tables}
