"""Fit a device-robustness method on a dataset's training split (its registered ``fit`` hook, caanet.methods)."""
from caanet.data.layout import read_index
from caanet.features import FeatureParams
from caanet.methods import method_settings
from caanet.vocab import METHOD_REGISTRY
from caanet.workflow_support import logged

with logged(snakemake.log[0], "fit_method") as log:
    name = snakemake.wildcards.method
    METHOD_REGISTRY[name].load("fit")(
        read_index(snakemake.input.index),
        FeatureParams.from_dict(snakemake.params.features),
        method_settings(name, snakemake.params.settings),
        reference_device=snakemake.params.reference_device,
        devices=snakemake.params.devices,
        out_path=snakemake.output[0],
        n_jobs=snakemake.threads,
        log=log.info,
    )
