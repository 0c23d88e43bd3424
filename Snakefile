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


rule all:
    input:
        all_targets(),
    default_target: True
    localrule: True
