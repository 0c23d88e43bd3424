"""Workflow tests: Snakemake end to end on the `tiny` preset, through the command line.

The repository is copied to a temporary folder (results and reports excluded), so these tests run
the working tree's code exactly as a user would, and never touch the checkout's results/.
One module-scoped run of the whole pipeline serves every test below.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.workflow

IGNORE = shutil.ignore_patterns(".git", ".snakemake", "results", "__pycache__", "*.egg-info", ".pytest_cache", ".whl", ".gl")


def snakemake(workdir: Path, *args: str, timeout: int = 1500) -> subprocess.CompletedProcess:
    # targets and flags before --config, which takes every word after it
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args, "--config", "preset=tiny"]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    return proc


def planned_jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run into {rule: count}."""
    counts: dict[str, int] = {}
    text = proc.stdout + proc.stderr
    if "Job stats:" not in text:
        return counts
    table = text.split("Job stats:", 1)[1]
    for line in table.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)\s*$", line.strip())
        if not m:
            break
        if m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    work = tmp_path_factory.mktemp("wf") / "caanet"
    shutil.copytree(REPO, work, ignore=IGNORE)
    shutil.rmtree(work / "reports", ignore_errors=True)
    (work / "reports").mkdir()
    proc = snakemake(work, "all")
    assert proc.returncode == 0, f"snakemake failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return work


def test_report_files_exist_and_contain_every_table(pipeline):
    html = (pipeline / "reports" / "paper.html").read_text(encoding="utf-8")
    for n in (1, 2, 3):
        assert (pipeline / "reports" / "tables" / f"table{n}.tex").is_file()
        assert (pipeline / "reports" / "tables" / f"table{n}.html").is_file()
        assert re.search(rf"Table\s+(I{{{n}}}|{n})\b", html), f"table {n} missing from the report"
    assert "synthetic" in html.lower()
    assert "data:image/png;base64" in html
    for fig in ("fig5_layers", "fig6_confusion", "fig7_attention", "training_curves"):
        assert (pipeline / "reports" / "figures" / f"{fig}.png").stat().st_size > 0
        assert (pipeline / "reports" / "figures" / f"{fig}.pdf").stat().st_size > 0
    assert (pipeline / "reports" / "data" / "tiny2018.html").is_file()
    assert (pipeline / "results" / "stats" / "comparisons.csv").is_file()


def test_every_rule_logged_and_benchmarked(pipeline):
    logs = list((pipeline / "results" / "logs").rglob("*.log"))
    bench = list((pipeline / "results" / "benchmarks").rglob("*.tsv"))
    assert any("train_cell" in str(p) for p in logs)
    assert any("train_cell" in str(p) for p in bench)
    assert any("build_features" in str(p) for p in bench)


def test_second_run_does_nothing(pipeline):
    proc = snakemake(pipeline, "-n", "all")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert planned_jobs(proc) == {}, proc.stdout[-3000:] + proc.stderr[-3000:]


def _append_code(path: Path, code: str) -> str:
    original = path.read_text(encoding="utf-8")
    path.write_text(original + "\n" + code + "\n", encoding="utf-8")
    return original


@pytest.mark.parametrize(
    "changed, code, must_rerun, must_not_rerun",
    [
        ("caanet/render/templates/report.html.j2", "<!-- restyled -->", {"render_report"},
         {"train_cell", "aggregate_table1", "aggregate_tables", "run_stats", "build_features"}),
        ("caanet/stats.py", "def _changed_for_test():\n    return 1", {"run_stats", "render_report"},
         {"train_cell", "build_features", "generate_embedded"}),
        ("caanet/models/heads.py", "def _changed_for_test():\n    return 1", {"train_cell", "render_report"},
         {"build_features", "generate_embedded", "resample_audio"}),
        ("caanet/render/figures.py", "# a comment only: the syntax tree is unchanged", set(),
         {"train_cell", "run_stats", "render_figures", "render_report"}),
    ],
)
def test_code_change_reruns_only_what_it_touches(pipeline, changed, code, must_rerun, must_not_rerun):
    path = pipeline / changed
    original = _append_code(path, code)
    try:
        proc = snakemake(pipeline, "-n", "all")
        assert proc.returncode == 0, proc.stderr[-3000:]
        jobs = planned_jobs(proc)
        assert must_rerun <= set(jobs), f"after changing {changed}, planned {jobs}"
        assert not (must_not_rerun & set(jobs)), f"after changing {changed}, planned {jobs}"
    finally:
        path.write_text(original, encoding="utf-8")


def test_bad_config_key_is_named(pipeline):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--config", "preset=tiny", "bogus_key=1"],
        cwd=pipeline, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert "bogus_key" in proc.stdout + proc.stderr


def test_lint_is_clean():
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert "Lints for" not in out, out[-4000:]


def test_cores_above_the_machine_are_capped_and_gpu_shares_follow_the_cells_size(tmp_path):
    # issue 10: --cores beyond the machine's cores would only slow a local run down; a training job
    # declares the percent of a GPU its model needs (paper scale: full resolution 100, pooled 25)
    import os

    cells = [f"results/cells/dcase2018_task1b/{c}/seed0/evaluation.json"
             for c in ("atrous-att-multi_task-L3", "cnn_pool-att-multi_task-L3")]
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "100000", *cells, "--resources", "gpu_share=100",
         "--config", "preset=paper"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert f"--cores 100000 capped to this machine's {len(os.sched_getaffinity(0))} cores" in out
    shares = sorted(int(m) for m in re.findall(r"resources: .*\bgpu_share=(\d+)", out))
    assert shares == [25, 100], out[-4000:]
