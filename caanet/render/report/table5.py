"""Table V's section (beyond the paper): CAA-Net and the field's device-robustness methods
(:func:`caanet.render.field.table5_section`: the table, log loss and complexity per model, the methods with
their citations, the family ``table5`` of tests and a paragraph computed from the numbers)."""

from __future__ import annotations

from caanet.render.report.inputs import ReportInputs
from caanet.render.report.results import layer_note


def build(inp: ReportInputs) -> dict:
    from caanet.complexity_table import read_complexity_table
    from caanet.render import field

    complexity = read_complexity_table(inp.complexity) if inp.complexity is not None and inp.complexity.exists() else None
    section = field.table5_section(inp.preset, inp.table5, inp.comparisons, complexity)
    if section is not None:
        section["layer_note"] = layer_note("table5", inp)
    return {"table5": section}
