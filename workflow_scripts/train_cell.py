"""Train and evaluate one table cell for one seed (caanet.training.train_cell).

On the workflow's training server when a local run started one (caanet.trainserver), else here."""
import sys
from pathlib import Path

from caanet.rerun import job_preset
from caanet.trainserver import TrainJob, run
from caanet.workflow_support import train_settings

status = run(TrainJob(
    cache=snakemake.input.cache,
    spec=snakemake.params.spec,
    # params.training leaves out what changes nothing computed (caanet.rerun); the job uses all of it
    settings=train_settings(job_preset(snakemake.config)),
    out_dir=str(Path(snakemake.output.evaluation).parent),
    threads=snakemake.threads,
    code=snakemake.params.code,
    log=snakemake.log[0],
    # a method's derived cache drawn from beside the plain one (dir_augment) is a declared input; its
    # code's hash joins the job's code version (a checkpoint of other method code is discarded)
    options={**snakemake.params.options,
             **({"method_cache": snakemake.input.method_cache} if "method_cache" in snakemake.input.keys() else {}),
             **({"method_code": snakemake.params.method_code} if snakemake.params.method_code else {})},
))
if status:
    sys.exit(status)
