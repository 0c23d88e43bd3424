# Stage 4 (the checkpoints stay out of the `postprocess` group: a cluster group job holding a
# checkpoint would run the jobs it adds, i.e. the training of Tables II/III, inside itself).
# Aggregate the cells into Tables I-IV (mean, std and 95% CI over seeds; table4.csv has only its
# header when the preset has no tables.table4) and run the paper's statistics and Table IV's tests. Table I is a checkpoint: the layer it selects per row decides which
# conditional cells Tables II and III train, so `snakemake -n` plans them once Table I exists.


checkpoint aggregate_table1:
    input:
        evaluations=cell_files(TABLE1_CELLS, "evaluation.json"),
    output:
        table=f"{RESULTS}/tables/table1.csv",
        layers=f"{RESULTS}/tables/layers.csv",
    params:
        reference_device=grid.reference_devices(P),
        layer_selection=grid.grid_config(P).layer_selection,
        code=CODE["stats"],
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        f"{LOGS}/aggregate_table1.log",
    benchmark:
        f"{BENCH}/aggregate_table1.tsv"
    localrule: True
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/aggregate_table1.py"


checkpoint aggregate_tables:
    input:
        layers=f"{RESULTS}/tables/layers.csv",
        evaluations=lambda wildcards: cell_files(TABLE1_CELLS + strategy_table_specs(), "evaluation.json"),
    output:
        table2=f"{RESULTS}/tables/table2.csv",
        table3=f"{RESULTS}/tables/table3.csv",
        table4=f"{RESULTS}/tables/table4.csv",
        cells=f"{RESULTS}/tables/cells.csv",
    params:
        preset=rerun.preset_params(P),
        code=CODE["stats"],
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        f"{LOGS}/aggregate_tables.log",
    benchmark:
        f"{BENCH}/aggregate_tables.tsv"
    localrule: True
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/aggregate_tables.py"


rule run_stats:
    input:
        layers=f"{RESULTS}/tables/layers.csv",
        predictions=lambda wildcards: cell_files(strategy_table_specs(), "predictions.csv"),
    output:
        comparisons=f"{RESULTS}/stats/comparisons.csv",
        claims=f"{RESULTS}/stats/claims.csv",
    params:
        preset=rerun.preset_params(P),
        results=lambda wildcards, input: Path(input.layers).parent.parent,
        code=CODE["stats"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        f"{LOGS}/run_stats.log",
    benchmark:
        f"{BENCH}/run_stats.tsv"
    localrule: True
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/run_stats.py"
