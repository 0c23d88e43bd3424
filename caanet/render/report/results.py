"""The results section: Tables I-III as rendered (paper layout), and the layers Table I selected."""

from __future__ import annotations

from caanet.render import tables as T
from caanet.render.report.fmt import TABLE_TITLES, _fmt
from caanet.render.report.inputs import ReportInputs, _find


def table_entry(inp: ReportInputs, key: str) -> dict:
    """One rendered table: key, title, dataset, its HTML and LaTeX (the rendered files where given,
    else rendered from the summary), and whether it is wide."""
    summary = inp.summaries[key]
    html_file, tex_file = _find(inp.rendered, f"{key}.html"), _find(inp.rendered, f"{key}.tex")
    ds = summary["dataset"].iloc[0] if "dataset" in summary.columns and len(summary) else "?"
    return {
        "key": key, "title": TABLE_TITLES[key], "dataset": ds,
        "html": html_file.read_text(encoding="utf-8") if html_file and html_file.exists()
        else T.render_html(summary, key, caption=T.table_caption(key, summary)),
        "latex": tex_file.read_text(encoding="utf-8") if tex_file and tex_file.exists()
        else T.render_latex(summary, key, caption=T.table_caption(key, summary), label=f"tab:{key}"),
        "wide": key != "table1",
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
