"""Train and evaluate one table cell for one seed (caanet.training.train_cell)."""
from pathlib import Path

from caanet.spec import CellSpec
from caanet.training import TrainConfig, train_cell
from caanet.workflow_support import logged

with logged(snakemake.log[0], "train_cell") as log:
    train_cell(
        snakemake.input.cache,
        CellSpec.from_dict(snakemake.params.spec),
        TrainConfig.from_dict(snakemake.params.training),
        Path(snakemake.output.evaluation).parent,
        threads=snakemake.threads,
        code_version=snakemake.params.code,
        log=log,
        **snakemake.params.options,
    )
