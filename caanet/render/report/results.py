"""The results section: Tables I-III as rendered (paper layout), Table I's layer selection, and each
table's own layer-selection note."""

from __future__ import annotations

from caanet.render import tables as T
from caanet.render.report.fmt import _fmt, table_name, table_title
from caanet.render.report.inputs import ReportInputs, _find
from caanet.render.switches import switch_marks

def layer_note(table: str, inp: ReportInputs) -> str:
    """How ``table``'s conditional cells got their conditioning layer, in that table's words ("" for
    Table I, which selects it): on Table I's test accuracies (the paper's method, a winner's curse in
    favour of the conditional strategies) or on a validation split (leak-free)."""
    if table == "table1":
        return ""
    name = table_name(table)
    on = {r.get("selected_on", "test") for r in inp.layers} or {(inp.preset.get("grid") or {}).get("layer_selection",
                                                                                                   "test")}
    source = (inp.preset.get("tables") or {}).get("table1", {}).get("dataset", "Table I's dataset")
    if "test" in on:
        return (f"{name}'s conditional strategies use, per row, the conditioning layer Table I selected as the "
                f"best of its four TEST accuracies on {source} (the paper's method). Choosing the best of four on "
                f"the test set biases them upwards (a winner's curse), so {name}'s comparisons with the "
                "single-device and joint baselines, and its tests, favour the conditional strategies. grid.layer_selection: "
                "validation selects the layer on a validation split instead.")
    return (f"{name}'s conditional strategies use, per row, the conditioning layer Table I selected on a "
            f"validation split held out of its training data on {source} (leak-free; the paper selected on the "
            "test set).")


def table_entry(inp: ReportInputs, key: str) -> dict:
    """One rendered table: key, title, dataset, its HTML and LaTeX (the rendered files where given,
    else rendered from the summary with its λ-switch marks), its layer note, and whether it is wide."""
    summary = inp.summaries[key]
    html_file, tex_file = _find(inp.rendered, f"{key}.html"), _find(inp.rendered, f"{key}.tex")
    ds = summary["dataset"].iloc[0] if "dataset" in summary.columns and len(summary) else "?"
    marks, footnote = switch_marks(inp.table_cells.get(key)) if key != "table1" else ({}, "")
    caption = T.table_caption(key, summary)
    return {
        "key": key, "title": table_title(key, summary), "dataset": ds,
        "html": html_file.read_text(encoding="utf-8") if html_file and html_file.exists()
        else T.render_html(summary, key, caption=caption, marks=marks, footnote=footnote),
        "latex": tex_file.read_text(encoding="utf-8") if tex_file and tex_file.exists()
        else T.render_latex(summary, key, caption=caption, label=f"tab:{key}", marks=marks, footnote=footnote),
        "wide": key != "table1",
        "layer_note": layer_note(key, inp),
        "devices": T.devices_text(T.summary_devices(summary)),
    }


def layer_records(layers: list[dict]) -> list[dict]:
    """``layers.csv``'s rows for the report: row name, layer, its accuracy and what it was selected on."""
    return [{"row": f"{T.TOPOLOGY_NAMES.get(r['topology'], r['topology'])} + "
                    f"{T.POOLING_NAMES.get(r['pooling'], r['pooling'])}",
             "layer": int(r["cond_layer"]), "acc": _fmt(r.get("acc_mean")),
             "on": r.get("selected_on", "test")} for r in layers]


def build(inp: ReportInputs) -> dict:
    return {
        "tables": [table_entry(inp, key) for key in inp.summaries if key != "table4"],
        "layers": layer_records(inp.layers),
        "reference_devices": ", ".join(f"{k}: {v}" for k, v in sorted(inp.reference.items())),
    }
