"""DCASE's metrics in the report: log loss per table and the models' complexity (issue 20, beyond the paper).

Input only result files: the table summaries' ``ll_*`` columns (:func:`caanet.aggregate.summarise_table`:
DCASE's log loss per device, then the same means as the accuracies) and
``results/tables/complexity.csv`` (:func:`caanet.complexity_table.complexity_table`). Nothing here imports
torch.

* :func:`log_loss_frame` / :func:`render_log_loss_html` / :func:`render_log_loss_latex`: per strategy
  table (II-IV, and any later one with log losses), rows (network, pooling) in the paper's order,
  per strategy the log loss of the Avg (mean over devices, per seed first) and, where the table has
  them, of the seen and unseen devices; mean over seeds, ``±std`` when several seeds ran.
* :func:`complexity_frame` / :func:`render_complexity_html` / :func:`render_complexity_latex`: one row
  per (network, pooling); per kind of model (no conditioning: single-device and joint; teacher
  forcing: Eq. 1 fed the true device; multi-task: Eq. 1 fed CNN-d, which runs at inference and is
  counted) the parameters and the millions of MACs per second of audio; a range ``min-max`` where
  they differ across conditioning layers, datasets (the number of devices sizes Eq. 1 and CNN-d) or
  device-robustness methods. ``reports/tables/complexity.{tex,html}`` (:func:`render_complexity_files`).
* :func:`dcase_section`: the report's section (a dict for the templates' ``dcase_metrics.*.j2``).
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from caanet.complexity import (
    BYTES_PER_PARAM,
    COUNTED_WITH,
    DCASE_MAX_MACS_PER_SECOND,
    DCASE_MAX_PARAM_BYTES,
)
from caanet.complexity_table import read_complexity_table
from caanet.evaluation import LOG_LOSS_EPS
from caanet.io import write_text_atomic
from caanet.render import tables as T
from caanet.spec import POOLINGS, STRATEGIES, TOPOLOGIES
from caanet.vocab import STRATEGY_REGISTRY

LOG_LOSS_DEVICES = ("avg", "seen", "unseen")
"""The pseudo-devices whose log loss the report shows (those a table has)."""
KINDS = (("none", "No conditioning"), ("oracle", "Teacher forcing"), ("predicted", "Multi-task (with CNN-d)"))
"""Kinds of model of the complexity table: ``ModelConfig.device_source`` and its column group's title."""
LOG_LOSS_DEFINITION = (
    f"Log loss is DCASE Task 1's multi-class cross-entropy (2020-2025): the mean over test clips of −ln p, p the "
    f"probability the model gives the true scene (the softmax of its scene output, clipped to [{LOG_LOSS_EPS:g}, "
    f"1 − {LOG_LOSS_EPS:g}], each clip's probabilities renormalised), computed per device as the organisers' "
    "baselines compute it (scikit-learn's log_loss); lower is better; a uniform guess over ten scenes scores ln 10 = 2.303. "
    "Avg is the mean over the devices (each device once, per seed first, as the accuracy's Avg), Seen and "
    "Unseen the means over the devices seen and unseen in training. Each cell's evaluation.json also holds the "
    "log loss over all its test clips and per scene."
)
COMPLEXITY_DEFINITION = (
    f"Counted as the DCASE baselines count ({COUNTED_WITH}, NeSsi's method) on one clip of the model's input "
    "(its clip length, batch 1), for the model as it runs at inference: the scene network and, for multi-task "
    "models, CNN-d, whose prediction conditions it. BatchNorm is not folded (NeSsi counts the model as given). "
    "MACs per second of audio are the clip's MACs divided by its length. Parameter memory is the count times "
    f"{BYTES_PER_PARAM['int8']} byte (int8), {BYTES_PER_PARAM['fp16']} (fp16) or {BYTES_PER_PARAM['fp32']} "
    f"(fp32). DCASE Task 1's limits since 2022: {DCASE_MAX_PARAM_BYTES:,} bytes of parameters (int8) and "
    f"{DCASE_MAX_MACS_PER_SECOND / 1e6:g} million MACs per 1-s clip."
)


def _fmt(x, spec: str) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "—"
    return "—" if math.isnan(x) else format(x, spec)


# --------------------------------------------------------------------------------------------- log loss

def log_loss_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """A strategy table's log losses wide: index (topology, pooling) in the paper's order, columns
    (strategy, device) for the strategies present and the pseudo-devices of :data:`LOG_LOSS_DEVICES`
    the summary has; values are text ``mean[±std]`` (``—`` where missing). Empty when the summary
    has no finite ``ll_mean``."""
    df = T.check_summary(summary)
    if "ll_mean" not in df.columns:
        return pd.DataFrame()
    df = df[df["device"].isin(LOG_LOSS_DEVICES)].copy()
    for col in ("ll_mean", "ll_std"):
        df[col] = pd.to_numeric(df.get(col), errors="coerce")
    if not np.isfinite(df["ll_mean"].to_numpy(dtype=float)).any():
        return pd.DataFrame()
    strategies = [s for s in STRATEGIES if s in set(df["strategy"])]
    devices = [d for d in LOG_LOSS_DEVICES if d in set(df["device"])]
    rows = [(t, p) for t in TOPOLOGIES for p in POOLINGS if ((df["topology"] == t) & (df["pooling"] == p)).any()]
    index = pd.MultiIndex.from_tuples(rows, names=["topology", "pooling"])
    out = pd.DataFrame("—", index=index, columns=pd.MultiIndex.from_product([strategies, devices]))
    for r in df.itertuples(index=False):
        if (r.strategy, r.device) not in out.columns:
            continue
        text = _fmt(r.ll_mean, ".3f")
        if int(r.n_seeds) > 1 and text != "—" and not math.isnan(float(r.ll_std)):
            text += f"±{float(r.ll_std):.3f}"
        out.loc[(r.topology, r.pooling), (r.strategy, r.device)] = text
    return out


def _label(topology: str, pooling: str) -> tuple[str, str]:
    return T.TOPOLOGY_NAMES.get(topology, topology), T.POOLING_NAMES.get(pooling, pooling)


def _html_table(frame: pd.DataFrame, group_names: Mapping[str, str], sub_names: Mapping[str, str],
                caption: str, kind: str) -> str:
    groups = list(dict.fromkeys(frame.columns.get_level_values(0)))
    subs = {g: [c for gg, c in frame.columns if gg == g] for g in groups}
    out = [f'<table class="caanet-table" data-table="{kind}">', f"<caption>{html.escape(caption)}</caption>",
           "<thead>", '<tr><th colspan="2"></th>' + "".join(
               f'<th colspan="{len(subs[g])}" class="group">{html.escape(group_names.get(g, g))}</th>' for g in groups)
           + "</tr>",
           "<tr><th>Network</th><th>Pooling</th>" + "".join(
               f"<th>{html.escape(sub_names.get(c, c))}</th>" for g in groups for c in subs[g]) + "</tr>",
           "</thead>", "<tbody>"]
    previous = None
    for (t, p), row in frame.iterrows():
        name, pool = _label(t, p)
        cls = ' class="group-start"' if previous is not None and t != previous else ""
        cells = "".join(f'<td class="num">{html.escape(str(row[(g, c)]))}</td>' for g in groups for c in subs[g])
        out.append(f'<tr{cls}><th scope="row">{html.escape(name if t != previous else "")}</th>'
                   f'<th scope="row">{html.escape(pool)}</th>{cells}</tr>')
        previous = t
    out.append("</tbody></table>")
    return "\n".join(out) + "\n"


def _latex_table(frame: pd.DataFrame, group_names: Mapping[str, str], sub_names: Mapping[str, str],
                 caption: str, label: str | None) -> str:
    groups = list(dict.fromkeys(frame.columns.get_level_values(0)))
    subs = {g: [c for gg, c in frame.columns if gg == g] for g in groups}
    n = sum(len(v) for v in subs.values())
    esc = T.latex_escape
    head, rules, col = ["", ""], [], 3
    for g in groups:
        head.append(r"\multicolumn{" + str(len(subs[g])) + "}{c}{" + esc(group_names.get(g, g)) + "}")
        rules.append(r"\cmidrule(lr){" + f"{col}-{col + len(subs[g]) - 1}" + "}")
        col += len(subs[g])
    tab = [r"\begin{tabular}{ll" + "r" * n + "}", r"\toprule", " & ".join(head) + r" \\", " ".join(rules),
           " & ".join(["Network", "Pooling"] + [esc(sub_names.get(c, c)) for g in groups for c in subs[g]]) + r" \\",
           r"\midrule"]
    previous = None
    for (t, p), row in frame.iterrows():
        if previous is not None and t != previous:
            tab.append(r"\midrule")
        name, pool = _label(t, p)
        values = [esc(str(row[(g, c)])).replace("±", r"$\pm$").replace("—", "--") for g in groups for c in subs[g]]
        tab.append(" & ".join([esc(name if t != previous else ""), esc(pool)] + values) + r" \\")
        previous = t
    tab += [r"\bottomrule", r"\end{tabular}"]
    lines = [r"\begin{table}[htbp]", r"\centering", r"\caption{" + esc(caption) + "}"]
    if label:
        lines.append(r"\label{" + label + "}")
    lines += [r"\footnotesize", r"\setlength{\tabcolsep}{3pt}", *T._fit_to_line(tab), r"\end{table}"]
    return "\n".join(lines) + "\n"


LOG_LOSS_SUB_NAMES = {"avg": "Avg", "seen": "Seen", "unseen": "Unseen"}


def render_log_loss_html(summary: pd.DataFrame, caption: str) -> str:
    """:func:`log_loss_frame` as an HTML table ('' when the summary has no log loss)."""
    frame = log_loss_frame(summary)
    return "" if frame.empty else _html_table(frame, T.STRATEGY_NAMES, LOG_LOSS_SUB_NAMES, caption, "log-loss")


def render_log_loss_latex(summary: pd.DataFrame, caption: str, label: str | None = None) -> str:
    """:func:`log_loss_frame` as a LaTeX (booktabs) float ('' when the summary has no log loss)."""
    frame = log_loss_frame(summary)
    return "" if frame.empty else _latex_table(frame, T.STRATEGY_NAMES, LOG_LOSS_SUB_NAMES, caption, label)


# --------------------------------------------------------------------------------------------- complexity

def _device_source(strategy: str) -> str:
    return STRATEGY_REGISTRY[strategy].device_source if strategy in STRATEGY_REGISTRY else "none"


def _span(values, scale: float, spec: str) -> str:
    v = np.asarray(values, dtype=float) / scale
    lo, hi = float(v.min()), float(v.max())
    return format(lo, spec) if format(lo, spec) == format(hi, spec) else f"{format(lo, spec)}–{format(hi, spec)}"


def complexity_frame(table: pd.DataFrame) -> pd.DataFrame:
    """``complexity.csv`` condensed: index (topology, pooling) in the paper's order, columns (kind,
    ``params`` | ``kb_int8`` | ``mmacs``) per kind of model of :data:`KINDS` present; values are text,
    ``min–max`` where the models of a cell of the frame differ (layers, datasets, methods)."""
    if table is None or table.empty:
        return pd.DataFrame()
    df = table.copy()
    df["kind"] = [_device_source(s) for s in df["strategy"].astype(str)]
    kinds = [k for k, _ in KINDS if k in set(df["kind"])]
    rows = [(t, p) for t in TOPOLOGIES for p in POOLINGS if ((df["topology"] == t) & (df["pooling"] == p)).any()]
    cols = pd.MultiIndex.from_product([kinds, ["params", "kb_int8", "mmacs"]])
    out = pd.DataFrame("—", index=pd.MultiIndex.from_tuples(rows, names=["topology", "pooling"]), columns=cols)
    for (t, p, kind), g in df.groupby(["topology", "pooling", "kind"], sort=False):
        if (t, p) not in out.index:
            continue
        out.loc[(t, p), (kind, "params")] = _span(g["params"], 1, ",.0f")
        out.loc[(t, p), (kind, "kb_int8")] = _span(g["bytes_int8"], 1000, ",.1f")
        out.loc[(t, p), (kind, "mmacs")] = _span(g["macs_per_second"], 1e6, ",.2f")
    return out


COMPLEXITY_SUB_NAMES = {"params": "Params", "kb_int8": "kB (int8)", "mmacs": "MMAC/s"}
COMPLEXITY_CAPTION = (
    "Complexity of the models (beyond the paper), counted as DCASE Task 1 counts it (torchinfo, as NeSsi): "
    "parameters, their memory at int8 in kB (fp16 twice, fp32 four times as much) and millions of "
    "multiply-accumulates per second of audio, for the model as it runs at inference (CNN-d counted for "
    "multi-task); ranges over conditioning layers, datasets and methods. DCASE's limits: "
    f"{DCASE_MAX_PARAM_BYTES / 1000:g} kB of parameters, {DCASE_MAX_MACS_PER_SECOND / 1e6:g} MMAC/s."
)


def render_complexity_html(table: pd.DataFrame, caption: str = COMPLEXITY_CAPTION) -> str:
    """:func:`complexity_frame` as an HTML table ('' for an empty complexity table)."""
    frame = complexity_frame(table)
    return "" if frame.empty else _html_table(frame, dict(KINDS), COMPLEXITY_SUB_NAMES, caption, "complexity")


def render_complexity_latex(table: pd.DataFrame, caption: str = COMPLEXITY_CAPTION,
                            label: str | None = "tab:complexity") -> str:
    """:func:`complexity_frame` as a LaTeX (booktabs) float ('' for an empty complexity table)."""
    frame = complexity_frame(table)
    return "" if frame.empty else _latex_table(frame, dict(KINDS), COMPLEXITY_SUB_NAMES, caption, label)


def render_complexity_files(complexity_csv, *, tex_path, html_path) -> None:
    """Render ``results/tables/complexity.csv`` to ``reports/tables/complexity.{tex,html}`` (atomic
    writes; a table of no models gives a one-line note)."""
    table = read_complexity_table(complexity_csv)
    write_text_atomic(tex_path, render_complexity_latex(table) or "% no models\n")
    write_text_atomic(html_path, render_complexity_html(table) or "<p>No models.</p>\n")


def limits_sentences(table: pd.DataFrame) -> list[str]:
    """What the complexity table says against DCASE's limits, computed: how many distinct models fit
    the parameter limit (int8), the MAC limit, both; the smallest and largest model."""
    if table is None or table.empty:
        return []
    n = len(table)
    fits_p = table["fits_dcase_params_int8"].astype(str).str.lower().eq("true")
    fits_m = table["fits_dcase_macs"].astype(str).str.lower().eq("true")
    lo, hi = table.loc[table["params"].idxmin()], table.loc[table["params"].idxmax()]

    def name(r) -> str:
        t, p = _label(r["topology"], r["pooling"])
        return f"{t} + {p}, {T.STRATEGY_NAMES.get(r['strategy'], r['strategy'])}"

    return [
        f"Of the {n} distinct models trained (a model: dataset, network, pooling, strategy, conditioning layer and "
        f"method), {int(fits_p.sum())} fit DCASE's parameter limit at int8, {int(fits_m.sum())} its MAC limit and "
        f"{int((fits_p & fits_m).sum())} both.",
        f"The smallest has {int(lo['params']):,} parameters ({name(lo)}; {float(lo['macs_per_second']) / 1e6:,.2f} "
        f"MMAC/s), the largest {int(hi['params']):,} ({name(hi)}; {float(hi['macs_per_second']) / 1e6:,.2f} MMAC/s).",
    ]


# --------------------------------------------------------------------------------------------- the section

LOG_LOSS_TITLES = {"table2": "Table II", "table3": "Table III", "table4": "Table IV"}


def dcase_section(summaries: Mapping[str, pd.DataFrame], complexity_csv=None) -> dict | None:
    """The report's "DCASE's metrics" section: ``{"log_loss_definition", "log_loss": [{"key", "title",
    "html", "latex"}], "complexity_definition", "complexity_html", "complexity_latex", "limits",
    "complexity_missing"}``, from the strategy tables' summaries (``table1`` is left out: its layer
    sweep repeats Table II's models) and ``complexity.csv`` (None or missing: a note instead). None
    when there is nothing to show."""
    entries = []
    for key, summary in summaries.items():
        if key == "table1" or summary is None or summary.empty:
            continue
        title = LOG_LOSS_TITLES.get(key, key.replace("table", "Table "))
        dataset = summary["dataset"].iloc[0] if "dataset" in summary.columns else "?"
        caption = f"Log loss of {title} (dataset {dataset}): Avg over devices per strategy; lower is better."
        html_text = render_log_loss_html(summary, caption)
        if html_text:
            entries.append({"key": key, "title": title, "html": html_text,
                            "latex": render_log_loss_latex(summary, caption, label=f"tab:{key}-logloss")})
    path = Path(complexity_csv) if complexity_csv is not None else None
    table = read_complexity_table(path) if path is not None and path.exists() else None
    if not entries and table is None:
        return None
    return {
        "log_loss_definition": LOG_LOSS_DEFINITION, "log_loss": entries,
        "complexity_definition": COMPLEXITY_DEFINITION,
        "complexity_html": render_complexity_html(table) if table is not None else "",
        "complexity_latex": render_complexity_latex(table) if table is not None else "",
        "limits": limits_sentences(table),
        "complexity_missing": None if table is not None else f"{path or 'complexity.csv'} is missing: no complexity",
    }
