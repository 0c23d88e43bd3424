"""Read and validate a dataset in the real layout into the clip index (caanet.data.layout)."""
from caanet.data.layout import read_dataset, write_index
from caanet.devices import check_unseen_devices
from caanet.workflow_support import dataset_root_of, logged

with logged(snakemake.log[0], "index_dataset") as log:
    root = dataset_root_of(snakemake.input.root)
    df = read_dataset(root, scene_labels=snakemake.params.scenes, device_labels=snakemake.params.devices)
    check_unseen_devices(df, snakemake.params.unseen_devices, where=str(root))
    write_index(df, snakemake.output[0])
    log.info("%s: %d clips; per device and split:\n%s", root, len(df), df.groupby(["device", "split"]).size().to_string())
