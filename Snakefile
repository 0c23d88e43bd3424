# caanet: CAA-Net (Ren et al., IEEE TMM 2020) from raw audio to the regenerated paper.
# `snakemake --cores 8 all`; presets and datasets in config.yaml; the stages in rules/*.smk;
# all logic in the caanet package. docs/design.md maps each stage to its module.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


# set_default=False: the schema's defaults document the code's (equal, tested); filled in per
# preset they would override what a preset inherits from `base`.
validate(config, "rules/schemas/config.schema.yaml", set_default=False)


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/features.smk"
include: "rules/train.smk"
include: "rules/tables.smk"
include: "rules/report.smk"


rule all:
    input:
        all_targets(),
    default_target: True
    localrule: True
