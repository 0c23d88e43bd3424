"""Aggregate Tables II-V over seeds, every cell's per-device accuracy and log loss (caanet.aggregate), and
DCASE's complexity counts per distinct model (caanet.complexity_table)."""
from caanet import aggregate, complexity_table, grid
from caanet.io import write_csv_atomic
from caanet.workflow_support import logged

with logged(snakemake.log[0], "aggregate_tables") as log:
    preset, layers = snakemake.params.preset, aggregate.read_layers(snakemake.input.layers)
    reference, unseen = grid.reference_devices(preset), grid.unseen_devices(preset)
    cells = aggregate.collect_cells(snakemake.input.evaluations)
    write_csv_atomic(snakemake.output.cells, cells)
    write_csv_atomic(snakemake.output.complexity, complexity_table.complexity_table(snakemake.input.evaluations))
    for table in ("table2", "table3", "table4", "table5"):
        write_csv_atomic(snakemake.output[table], aggregate.summarise_table(
            aggregate.table_cells_frame(cells, preset, table, layers), table, reference_device=reference, unseen_devices=unseen))
    log.info("aggregated %d cell results", len(cells))
