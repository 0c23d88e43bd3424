"""Render Tables I-IV as LaTeX and HTML beside the paper's values (caanet.render.tables), and the
models' complexity (caanet.render.dcase_metrics)."""
from caanet.render import dcase_metrics, tables
from caanet.workflow_support import logged

with logged(snakemake.log[0], "render_tables"):
    tables.render_all(
        list(snakemake.input.summaries),
        tex_paths=snakemake.output.tex,
        html_paths=snakemake.output.html,
    )
    dcase_metrics.render_complexity_files(snakemake.input.complexity, tex_path=snakemake.output.complexity_tex,
                                          html_path=snakemake.output.complexity_html)
