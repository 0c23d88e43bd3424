"""Aggregate Table I over seeds and select the conditioning layer per row (caanet.aggregate)."""
from caanet import aggregate
from caanet.io import write_csv_atomic
from caanet.workflow_support import logged

with logged(snakemake.log[0], "aggregate_table1") as log:
    cells = aggregate.collect_cells(snakemake.input.evaluations)
    summary = aggregate.summarise_table(cells, "table1", reference_device=snakemake.params.reference_device)
    layers = aggregate.select_layers_table(cells, summary, snakemake.params.layer_selection)
    write_csv_atomic(snakemake.output.table, summary)
    write_csv_atomic(snakemake.output.layers, layers)
    log.info("selected layers (on %s):\n%s", snakemake.params.layer_selection, layers.to_string(index=False))
