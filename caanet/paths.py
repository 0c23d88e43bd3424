"""Where every stage writes: each result path of the workflow, spelled once.

The rules (``rules/*.smk``) use these templates as their input, output, log and benchmark patterns
(the ``{dataset}``, ``{cell}``, ``{seed}``, ``{fhash}`` and ``{method}`` fields are Snakemake wildcards); code
formats them with :meth:`str.format` or the helpers below. Nothing else in the workflow or in
``caanet`` spells a path under ``results/`` or ``reports/`` (``tests/test_paths.py`` checks the rules
and workflow scripts). Paths are relative to the working directory of the run.

A cell's folder holds the files :data:`CELL_FILES` names, each a declared output of ``train_cell``;
``attention.npz`` holds no examples for a model without an attention pooling (Snakemake has no
optional outputs), and the figures rule declares it as an input when the model Fig. 7 shows has
one (:func:`caanet.workflow_support.figure_cells`).
``checkpoints/last.pt`` in a cell folder exists only while the job runs. Files the rules do not
declare on purpose: the downloads under :data:`ZENODO_DIR` (kept by a failed job so it resumes) and
the WAV files under :data:`AUDIO44K_DIR` (listed by the declared ``index.csv``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

RESULTS = "results"
"""Root of everything computed (data, caches, cells, tables, statistics, logs, benchmarks)."""
REPORTS = "reports"
"""Root of what is shown (dataset pages, rendered tables, figures, the regenerated paper)."""
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"

# --- stage 1: data ---------------------------------------------------------------------------------
DATA = f"{RESULTS}/data/{{dataset}}"
"""An embedded (generated) dataset in the real DCASE layout (a folder)."""
ZENODO_DIR = f"{RESULTS}/zenodo/{{dataset}}"
"""Archives and the extracted set of a downloaded dataset (outside the rule's declared output)."""
ZENODO = f"{ZENODO_DIR}/dataset.json"
"""The download rule's output: the extracted dataset's root."""
MANIFEST = f"{RESULTS}/manifests/{{dataset}}.json"
"""A local dataset's manifest (:mod:`caanet.data.manifest`)."""
INDEX = f"{RESULTS}/index/{{dataset}}.csv"
AUDIO44K_DIR = f"{RESULTS}/audio44k/{{dataset}}"
AUDIO44K_INDEX = f"{AUDIO44K_DIR}/index.csv"

# --- stage 2: features -----------------------------------------------------------------------------
FEATURES = f"{RESULTS}/features/{{dataset}}-{{fhash}}.h5"
"""The log-mel cache; ``fhash`` is :meth:`caanet.features.FeatureParams.hash`."""

# --- stage 2b: device-robustness methods (Table V, caanet.methods) ----------------------------------
METHOD_FIT = f"{RESULTS}/methods/{{dataset}}-{{fhash}}/{{method}}.npz"
"""What a method fits on a dataset's TRAINING split (spectrum correction's gains, the device impulse
responses): rule ``fit_method``."""
METHOD_FEATURES = f"{RESULTS}/features/{{dataset}}-{{fhash}}+{{method}}.h5"
"""A method's derived feature cache (the spectrum-corrected log-mels; the convolved log-mels of the
reference device's training clips): rule ``build_method_features``."""

# --- stage 3: one training job per cell and seed ---------------------------------------------------
CELL_KEY = "{dataset}/{cell}/seed{seed}"
"""A training job's name below ``cells/``, ``logs/train_cell/`` and ``benchmarks/train_cell/``."""
CELL_DIR = f"{RESULTS}/cells/{CELL_KEY}"
CELL_FILES = {
    "evaluation": "evaluation.json",
    "predictions": "predictions.csv",
    "metrics": "metrics.csv",
    "model": "model.pt",
    "attention": "attention.npz",
}
"""The files of a cell folder by name, each a declared output of ``train_cell`` (``attention`` holds no
examples for a model without an attention pooling)."""

# --- stage 4: tables and statistics ----------------------------------------------------------------
TABLE = f"{RESULTS}/tables/table{{n}}.csv"
"""Tables I-V's summaries (``n`` 1-5; Table V's has a ``method`` column besides the others')."""
LAYERS = f"{RESULTS}/tables/layers.csv"
CELLS = f"{RESULTS}/tables/cells.csv"
COMPLEXITY = f"{RESULTS}/tables/complexity.csv"
"""DCASE's complexity counts, one row per distinct model of the grid (:func:`caanet.complexity_table.complexity_table`)."""
COMPARISONS = f"{RESULTS}/stats/comparisons.csv"
CLAIMS = f"{RESULTS}/stats/claims.csv"

# --- stage 5: reports ------------------------------------------------------------------------------
DATASET_PAGE = f"{REPORTS}/data/{{dataset}}.html"
RENDERED_TABLE = f"{REPORTS}/tables/table{{n}}.{{ext}}"
RENDERED_COMPLEXITY = f"{REPORTS}/tables/complexity.{{ext}}"
FIGURE = f"{REPORTS}/figures/{{fig}}.{{ext}}"
FIGURES = ("fig5_layers", "fig6_confusion", "fig7_attention", "training_curves")
"""The figures of the report, in its order."""
PAPER_HTML = f"{REPORTS}/paper.html"
PAPER_TEX = f"{REPORTS}/paper.tex"
PAPER_PDF = f"{REPORTS}/paper.pdf"


def log(rule: str, key: str = "") -> str:
    """The log of a rule's job: ``results/logs/{rule}.log``, or ``results/logs/{rule}/{key}.log`` for
    rules with one job per wildcard value (``key`` a template such as :data:`CELL_KEY`)."""
    return f"{LOGS}/{rule}/{key}.log" if key else f"{LOGS}/{rule}.log"


def benchmark(rule: str, key: str = "") -> str:
    """The benchmark TSV of a rule's job, named like :func:`log` under ``results/benchmarks``."""
    return f"{BENCHMARKS}/{rule}/{key}.tsv" if key else f"{BENCHMARKS}/{rule}.tsv"


def cell_file(name: str) -> str:
    """The template of one file of a cell folder (:data:`CELL_FILES`), e.g.
    ``results/cells/{dataset}/{cell}/seed{seed}/evaluation.json``. KeyError names the known files."""
    try:
        return f"{CELL_DIR}/{CELL_FILES[name]}"
    except KeyError:
        raise KeyError(f"no cell file {name!r}; the cell files are {sorted(CELL_FILES)}") from None


def _cell_fields(spec) -> dict:
    return {"dataset": spec.dataset, "cell": spec.cell_id, "seed": spec.seed}


def _under(results_root, template: str) -> str:
    """``template`` (which starts with ``results/``) below another results root."""
    if results_root is None:
        return template
    return str(Path(results_root) / template[len(RESULTS) + 1:])


def cell_dir(spec, results_root: str | os.PathLike | None = None) -> Path:
    """The folder of the training job of ``spec`` (a :class:`caanet.spec.CellSpec` with its seed):
    ``{results_root}/cells/{dataset}/{cell_id}/seed{seed}``, ``results_root`` defaulting to
    :data:`RESULTS`."""
    return Path(_under(results_root, CELL_DIR).format(**_cell_fields(spec)))


def cell_path(spec, name: str, results_root: str | os.PathLike | None = None) -> str:
    """One file of the cell folder of ``spec`` (:func:`cell_file`), as the rules spell it."""
    return _under(results_root, cell_file(name)).format(**_cell_fields(spec))


def cell_benchmark(spec) -> str:
    """The benchmark TSV of the training job of ``spec``."""
    return benchmark("train_cell", CELL_KEY).format(**_cell_fields(spec))


_CELL_FILE_RE = re.compile(r"(?:^|/)cells/(?P<dataset>[^/]+)/(?P<cell>[^/]+)/seed(?P<seed>\d+)/(?P<file>[^/]+)$")


def parse_cell_file(path: str | os.PathLike) -> tuple[str, str, int, str]:
    """``(dataset, cell_id, seed, file name)`` of a path ending in ``cells/{dataset}/{cell}/seed{n}/{file}``
    (under any results root). ValueError names a path of another form."""
    m = _CELL_FILE_RE.search(Path(path).as_posix())
    if not m:
        raise ValueError(f"{path}: not a cell file (expected .../cells/{{dataset}}/{{cell}}/seed{{n}}/{{file}})")
    return m["dataset"], m["cell"], int(m["seed"]), m["file"]


def results_file(template: str, results_root: str | os.PathLike | None = None, **fields) -> str:
    """A result path of ``template`` (one of this module's ``results/...`` templates) with its fields
    filled in, below ``results_root`` (default :data:`RESULTS`)."""
    if not template.startswith(RESULTS + "/"):
        raise ValueError(f"{template!r} is not a path under {RESULTS}/")
    return _under(results_root, template).format(**fields)
