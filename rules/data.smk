# Stage 1: the dataset in the real DCASE layout (generated, downloaded, or a local folder),
# then a validated clip index, then every clip at 44.1 kHz mono.


rule generate_embedded:
    output:
        directory(paths.DATA),
    wildcard_constraints:
        dataset=_names_regex(DATASETS_BY_SOURCE["embedded"]),
    params:
        settings=lambda wildcards: ws.synth_settings(P, wildcards.dataset),
        code=CODE["data"],
    threads: P["resources"]["data"]["threads"]
    resources:
        mem_mb=resource("data", "mem_mb"),
        runtime=resource("data", "runtime"),
    log:
        paths.log("generate_embedded", "{dataset}"),
    benchmark:
        paths.benchmark("generate_embedded", "{dataset}")
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/generate_embedded.py"


rule download_dataset:
    # Archives and the extracted set live in paths.ZENODO_DIR, outside the declared
    # output, so a failed or killed job keeps its partial downloads and resumes them.
    output:
        paths.ZENODO,
    wildcard_constraints:
        dataset=_names_regex(DATASETS_BY_SOURCE["zenodo"]),
    params:
        # the mirror (base_url) and keep_archives are read by the job from the config: the archives
        # are verified against the catalogue, so neither changes what is extracted (caanet.rerun)
        remote=lambda wildcards: DATASETS[wildcards.dataset]["remote"],
        dest=lambda wildcards: paths.ZENODO_DIR.format(dataset=wildcards.dataset),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=resource("data", "runtime"),
    retries: 2
    log:
        paths.log("download_dataset", "{dataset}"),
    benchmark:
        paths.benchmark("download_dataset", "{dataset}")
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/download_dataset.py"


rule index_dataset:
    input:
        root=dataset_root,
    output:
        paths.INDEX,
    params:
        devices=lambda wildcards: DATASETS[wildcards.dataset]["devices"],
        unseen_devices=lambda wildcards: DATASETS[wildcards.dataset].get("unseen_devices") or [],
        scenes=lambda wildcards: ws.scene_labels(P, wildcards.dataset),
        code=CODE["data"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        paths.log("index_dataset", "{dataset}"),
    benchmark:
        paths.benchmark("index_dataset", "{dataset}")
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/index_dataset.py"


rule resample_audio:
    input:
        index=paths.INDEX,
    output:
        index=paths.AUDIO44K_INDEX,
    params:
        out_dir=lambda wildcards: paths.AUDIO44K_DIR.format(dataset=wildcards.dataset),
        sample_rate=lambda wildcards: ws.feature_params(P, wildcards.dataset).sample_rate,
        code=CODE["features"],
    threads: P["resources"]["data"]["threads"]
    resources:
        mem_mb=resource("data", "mem_mb"),
        runtime=resource("data", "runtime"),
    log:
        paths.log("resample_audio", "{dataset}"),
    benchmark:
        paths.benchmark("resample_audio", "{dataset}")
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/resample_audio.py"
