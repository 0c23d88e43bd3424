"""Download, verify and extract a DCASE development set (caanet.data.download)."""
from caanet.data.download import fetch_dataset
from caanet.io import write_json_atomic
from caanet.rerun import job_preset
from caanet.workflow_support import logged

with logged(snakemake.log[0], "download_dataset") as log:
    dataset = job_preset(snakemake.config)["datasets"][snakemake.wildcards.dataset]
    root = fetch_dataset(snakemake.params.remote, snakemake.params.dest, base_url=dataset.get("base_url"),
                         keep_archives=dataset.get("keep_archives", True))
    write_json_atomic(snakemake.output[0], {"dataset": snakemake.wildcards.dataset, "root": str(root)})
    log.info("dataset root: %s", root)
