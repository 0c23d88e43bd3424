# Stage 1: the dataset in the real DCASE layout (generated, downloaded, or a local folder),
# then a validated clip index, then every clip at 44.1 kHz mono.


rule generate_embedded:
    output:
        directory(f"{RESULTS}/data/{{dataset}}"),
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
        f"{LOGS}/generate_embedded/{{dataset}}.log",
    benchmark:
        f"{BENCH}/generate_embedded/{{dataset}}.tsv"
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/generate_embedded.py"


rule download_dataset:
    # Archives and the extracted set live under results/zenodo/{dataset}/, outside the declared
    # output, so a failed or killed job keeps its partial downloads and resumes them.
    output:
        f"{RESULTS}/zenodo/{{dataset}}/dataset.json",
    wildcard_constraints:
        dataset=_names_regex(DATASETS_BY_SOURCE["zenodo"]),
    params:
        # the mirror (base_url) and keep_archives are read by the job from the config: the archives
        # are verified against the catalogue, so neither changes what is extracted (caanet.rerun)
        remote=lambda wildcards: DATASETS[wildcards.dataset]["remote"],
        dest=lambda wildcards: f"{RESULTS}/zenodo/{wildcards.dataset}",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=resource("data", "runtime"),
    retries: 2
    log:
        f"{LOGS}/download_dataset/{{dataset}}.log",
    benchmark:
        f"{BENCH}/download_dataset/{{dataset}}.tsv"
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/download_dataset.py"


rule index_dataset:
    input:
        root=dataset_root,
    output:
        f"{RESULTS}/index/{{dataset}}.csv",
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
        f"{LOGS}/index_dataset/{{dataset}}.log",
    benchmark:
        f"{BENCH}/index_dataset/{{dataset}}.tsv"
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/index_dataset.py"


rule resample_audio:
    input:
        index=f"{RESULTS}/index/{{dataset}}.csv",
    output:
        index=f"{RESULTS}/audio44k/{{dataset}}/index.csv",
    params:
        out_dir=lambda wildcards: f"{RESULTS}/audio44k/{wildcards.dataset}",
        sample_rate=lambda wildcards: ws.feature_params(P, wildcards.dataset).sample_rate,
        code=CODE["features"],
    threads: P["resources"]["data"]["threads"]
    resources:
        mem_mb=resource("data", "mem_mb"),
        runtime=resource("data", "runtime"),
    log:
        f"{LOGS}/resample_audio/{{dataset}}.log",
    benchmark:
        f"{BENCH}/resample_audio/{{dataset}}.tsv"
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/resample_audio.py"
