"""Helpers used only by the tests: read rendered tables back (LaTeX and HTML) so tests prove that what is
printed is what was computed, pick the best cell of a strategy, and join a summary with the paper's
values. Moved out of caanet/ (issue 13): no pipeline stage uses them."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser

import pandas as pd

from caanet.errors import ResultsError
from caanet.aggregate import paper_table
from caanet.io import require_columns
from caanet.render.figures import _read_frame
from caanet.render.tables import DEVICE_NAMES, POOLING_NAMES, STRATEGY_NAMES, TOPOLOGY_NAMES, normalise_table_name
from caanet.vocab import SUMMARY_DEVICES

# ------------------------------------------------------------------ rendered tables read back
# (caanet.render.tables.render_latex / render_html; cells are caanet.render.tables.Cell.text)


_CELL_RE = re.compile(
    r"^(?P<ours>—|-?\d+\.\d)(?:±(?P<std>\d+\.\d))?"
    r"(?:\s*\((?P<paper>-?\d+\.\d)(?:,\s*(?P<diff>[+-]\d+\.\d))?\))?$"
)


def parse_cell_text(text: str) -> dict:
    """Inverse of :meth:`caanet.render.tables.Cell.text`: ``{"mean", "std", "paper", "diff"}`` (NaN where absent)."""
    m = _CELL_RE.match(text.strip())
    if not m:
        raise ResultsError(f"table cell {text!r} is not of the form OURS[±STD] [(PAPER, ±DIFF)]")

    def num(key):
        v = m.group(key)
        return math.nan if v in (None, "—") else float(v)

    return {"mean": num("ours"), "std": num("std"), "paper": num("paper"), "diff": num("diff")}


_TEX_MARK = re.compile(r"\\textsuperscript\{((?:[^{}]|\{\})*)\}")
_TEX_STRIP = [
    (_TEX_MARK, ""),
    (re.compile(r"\\textbf\{([^{}]*)\}"), r"\1"),
    (re.compile(r"\\caanetcell\{([^{}]*)\}\{([^{}]*)\}"), r"\1 \2"),
    (re.compile(r"\{\\scriptsize ([^{}]*)\}"), r"\1"),
    (re.compile(r"\$\\pm\$"), "±"),
]


def _tex_cell_text(cell: str) -> tuple[str, bool, str]:
    best = r"\textbf{" in cell
    m = _TEX_MARK.search(cell)
    mark = m.group(1).replace(r"\dag{}", "†") if m else ""
    for pattern, repl in _TEX_STRIP:
        cell = pattern.sub(repl, cell)
    cell = cell.strip()
    return ("—" if cell.startswith("--") else "") + cell.removeprefix("--"), best, mark


def parse_latex_table(tex: str) -> pd.DataFrame:
    """Read a table written by :func:`caanet.render.tables.render_latex` back into a long frame.

    Columns: ``topology, pooling, column`` (``Layer n`` or ``Strategy/Device``), ``mean, std,
    paper, diff, best``. Every tabular (``\\toprule`` ... ``\\bottomrule``) of ``tex`` is read, so a
    table split into parts reads back whole.
    """
    segments = [seg.split(r"\bottomrule", 1)[0] for seg in tex.split(r"\toprule")[1:]]
    if not segments:
        raise ResultsError(r"LaTeX table has no \toprule ... \bottomrule tabular")
    frames = [pd.DataFrame.from_records(_parse_latex_tabular(seg)) for seg in segments]
    return pd.concat(frames, ignore_index=True)


def _parse_latex_tabular(body: str) -> list[dict]:
    """The records of one tabular body (between ``\\toprule`` and ``\\bottomrule``)."""
    head, rows = body.split(r"\midrule", 1)
    head_lines = [re.sub(r"\\cmidrule\(lr\)\{[^}]*\}", "", l).strip() for l in head.split(r"\\")]
    head_lines = [l for l in head_lines if l]
    columns = [c.strip().replace(r"\_", "_") for c in head_lines[-1].split("&")]
    n_label = 3 if len(columns) > 2 and columns[2] == "Layer" else 2
    value_cols = columns[n_label:]
    if len(head_lines) > 1:
        groups = []
        for part in head_lines[0].split("&")[n_label:]:
            m = re.match(r"\s*\\multicolumn\{(\d+)\}\{c\}\{(.*)\}\s*$", part)
            if not m:
                raise ResultsError(f"LaTeX table header cell {part!r} is not a \\multicolumn")
            groups += [m.group(2)] * int(m.group(1))
        value_cols = [f"{g}/{c}" for g, c in zip(groups, value_cols)]
    topo_by_name = {v: k for k, v in TOPOLOGY_NAMES.items()}
    pool_by_name = {v: k for k, v in POOLING_NAMES.items()}
    records, topology = [], None
    for line in rows.split(r"\\"):
        line = line.replace(r"\midrule", "").strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split("&")]
        topology = topo_by_name[parts[0]] if parts[0] else topology
        for col, raw in zip(value_cols, parts[n_label:]):
            text, best, mark = _tex_cell_text(raw)
            records.append({"topology": topology, "pooling": pool_by_name[parts[1]], "column": col,
                            **parse_cell_text(text), "best": best, "mark": mark})
    return records


class _TableReader(HTMLParser):
    """Collects the rows of the first ``<table>``: lists of (tag, text, classes, colspan, mark); the text
    of a ``<sup class="mark">`` is the mark, not part of the cell's text."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[tuple[str, str, str, int, str]]] = []
        self._cell = None
        self._depth = 0
        self._in_mark = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._depth += 1
        elif tag == "tr" and self._depth == 1:
            self.rows.append([])
        elif tag in ("td", "th") and self._depth == 1:
            self._cell = [tag, "", a.get("class") or "", int(a.get("colspan") or 1), ""]
        elif tag == "sup" and "mark" in (a.get("class") or "").split():
            self._in_mark = True

    def handle_endtag(self, tag):
        if tag == "table":
            self._depth -= 1
        elif tag == "sup":
            self._in_mark = False
        elif tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(tuple(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[4 if self._in_mark else 1] += data


def parse_html_table(text: str) -> pd.DataFrame:
    """Read a table written by :func:`caanet.render.tables.render_html` back into a long frame (as :func:`parse_latex_table`)."""
    reader = _TableReader()
    reader.feed(text)
    header = [r for r in reader.rows if r and all(c[0] == "th" for c in r)]
    body = [r for r in reader.rows if any(c[0] == "td" for c in r)]
    columns = [c[1] for c in header[-1]]
    n_label = 3 if len(columns) > 2 and columns[2] == "Layer" else 2
    value_cols = columns[n_label:]
    if len(header) > 1:
        groups = [c[1] for c in header[0][1:] for _ in range(c[3])]
        value_cols = [f"{g}/{c}" for g, c in zip(groups, value_cols)]
    topo_by_name = {v: k for k, v in TOPOLOGY_NAMES.items()}
    pool_by_name = {v: k for k, v in POOLING_NAMES.items()}
    records, topology = [], None
    for row in body:
        labels = [c[1] for c in row[:n_label]]
        topology = topo_by_name[labels[0]] if labels[0] else topology
        for col, cell in zip(value_cols, row[n_label:]):
            records.append({"topology": topology, "pooling": pool_by_name[labels[1]], "column": col,
                            **parse_cell_text(cell[1]), "best": "best" in cell[2].split(), "mark": cell[4]})
    return pd.DataFrame.from_records(records)


def column_key(table, column: str) -> tuple:
    """Map a parsed ``column`` label back to the summary's keys: ``(cond_layer,)`` or ``(strategy, device)``."""
    if normalise_table_name(table) == "table1":
        return (int(column.removeprefix("Layer ").strip()),)
    group, dev = column.split("/", 1)
    strategy = {v: k for k, v in STRATEGY_NAMES.items()}[group]
    device = {v: k for k, v in DEVICE_NAMES.items()}.get(dev, dev.lower())
    return strategy, device


# ------------------------------------------------------------------ cells and the paper


def best_cell(cells_df, *, strategy: str = "multi_task", dataset: str | None = None) -> tuple[str, str, int] | None:
    """``(dataset, cell_id, seed)`` of the best ``strategy`` cell by mean accuracy over devices.

    The cell with the best mean (over seeds) of its per-device accuracies is chosen, then its seed
    with the best mean over devices (ties: the first in sorted order). ``None`` when there is none.
    """
    df, source = _read_frame(cells_df, "cells.csv")
    require_columns(df, ["dataset", "cell_id", "strategy", "device", "seed", "accuracy"], source)
    df = df[(df["strategy"] == strategy) & ~df["device"].astype(str).isin(SUMMARY_DEVICES)]
    if dataset is not None:
        df = df[df["dataset"] == dataset]
    if df.empty:
        return None
    per_seed = df.groupby(["dataset", "cell_id", "seed"])["accuracy"].mean().reset_index()
    per_cell = per_seed.groupby(["dataset", "cell_id"])["accuracy"].mean().reset_index()
    per_cell = per_cell.sort_values(["accuracy", "dataset", "cell_id"], ascending=[False, True, True])
    ds, cid = per_cell.iloc[0][["dataset", "cell_id"]]
    seeds = per_seed[(per_seed["dataset"] == ds) & (per_seed["cell_id"] == cid)]
    seeds = seeds.sort_values(["accuracy", "seed"], ascending=[False, True])
    return str(ds), str(cid), int(seeds.iloc[0]["seed"])


def compare_with_paper(summary_df: pd.DataFrame, table: str) -> pd.DataFrame:
    """``summary_df`` with ``paper_acc`` and ``diff`` (ours - paper, percentage points) added.

    Matched on topology, pooling, strategy and device, plus ``cond_layer`` for Table I (Tables II/III
    compare strategies at whatever layer each side selected). The dataset is not matched (ours may be
    the embedded stand-in). Where the paper has no value (``bc``; devices of Table I) both are NaN.
    """
    paper = paper_table(table)
    on = ["topology", "pooling", "strategy", "device"] + (["cond_layer"] if table == "table1" else [])
    paper = paper[on + ["paper_acc"]]
    left = summary_df.copy()
    if "cond_layer" in on:
        left["cond_layer"] = left["cond_layer"].astype("Int64")
    out = left.merge(paper, on=on, how="left", validate="many_to_one")
    out["diff"] = out["acc_mean"] - out["paper_acc"]
    return out
