"""Render Tables I-IV as LaTeX and HTML beside the paper's values (caanet.render.tables)."""
from caanet.render import tables
from caanet.workflow_support import logged

with logged(snakemake.log[0], "render_tables"):
    tables.render_all(
        list(snakemake.input.summaries),
        tex_paths=snakemake.output.tex,
        html_paths=snakemake.output.html,
    )
