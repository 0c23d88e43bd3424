# Stage 5: rendering only (caanet.render). Nothing here trains or aggregates, so restyling a
# table, a figure or a template reruns these rules and nothing upstream.


rule render_tables:
    input:
        summaries=expand(paths.TABLE, n=RENDERED_TABLES),
        complexity=paths.COMPLEXITY,
        cells=paths.CELLS,
        layers=paths.LAYERS,
        table5=expand(paths.TABLE, n=[5] if HAS_TABLE5 else []),
    output:
        tex=expand(paths.RENDERED_TABLE, n=REPORT_TABLES, ext="tex"),
        html=report(
            expand(paths.RENDERED_TABLE, n=REPORT_TABLES, ext="html"),
            caption="report/tables.rst",
            category="Tables",
        ),
        complexity_tex=paths.RENDERED_COMPLEXITY.format(ext="tex"),
        complexity_html=paths.RENDERED_COMPLEXITY.format(ext="html"),
    params:
        preset=rerun.preset_params(P),
        code=CODE["render"],
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        paths.log("render_tables"),
    benchmark:
        paths.benchmark("render_tables")
    localrule: True
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/render_tables.py"


rule render_figures:
    input:
        unpack(best_multitask),
        cells=paths.CELLS,
        metrics=all_metrics,
    output:
        png=report(
            expand(paths.FIGURE, fig=paths.FIGURES, ext="png"),
            caption="report/figures.rst",
            category="Figures",
        ),
        pdf=expand(paths.FIGURE, fig=paths.FIGURES, ext="pdf"),
    params:
        out_dir=lambda wildcards, output: Path(output.png[0]).parent,
        preset=rerun.preset_params(P),
        code=CODE["render"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    log:
        paths.log("render_figures"),
    benchmark:
        paths.benchmark("render_figures")
    localrule: True
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/render_figures.py"


rule render_report:
    input:
        tables=rules.render_tables.output,
        figures=rules.render_figures.output,
        summaries=expand(paths.TABLE, n=REPORT_TABLES),
        layers=paths.LAYERS,
        stats=paths.COMPARISONS,
        claims=paths.CLAIMS,
        cells=paths.CELLS,
        complexity=paths.COMPLEXITY,
        benchmarks=all_benchmarks,
    output:
        html=report(paths.PAPER_HTML, caption="report/paper.rst", category="Report"),
        tex=paths.PAPER_TEX,
    params:
        preset=rerun.preset_params(P),
        code=CODE["render"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        paths.log("render_report"),
    benchmark:
        paths.benchmark("render_report")
    localrule: True
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/render_report.py"


rule build_pdf:
    input:
        tex=paths.PAPER_TEX,
        figures=rules.render_figures.output.pdf,
    output:
        paths.PAPER_PDF,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        paths.log("build_pdf"),
    benchmark:
        paths.benchmark("build_pdf")
    localrule: True
    conda:
        "../envs/caanet.yaml"
    script:
        "../workflow_scripts/build_pdf.py"
