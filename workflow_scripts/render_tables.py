"""Render Tables I-IV as LaTeX and HTML beside the paper's values, with the λ-switch marks of each table's
multi-task cells (caanet.render.tables, caanet.render.switches), Table V (beyond the paper,
caanet.render.field) when the preset has it (its files come last in the outputs), and the models'
complexity (caanet.render.dcase_metrics)."""
import pandas as pd

from caanet import aggregate
from caanet.render import dcase_metrics, field, switches, tables
from caanet.workflow_support import logged

with logged(snakemake.log[0], "render_tables"):
    summaries = list(snakemake.input.summaries)
    n = len(summaries)
    cells = pd.read_csv(snakemake.input.cells, dtype={"device": str, "dataset": str, "cell_id": str})
    names = [tables.table_name_from_path(s, f"table{i + 1}") for i, s in enumerate(summaries)]
    marks = switches.marks_for_tables(cells, snakemake.params.preset, aggregate.read_layers(snakemake.input.layers), names)
    tables.render_all(summaries, tex_paths=snakemake.output.tex[:n], html_paths=snakemake.output.html[:n], marks=marks)
    for csv, tex, html in zip(snakemake.input.table5, snakemake.output.tex[n:], snakemake.output.html[n:]):
        field.render_files(csv, tex, html)
    dcase_metrics.render_complexity_files(snakemake.input.complexity, tex_path=snakemake.output.complexity_tex,
                                          html_path=snakemake.output.complexity_html)
