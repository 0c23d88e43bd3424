"""The regenerated paper: one self-contained HTML page, a LaTeX article, and its PDF.

:func:`build_context` reads everything from result FILES (table summaries, the statistics CSVs,
``cells.csv``, rendered tables, figure PNG/PDFs, Snakemake benchmark TSVs) once
(:mod:`~caanet.render.report.inputs`), then each registered section
(:mod:`~caanet.render.report.sections`) builds its part of one plain dict, with provenance (preset,
datasets and whether they are synthetic, seeds, fidelity, software versions, git commit, date).
:func:`render_report_html` and :func:`render_report_tex` fill the Jinja2 templates in
``caanet/render/templates``; :func:`build_pdf` compiles the LaTeX with ``latexmk`` (or ``pdflatex``
twice) and returns a message instead of raising when LaTeX is absent, so the HTML still builds
(:mod:`~caanet.render.report.typeset`).

One module per section, in report order: ``provenance``, ``results`` (Tables I-III), ``table4``,
``table5`` (CAA-Net and the field, beyond the paper), ``dcase_metrics`` (log loss and complexity, beyond the paper),
``multitask`` (what λ does: the argmax finding, the switch), ``statistics``, ``selections``, ``claims``,
``figure_entries``, ``compute``. Every section selects a table's cells through
:func:`caanet.aggregate.table_cells_frame` (``ReportInputs.table_cells``). A new section is a
module with a ``build(inputs) -> dict``, its two templates and one :func:`register_section` call.

The paper's two significance claims are rendered from ``results/stats/claims.csv``
(:func:`caanet.claims.run_claims`: the paper's z-test on the Avg decides whether the claim reproduces;
the paired test stratified by device and scene and the device-stratified test, whose variance is the
Avg's, are shown beside it for ours and the paper's numbers, with the clip-level z-test and McNemar). Every selection that touches test labels (the
layer selection of Table I, the lambda rule's source, model selection, teacher forcing's oracle
device) and what each cell trained on (``cells.csv``: training and held-out validation clips per
device) are stated, computed from the preset and the result files.

The "do the paper's claims hold here?" paragraph is computed, never written by hand: for each
conditional strategy against each baseline, the rows of Tables II/III where ours is higher on
each non-reference seen device and the average, next to the same count from the paper's own numbers,
and how many of the seed-mean tests of ``comparisons.csv`` are significant after Holm's correction.
"""

from __future__ import annotations

from caanet.render.report import claims as _claims
from caanet.render.report import compute as _compute
from caanet.render.report import dcase_metrics as _dcase_metrics
from caanet.render.report import figure_entries as _figure_entries
from caanet.render.report import multitask as _multitask
from caanet.render.report import provenance as _provenance
from caanet.render.report import results as _results
from caanet.render.report import selections as _selections
from caanet.render.report import statistics as _statistics
from caanet.render.report import table4 as _table4
from caanet.render.report import table5 as _table5
from caanet.render.report.claims import (CLAIM_TESTS, best_strategy_sentence, claims_sentences, count_wins,
                                         qualitative_claims)
from caanet.render.report.compute import compute_cost, read_benchmark, table_cell_ids
from caanet.render.report.figure_entries import FIGURES, figure_entries
from caanet.render.report.fmt import SIGNIFICANCE, TABLE_TITLES
from caanet.render.report.inputs import ReportInputs, load_inputs, read_claims, read_comparisons
from caanet.render.report.provenance import dataset_entries, provenance, synthetic_statement
from caanet.render.report.sections import SECTIONS, Section, build_sections, register_section
from caanet.render.report.selections import ORACLE_NOTE, WINNERS_CURSE, selection_notes, training_data_rows
from caanet.render.report.statistics import (MCNEMAR_NOTE, N_EXPLAINED, ZTEST_FORMULA, ZTEST_FORMULA_TEX,
                                             claim_record, family_section, statistics_section, why_tests_differ)
from caanet.render.report.multitask import device_accuracy_groups, findings, switch_counts
from caanet.render.report.results import layer_note
from caanet.render.report.selections import bf16_note
from caanet.render.report.table4 import BEYOND_PAPER_NOTE, table4_section, unseen_policies
from caanet.render.report.typeset import TEMPLATES, build_pdf, latex_command, render_report_html, render_report_tex

TITLE = ("CAA-Net: Conditional Atrous CNNs with Attention for Explainable Device-robust Acoustic "
         "Scene Classification, regenerated")
PAPER = "Z. Ren, Q. Kong, J. Han, M. D. Plumbley, B. W. Schuller, IEEE Transactions on Multimedia, 2020"

for _module in (_provenance, _results, _table4, _table5, _dcase_metrics, _multitask, _statistics, _selections, _claims, _figure_entries,
                _compute):
    register_section(Section(_module.__name__.rsplit(".", 1)[1], _module.build))


def build_context(*, preset: dict, results_dir=None, summaries=None, layers_csv=None, cells_csv=None,
                  tables_dir=None, figures=None, stats_csv=None, claims_csv=None, benchmarks=None,
                  complexity_csv=None, versions: dict | None = None, commit: str | None = None, date: str | None = None,
                  repo_dir=None) -> dict:
    """Collect everything the report shows, from the files named.

    ``preset``: the resolved preset (``caanet.config.resolve``). The result files
    (:mod:`caanet.paths`): ``summaries``, the ``table{n}.csv`` files; ``layers_csv`` (``layers.csv``),
    ``cells_csv`` (``cells.csv``, the clip counts per cell), ``stats_csv`` (``comparisons.csv``),
    ``claims_csv`` (``claims.csv``), ``complexity_csv`` (``complexity.csv``) and ``benchmarks`` (a folder or list of TSVs). Each one not given
    is looked up at its place under ``results_dir`` when that is given (a results tree, for tests and
    by-hand use); the workflow names every file (its declared inputs) and no ``results_dir``. A table
    missing from both is a warning in the report, not an error.
    ``tables_dir``: a folder or list of rendered ``table{n}.html``/``.tex`` files (re-rendered from the
    summaries where absent). ``figures``: a folder or list of figure PNG/PDFs.
    ``versions``/``commit``/``date`` override the gathered provenance (tests, reproducible builds).
    """
    inputs = load_inputs(preset=preset, results_dir=results_dir, summaries=summaries, layers_csv=layers_csv,
                         cells_csv=cells_csv, tables_dir=tables_dir, figures=figures, stats_csv=stats_csv,
                         claims_csv=claims_csv, benchmarks=benchmarks, complexity_csv=complexity_csv, versions=versions, commit=commit,
                         date=date, repo_dir=repo_dir)
    context = {"title": TITLE, "paper": PAPER, **build_sections(inputs)}
    context["warnings"] = inputs.warnings
    return context
