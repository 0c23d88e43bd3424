"""Aggregate Table I over seeds and select the conditioning layer per row (caanet.grid)."""
from caanet import grid
from caanet.io import write_csv_atomic
from caanet.workflow_support import logged

with logged(snakemake.log[0], "aggregate_table1") as log:
    cells = grid.collect_cells(snakemake.input.evaluations)
    summary = grid.summarise_table(cells, "table1")
    layers = grid.select_layers(summary)
    write_csv_atomic(snakemake.output.table, summary)
    write_csv_atomic(snakemake.output.layers, grid.layers_frame(summary, layers))
    log.info("selected layers: %s", layers)
