"""Render Figs. 5-7 and the training curves (caanet.render.figures)."""
from caanet.render import figures
from caanet.workflow_support import logged

with logged(snakemake.log[0], "render_figures"):
    figures.render_all(
        cells_csv=snakemake.input.cells,
        preset=snakemake.params.preset,                              # Fig. 5: Table I's cells only
        fig6_evaluation=snakemake.input.fig6,
        fig7_evaluation=snakemake.input.fig7,
        fig7_attention_npz=snakemake.input.get("fig7_attention"),   # declared for attention models only
        metrics_csvs=snakemake.input.metrics,
        out_dir=snakemake.params.out_dir,
    )
