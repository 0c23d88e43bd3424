"""Aggregate Tables II-V over seeds, every cell's per-device accuracy and log loss (caanet.grid), and
DCASE's complexity counts per distinct model (caanet.complexity_table)."""
from caanet import complexity_table, grid
from caanet.io import write_csv_atomic
from caanet.workflow_support import logged

with logged(snakemake.log[0], "aggregate_tables") as log:
    preset, layers = snakemake.params.preset, grid.read_layers(snakemake.input.layers)
    reference, unseen = grid.reference_devices(preset), grid.unseen_devices(preset)
    cells = grid.collect_cells(snakemake.input.evaluations)
    write_csv_atomic(snakemake.output.cells, cells)
    write_csv_atomic(snakemake.output.complexity, complexity_table.complexity_table(snakemake.input.evaluations))
    for table in ("table2", "table3", "table4", "table5"):
        table_cells = grid.filter_cells(cells, grid.table_cells(preset, table, layers))
        write_csv_atomic(snakemake.output[table], grid.summarise_table(
            table_cells, table, reference_device=reference, unseen_devices=unseen))
    log.info("aggregated %d cell results", len(cells))
