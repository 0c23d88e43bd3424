"""The paper's one-tailed z-tests and paired McNemar tests (caanet.stats)."""
from caanet import grid, stats
from caanet.io import write_csv_atomic
from caanet.workflow_support import logged

with logged(snakemake.log[0], "run_stats") as log:
    comparisons = stats.paper_comparisons(snakemake.params.preset, grid.read_layers(snakemake.input.layers))
    df = stats.run_comparisons(comparisons, stats.predictions_loader(snakemake.params.results))
    write_csv_atomic(snakemake.output[0], df)
    log.info("%d comparisons", len(df))
