# Stage 2: the paper's log-mel features (Sec. IV-B) in one HDF5 cache per dataset and parameter
# set (the parameters' hash is in the file name, so a change makes a new cache, never a mix),
# and a page summarising it.


rule build_features:
    input:
        index=paths.AUDIO44K_INDEX,
    output:
        paths.FEATURES,
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
        paths.log("build_features", "{dataset}-{fhash}"),
    benchmark:
        paths.benchmark("build_features", "{dataset}-{fhash}")
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/build_features.py"


rule dataset_page:
    input:
        cache=cache_input,
    output:
        report(
            paths.DATASET_PAGE,
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
        paths.log("dataset_page", "{dataset}"),
    benchmark:
        paths.benchmark("dataset_page", "{dataset}")
    localrule: True
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/dataset_page.py"
