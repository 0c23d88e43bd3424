# Stage 2b: the device-robustness methods of Table V (beyond the paper; caanet.methods). What a
# method fits on a dataset's TRAINING split (spectrum correction's per-device gains, the device
# impulse responses), then its derived feature cache (the corrected log-mels; the reference device's
# training clips convolved with each response). Training jobs of the method's cells read them
# (caanet.workflow_support.train_inputs). Params hold only the settings each stage reads.


rule fit_method:
    input:
        index=paths.AUDIO44K_INDEX,
        responses=lambda wildcards: ws.method_response_files(P, wildcards.method),
    output:
        paths.METHOD_FIT,
    wildcard_constraints:
        fhash="[0-9a-f]+",
        method=_names_regex(m.name for m in METHOD_REGISTRY if m.fit),
    params:
        features=lambda wildcards: ws.feature_params(P, wildcards.dataset, expect_hash=wildcards.fhash).to_dict(),
        settings=lambda wildcards: methods.stage_settings(P, wildcards.method, "fit"),
        reference_device=lambda wildcards: grid.reference_devices(P)[wildcards.dataset],
        devices=lambda wildcards: DATASETS[wildcards.dataset]["devices"],
        code=lambda wildcards: METHOD_CODE[wildcards.method],
    threads: P["resources"]["data"]["threads"]
    resources:
        mem_mb=resource("data", "mem_mb"),
        runtime=resource("data", "runtime"),
    log:
        paths.log("fit_method", "{dataset}-{fhash}/{method}"),
    benchmark:
        paths.benchmark("fit_method", "{dataset}-{fhash}/{method}")
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/fit_method.py"


rule build_method_features:
    input:
        index=paths.AUDIO44K_INDEX,
        fit=paths.METHOD_FIT,
    output:
        paths.METHOD_FEATURES,
    wildcard_constraints:
        fhash="[0-9a-f]+",
        method=_names_regex(m.name for m in METHOD_REGISTRY if m.features),
    params:
        features=lambda wildcards: ws.feature_params(P, wildcards.dataset, expect_hash=wildcards.fhash).to_dict(),
        settings=lambda wildcards: methods.stage_settings(P, wildcards.method, "features"),
        reference_device=lambda wildcards: grid.reference_devices(P)[wildcards.dataset],
        devices=lambda wildcards: DATASETS[wildcards.dataset]["devices"],
        scenes=lambda wildcards: ws.scene_labels(P, wildcards.dataset),
        code=lambda wildcards: METHOD_CODE[wildcards.method],
    threads: P["resources"]["data"]["threads"]
    resources:
        mem_mb=resource("data", "mem_mb"),
        runtime=resource("data", "runtime"),
    log:
        paths.log("build_method_features", "{dataset}-{fhash}/{method}"),
    benchmark:
        paths.benchmark("build_method_features", "{dataset}-{fhash}/{method}")
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/build_method_features.py"
