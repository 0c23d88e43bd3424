"""Compile reports/paper.tex into reports/paper.pdf with LaTeX (caanet.render.report)."""
from caanet.render.report import build_pdf
from caanet.workflow_support import logged

with logged(snakemake.log[0], "build_pdf") as log:
    message = build_pdf(snakemake.input.tex, snakemake.output[0])
    if message:
        log.error(message)
        raise SystemExit(message)
