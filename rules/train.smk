# Stage 3: one training job per table cell and seed (caanet.training.train_cell). The cell id in
# the path is parsed back into a CellSpec (caanet.spec), so any cell of the grid, or one a user
# names by hand, is a valid target. Every cell writes attention.npz, empty for models without an
# attention pooling (no optional outputs in Snakemake; caanet/paths.py).


rule train_cell:
    input:
        unpack(train_inputs),
    output:
        evaluation=paths.cell_file("evaluation"),
        predictions=paths.cell_file("predictions"),
        metrics=paths.cell_file("metrics"),
        model=paths.cell_file("model"),
        attention=paths.cell_file("attention"),
    params:
        spec=lambda wildcards: ws.cell_spec(P, wildcards.dataset, wildcards.cell, wildcards.seed).to_dict(),
        training=rerun.training_params(ws.train_settings(P)),
        options=lambda wildcards: ws.train_options(P, wildcards.dataset, wildcards.cell, wildcards.seed),
        code=CODE["train"],
        method_code=method_code,
    threads: P["resources"]["train"]["threads"]
    resources:
        mem_mb=resource("train", "mem_mb"),
        runtime=resource("train", "runtime"),
        gpu=P["resources"]["train"]["gpu"],
        gpu_share=gpu_share,
        gres=gpu_gres,
    log:
        paths.log("train_cell", paths.CELL_KEY),
    benchmark:
        paths.benchmark("train_cell", paths.CELL_KEY)
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/train_cell.py"


# Local runs: one pre-forked training server for every train_cell job of this run, stopped with it
# (caanet.trainserver; config key train_server). Jobs find it through $CAANET_TRAIN_SERVER.
TRAIN_SERVER = {}


onstart:
    TRAIN_SERVER["proc"] = trainserver.start_for_workflow(
        enabled=config.get("train_server", trainserver.ENABLED_BY_DEFAULT),
        local_exec=workflow.local_exec,
        deployment=",".join(sorted(m.name for m in workflow.deployment_settings.deployment_method)),
        code=CODE["train"],
        log=paths.log("train_server"),
    )


onsuccess:
    if TRAIN_SERVER.get("proc"):
        trainserver.stop_server(TRAIN_SERVER["proc"])


onerror:
    if TRAIN_SERVER.get("proc"):
        trainserver.stop_server(TRAIN_SERVER["proc"])
