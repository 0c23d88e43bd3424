"""Tables I-III of the paper, and Table IV beyond it, as wide frames, LaTeX (booktabs) and HTML.

Input is the long-format summary ``results/tables/table{1,2,3,4}.csv`` (columns ``table, dataset,
topology, pooling, strategy, cond_layer, device, acc_mean, acc_std, acc_ci_low, acc_ci_high,
n_seeds``; accuracies in percent; device ``a``/``b``/``c`` (any labels), ``avg`` = the paper's Avg
over all devices, ``bc`` = DCASE's official B/C mean, ``seen``/``unseen`` = the means over the
devices seen and unseen in training, :data:`caanet.vocab.SUMMARY_DEVICES`). The column names of docs/design.md (``accuracy_mean``,
``accuracy_std``, ``ci95_low``, ``ci95_high``) are accepted as synonyms.

Layout (the paper's): rows are Network x Pooling in the paper's order (CNN w/ pool, CNN w/o pool,
Atrous CNN; flatten, max, avg, roi, att, roi+att). Table I has one column per conditioning layer
(the A/B/C average of teacher forcing); Tables II/III have A, B, C, Avg and B/C per strategy;
Table IV (beyond the paper: 2020-style data, all five strategies) has a column per device, then
Avg, Seen and Unseen per strategy (:data:`SUMMARY_COLUMNS_OF`), and no paper values.

Every rendered cell reads ``OURS[±STD] (PAPER, ±DIFF)``: our mean over seeds, the std over seeds
when more than one seed ran, and the paper's value with our difference to it (ours - paper). The
best cell of a row is bold, as in the paper (Table I: the best layer; Tables II/III: the best Avg
among the strategies). The tests read a rendered table back into a long frame (tests/helpers.py),
proving that what is printed is what was computed. The paper's values come from
:func:`caanet.aggregate.paper_table`, the one reader of the packaged CSVs.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from caanet.aggregate import paper_table
from caanet.errors import ResultsError
from caanet.io import read_results_csv, require_columns, write_text_atomic
from caanet.spec import POOLINGS, STRATEGIES, TOPOLOGIES
from caanet.vocab import POOLING_REGISTRY, STRATEGY_REGISTRY, SUMMARY_DEVICES, TOPOLOGY_REGISTRY

# Printed names, registered with each entry in caanet.vocab.
TOPOLOGY_NAMES = TOPOLOGY_REGISTRY.display_names()
POOLING_NAMES = POOLING_REGISTRY.display_names()
STRATEGY_NAMES = STRATEGY_REGISTRY.display_names()
DEVICE_COLUMNS = ("a", "b", "c", "avg", "bc")
"""Tables II/III's columns per strategy (the paper's)."""
DEVICE_NAMES = {"a": "A", "b": "B", "c": "C", "avg": "Avg", "bc": "B/C", "seen": "Seen", "unseen": "Unseen"}
"""Printed names of devices and pseudo-devices; any other device label prints upper-cased."""
SUMMARY_COLUMNS_OF = {"table2": ("avg", "bc"), "table3": ("avg", "bc"), "table4": ("avg", "seen", "unseen")}
"""The pseudo-device columns printed after the device columns of each strategy table. Table IV drops
B/C (DCASE 2018's official figure: not meaningful with nine devices) for the seen/unseen means."""
TABLE_NUMERALS = {"1": "i", "2": "ii", "3": "iii", "4": "iv"}
SUMMARY_COLUMNS = (
    "table", "dataset", "topology", "pooling", "strategy", "cond_layer", "device",
    "acc_mean", "acc_std", "acc_ci_low", "acc_ci_high", "n_seeds",
)
_SYNONYMS = {"accuracy_mean": "acc_mean", "accuracy_std": "acc_std", "ci95_low": "acc_ci_low", "ci95_high": "acc_ci_high"}
ROW_KEYS = ["topology", "pooling"]


# --------------------------------------------------------------------------------------------- input

def normalise_table_name(table) -> str:
    """``1``, ``"1"``, ``"I"``, ``"table1"`` -> ``"table1"`` (and so on for II, III, IV)."""
    key = str(table).strip().lower().removeprefix("table").strip()
    key = {v: k for k, v in TABLE_NUMERALS.items()}.get(key, key)
    if key not in TABLE_NUMERALS:
        raise ResultsError(f"table {table!r} is not one of {[f'table{n}' for n in TABLE_NUMERALS]}")
    return f"table{key}"


def check_summary(df: pd.DataFrame, source: str = "summary") -> pd.DataFrame:
    """Validate a long-format summary frame and return a normalised copy.

    Renames the design.md synonyms, checks the required columns and vocabulary, and coerces
    ``cond_layer`` to a nullable integer. Raises ResultsError naming ``source``, the column and row.
    """
    df = df.rename(columns=_SYNONYMS).copy()
    require_columns(df, ["topology", "pooling", "strategy", "device", "acc_mean"], source)
    for col, allowed in (("topology", TOPOLOGIES), ("pooling", POOLINGS), ("strategy", STRATEGIES)):
        bad = ~df[col].isin(allowed)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ResultsError(
                f"{source}: row {row + 2}: {col}={df[col].iloc[row]!r} is not one of {list(allowed)}"
            )
    df["device"] = df["device"].astype(str)
    for col in ("acc_mean", "acc_std", "acc_ci_low", "acc_ci_high", "n_seeds"):
        if col not in df.columns:
            df[col] = 1 if col == "n_seeds" else np.nan
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna() & (df[col].astype(str).str.strip() != "")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ResultsError(f"{source}: row {row + 2}: {col}={df[col].iloc[row]!r} is not a number")
        df[col] = values
    if "cond_layer" not in df.columns:
        df["cond_layer"] = pd.NA
    df["cond_layer"] = pd.to_numeric(df["cond_layer"], errors="coerce").astype("Int64")
    if "dataset" in df.columns and df["dataset"].nunique() > 1:
        raise ResultsError(f"{source}: one table holds one dataset, found {sorted(df['dataset'].unique())}")
    keys = ["topology", "pooling", "strategy", "cond_layer", "device"]
    dup = df.duplicated(keys)
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise ResultsError(f"{source}: row {row + 2}: duplicate entry {df.loc[df.index[row], keys].to_dict()}")
    return df


def read_summary(path) -> pd.DataFrame:
    """Read ``results/tables/table{n}.csv`` and validate it (:func:`check_summary`)."""
    return check_summary(read_results_csv(path, "the table summary"), source=str(path))


def paper_values(table) -> pd.DataFrame:
    """The paper's numbers for ``table`` as a long frame in the summary's vocabulary.

    Read by :func:`caanet.aggregate.paper_table` (the one reader of the packaged CSVs). Columns
    ``topology, pooling, strategy, cond_layer, device, paper_acc``; the B/C mean (``bc``, not printed
    in the paper) is derived as the mean of its B and C values. Empty for Table IV.
    """
    keys = ["topology", "pooling", "strategy", "cond_layer"]
    df = paper_table(normalise_table_name(table))[keys + ["device", "paper_acc"]]
    if df.empty:
        return df.reset_index(drop=True)
    bc = df[df["device"].isin(["b", "c"])].groupby(keys, dropna=False)["paper_acc"]
    bc = bc.agg(["mean", "count"]).reset_index()
    bc = bc[bc["count"] == 2].drop(columns="count").rename(columns={"mean": "paper_acc"})
    bc["device"] = "bc"
    return pd.concat([df, bc[keys + ["device", "paper_acc"]]], ignore_index=True)


# --------------------------------------------------------------------------------------------- wide frames

def _row_order(df: pd.DataFrame) -> list[tuple[str, str]]:
    rows = set(map(tuple, df[ROW_KEYS].drop_duplicates().to_numpy().tolist()))
    return [(t, p) for t in TOPOLOGIES for p in POOLINGS if (t, p) in rows]


def table1_frame(summary_df: pd.DataFrame, value: str = "acc_mean", device: str = "avg") -> pd.DataFrame:
    """Table I wide: rows (topology, pooling) in the paper's order, columns conditioning layers.

    ``value`` picks the summary column shown (default the mean over seeds), ``device`` the device
    (default ``avg``, the paper's A/B/C average). Teacher-forcing rows only.
    """
    df = check_summary(summary_df)
    df = df[(df["strategy"] == "teacher_forcing") & (df["device"] == device) & df["cond_layer"].notna()]
    if df.empty:
        raise ResultsError(f"Table I: no teacher_forcing rows with a cond_layer for device {device!r}")
    wide = df.pivot(index=ROW_KEYS, columns="cond_layer", values=value)
    wide = wide.reindex(pd.MultiIndex.from_tuples(_row_order(df), names=ROW_KEYS))
    wide = wide.reindex(columns=sorted(int(c) for c in wide.columns))
    wide.columns = pd.Index([int(c) for c in wide.columns], name="cond_layer")
    return wide


def strategies_frame(summary_df: pd.DataFrame, value: str = "acc_mean",
                     summary_columns: tuple[str, ...] = SUMMARY_COLUMNS_OF["table2"]) -> pd.DataFrame:
    """Tables II-IV wide: rows (topology, pooling), columns (strategy, device): per strategy the
    devices (sorted labels: A, B, C, ...), then the pseudo-devices ``summary_columns`` present
    (Tables II/III: Avg, B/C; Table IV: Avg, Seen, Unseen; :data:`SUMMARY_COLUMNS_OF`).

    Strategies appear in the paper's order (single-device, joint, teacher forcing, multi-task, then
    the learned lambda's multi-task), only those present.
    """
    df = check_summary(summary_df)
    wide = df.pivot_table(index=ROW_KEYS, columns=["strategy", "device"], values=value, aggfunc="first", dropna=False)
    strategies = [s for s in STRATEGIES if s in set(df["strategy"])]
    present = set(df["device"])
    devices = sorted(present - set(SUMMARY_DEVICES)) + [d for d in summary_columns if d in present]
    cols = pd.MultiIndex.from_product([strategies, devices], names=["strategy", "device"])
    return wide.reindex(index=pd.MultiIndex.from_tuples(_row_order(df), names=ROW_KEYS), columns=cols)


def selected_layers(summary_df: pd.DataFrame) -> dict[tuple[str, str], int]:
    """The conditioning layer of each row's conditional strategies in a Table II/III summary."""
    df = check_summary(summary_df)
    df = df[df["cond_layer"].notna()]
    return {(t, p): int(g["cond_layer"].iloc[0]) for (t, p), g in df.groupby(ROW_KEYS)}


# --------------------------------------------------------------------------------------------- cells

@dataclass(frozen=True)
class Cell:
    """One printed number: ours (mean, std over seeds), the paper's, and whether it is the row best."""

    mean: float
    std: float = math.nan
    n_seeds: int = 1
    paper: float = math.nan
    best: bool = False
    mark: str = ""           # a footnote mark after ours (e.g. † where λ switched), not part of the number

    @property
    def diff(self) -> float:
        return round(round(self.mean, 1) - round(self.paper, 1), 1) + 0.0  # + 0.0: no '-0.0'

    def parts(self) -> tuple[str, str, str]:
        """(ours, ``±std`` or '', ``(paper, +diff)`` or '') as plain text."""
        if _missing(self.mean):
            ours = "—"
        else:
            ours = f"{self.mean:.1f}"
        std = f"±{self.std:.1f}" if self.n_seeds > 1 and not _missing(self.std) and not _missing(self.mean) else ""
        if _missing(self.paper):
            ref = ""
        elif _missing(self.mean):
            ref = f"({self.paper:.1f})"
        else:
            ref = f"({self.paper:.1f}, {self.diff:+.1f})"
        return ours, std, ref

    def text(self) -> str:
        ours, std, ref = self.parts()
        return ours + std + (" " + ref if ref else "")


def _missing(x) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


@dataclass
class TableGrid:
    """A table ready to print: header groups, row labels and :class:`Cell` s (the paper's layout)."""

    table: str
    groups: list[tuple[str, list[str]]]  # (group label or "", column labels)
    rows: list[tuple[str, str, str]]     # (topology, pooling, extra label e.g. the cond layer)
    cells: list[list[Cell]]
    extra_label: str = ""                # header of the extra row-label column ("" = none)


def _lookup(df: pd.DataFrame, keys: list[str]) -> dict:
    return {tuple(k): r for k, r in zip(df[keys].itertuples(index=False, name=None), df.to_dict("records"))}


def build_grid(summary_df: pd.DataFrame, table, paper_df: pd.DataFrame | None = None,
               marks: Mapping[tuple[str, str, str], str] | None = None) -> TableGrid:
    """Combine our summary with the paper's values into a :class:`TableGrid` for ``table``.

    ``paper_df`` defaults to :func:`paper_values` of the table; pass an empty frame to print our
    numbers alone. Paper values are matched on topology, pooling, strategy, device (and the layer
    for Table I); for Tables II/III the paper's conditional numbers are at the paper's own layer.
    ``marks`` puts a footnote mark on the Avg cell of ``(topology, pooling, strategy)`` (Tables II-IV;
    :func:`caanet.render.switches.switch_marks`).
    """
    table = normalise_table_name(table)
    df = check_summary(summary_df)
    paper = paper_values(table) if paper_df is None else paper_df
    if table == "table1":
        return _grid_table1(df, paper)
    return _grid_strategies(df, paper, table, marks or {})


def _grid_table1(df: pd.DataFrame, paper: pd.DataFrame) -> TableGrid:
    means = table1_frame(df)
    ours = _lookup(df[df["device"] == "avg"], ["topology", "pooling", "cond_layer"])
    ref = {}
    if len(paper):
        p = paper[(paper["strategy"] == "teacher_forcing") & (paper["device"] == "avg")]
        ref = {(t, pl, int(l)): v for t, pl, l, v in p[["topology", "pooling", "cond_layer", "paper_acc"]].itertuples(index=False)}
    layers = list(means.columns)
    cells, rows = [], []
    for (t, pl), series in means.iterrows():
        best = _best_index(series.to_numpy(dtype=float))
        row = []
        for j, layer in enumerate(layers):
            r = ours.get((t, pl, layer), {})
            row.append(Cell(
                mean=float(series[layer]), std=float(r.get("acc_std", math.nan)),
                n_seeds=int(r.get("n_seeds", 1) if not _missing(r.get("n_seeds", 1)) else 1),
                paper=float(ref.get((t, pl, layer), math.nan)), best=(j == best),
            ))
        cells.append(row)
        rows.append((t, pl, ""))
    return TableGrid("table1", [("", [f"Layer {l}" for l in layers])], rows, cells)


def _grid_strategies(df: pd.DataFrame, paper: pd.DataFrame, table: str,
                     marks: Mapping[tuple[str, str, str], str]) -> TableGrid:
    means = strategies_frame(df, summary_columns=SUMMARY_COLUMNS_OF[table])
    ours = _lookup(df, ["topology", "pooling", "strategy", "device"])
    ref = {}
    if len(paper):
        ref = {(t, pl, s, d): v for t, pl, s, d, v in
               paper[["topology", "pooling", "strategy", "device", "paper_acc"]].itertuples(index=False)}
    layers = selected_layers(df)
    strategies = list(dict.fromkeys(means.columns.get_level_values(0)))
    devices = list(dict.fromkeys(means.columns.get_level_values(1)))
    groups = [(STRATEGY_NAMES[s], [DEVICE_NAMES.get(d, d.upper()) for d in devices]) for s in strategies]
    cells, rows = [], []
    for (t, pl), series in means.iterrows():
        avgs = np.array([series.get((s, "avg"), np.nan) for s in strategies], dtype=float)
        best = _best_index(avgs)
        row = []
        for si, s in enumerate(strategies):
            for d in devices:
                r = ours.get((t, pl, s, d), {})
                n = r.get("n_seeds", 1)
                row.append(Cell(
                    mean=float(series[(s, d)]), std=float(r.get("acc_std", math.nan)),
                    n_seeds=1 if _missing(n) else int(n),
                    paper=float(ref.get((t, pl, s, d), math.nan)),
                    best=(si == best and d == "avg"), mark=marks.get((t, pl, s), "") if d == "avg" else "",
                ))
        cells.append(row)
        layer = layers.get((t, pl))
        rows.append((t, pl, "" if layer is None else str(layer)))
    extra = "Layer" if layers else ""
    return TableGrid(table, groups, rows, cells, extra_label=extra)


def _best_index(values: np.ndarray) -> int:
    """Index of the largest finite value (ties: the first, i.e. the lowest layer); -1 if none."""
    finite = np.where(np.isfinite(values), values, -np.inf)
    if not np.isfinite(finite).any():
        return -1
    return int(np.argmax(np.round(finite, 6)))


# --------------------------------------------------------------------------------------------- LaTeX

# Combining accents (NFD text such as the estimate "p̂") become text-mode accents on the character
# before them: pdflatex's utf8 inputenc has no mapping for a lone combining mark.
_COMBINING_ACCENTS = {"\u0300": "`", "\u0301": "'", "\u0302": "^", "\u0303": "~", "\u0304": "=", "\u0308": '"'}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters in plain text; a combining accent (U+0300-U+0308) after a
    character becomes the TeX accent on it (``"p\u0302"`` -> ``\\^{p}``)."""
    repl = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    out: list[str] = []
    for ch in str(text):
        accent = _COMBINING_ACCENTS.get(ch)
        if accent is not None and out:
            out[-1] = "\\" + accent + "{" + out[-1] + "}"
        else:
            out.append(repl.get(ch, ch))
    return "".join(out)


CELL_MACRO = "caanetcell"
CELL_MACRO_DEF = (
    r"\providecommand{\caanetcell}[2]{\begin{tabular}[c]{@{}r@{}}#1\\[-1pt]{\scriptsize #2}\end{tabular}}"
)
r"""A two-line cell: ours (±std) above, ``(paper, diff)`` below in \scriptsize, right-aligned.

A macro rather than an inline stack so that a cell holds no ``\\`` (rows stay split by ``\\``)."""


def _latex_mark(mark: str) -> str:
    return r"\textsuperscript{" + latex_escape(mark).replace("†", r"\dag{}") + "}" if mark else ""


def _latex_cell(cell: Cell) -> str:
    ours, std, ref = cell.parts()
    ours = "--" if ours == "—" else ours
    body = ours + (r"$\pm$" + std[1:] if std else "")
    if cell.best:
        body = r"\textbf{" + body + "}"
    body += _latex_mark(cell.mark)
    if ref:
        body = "\\" + CELL_MACRO + "{" + body + "}{" + ref + "}"
    return body


def _fit_to_line(tabular: list[str]) -> list[str]:
    """Wrap tabular lines in a ``\\resizebox`` that shrinks them to the line width only when wider."""
    return [r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%"] + tabular + ["}"]


MAX_VALUE_COLUMNS = 10
"""Value columns per LaTeX tabular: two strategies of A, B, C, Avg, B/C fit a landscape A4 page unscaled."""
MAX_ROWS_PER_FLOAT = 16
"""Body rows per LaTeX float: more go to a continuation float (``\\caption`` numbered as the first)."""


def column_parts(grid: TableGrid, max_columns: int = MAX_VALUE_COLUMNS) -> list[list[int]]:
    """Split the header groups of ``grid`` into parts of at most ``max_columns`` value columns.

    Groups are never split (a group wider than ``max_columns`` is a part of its own); returns the
    group indices of each part, in order.
    """
    if max_columns < 1:
        raise ResultsError(f"max_columns must be at least 1, got {max_columns}")
    parts, width = [], 0
    for i, (_, cols) in enumerate(grid.groups):
        if parts and width + len(cols) <= max_columns:
            parts[-1].append(i)
            width += len(cols)
        else:
            parts.append([i])
            width = len(cols)
    return parts


def _latex_tabular(grid: TableGrid, group_ids: list[int]) -> list[str]:
    """One booktabs tabular of ``grid`` with the columns of the header groups ``group_ids``."""
    groups = [grid.groups[i] for i in group_ids]
    offsets = np.cumsum([0] + [len(cols) for _, cols in grid.groups])
    columns = [j for i in group_ids for j in range(offsets[i], offsets[i + 1])]
    n_label = 3 if grid.extra_label else 2
    tab = [r"\begin{tabular}{" + "l" * n_label + "r" * len(columns) + "}", r"\toprule"]
    label_head = ["Network", "Pooling"] + ([latex_escape(grid.extra_label)] if grid.extra_label else [])
    if any(g for g, _ in groups):
        head, rules, col = [""] * n_label, [], n_label + 1
        for g, cols in groups:
            head.append(r"\multicolumn{" + str(len(cols)) + "}{c}{" + latex_escape(g) + "}")
            rules.append(r"\cmidrule(lr){" + f"{col}-{col + len(cols) - 1}" + "}")
            col += len(cols)
        tab.append(" & ".join(head) + r" \\")
        tab.append(" ".join(rules))
    sub = [latex_escape(c) for _, cols in groups for c in cols]
    tab.append(" & ".join(label_head + sub) + r" \\")
    tab.append(r"\midrule")
    previous = None
    for (t, pl, extra), row in zip(grid.rows, grid.cells):
        if previous is not None and t != previous:
            tab.append(r"\midrule")
        name = TOPOLOGY_NAMES[t] if t != previous else ""
        labels = [latex_escape(name), latex_escape(POOLING_NAMES[pl])] + ([extra] if grid.extra_label else [])
        tab.append(" & ".join(labels + [_latex_cell(row[j]) for j in columns]) + r" \\")
        previous = t
    tab += [r"\bottomrule", r"\end{tabular}"]
    return tab


def render_latex(summary_df: pd.DataFrame, table, *, paper_df: pd.DataFrame | None = None,
                 caption: str | None = None, label: str | None = None,
                 max_columns: int = MAX_VALUE_COLUMNS, max_rows: int = MAX_ROWS_PER_FLOAT,
                 marks: Mapping[tuple[str, str, str], str] | None = None, footnote: str = "") -> str:
    """The table as LaTeX ``table`` float(s) (booktabs; needs packages booktabs and graphicx).

    Strategy headers are ``\\multicolumn`` groups with ``\\cmidrule`` s; the network name is printed
    on the first row of its group; the row best is ``\\textbf``. Each cell is two stacked lines
    (:data:`CELL_MACRO_DEF`, defined in each float): ours[±std] above, ``(paper, diff)`` below in
    ``\\scriptsize``, so columns stay narrow. Set in ``\\footnotesize`` with ``\\tabcolsep`` 3pt.

    Wide tables are split by :func:`column_parts` into tabulars of at most ``max_columns`` value
    columns (Tables II/III: two strategies each), stacked in one float while the float holds at most
    ``max_rows`` body rows, else one float each; a continuation float repeats the caption number
    with "(continued)" on a page of its own (``\\clearpage`` between floats: floats flushed together
    at the end of a ``landscape`` environment come out unrotated). A tabular is shrunk to the line
    width only when still wider. Wide tables are meant for a landscape page (``pdflscape``).
    ``caption`` is plain text (escaped). ``marks``/``footnote``: footnote marks on Avg cells
    (:func:`build_grid`) and the note explaining them, set below the last tabular.
    """
    grid = build_grid(summary_df, table, paper_df, marks)
    floats: list[list[list[int]]] = []
    for part in column_parts(grid, max_columns):
        if floats and (len(floats[-1]) + 1) * len(grid.rows) <= max_rows:
            floats[-1].append(part)
        else:
            floats.append([part])
    lines = []
    for k, parts in enumerate(floats):
        lines += [r"\begin{table}[htbp]", r"\centering", CELL_MACRO_DEF]
        if caption and k == 0:
            lines.append(r"\caption{" + latex_escape(caption) + "}")
        elif caption:
            lines += [r"\addtocounter{table}{-1}", r"\caption{" + latex_escape(caption) + " (continued)}"]
        if label and k == 0:
            lines.append(r"\label{" + label + "}")
        lines += [r"\footnotesize", r"\setlength{\tabcolsep}{3pt}"]
        for j, part in enumerate(parts):
            if j:
                lines.append(r"\par\bigskip")
            lines += _fit_to_line(_latex_tabular(grid, part))
        if footnote and k == len(floats) - 1:
            lines += [r"\par\smallskip", r"{\scriptsize " + latex_escape(footnote).replace("†", r"\dag{}") + "}"]
        lines.append(r"\end{table}")
        if k < len(floats) - 1:
            lines.append(r"\clearpage")  # flush one float at a time: lscape rotates only those
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- HTML

def _html_cell(cell: Cell) -> str:
    ours, std, ref = cell.parts()
    cls = "num best" if cell.best else "num"
    inner = f'<span class="ours">{html.escape(ours)}</span>'
    if std:
        inner += f'<span class="std">{html.escape(std)}</span>'
    if cell.mark:
        inner += f'<sup class="mark">{html.escape(cell.mark)}</sup>'
    if ref:
        inner += f' <span class="paper">{html.escape(ref)}</span>'
    return f'<td class="{cls}">{inner}</td>'


def render_html(summary_df: pd.DataFrame, table, *, paper_df: pd.DataFrame | None = None,
                caption: str | None = None, marks: Mapping[tuple[str, str, str], str] | None = None,
                footnote: str = "") -> str:
    """The table as an HTML ``<table class="caanet-table">``; the row best has class ``best``; ``marks``
    as ``<sup class="mark">`` after ours, ``footnote`` in a ``<p class="table-note">`` after the table."""
    grid = build_grid(summary_df, table, paper_df, marks)
    out = [f'<table class="caanet-table" data-table="{grid.table}">']
    if caption:
        out.append(f"<caption>{html.escape(caption)}</caption>")
    n_label = 3 if grid.extra_label else 2
    out.append("<thead>")
    if any(g for g, _ in grid.groups):
        cells = "".join(f'<th colspan="{len(cols)}" class="group">{html.escape(g)}</th>' for g, cols in grid.groups)
        out.append(f'<tr><th colspan="{n_label}"></th>{cells}</tr>')
    labels = ["Network", "Pooling"] + ([grid.extra_label] if grid.extra_label else [])
    sub = [c for _, cols in grid.groups for c in cols]
    out.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in labels + sub) + "</tr>")
    out.append("</thead>")
    out.append("<tbody>")
    previous = None
    for (t, pl, extra), row in zip(grid.rows, grid.cells):
        cls = ' class="group-start"' if previous is not None and t != previous else ""
        label_cells = [TOPOLOGY_NAMES[t] if t != previous else "", POOLING_NAMES[pl]]
        label_cells += [extra] if grid.extra_label else []
        tr = "".join(f'<th scope="row">{html.escape(c)}</th>' for c in label_cells)
        out.append(f"<tr{cls}>{tr}{''.join(_html_cell(c) for c in row)}</tr>")
        previous = t
    out.append("</tbody></table>")
    if footnote:
        out.append(f'<p class="table-note">{html.escape(footnote)}</p>')
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------- files

def table_name_from_path(path, default: str) -> str:
    """``.../table2.csv`` -> ``table2``; else ``default``."""
    m = re.search(r"table\s*([1-4])", Path(path).stem)
    return f"table{m.group(1)}" if m else default


def render_all(summary_csvs, *, tex_paths, html_paths, marks: Mapping[str, tuple[dict, str]] | None = None) -> None:
    """Render each summary CSV to its LaTeX and HTML file (atomic writes).

    The table of each CSV is read from its name (``table{n}.csv``), else from its position (1, 2, 3, 4).
    ``marks``: per table, its footnote marks and footnote (:func:`caanet.render.switches.marks_for_tables`).
    """
    summary_csvs, tex_paths, html_paths = list(summary_csvs), list(tex_paths), list(html_paths)
    if not len(summary_csvs) == len(tex_paths) == len(html_paths):
        raise ResultsError(
            f"render_all: {len(summary_csvs)} summaries, {len(tex_paths)} .tex and {len(html_paths)} .html paths"
        )
    for i, (csv, tex, htm) in enumerate(zip(summary_csvs, tex_paths, html_paths)):
        table = table_name_from_path(csv, f"table{i + 1}")
        summary = read_summary(csv)
        caption = table_caption(table, summary)
        table_marks, footnote = (marks or {}).get(table, ({}, ""))
        write_text_atomic(tex, render_latex(summary, table, caption=caption, label=f"tab:{table}", marks=table_marks,
                                            footnote=footnote))
        write_text_atomic(htm, render_html(summary, table, caption=caption, marks=table_marks, footnote=footnote))


NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def count_words(n: int) -> str:
    """``4`` -> ``"four"`` (up to ten; digits beyond)."""
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def summary_devices(summary: pd.DataFrame) -> list[str]:
    """The device labels of a summary (no pseudo-devices), sorted."""
    return sorted(set(summary["device"].astype(str)) - set(SUMMARY_DEVICES)) if "device" in summary.columns else []


def devices_text(devices) -> str:
    """``["a", "b", "c"]`` -> ``"A, B, C"`` (the printed device names)."""
    return ", ".join(DEVICE_NAMES.get(d, str(d).upper()) for d in devices)


def table_caption(table, summary: pd.DataFrame) -> str:
    """The caption of ``table``, derived from the summary: its devices, its strategies and its dataset."""
    table = normalise_table_name(table)
    dataset = summary["dataset"].iloc[0] if "dataset" in summary.columns and len(summary) else "unknown"
    devices = devices_text(summary_devices(summary))
    strategies = [s for s in STRATEGIES if "strategy" in summary.columns and s in set(summary["strategy"])]
    k = count_words(len(strategies))
    if table == "table1":
        text = (f"Table I: average accuracy [%] over devices {devices} with teacher-forcing conditioning at each "
                "convolutional layer; best layer per row in bold.")
    elif table in ("table2", "table3"):
        text = (f"Table {'II' if table == 'table2' else 'III'}: accuracy [%] of the {k} training strategies on "
                f"devices {devices}{' (attention pooling)' if table == 'table3' else ''}; best average per row in bold.")
    else:
        names = ", ".join(STRATEGY_NAMES[s] for s in strategies)
        text = (f"Table IV (beyond the paper; no paper values): accuracy [%] per device ({devices}) of {k} "
                f"strategies ({names}; attention pooling), with the Avg over all devices and the means over the "
                "devices seen and unseen in training; single-device models exist for seen devices only, so they "
                "have no Avg and no Unseen. Best Avg per row in bold.")
    return f"{text} Dataset: {dataset}."
