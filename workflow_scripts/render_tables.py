"""Render Tables I-IV as LaTeX and HTML beside the paper's values (caanet.render.tables), and Table V
(beyond the paper, caanet.render.field) when the preset has it: its files come last in the outputs."""
from caanet.render import field, tables
from caanet.workflow_support import logged

with logged(snakemake.log[0], "render_tables"):
    n = len(snakemake.input.summaries)
    tables.render_all(
        list(snakemake.input.summaries),
        tex_paths=snakemake.output.tex[:n],
        html_paths=snakemake.output.html[:n],
    )
    for csv, tex, html in zip(snakemake.input.table5, snakemake.output.tex[n:], snakemake.output.html[n:]):
        field.render_files(csv, tex, html)
