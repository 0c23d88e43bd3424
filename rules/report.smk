# Stage 5: rendering only (caanet.render). Nothing here trains or aggregates, so restyling a
# table, a figure or a template reruns these rules and nothing upstream.


rule render_tables:
    input:
        summaries=expand(f"{RESULTS}/tables/table{{n}}.csv", n=RENDERED_TABLES),
    output:
        tex=expand(f"{REPORTS}/tables/table{{n}}.tex", n=RENDERED_TABLES),
        html=report(
            expand(f"{REPORTS}/tables/table{{n}}.html", n=RENDERED_TABLES),
            caption="report/tables.rst",
            category="Tables",
        ),
    params:
        code=CODE["render"],
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        f"{LOGS}/render_tables.log",
    benchmark:
        f"{BENCH}/render_tables.tsv"
    localrule: True
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/render_tables.py"


rule render_figures:
    input:
        unpack(best_multitask),
        cells=f"{RESULTS}/tables/cells.csv",
        metrics=all_metrics,
    output:
        png=report(
            expand(f"{REPORTS}/figures/{{fig}}.png", fig=("fig5_layers", "fig6_confusion", "fig7_attention", "training_curves")),
            caption="report/figures.rst",
            category="Figures",
        ),
        pdf=expand(f"{REPORTS}/figures/{{fig}}.pdf", fig=("fig5_layers", "fig6_confusion", "fig7_attention", "training_curves")),
    params:
        out_dir=lambda wildcards, output: Path(output.png[0]).parent,
        code=CODE["render"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    log:
        f"{LOGS}/render_figures.log",
    benchmark:
        f"{BENCH}/render_figures.tsv"
    localrule: True
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/render_figures.py"


rule render_report:
    input:
        tables=rules.render_tables.output,
        figures=rules.render_figures.output,
        summaries=[f"{RESULTS}/tables/table{n}.csv" for n in RENDERED_TABLES],
        stats=f"{RESULTS}/stats/comparisons.csv",
        claims=f"{RESULTS}/stats/claims.csv",
        cells=f"{RESULTS}/tables/cells.csv",
        benchmarks=all_benchmarks,
    output:
        html=report(f"{REPORTS}/paper.html", caption="report/paper.rst", category="Report"),
        tex=f"{REPORTS}/paper.tex",
    params:
        preset=rerun.preset_params(P),
        results=lambda wildcards, input: Path(input.stats).parent.parent,
        code=CODE["render"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        f"{LOGS}/render_report.log",
    benchmark:
        f"{BENCH}/render_report.tsv"
    localrule: True
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/render_report.py"


rule build_pdf:
    input:
        tex=f"{REPORTS}/paper.tex",
        figures=rules.render_figures.output.pdf,
    output:
        f"{REPORTS}/paper.pdf",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        f"{LOGS}/build_pdf.log",
    benchmark:
        f"{BENCH}/build_pdf.tsv"
    localrule: True
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/build_pdf.py"
