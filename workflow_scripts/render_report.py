"""Render the regenerated paper as HTML and LaTeX (caanet.render.report)."""
from caanet.render import report
from caanet.workflow_support import logged

with logged(snakemake.log[0], "render_report"):
    context = report.build_context(
        preset=snakemake.params.preset,
        summaries=snakemake.input.summaries,
        layers_csv=snakemake.input.layers,
        cells_csv=snakemake.input.cells,
        tables_dir=snakemake.input.tables,
        figures=snakemake.input.figures,
        stats_csv=snakemake.input.stats,
        claims_csv=snakemake.input.claims,
        complexity_csv=snakemake.input.complexity,
        benchmarks=snakemake.input.benchmarks,
    )
    report.render_report_html(context, snakemake.output.html)
    report.render_report_tex(context, snakemake.output.tex)
