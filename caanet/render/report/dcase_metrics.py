"""The report's "DCASE's metrics" section (beyond the paper): log loss per strategy table and the
models' complexity against the challenge's limits (:func:`caanet.render.dcase_metrics.dcase_section`)."""

from __future__ import annotations

from caanet.render.dcase_metrics import dcase_section


def build(inp) -> dict:
    """``{"dcase_metrics": ...}`` from the table summaries and ``complexity.csv`` (None: nothing to show)."""
    return {"dcase_metrics": dcase_section(inp.summaries, inp.complexity)}
