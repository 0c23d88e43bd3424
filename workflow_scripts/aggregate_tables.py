"""Aggregate Tables II-V over seeds, and every cell's per-device accuracy (caanet.grid)."""
from caanet import grid
from caanet.io import write_csv_atomic
from caanet.workflow_support import logged

with logged(snakemake.log[0], "aggregate_tables") as log:
    preset, layers = snakemake.params.preset, grid.read_layers(snakemake.input.layers)
    reference, unseen = grid.reference_devices(preset), grid.unseen_devices(preset)
    cells = grid.collect_cells(snakemake.input.evaluations)
    write_csv_atomic(snakemake.output.cells, cells)
    for table in ("table2", "table3", "table4", "table5"):
        table_cells = grid.filter_cells(cells, grid.table_cells(preset, table, layers))
        write_csv_atomic(snakemake.output[table], grid.summarise_table(
            table_cells, table, reference_device=reference, unseen_devices=unseen))
    log.info("aggregated %d cell results", len(cells))
