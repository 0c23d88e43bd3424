"""Table V's rendering and its section of the report (beyond the paper: CAA-Net and the field).

Input: ``results/tables/table5.csv`` (:func:`caanet.aggregate.summarise_table`, long format with a ``method``
column) and Table V's rows of ``results/stats/comparisons.csv`` (:func:`caanet.field.table5_comparisons`).
Rows of the rendered table are the table's models, a training strategy with a device-robustness
method (``none``: the strategy alone), grouped by (topology, pooling); columns Avg, Seen, Unseen and
then each device; every number is ``mean±std`` over seeds (percent). :func:`table5_section` is what the
report shows: the table, each method with its citation and the combinations it is trained in, the
oracle information a method reads at test time, the tests against joint training and against CAA-Net,
and a paragraph computed from the numbers, never written by hand.
"""

from __future__ import annotations

import html
import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from caanet.aggregate import with_method
from caanet.errors import ResultsError
from caanet.io import read_results_csv, require_columns, write_text_atomic
from caanet.spec import METHODS, POOLINGS, STRATEGIES, TOPOLOGIES
from caanet.vocab import METHOD_REGISTRY, POOLING_REGISTRY, STRATEGY_REGISTRY, SUMMARY_DEVICES, TOPOLOGY_REGISTRY

TITLE = "Table V (beyond the paper): CAA-Net and the field's device-robustness methods"
SUMMARY_ORDER = ("avg", "seen", "unseen")
"""The pseudo-device columns of Table V, before the devices (B/C, DCASE 2018's figure, is left out)."""
NAMES = {"avg": "Avg", "seen": "Seen", "unseen": "Unseen"}
NOTE = (
    "Table V goes beyond the paper: it puts CAA-Net's conditional training beside the device-robustness "
    "methods the DCASE community adopted after 2019, each written here from its paper, trained with the same "
    "seeds, data and schedule and judged by the same statistics. Its cells without a method are Table IV's (the same "
    "training jobs, where both tables have the seed)."
)
SYNTHETIC = (
    "The devices of the embedded datasets are synthetic recording chains (filters, resonances, noise floors, "
    "compression) applied to synthetic scenes: they are not real phones, and what a method gains here says "
    "little about what it gains on real recordings (the methods' papers report their real-data numbers)."
)
MISSING_METRICS = "Log loss and complexity are not in this run's results (cells written before they were recorded)."


def read_table5(path) -> pd.DataFrame:
    """``results/tables/table5.csv`` with its ``method`` column filled (``none`` where empty); ResultsError
    naming the file for missing columns or an unknown vocabulary entry."""
    df = read_results_csv(path, "Table V's summary", columns=("topology", "pooling", "strategy", "device", "acc_mean"),
                          dtype={"device": str})
    return check_table5(df, str(path))


def check_table5(df: pd.DataFrame, source: str = "Table V's summary") -> pd.DataFrame:
    """A normalised copy of a Table V summary frame (see :func:`read_table5`)."""
    require_columns(df, ["topology", "pooling", "strategy", "device", "acc_mean"], source)
    df = with_method(df)
    df["device"] = df["device"].astype(str)
    for col, allowed in (("topology", TOPOLOGIES), ("pooling", POOLINGS), ("strategy", STRATEGIES),
                         ("method", METHODS)):
        bad = ~df[col].isin(allowed)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ResultsError(f"{source}: row {row + 2}: {col}={df[col].iloc[row]!r} is not one of {list(allowed)}")
    for col in ("acc_mean", "acc_std", "n_seeds"):
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df.columns else np.nan
    return df


def model_label(strategy: str, method: str) -> str:
    """A model's printed name: ``Joint``, ``Multi-task + Freq-MixStyle``, ..."""
    name = STRATEGY_REGISTRY[strategy].display
    return name if method == "none" else f"{name} + {METHOD_REGISTRY[method].display}"


def _order(values, vocabulary) -> list:
    rank = {v: i for i, v in enumerate(vocabulary)}
    return sorted(set(values), key=lambda v: rank.get(v, len(rank)))


def table5_frame(summary: pd.DataFrame, value: str = "acc_mean") -> pd.DataFrame:
    """Table V wide: index ``(topology, pooling, strategy, method)`` in the vocabulary's order, columns
    Avg, Seen, Unseen (those present) then the devices (sorted)."""
    df = check_table5(summary)
    devices = [d for d in SUMMARY_ORDER if d in set(df["device"])]
    devices += sorted(set(df["device"]) - set(SUMMARY_DEVICES))
    wide = df.pivot_table(index=["topology", "pooling", "strategy", "method"], columns="device", values=value,
                          aggfunc="first", dropna=False)
    index = [(t, p, s, m) for t in _order(df["topology"], TOPOLOGIES) for p in _order(df["pooling"], POOLINGS)
             for s in _order(df["strategy"], STRATEGIES) for m in _order(df["method"], METHODS)
             if (t, p, s, m) in wide.index]
    return wide.reindex(index=pd.MultiIndex.from_tuples(index, names=wide.index.names), columns=devices)


def _cell(mean, std, n) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    spread = f"±{std:.1f}" if n is not None and n > 1 and not math.isnan(std) else ""
    return f"{mean:.1f}{spread}"


def _rows(summary: pd.DataFrame):
    """``(row label, model label, [cell texts], [is best Avg of its row group])`` per model."""
    means, stds, ns = (table5_frame(summary, v) for v in ("acc_mean", "acc_std", "n_seeds"))
    out = []
    for (t, p), group in means.groupby(level=[0, 1], sort=False):
        avg = group["avg"].to_numpy(dtype=float) if "avg" in group.columns else np.full(len(group), np.nan)
        best = int(np.nanargmax(avg)) if np.isfinite(avg).any() else -1
        label = f"{TOPOLOGY_REGISTRY[t].display} + {POOLING_REGISTRY[p].display}"
        for i, key in enumerate(group.index):
            texts = [_cell(float(means.at[key, d]), float(stds.at[key, d]),
                           None if pd.isna(ns.at[key, d]) else int(ns.at[key, d])) for d in means.columns]
            out.append((label, model_label(key[2], key[3]), texts, i == best))
    return list(means.columns), out


def render_table5_html(summary: pd.DataFrame, caption: str = "") -> str:
    """Table V as an HTML table (best Avg of each row in bold)."""
    columns, rows = _rows(summary)
    head = "".join(f"<th>{html.escape(NAMES.get(c, c.upper()))}</th>" for c in columns)
    body = []
    for label, model, texts, best in rows:
        cells = "".join(f"<td>{'<strong>' + t + '</strong>' if best and c == 'avg' else t}</td>"
                        for c, t in zip(columns, texts))
        body.append(f"<tr><td>{html.escape(label)}</td><td>{html.escape(model)}</td>{cells}</tr>")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (f'<table class="grid">{cap}<thead><tr><th>network</th><th>training</th>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def render_table5_latex(summary: pd.DataFrame, caption: str = "", label: str = "tab:table5") -> str:
    """Table V as a LaTeX (booktabs) table, small print (many device columns)."""
    from caanet.render.tables import latex_escape

    columns, rows = _rows(summary)
    spec = "ll" + "r" * len(columns)
    lines = [r"\begin{table*}[t]", r"\centering", r"\scriptsize", rf"\caption{{{latex_escape(caption)}}}",
             rf"\label{{{label}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             "Network & Training & " + " & ".join(NAMES.get(c, c.upper()) for c in columns) + r" \\", r"\midrule"]
    for lab, model, texts, best in rows:
        cells = [(rf"\textbf{{{t}}}" if best and c == "avg" else t).replace("±", r"$\pm$").replace("—", "--")
                 for c, t in zip(columns, texts)]
        lines.append(f"{latex_escape(lab)} & {latex_escape(model)} & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table*}"]
    return "\n".join(lines) + "\n"


def caption(summary: pd.DataFrame) -> str:
    dataset = summary["dataset"].iloc[0] if "dataset" in summary.columns and len(summary) else "unknown"
    return (f"{TITLE}. Accuracy [%] (mean±std over seeds): Avg over all devices, Seen and Unseen the means over "
            f"the devices seen and unseen in training, then each device. Best Avg per network in bold. Dataset: "
            f"{dataset}.")


def render_files(summary_csv, tex_path, html_path) -> None:
    """Write Table V's LaTeX and HTML (``reports/tables/table5.{tex,html}``), atomically."""
    summary = read_table5(summary_csv)
    write_text_atomic(tex_path, render_table5_latex(summary, caption(summary)))
    write_text_atomic(html_path, render_table5_html(summary, caption(summary)))


# --------------------------------------------------------------------------------------------- the section

def method_entries(methods: Sequence[str], strategies: Sequence[str], unseen: Sequence[str]) -> list[dict]:
    """Each method of the table (not ``none``): display name, citation, the strategies it is trained with
    and why, and the oracle information it reads at test time (with the unseen devices' treatment)."""
    out = []
    for name in methods:
        if name == "none":
            continue
        m = METHOD_REGISTRY[name]
        combined = [STRATEGY_REGISTRY[s].display for s in strategies if m.combines_with(s)]
        oracle = ""
        if m.test_device_labels:
            oracle = ("Reads each test clip's TRUE device label to pick its correction (oracle information, as "
                      "teacher forcing).")
            if unseen:
                oracle += (f" The devices unseen in training ({', '.join(unseen)}) have no fit: they get the mean "
                           "correction of the seen non-reference devices (geometric mean of their gains).")
        out.append({"name": name, "display": m.display, "citation": m.citation, "combined": ", ".join(combined),
                    "combination": m.combination, "oracle": oracle})
    return out


def _value(summary: pd.DataFrame, strategy: str, method: str, device: str, row) -> float:
    sel = summary[(summary["topology"] == row[0]) & (summary["pooling"] == row[1]) & (summary["strategy"] == strategy)
                  & (summary["method"] == method) & (summary["device"] == device)]
    return float(sel["acc_mean"].iloc[0]) if len(sel) else math.nan


def findings(summary: pd.DataFrame, tests: Sequence[Mapping], baseline: tuple[str, str],
             caanet: tuple[str, str] | None) -> list[str]:
    """Sentences computed from Table V (per row): the best model on Avg and on Unseen, each method's
    change of the Avg and of Unseen against joint training and against CAA-Net, and how many of the
    one-tailed tests are significant."""
    out = []
    df = check_table5(summary)
    for (t, p), g in df.groupby(["topology", "pooling"], sort=False):
        row = (t, p)
        name = f"{TOPOLOGY_REGISTRY[t].display} + {POOLING_REGISTRY[p].display}"
        for device, what in (("avg", "Avg"), ("unseen", "the unseen devices")):
            sel = g[g["device"] == device].dropna(subset=["acc_mean"])
            if len(sel):
                best = sel.loc[sel["acc_mean"].idxmax()]
                out.append(f"{name}: the best on {what} is {model_label(best['strategy'], best['method'])} "
                           f"({best['acc_mean']:.1f} %).")
        for ref, ref_name in ((baseline, "joint training"), (caanet, "CAA-Net")):
            if ref is None:
                continue
            ref_avg, ref_unseen = (_value(df, *ref, d, row) for d in ("avg", "unseen"))
            parts = []
            for method in _order(g["method"], METHODS):
                if method == "none":
                    continue
                model = (ref[0], method)
                avg, unseen = (_value(df, *model, d, row) for d in ("avg", "unseen"))
                if math.isnan(avg) or math.isnan(ref_avg):
                    continue
                text = f"{METHOD_REGISTRY[method].display} {avg - ref_avg:+.1f} points on Avg"
                if not (math.isnan(unseen) or math.isnan(ref_unseen)):
                    text += f" ({unseen - ref_unseen:+.1f} on Unseen)"
                parts.append(text)
            if parts:
                out.append(f"{name}, each method added to {ref_name} ({model_label(*ref)}): " + "; ".join(parts) + ".")
    if tests:
        n_sig = sum(bool(t["significant"]) for t in tests)
        out.append(f"{n_sig} of {len(tests)} one-sided tests (each model better than joint training or than "
                   "CAA-Net, on all devices and on the unseen ones, on the seed-mean model) are significant after "
                   "Holm's correction over the family.")
    return out


def metrics_rows(summary: pd.DataFrame, complexity: pd.DataFrame | None) -> list[dict]:
    """Per model of Table V (its order): DCASE's log loss (mean over seeds of the Avg, Seen and Unseen
    log loss, :func:`caanet.aggregate.summarise_table`'s ``ll_mean``) and its complexity from ``complexity.csv``
    (parameters, int8 kB, MMAC per second of audio; None: not shown). Empty strings where absent."""
    df = check_table5(summary)
    ll = table5_frame(df, "ll_mean") if "ll_mean" in df.columns else None
    out = []
    for key in table5_frame(df).index:
        t, p, s, m = key
        row = {"network": f"{TOPOLOGY_REGISTRY[t].display} + {POOLING_REGISTRY[p].display}",
               "model": model_label(s, m)}
        for d in SUMMARY_ORDER:
            v = float(ll.at[key, d]) if ll is not None and d in ll.columns else math.nan
            row[f"ll_{d}"] = "—" if math.isnan(v) else f"{v:.3f}"
        row.update(params="", kb_int8="", mmacs="")
        if complexity is not None and len(complexity):
            c = complexity[(complexity["topology"] == t) & (complexity["pooling"] == p) & (complexity["strategy"] == s)
                           & (complexity["method"].fillna("none") == m)
                           & (complexity["dataset"].astype(str) == str(df["dataset"].iloc[0]))]
            if len(c):
                r = c.iloc[0]
                row.update(params=f"{int(r['params']):,}", kb_int8=f"{float(r['bytes_int8']) / 1000:.1f}",
                           mmacs=f"{float(r['macs_per_second']) / 1e6:.2f}")
        out.append(row)
    return out


def caanet_choice(strategy: str | None, rows: Sequence[str], comparisons: pd.DataFrame | None) -> str:
    """A sentence on which multi-task variant is CAA-Net's column of Table V (``tables.table5.strategies``)
    and, when it is not the paper's argmax conditioning, the evidence for it from Table IV's family of tests
    on the same rows (``comparisons.csv``: the seed-mean paired test of the variant against the paper's
    ``multi_task``, with Holm's p), since choosing it there is a selection on the test set that favours
    CAA-Net in Table V's comparisons. "" without a multi-task column."""
    if strategy is None:
        return ""
    name = STRATEGY_REGISTRY[strategy].display
    if strategy == "multi_task":
        return f"CAA-Net is the paper's multi-task training ({name}: CNN-d's argmax conditions the scene network)."
    text = (f"CAA-Net's column is {name}, not the paper's argmax conditioning (tables.table5.strategies), "
            "chosen as the variant Table IV shows best")
    evidence = []
    if comparisons is not None and len(comparisons) and "family" in comparisons.columns:
        c = comparisons[(comparisons["family"].fillna("") == "table4") & comparisons["seed"].isna()
                        & (comparisons["comparison"] == f"{strategy} vs multi_task")
                        & (comparisons.get("scope", pd.Series("all", index=comparisons.index)).fillna("all") == "all")]
        for r in c[c["row"].isin(rows)].to_dict("records"):
            evidence.append(f"{r['row']}: {float(r['paired_diff']):+.1f} points on the Avg, Holm p = {float(r['p_holm']):.3g}")
    text += (" (Table IV, against the paper's multi-task: " + "; ".join(evidence) + ")") if evidence else ""
    return text + (". The choice was made on the same test set, which favours CAA-Net in the comparisons "
                   "of the methods against it below.")


def table5_section(preset: Mapping, summary: pd.DataFrame | None, comparisons: pd.DataFrame | None,
                   complexity: pd.DataFrame | None = None) -> dict | None:
    """Table V's section of the report (None without ``tables.table5`` or results): ``title``, ``dataset``,
    ``note``, ``html``/``latex`` (the table), ``metrics`` (:func:`metrics_rows`: log loss, parameters, MACs),
    ``methods`` (:func:`method_entries`), ``statistic``, ``tests`` (the family ``table5`` of
    comparisons.csv, seed-mean rows decided by Holm: :func:`caanet.render.report.statistics.family_section`),
    ``m``, ``n_significant``, ``level``, ``findings`` (:func:`findings`), ``synthetic`` (whether the
    dataset is the embedded one, and the sentence saying its devices are not phones)."""
    from caanet import grid
    from caanet.field import BASELINE, TABLE5_STATISTIC, caanet_strategy
    from caanet.render.report.statistics import family_section

    cfg = grid.grid_config(preset)
    if cfg.table5 is None or summary is None or summary.empty:
        return None
    summary = check_table5(summary)
    dataset = cfg.table_datasets["table5"]
    family = family_section(comparisons, "table5")
    strategy = caanet_strategy(cfg.table5.strategies)
    caanet = (strategy, "none") if strategy is not None and "none" in cfg.table5.methods else None
    unseen = list(cfg.unseen_devices.get(dataset, ()))
    source = (preset.get("datasets") or {}).get(dataset, {}).get("source")
    metrics = metrics_rows(summary, complexity)
    return {
        "title": TITLE, "dataset": dataset, "note": NOTE,
        "html": render_table5_html(summary, caption(summary)),
        "latex": render_table5_latex(summary, caption(summary)),
        "metrics": metrics, "metrics_missing": "" if any(r["ll_avg"] != "—" for r in metrics) else MISSING_METRICS,
        "methods": method_entries(cfg.table5.methods, cfg.table5.strategies, unseen),
        "caanet": "—" if caanet is None else model_label(*caanet),
        "caanet_choice": caanet_choice(strategy, ["-".join(r) for r in cfg.table5.rows], comparisons),
        "statistic": TABLE5_STATISTIC, "tests": family["tests"], "m": family["m"],
        "n_significant": family["n_significant"], "n_paper_significant": family["n_paper_significant"],
        "level": family["level"], "findings": findings(summary, family["tests"], BASELINE, caanet),
        "synthetic": SYNTHETIC if source == "embedded" else "",
    }
