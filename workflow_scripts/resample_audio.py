"""Bring every clip to 44.1 kHz mono, converting only the files that need it (caanet.audio)."""
from caanet.audio import prepare_audio
from caanet.data.layout import read_index, write_index
from caanet.workflow_support import logged

with logged(snakemake.log[0], "resample_audio") as log:
    df = prepare_audio(
        read_index(snakemake.input.index),
        snakemake.params.out_dir,
        sample_rate=snakemake.params.sample_rate,
        n_jobs=snakemake.threads,
        log=log.info,
    )
    write_index(df, snakemake.output.index)
