"""Generate an embedded synthetic dataset in the real DCASE layout (caanet.data.synth)."""
from caanet.data.synth import generate_dataset
from caanet.workflow_support import logged, synth_config

with logged(snakemake.log[0], "generate_embedded") as log:
    cfg = synth_config(snakemake.params.settings, snakemake.wildcards.dataset)
    summary = generate_dataset(snakemake.output[0], cfg, n_jobs=snakemake.threads)
    log.info("generated %s: %s", snakemake.output[0], summary)
