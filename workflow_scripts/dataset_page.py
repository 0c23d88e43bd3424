"""Render the summary page of one dataset's cache (caanet.render.dataset_page)."""
from caanet.render.dataset_page import render_dataset_page
from caanet.workflow_support import logged

with logged(snakemake.log[0], "dataset_page"):
    render_dataset_page(snakemake.input.cache, snakemake.output[0], title=f"Dataset {snakemake.wildcards.dataset}")
