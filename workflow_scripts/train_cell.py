"""Train and evaluate one table cell for one seed (caanet.training.train_cell)."""
from pathlib import Path

from caanet.rerun import job_preset
from caanet.spec import CellSpec
from caanet.training import TrainConfig, train_cell
from caanet.workflow_support import logged, train_settings

with logged(snakemake.log[0], "train_cell") as log:
    train_cell(
        snakemake.input.cache,
        CellSpec.from_dict(snakemake.params.spec),
        # params.training leaves out what changes nothing computed (caanet.rerun); the job uses all of it
        TrainConfig.from_dict(train_settings(job_preset(snakemake.config))),
        Path(snakemake.output.evaluation).parent,
        threads=snakemake.threads,
        code_version=snakemake.params.code,
        log=log,
        **snakemake.params.options,
    )
