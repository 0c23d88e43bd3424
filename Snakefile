# caanet: CAA-Net (Ren et al., IEEE TMM 2020) from raw audio to the regenerated paper.
# `snakemake --cores 8 all`; presets and datasets in config.yaml; the stages in rules/*.smk;
# all logic in the caanet package. docs/design.md maps each stage to its module.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


# rules/common.smk validates the config against rules/schemas/config.schema.yaml first
# (caanet.config.check_config: every error names the key path and the value).
include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/features.smk"
include: "rules/methods.smk"
include: "rules/train.smk"
include: "rules/tables.smk"
include: "rules/report.smk"


# Snakemake (>= 7.7) rebuilds a deleted intermediate file only when a job after it has to run, so a
# table deleted by hand would stay deleted. `all` therefore also asks for each file of the stages a
# reader opens (tables, statistics, rendered tables, figures, the report) that is missing after its
# rule ran; asked for in every run, they break the SLURM postprocess group (snakemake#4202,
# `workflow_support.deleted_outputs`). Caches and cell folders stay intermediates.
READER_RULES = [
    rules.aggregate_table1,
    rules.aggregate_tables,
    rules.run_stats,
    rules.render_tables,
    rules.render_figures,
    rules.render_report,
]


rule all:
    input:
        all_targets(),
        [ws.deleted_outputs(r.output, r.benchmark) for r in READER_RULES],
    default_target: True
    localrule: True
