"""caanet.paths: every result path spelled once, and nowhere else in the rules or workflow scripts."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

from caanet import grid, paths
from caanet.spec import CellSpec

REPO = Path(__file__).resolve().parent.parent
SPEC = CellSpec.from_id("atrous-att-multi_task-L3", dataset="d18", seed=2)


def test_cell_paths_name_the_dataset_cell_and_seed():
    assert paths.cell_file("evaluation") == "results/cells/{dataset}/{cell}/seed{seed}/evaluation.json"
    assert paths.cell_path(SPEC, "predictions") == "results/cells/d18/atrous-att-multi_task-L3/seed2/predictions.csv"
    assert paths.cell_path(SPEC, "attention", "/x/res") == "/x/res/cells/d18/atrous-att-multi_task-L3/seed2/attention.npz"
    assert paths.cell_dir(SPEC) == Path("results/cells/d18/atrous-att-multi_task-L3/seed2")
    assert grid.cell_dir("/x/res", SPEC) == Path("/x/res/cells/d18/atrous-att-multi_task-L3/seed2")
    assert paths.cell_benchmark(SPEC) == "results/benchmarks/train_cell/d18/atrous-att-multi_task-L3/seed2.tsv"
    with pytest.raises(KeyError, match="no cell file 'weights'.*evaluation"):
        paths.cell_file("weights")


def test_parse_cell_file_inverts_cell_path():
    for name, file in paths.CELL_FILES.items():
        for root in (None, "/tmp/elsewhere/results"):
            assert paths.parse_cell_file(paths.cell_path(SPEC, name, root)) == ("d18", SPEC.cell_id, 2, file)
    with pytest.raises(ValueError, match="not a cell file"):
        paths.parse_cell_file("results/tables/cells.csv")


def test_logs_benchmarks_and_other_roots():
    assert paths.log("run_stats") == "results/logs/run_stats.log"
    assert paths.log("train_cell", paths.CELL_KEY).format(dataset="d", cell="c", seed=0) == \
        "results/logs/train_cell/d/c/seed0.log"
    assert paths.benchmark("build_features", "{dataset}-{fhash}") == "results/benchmarks/build_features/{dataset}-{fhash}.tsv"
    assert paths.results_file(paths.TABLE, "/r", n=2) == "/r/tables/table2.csv"
    assert paths.results_file(paths.LAYERS) == "results/tables/layers.csv"
    with pytest.raises(ValueError, match="not a path under results/"):
        paths.results_file(paths.PAPER_HTML)


def test_every_template_is_under_its_root():
    templates = {k: v for k, v in vars(paths).items() if k.isupper() and isinstance(v, str) and "/" in v}
    assert templates
    for name, value in templates.items():
        assert value.startswith((paths.RESULTS + "/", paths.REPORTS + "/")) or name == "CELL_KEY", (name, value)


# --- no result path spelled outside caanet/paths.py -------------------------------------------------------

WORKFLOW_FILES = sorted([REPO / "Snakefile", *(REPO / "rules").glob("*.smk"), *(REPO / "workflow_scripts").glob("*.py"),
                         REPO / "caanet" / "workflow_support.py"])
FOLDERS = sorted({t.split("/")[1] for k, t in vars(paths).items()
                  if k.isupper() and isinstance(t, str) and t.startswith((paths.RESULTS + "/", paths.REPORTS + "/"))})
"""The folders below results/ and reports/ (cells, tables, logs, ...)."""
RESULT_PATH = re.compile(r"(?<![\w.])(results|reports)/|^(results|reports)$|(^|[/}])(" + "|".join(FOLDERS) + ")/")
"""A path below results/ or reports/, either root alone (not the word in a sentence), or a path through
one of their folders (``{root}/cells/...``)."""


def _string_literals(path: Path):
    """``(line, text)`` of every string literal of a Snakefile or script, docstrings and comments excluded
    (Snakemake's grammar tokenizes as Python)."""
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
              if t.type not in (tokenize.COMMENT, tokenize.NL)]
    for i, tok in enumerate(tokens):
        if tok.type != tokenize.STRING:
            continue
        before = tokens[i - 1].type if i else tokenize.NEWLINE
        after = tokens[i + 1].type if i + 1 < len(tokens) else tokenize.NEWLINE
        if before in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT) and after == tokenize.NEWLINE:
            continue   # a docstring
        yield tok.start[0], re.fullmatch(r"""[a-zA-Z]*('{3}|"{3}|'|")(.*)\1""", tok.string, re.S).group(2)


def test_workflow_files_are_found():
    names = {p.name for p in WORKFLOW_FILES}
    assert {"Snakefile", "common.smk", "train.smk", "report.smk", "run_stats.py", "render_report.py"} <= names


def test_string_scan_sees_result_paths(tmp_path):
    """The scan below would see a path literal, in an f-string too, and not one in a comment or docstring."""
    sample = tmp_path / "sample.smk"
    sample.write_text('"""results/ in a docstring"""\n# results/cells in a comment\n'
                      'rule x:\n    output:\n        f"{X}/results/cells/{{dataset}}",\n'
                      '        "reports",\n    caption: "report/tables.rst"\n    message: "3 results"\n'
                      '    log: f"{LOGS}/x.log", f"{ROOT}/stats/{{n}}.csv"\n', encoding="utf-8")
    hits = [line for line, t in _string_literals(sample) if RESULT_PATH.search(t)]
    assert hits == [5, 6, 9]
    assert {"cells", "tables", "stats", "logs", "benchmarks", "features", "figures"} <= set(FOLDERS)


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_no_result_path_outside_the_path_module(path):
    hits = [f"{path.relative_to(REPO)}:{line}: {text}" for line, text in _string_literals(path)
            if RESULT_PATH.search(text)]
    assert not hits, "result paths belong in caanet/paths.py:\n" + "\n".join(hits)
