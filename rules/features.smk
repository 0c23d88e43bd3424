# Stage 2: the paper's log-mel features (Sec. IV-B) in one HDF5 cache per dataset and parameter
# set (the parameters' hash is in the file name, so a change makes a new cache, never a mix),
# and a page summarising it.


rule build_features:
    input:
        index=f"{RESULTS}/audio44k/{{dataset}}/index.csv",
    output:
        f"{RESULTS}/features/{{dataset}}-{{fhash}}.h5",
    wildcard_constraints:
        fhash="[0-9a-f]+",
    params:
        features=lambda wildcards: ws.feature_params(P, wildcards.dataset, expect_hash=wildcards.fhash).to_dict(),
        devices=lambda wildcards: DATASETS[wildcards.dataset]["devices"],
        scenes=lambda wildcards: ws.scene_labels(P, wildcards.dataset),
        code=CODE["features"],
    threads: P["resources"]["data"]["threads"]
    resources:
        mem_mb=resource("data", "mem_mb"),
        runtime=resource("data", "runtime"),
    log:
        f"{LOGS}/build_features/{{dataset}}-{{fhash}}.log",
    benchmark:
        f"{BENCH}/build_features/{{dataset}}-{{fhash}}.tsv"
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/build_features.py"


rule dataset_page:
    input:
        cache=cache_input,
    output:
        report(
            f"{REPORTS}/data/{{dataset}}.html",
            caption="report/dataset_page.rst",
            category="Data",
        ),
    params:
        code=CODE["render"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        f"{LOGS}/dataset_page/{{dataset}}.log",
    benchmark:
        f"{BENCH}/dataset_page/{{dataset}}.tsv"
    localrule: True
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/dataset_page.py"
