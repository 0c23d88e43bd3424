"""Build a device-robustness method's derived feature cache (its registered ``features`` hook, caanet.methods)."""
from caanet.data.layout import read_index
from caanet.features import FeatureParams
from caanet.methods import method_settings
from caanet.vocab import METHOD_REGISTRY
from caanet.workflow_support import logged

with logged(snakemake.log[0], "build_method_features") as log:
    name = snakemake.wildcards.method
    METHOD_REGISTRY[name].load("features")(
        read_index(snakemake.input.index),
        FeatureParams.from_dict(snakemake.params.features),
        method_settings(name, snakemake.params.settings),
        snakemake.input.fit,
        snakemake.output[0],
        dataset=snakemake.wildcards.dataset,
        scene_labels=snakemake.params.scenes,
        device_labels=snakemake.params.devices,
        reference_device=snakemake.params.reference_device,
        n_jobs=snakemake.threads,
        log=log.info,
    )
