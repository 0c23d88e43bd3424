"""Build the HDF5 log-mel cache of one dataset (caanet.features)."""
from caanet.data.layout import read_index
from caanet.features import FeatureParams, build_cache
from caanet.workflow_support import logged

with logged(snakemake.log[0], "build_features") as log:
    build_cache(
        read_index(snakemake.input.index),
        snakemake.output[0],
        FeatureParams.from_dict(snakemake.params.features),
        dataset=snakemake.wildcards.dataset,
        scene_labels=snakemake.params.scenes,
        device_labels=snakemake.params.devices,
        n_jobs=snakemake.threads,
        log=log.info,
    )
