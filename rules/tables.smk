# Stage 4 (the checkpoints stay out of the `postprocess` group: a cluster group job holding a
# checkpoint would run the jobs it adds, i.e. the training of Tables II/III, inside itself).
# Aggregate the cells into Tables I-V (mean, std and 95% CI over seeds; table4.csv and table5.csv have
# only their header when the preset has no tables.table4 / tables.table5) and run the paper's statistics and Table IV's tests. Table I is a checkpoint: the layer it selects per row decides which
# conditional cells Tables II and III train, so `snakemake -n` plans them once Table I exists.


checkpoint aggregate_table1:
    input:
        evaluations=cell_files(TABLE1_CELLS, "evaluation"),
    output:
        table=paths.TABLE.format(n=1),
        layers=paths.LAYERS,
    params:
        reference_device=grid.reference_devices(P),
        layer_selection=grid.grid_config(P).layer_selection,
        code=CODE["stats"],
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        paths.log("aggregate_table1"),
    benchmark:
        paths.benchmark("aggregate_table1")
    localrule: True
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/aggregate_table1.py"


checkpoint aggregate_tables:
    input:
        layers=paths.LAYERS,
        evaluations=lambda wildcards: cell_files(TABLE1_CELLS + strategy_table_specs(), "evaluation"),
    output:
        table2=paths.TABLE.format(n=2),
        table3=paths.TABLE.format(n=3),
        table4=paths.TABLE.format(n=4),
        table5=paths.TABLE.format(n=5),
        cells=paths.CELLS,
        complexity=paths.COMPLEXITY,
    params:
        preset=rerun.preset_params(P),
        code=CODE["stats"],
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        paths.log("aggregate_tables"),
    benchmark:
        paths.benchmark("aggregate_tables")
    localrule: True
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/aggregate_tables.py"


rule run_stats:
    input:
        layers=paths.LAYERS,
        predictions=lambda wildcards: cell_files(strategy_table_specs(), "predictions"),
    output:
        comparisons=paths.COMPARISONS,
        claims=paths.CLAIMS,
    params:
        preset=rerun.preset_params(P),
        code=CODE["stats"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        paths.log("run_stats"),
    benchmark:
        paths.benchmark("run_stats")
    localrule: True
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/run_stats.py"
