"""Render Tables I-IV as LaTeX and HTML beside the paper's values, with the λ-switch marks of each table's
multi-task cells (caanet.render.tables, caanet.render.switches), and the models' complexity
(caanet.render.dcase_metrics)."""
import pandas as pd

from caanet import grid
from caanet.render import dcase_metrics, switches, tables
from caanet.workflow_support import logged

with logged(snakemake.log[0], "render_tables"):
    summaries = list(snakemake.input.summaries)
    cells = pd.read_csv(snakemake.input.cells, dtype={"device": str, "dataset": str, "cell_id": str})
    names = [tables.table_name_from_path(s, f"table{i + 1}") for i, s in enumerate(summaries)]
    marks = switches.marks_for_tables(cells, snakemake.params.preset, grid.read_layers(snakemake.input.layers), names)
    tables.render_all(summaries, tex_paths=snakemake.output.tex, html_paths=snakemake.output.html, marks=marks)
    dcase_metrics.render_complexity_files(snakemake.input.complexity, tex_path=snakemake.output.complexity_tex,
                                          html_path=snakemake.output.complexity_html)
