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
# table deleted by hand would stay deleted. `all` therefore asks for every file of the stages a reader
# opens: statistics, rendered tables, figures and the report (each rule's whole output, so a file
# added to one is asked for too); caches and cell folders stay intermediates. The two checkpoints'
# outputs are asked for only when one was deleted after the checkpoint ran
# (`workflow_support.deleted_checkpoint_outputs` says why not always: snakemake#4202 under SLURM).
rule all:
    input:
        all_targets(),
        ws.deleted_checkpoint_outputs(rules.aggregate_table1.output, rules.aggregate_table1.benchmark),
        ws.deleted_checkpoint_outputs(rules.aggregate_tables.output, rules.aggregate_tables.benchmark),
        rules.run_stats.output,
        rules.render_tables.output,
        rules.render_figures.output,
        rules.render_report.output,
    default_target: True
    localrule: True
