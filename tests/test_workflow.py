"""Workflow tests: Snakemake end to end on the `tiny` preset, through the command line.

The repository is copied to a temporary folder (results and reports excluded), so these tests run
the working tree's code exactly as a user would, and never touch the checkout's results/.
One module-scoped run of the whole pipeline serves every test below.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.workflow

IGNORE = shutil.ignore_patterns(".git", ".snakemake", "results", "__pycache__", "*.egg-info", ".pytest_cache", ".whl", ".gl")


def snakemake(workdir: Path, *args: str, timeout: int = 1500, env: dict | None = None) -> subprocess.CompletedProcess:
    # targets and flags before --config, which takes every word after it
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args, "--config", "preset=tiny"]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                          env=None if env is None else {**os.environ, **env})
    return proc


def open_audit_env(audit_dir: Path) -> dict:
    """Environment under which every script job records the files it opens for reading
    (tests/open_audit/sitecustomize.py) into ``audit_dir``."""
    pythonpath = [str(REPO / "tests" / "open_audit")] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {"PYTHONPATH": os.pathsep.join(pythonpath), "CAANET_OPEN_AUDIT": str(audit_dir)}


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
    proc = snakemake(work, "all", env=open_audit_env(work.parent / "open_audit"))
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
    claims = pd.read_csv(pipeline / "results" / "stats" / "claims.csv")
    assert list(claims["claim"]) == ["claim1", "claim2"]       # one row per paper claim, always
    assert claims["paper_z"].round(2).tolist()[0] == 2.40 and claims["paper_holds"].all()
    assert "The paper's two claims" in html and 'id="training-data"' in html


TINY_TABLE4_JOBS = 1 * (6 + 4)
"""Table IV on the tiny preset: one attention row (atrous-att) x (single-device per seen device of
tiny2020's six + joint, teacher forcing, multi-task, multi-task with the learned lambda), one seed."""


TINY_TABLE5_METHOD_JOBS = 1 * 2 * 3
"""Table V on the tiny preset beyond Table IV's jobs: atrous-att x (joint, multi-task) x the three methods,
one seed; its cells without a method are Table IV's joint and multi-task cells."""
TABLE5_MODELS = {(s, m) for s in ("joint", "multi_task")
                 for m in ("none", "freq_mixstyle", "spectrum_correction", "dir_augment")}


def test_table4_is_trained_aggregated_tested_and_rendered(pipeline):
    summary = pd.read_csv(pipeline / "results" / "tables" / "table4.csv", dtype={"device": str})
    assert set(summary["dataset"]) == {"tiny2020"}
    assert set(summary["strategy"]) == {"single_device", "joint", "teacher_forcing", "multi_task", "multi_task_learned"}
    joint = summary[summary["strategy"] == "joint"]
    assert set(joint["device"]) == {"a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6", "avg", "bc", "seen", "unseen"}
    acc = dict(zip(joint["device"], joint["acc_mean"]))
    assert acc["unseen"] == pytest.approx((acc["s4"] + acc["s5"] + acc["s6"]) / 3)   # one seed
    assert acc["avg"] == pytest.approx((6 * acc["seen"] + 3 * acc["unseen"]) / 9)
    single = summary[summary["strategy"] == "single_device"]
    assert not {"s4", "s5", "s6", "avg", "unseen"} & set(single["device"])
    comps = pd.read_csv(pipeline / "results" / "stats" / "comparisons.csv")
    t4 = comps[comps["table"] == "table4"]
    assert sorted(t4["comparison"]) == ["multi_task vs joint", "multi_task_learned vs joint", "teacher_forcing vs joint"]
    assert t4["p_avg"].between(0, 1).all() and (t4["n"] == 9 * 20).all()   # every test clip, seen and unseen
    cells = pd.read_csv(pipeline / "results" / "tables" / "cells.csv", dtype={"device": str})
    tf = cells[(cells["dataset"] == "tiny2020") & (cells["strategy"] == "teacher_forcing")]
    assert set(tf["unseen_device_policy"]) == {"uniform"}                      # the default policy
    for ext in ("tex", "html"):
        assert (pipeline / "reports" / "tables" / f"table4.{ext}").is_file()
    html = (pipeline / "reports" / "paper.html").read_text(encoding="utf-8")
    assert 'id="table4"' in html and "Table IV goes beyond the paper" in html
    assert "Teacher forcing: <code>uniform</code>" in html and "Multi-task (learned λ): <code>predicted</code>" in html


def test_dry_run_plans_table4s_jobs(pipeline, tmp_path):
    """What `snakemake -n` plans for Table IV: without its cells, exactly its training jobs (all on
    tiny2020, single-device only for seen devices) and the aggregation that reads them.

    The target is table4.csv, not `all`: with a checkpoint's output deleted by hand, Snakemake 9.27
    plans nothing for `all` (its checkpoint dependencies count the checkpoint as done), although it
    plans the checkpoint when its output is named; see the README's Troubleshooting."""
    work = tmp_path / "caanet"
    shutil.copytree(pipeline, work, symlinks=True)
    shutil.rmtree(work / "results" / "cells" / "tiny2020")
    (work / "results" / "tables" / "table4.csv").unlink()
    proc = snakemake(work, "-n", "results/tables/table4.csv")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the aggregation writes Table V too: its method cells (the derived caches are still there)
    assert planned_jobs(proc) == {"train_cell": TINY_TABLE4_JOBS + TINY_TABLE5_METHOD_JOBS, "aggregate_tables": 1}
    planned = re.findall(r"wildcards: dataset=(\w+), cell=([\w+-]+), seed=(\d+)", proc.stdout + proc.stderr)
    planned = [p for p in planned if "+" not in p[1]]
    assert len(planned) == TINY_TABLE4_JOBS and {d for d, _, _ in planned} == {"tiny2020"}
    assert {int(s) for _, _, s in planned} == {0}                        # tables.table4.seeds
    singles = sorted(c.rsplit("-", 1)[1] for _, c, _ in planned if "single_device" in c)
    assert singles == ["a", "b", "c", "s1", "s2", "s3"]
    layers = pd.read_csv(work / "results" / "tables" / "layers.csv")
    layer = int(layers[(layers["topology"] == "atrous") & (layers["pooling"] == "att")]["cond_layer"].item())
    assert sorted(c.split("-", 2)[2] for _, c, _ in planned if "single_device" not in c) == [
        "joint", f"multi_task-L{layer}", f"multi_task_learned-L{layer}", f"teacher_forcing-L{layer}"]


def test_table5_is_trained_aggregated_tested_and_rendered(pipeline):
    summary = pd.read_csv(pipeline / "results" / "tables" / "table5.csv", dtype={"device": str})
    assert set(summary["dataset"]) == {"tiny2020"}
    assert set(zip(summary["strategy"], summary["method"])) == TABLE5_MODELS
    for _, model in summary.groupby(["strategy", "method"]):
        assert {"avg", "seen", "unseen", "a", "s6"} <= set(model["device"])
    # the cells without a method are Table IV's: the very same numbers
    t4 = pd.read_csv(pipeline / "results" / "tables" / "table4.csv", dtype={"device": str})
    for strategy in ("joint", "multi_task"):
        a = summary[(summary["strategy"] == strategy) & (summary["method"] == "none")].set_index("device")["acc_mean"]
        b = t4[t4["strategy"] == strategy].set_index("device")["acc_mean"]
        pd.testing.assert_series_equal(a.sort_index(), b.sort_index())
    comps = pd.read_csv(pipeline / "results" / "stats" / "comparisons.csv")
    t5 = comps[comps["table"] == "table5"]
    assert len(t5) == 7 + 6 and (t5["n"] == 9 * 20).all() and t5["p_avg"].between(0, 1).all()
    assert set(t5["model_b"]) == {"atrous-att-joint", t5["model_a"][t5["comparison"] == "multi_task vs joint"].item()}
    fits = sorted(p.name for p in (pipeline / "results" / "methods").rglob("*.npz"))
    assert fits == ["dir_augment.npz", "spectrum_correction.npz"]
    derived = sorted(p.name.split("+")[1] for p in (pipeline / "results" / "features").glob("tiny2020-*+*.h5"))
    assert derived == ["dir_augment.h5", "spectrum_correction.h5"]
    cells = pipeline / "results" / "cells" / "tiny2020"
    ev = json.loads((cells / "atrous-att-joint+spectrum_correction" / "seed0" / "evaluation.json").read_text())
    assert ev["test_device_labels_used"] and "oracle information" in ev["note"] and "s4, s5, s6" in ev["note"]
    ev = json.loads((cells / "atrous-att-joint+dir_augment" / "seed0" / "evaluation.json").read_text())
    assert ev["method_details"]["responses"] == ["b", "c", "s1", "s2", "s3"] and not ev["test_device_labels_used"]
    for ext in ("tex", "html"):
        assert (pipeline / "reports" / "tables" / f"table5.{ext}").is_file()
    html = (pipeline / "reports" / "paper.html").read_text(encoding="utf-8")
    assert 'id="table5"' in html and "Kośmider" in html and "Morocutti" in html and "not real phones" in html
    assert "mean correction of the seen non-reference devices" in html


def test_dry_run_plans_table5s_jobs_sharing_table4s(pipeline, tmp_path):
    """Without tiny2020's cells, fits and derived caches, `snakemake -n` plans Table IV's jobs plus Table V's
    method cells only (its cells without a method are Table IV's), each method's fit and derived cache once."""
    work = tmp_path / "caanet"
    shutil.copytree(pipeline, work, symlinks=True)
    shutil.rmtree(work / "results" / "cells" / "tiny2020")
    shutil.rmtree(work / "results" / "methods")
    for derived in (work / "results" / "features").glob("tiny2020-*+*.h5"):
        derived.unlink()
    for n in (4, 5):
        (work / "results" / "tables" / f"table{n}.csv").unlink()
    proc = snakemake(work, "-n", "results/tables/table5.csv")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert planned_jobs(proc) == {"train_cell": TINY_TABLE4_JOBS + TINY_TABLE5_METHOD_JOBS, "fit_method": 2,
                                  "build_method_features": 2, "aggregate_tables": 1}
    planned = re.findall(r"wildcards: dataset=(\w+), cell=([\w+-]+), seed=(\d+)", proc.stdout + proc.stderr)
    assert len({c for _, c, _ in planned}) == len(planned) == TINY_TABLE4_JOBS + TINY_TABLE5_METHOD_JOBS
    assert sorted(c.split("+")[1] for _, c, _ in planned if "+" in c) == sorted(
        ["freq_mixstyle", "spectrum_correction", "dir_augment"] * 2)


@pytest.mark.parametrize("setting, jobs", [
    ("{freq_mixstyle: {p: 0.5}}", {"train_cell": 2}),
    ("{dir_augment: {p: 0.5}}", {"train_cell": 2}),
    ("{dir_augment: {n_taps: 64}}", {"fit_method": 1, "build_method_features": 1, "train_cell": 2}),
])
def test_a_methods_setting_reruns_only_what_reads_it(pipeline, setting, jobs):
    original = _edit_config(pipeline, r"^  tiny:$", f"  tiny:\n    methods: {setting}")
    try:
        proc = snakemake(pipeline, "-n", "all")
        assert proc.returncode == 0, proc.stderr[-3000:]
        planned = planned_jobs(proc)
        assert {k: v for k, v in planned.items() if k in ("train_cell", "fit_method", "build_method_features")} == jobs
        assert {"aggregate_tables", "run_stats", "render_report"} <= set(planned)
        assert not {"build_features", "resample_audio", "generate_embedded"} & set(planned)
    finally:
        (pipeline / "config.yaml").write_text(original, encoding="utf-8")


@pytest.mark.parametrize("changed, jobs", [
    ("caanet/methods/dir_augment.py", {"fit_method": 1, "build_method_features": 1, "train_cell": 2}),
    ("caanet/methods/freq_mixstyle.py", {"train_cell": 2}),
])
def test_a_methods_code_reruns_only_its_jobs(pipeline, changed, jobs):
    path = pipeline / changed
    original = _append_code(path, "def _changed_for_test():\n    return 1")
    try:
        proc = snakemake(pipeline, "-n", "all")
        assert proc.returncode == 0, proc.stderr[-3000:]
        planned = planned_jobs(proc)
        assert {k: v for k, v in planned.items() if k in ("train_cell", "fit_method", "build_method_features")} == jobs
        assert not {"build_features", "aggregate_table1"} & set(planned)
    finally:
        path.write_text(original, encoding="utf-8")


def test_scripts_read_only_their_declared_inputs(pipeline):
    """Every file under results/ or reports/ a script job opened for reading (through Python: CSV, JSON,
    NPZ, torch files; tests/open_audit) is one of the job's declared inputs or outputs, below a declared
    input folder, or the job's own checkpoint (``checkpoints/`` beside its outputs, only while it runs)."""
    records = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((pipeline.parent / "open_audit").glob("*.json"))]
    rules = {r["rule"] for r in records}
    assert {"train_cell", "aggregate_table1", "aggregate_tables", "run_stats", "render_figures", "render_report"} <= rules
    n_result_reads = 0
    for r in records:
        declared = set(r["input"]) | set(r["output"])
        folders = [f.rstrip("/") + "/" for f in r["input"]] + [os.path.dirname(f) + "/checkpoints/" for f in r["output"]]
        reads = [p for p in r["reads"] if p.startswith(("results/", "reports/"))]
        n_result_reads += len(reads)
        undeclared = [p for p in reads if p not in declared and not p.startswith(tuple(folders))]
        assert not undeclared, f"{r['rule']} read undeclared files {undeclared}; declared inputs: {r['input']}"
    assert n_result_reads > 0
    figures = [r for r in records if r["rule"] == "render_figures"]
    assert len(figures) == 1
    attention = [p for p in figures[0]["reads"] if p.endswith("/attention.npz")]
    assert len(attention) == 1 and attention[0] in figures[0]["input"]       # Fig. 7's maps: a declared input
    stats_job = next(r for r in records if r["rule"] == "run_stats")
    assert any(p.endswith("/predictions.csv") for p in stats_job["reads"])


def test_every_declared_input_under_results_is_made_by_a_rule(pipeline):
    """A job's input under results/ or reports/ that no rule writes is a file Snakemake cannot rebuild;
    one appearing after a checkpoint (Fig. 7's attention.npz, once) stopped SLURM runs with a KeyError."""
    import io

    from caanet import paths

    proc = subprocess.run([sys.executable, "-m", "snakemake", "--detailed-summary", "--config", "preset=tiny"],
                          cwd=pipeline, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = pd.read_csv(io.StringIO(proc.stdout), sep="\t", dtype=str).fillna("")

    def files(column):
        return {f.strip() for cell in summary[column] for f in cell.split(",") if f.strip()}

    made, logs = set(summary["output_file"]), files("log-file(s)")
    orphans = []
    for f in sorted(files("input-file(s)")):
        if not f.startswith((paths.RESULTS + "/", paths.REPORTS + "/")) or f in made:
            continue
        if f.startswith(paths.BENCHMARKS + "/"):  # a job's benchmark: the job whose log has the same name
            if paths.LOGS + f[len(paths.BENCHMARKS):].removesuffix(".tsv") + ".log" in logs:
                continue
        orphans.append(f)
    assert orphans == []


def test_every_rule_logged_and_benchmarked(pipeline):
    logs = list((pipeline / "results" / "logs").rglob("*.log"))
    bench = list((pipeline / "results" / "benchmarks").rglob("*.tsv"))
    assert any("train_cell" in str(p) for p in logs)
    assert any("train_cell" in str(p) for p in bench)
    assert any("build_features" in str(p) for p in bench)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the training server runs on Linux only")
def test_cells_trained_in_the_training_servers_children_and_the_server_stopped(pipeline):
    import psutil

    logs = sorted((pipeline / "results" / "logs" / "train_cell").rglob("*.log"))
    assert logs
    for log in logs:
        assert "trained in the server's child" in log.read_text(encoding="utf-8"), log
    assert (pipeline / "results" / "logs" / "train_server.log").is_file()
    left = [p.pid for p in psutil.process_iter(["cmdline", "cwd"])
            if "caanet.trainserver" in " ".join(p.info["cmdline"] or []) and p.info["cwd"] == str(pipeline)]
    assert left == [], "a training server outlived its workflow"


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
        ("caanet/field.py", "def _changed_for_test():\n    return 1", {"run_stats", "render_report"},
         {"train_cell", "fit_method", "build_features"}),
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


# --- issue 9: params hold exactly what changes outputs; a local dataset edited in place reruns ---


def _edit_config(work: Path, old: str, new: str) -> str:
    """Replace the one occurrence of the regex ``old`` in the copy's config.yaml; return the original."""
    path = work / "config.yaml"
    original = path.read_text(encoding="utf-8")
    edited, n = re.subn(old, new, original, flags=re.MULTILINE)
    assert n == 1, f"{old!r} found {n} times in config.yaml"
    path.write_text(edited, encoding="utf-8")
    return original


@pytest.mark.parametrize(
    "what, old, new",
    [
        ("checkpoint cadence", r"^      checkpoint_every: 3$", "      checkpoint_every: 1"),
        ("log cadence", r"^      log_every: 2$", "      log_every: 1"),
        ("train resources", r"^      train: \{threads: 1, mem_mb: 1000, runtime: 10, gpu: 0\}$",
         "      train: {threads: 2, mem_mb: 3000, runtime: 99, gpu: 0}"),
        ("data resources", r"^      data: \{threads: 1, mem_mb: 1000, runtime: 10\}$",
         "      data: {threads: 2, mem_mb: 3000, runtime: 99}"),
        ("training server", r"^train_server: true$", "train_server: false"),
    ],
)
def test_setting_that_changes_nothing_plans_nothing(pipeline, what, old, new):
    original = _edit_config(pipeline, old, new)
    try:
        proc = snakemake(pipeline, "-n", "all")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert planned_jobs(proc) == {}, f"after changing the {what}: {proc.stdout[-3000:]}"
    finally:
        (pipeline / "config.yaml").write_text(original, encoding="utf-8")


@pytest.mark.parametrize(
    "family, old, new, must_rerun, must_not_rerun",
    [
        ("train", r"^      iterations: 6$", "      iterations: 7", {"train_cell", "aggregate_tables", "render_report"},
         {"build_features", "resample_audio", "index_dataset", "generate_embedded"}),
        ("features", r"^    features: \{\}(.*)$", r"    features: {n_mels: 32}\1", {"build_features", "train_cell"},
         {"resample_audio", "index_dataset", "generate_embedded"}),
        ("data", r"^      seed: 7$", "      seed: 17", {"generate_embedded", "index_dataset", "build_features", "train_cell"},
         set()),
        ("tables", r"^    seeds_by_pooling: \{att: \[0, 1\]\}$", "    seeds_by_pooling: {att: [0]}",
         {"aggregate_tables", "run_stats", "render_report"}, {"train_cell", "build_features"}),
    ],
)
def test_setting_that_changes_outputs_reruns(pipeline, family, old, new, must_rerun, must_not_rerun):
    original = _edit_config(pipeline, old, new)
    try:
        proc = snakemake(pipeline, "-n", "all")
        assert proc.returncode == 0, proc.stderr[-3000:]
        jobs = planned_jobs(proc)
        assert must_rerun <= set(jobs), f"{family}: planned {jobs}"
        assert not (must_not_rerun & set(jobs)), f"{family}: planned {jobs}"
    finally:
        (pipeline / "config.yaml").write_text(original, encoding="utf-8")


LOCAL_PRESET = """
  tinylocal:
    tables:
      table1: {dataset: mylocal}
      table2: {dataset: mylocal}
      table3: {dataset: mylocal}
    resources:
      data: {threads: 1, mem_mb: 1000, runtime: 10}
      train: {threads: 1, mem_mb: 1000, runtime: 10, gpu: 0}

"""
LOCAL_DATASET = """
  mylocal:
    source: local
    path: mylocal_data
    devices: [a, b, c]
    clip_seconds: 1.0
"""
LOCAL_JOBS = {"index_dataset": 1, "resample_audio": 1, "build_features": 1, "dataset_page": 1}


def _local(work: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args, "reports/data/mylocal.html",
           "--config", "preset=tinylocal"]
    return subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=900)


def test_local_dataset_edited_in_place_reruns_exactly_its_jobs(pipeline):
    import pandas as pd
    import soundfile as sf

    data = pipeline / "mylocal_data"
    shutil.copytree(pipeline / "results" / "data" / "tiny2018", data)
    config = pipeline / "config.yaml"
    original = config.read_text(encoding="utf-8")
    config.write_text(original.replace("\n# The dataset catalogue", LOCAL_PRESET + "# The dataset catalogue", 1)
                      + LOCAL_DATASET, encoding="utf-8")
    try:
        proc = _local(pipeline)
        assert proc.returncode == 0, proc.stderr[-4000:]
        untouched = _local(pipeline, "-n")
        assert planned_jobs(untouched) == {}, untouched.stdout[-3000:]
        (data / ".DS_Store").write_bytes(b"\0")  # a hidden file the reader never uses
        assert planned_jobs(_local(pipeline, "-n")) == {}

        # fix one clip's label, in meta.csv and in the split file (same size: only the mtime and bytes change)
        meta = (data / "meta.csv").read_text(encoding="utf-8").splitlines(keepends=True)
        fname, scene = meta[1].split("\t")[:2]
        new_scene = "park" if scene != "park" else "bus"
        meta[1] = meta[1].replace(f"\t{scene}\t", f"\t{new_scene}\t", 1)
        (data / "meta.csv").write_text("".join(meta), encoding="utf-8")
        for split in (data / "evaluation_setup").glob("fold1_*.txt"):
            split.write_text(split.read_text(encoding="utf-8").replace(f"{fname}\t{scene}", f"{fname}\t{new_scene}"),
                             encoding="utf-8")
        assert planned_jobs(_local(pipeline, "-n")) == LOCAL_JOBS
        proc = _local(pipeline)
        assert proc.returncode == 0, proc.stderr[-4000:]
        index = pd.read_csv(pipeline / "results" / "index" / "mylocal.csv")
        assert index.set_index("filename").at[fname, "scene"] == new_scene
        assert planned_jobs(_local(pipeline, "-n")) == {}

        # replace a WAV by a corrected one of the same name, format and length
        wav = data / fname
        audio, sr = sf.read(wav, dtype="float32")
        info = sf.info(wav)
        sf.write(wav, audio[::-1].copy(), sr, subtype=info.subtype)
        assert planned_jobs(_local(pipeline, "-n")) == LOCAL_JOBS
    finally:
        config.write_text(original, encoding="utf-8")


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
