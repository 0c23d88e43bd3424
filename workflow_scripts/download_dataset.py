"""Download, verify and extract a DCASE development set (caanet.data.download)."""
from caanet.data.download import fetch_dataset
from caanet.io import write_json_atomic
from caanet.workflow_support import logged

with logged(snakemake.log[0], "download_dataset") as log:
    root = fetch_dataset(snakemake.params.remote, snakemake.params.dest, base_url=snakemake.params.base_url,
                         keep_archives=snakemake.params.keep_archives)
    write_json_atomic(snakemake.output[0], {"dataset": snakemake.wildcards.dataset, "root": str(root)})
    log.info("dataset root: %s", root)
