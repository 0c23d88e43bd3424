"""Aggregate Table I over seeds and select the conditioning layer per row (caanet.grid)."""
from caanet import grid
from caanet.io import write_csv_atomic
from caanet.workflow_support import logged

with logged(snakemake.log[0], "aggregate_table1") as log:
    summary = grid.summarise_table(grid.collect_cells(snakemake.input.evaluations), "table1")
    layers = grid.layers_table(summary)
    write_csv_atomic(snakemake.output.table, summary)
    write_csv_atomic(snakemake.output.layers, layers)
    log.info("selected layers:\n%s", layers.to_string(index=False))
