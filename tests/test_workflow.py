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

from caanet import stats

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.workflow

IGNORE = shutil.ignore_patterns(".git", ".snakemake", "results", "__pycache__", "*.egg-info", ".pytest_cache", ".whl", ".gl")


def snakemake(workdir: Path, *args: str, timeout: int = 1500, env: dict | None = None,
              config: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    # targets and flags before --config, which takes every word after it
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args, "--config", "preset=tiny", *config]
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
    assert claims["paper_stratified_p"].round(3).tolist()[0] == 0.108 and claims["paper_n_eff"].round().tolist()[0] == 782
    assert "The paper's two claims" in html and 'id="training-data"' in html


TINY_TABLE4_JOBS = 1 * (6 + 6)
"""Table IV on the tiny preset: one attention row (atrous-att) x (single-device per seen device of
tiny2020's six + joint, teacher forcing, and the four multi-task strategies: switched and learned lambda,
each with the argmax and the posterior conditioning), one seed."""


TINY_TABLE5_METHOD_JOBS = 1 * 2 * 3
"""Table V on the tiny preset beyond Table IV's jobs: atrous-att x (joint, multi-task) x the three methods,
one seed; its cells without a method are Table IV's joint and multi-task cells."""
TABLE5_MODELS = {(s, m) for s in ("joint", "multi_task")
                 for m in ("none", "freq_mixstyle", "spectrum_correction", "dir_augment")}


def test_table4_is_trained_aggregated_tested_and_rendered(pipeline):
    summary = pd.read_csv(pipeline / "results" / "tables" / "table4.csv", dtype={"device": str})
    assert set(summary["dataset"]) == {"tiny2020"}
    assert set(summary["strategy"]) == {"single_device", "joint", "teacher_forcing", "multi_task", "multi_task_learned",
                                        "multi_task_posterior", "multi_task_learned_posterior"}
    joint = summary[summary["strategy"] == "joint"]
    assert set(joint["device"]) == {"a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6", "avg", "bc", "seen", "unseen"}
    acc = dict(zip(joint["device"], joint["acc_mean"]))
    assert acc["unseen"] == pytest.approx((acc["s4"] + acc["s5"] + acc["s6"]) / 3)   # one seed
    assert acc["avg"] == pytest.approx((6 * acc["seen"] + 3 * acc["unseen"]) / 9)
    single = summary[summary["strategy"] == "single_device"]
    assert not {"s4", "s5", "s6", "avg", "unseen"} & set(single["device"])
    comps = pd.read_csv(pipeline / "results" / "stats" / "comparisons.csv")
    t4 = comps[(comps["table"] == "table4") & comps["seed"].isna()]     # the seed-mean rows: Table IV's family
    from caanet.stats import TABLE4_TESTS

    assert sorted(zip(t4["comparison"], t4["scope"])) == sorted(      # the family, every strategy being in the table
        (f"{t.strategy_a} vs {t.strategy_b}", t.scope) for t in TABLE4_TESTS)
    assert ("multi_task_posterior vs multi_task", "all") in set(zip(t4["comparison"], t4["scope"]))
    assert t4["p_avg"].between(0, 1).all() and t4["paired_p"].between(0, 1).all() and (t4["family"] == "table4").all()
    assert (t4.loc[t4["scope"] == "all", "n"] == 9 * 20).all()        # every test clip, seen and unseen
    assert (t4.loc[t4["scope"] == "unseen", "n"] == 3 * 20).all()     # the unseen devices' clips alone
    assert t4["p_holm"].tolist() == pytest.approx(list(stats.holm(t4["paired_p"].to_numpy())))
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
    tiny2020, single-device only for seen devices) and the aggregation that reads them (the target
    is table4.csv, so that nothing after the aggregation is counted)."""
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
        "joint", f"multi_task-L{layer}", f"multi_task_learned-L{layer}", f"multi_task_learned_posterior-L{layer}",
        f"multi_task_posterior-L{layer}", f"teacher_forcing-L{layer}"]


def test_every_cell_of_a_dataset_trains_on_the_same_clips(pipeline):
    """Like for like (issue 17 §3): on each dataset a multi-task cell measures lambda on a validation split
    (paper fidelity), so every cell of it, Table I's included, holds the same clips out: per seed and
    device, one number of training clips. cells.csv carries when lambda switched and CNN-d's accuracy."""
    cells = pd.read_csv(pipeline / "results" / "tables" / "cells.csv", dtype={"device": str})
    assert set(cells["dataset"]) == {"tiny2018", "tiny2019", "tiny2020"}
    # every cell holds the split out (a single-device cell may find none of its device's clips in it)
    held = cells[cells["strategy"] != "single_device"].groupby(["dataset", "cell_id", "seed"])["n_validation_clips"]
    assert (held.sum() > 0).all()
    trained = cells["n_train_clips"].notna()
    assert set(cells.loc[~trained, "device"]) == {"s4", "s5", "s6"}     # the unseen devices have no training clip
    per_device = cells[trained].groupby(["dataset", "seed", "device"])["n_train_clips"].nunique()
    assert (per_device == 1).all(), per_device[per_device > 1]
    cnn_d = cells["strategy"].str.startswith("multi_task")
    assert cells.loc[cnn_d, "device_accuracy"].between(0, 100).all()
    assert cells.loc[~cnn_d, ["lambda_switched_at", "device_accuracy", "device_accuracy_seen"]].isna().all().all()
    learned = cells["strategy"].isin(["multi_task_learned", "multi_task_learned_posterior"])
    assert cells.loc[learned, "lambda_switched_at"].isna().all()      # no switch in the learned rule


@pytest.mark.parametrize("deleted, rule", [
    ("results/tables/table4.csv", "aggregate_tables"),      # a checkpoint's output other than its first
    ("results/tables/cells.csv", "aggregate_tables"),
    ("results/tables/table2.csv", "aggregate_tables"),      # a checkpoint's first output
    ("results/tables/layers.csv", "aggregate_table1"),
    ("results/tables/table1.csv", "aggregate_table1"),
    ("results/stats/claims.csv", "run_stats"),
    ("reports/figures/fig5_layers.png", "render_figures"),
    ("reports/tables/table2.html", "render_tables"),
])
def test_a_result_deleted_by_hand_is_rebuilt_by_all(pipeline, deleted, rule):
    """Snakemake rebuilds a deleted intermediate only when a job after it must run; `all` asks for every
    file of the tables, statistics and rendering stages, so `snakemake all` rebuilds one deleted by
    hand (and what reads it), training nothing."""
    path = pipeline / deleted
    aside = path.with_name(path.name + ".aside")
    path.rename(aside)
    try:
        proc = snakemake(pipeline, "-n", "all")
        assert proc.returncode == 0, proc.stderr[-3000:]
        jobs = planned_jobs(proc)
        assert jobs.get(rule) == 1, f"after deleting {deleted}: planned {jobs}"
        assert not {"train_cell", "build_features", "generate_embedded"} & set(jobs), jobs
    finally:
        aside.rename(path)
    assert planned_jobs(snakemake(pipeline, "-n", "all")) == {}


def test_all_asks_for_a_rules_outputs_only_when_one_was_deleted_after_it_ran(tmp_path):
    """Asking for them in every run duplicates the rendering jobs in the SLURM group once the checkpoint
    finishes (snakemake#4202); asking never leaves one deleted by hand deleted."""
    from caanet.workflow_support import deleted_outputs

    outputs = [str(tmp_path / "t2.csv"), str(tmp_path / "cells.csv")]
    ran = tmp_path / "aggregate_tables.tsv"
    assert deleted_outputs(outputs, ran) == []              # first run: never ran
    ran.write_text("s\n1\n")
    assert deleted_outputs(outputs, ran) == outputs         # ran, then all deleted
    (tmp_path / "t2.csv").write_text("x")
    assert deleted_outputs(outputs, ran) == [outputs[1]]    # one deleted
    (tmp_path / "cells.csv").write_text("x")
    assert deleted_outputs(outputs, ran) == []              # none missing


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
    t5 = comps[(comps["table"] == "table5") & comps["seed"].isna()]   # the seed-mean rows: Table V's family
    assert len(t5) == 2 * (7 + 6) and (t5["family"] == "table5").all() and t5["p_holm"].between(0, 1).all()
    assert (t5.loc[t5["scope"] == "all", "n"] == 9 * 20).all() and (t5.loc[t5["scope"] == "unseen", "n"] == 3 * 20).all()
    caanet = set(t5["model_a"][t5["comparison"] == "multi_task vs joint"])      # on all devices and on the unseen
    assert len(caanet) == 1 and set(t5["model_b"]) == {"atrous-att-joint"} | caanet
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


# --- issue 18: a repeated YAML key is refused; --config values are read as YAML scalars ---


@pytest.fixture
def checkout(tmp_path):
    """A copy of the working tree without results (for dry runs that only parse the workflow)."""
    work = tmp_path / "caanet"
    shutil.copytree(REPO, work, ignore=IGNORE)
    return work


def _insert_after(path: Path, anchor: str, text: str) -> int:
    """Insert ``text`` after the first ``anchor`` in ``path``; return the 1-based line ``text`` starts on."""
    original = path.read_text(encoding="utf-8")
    at = original.index(anchor) + len(anchor)
    path.write_text(original[:at] + text + original[at:], encoding="utf-8")
    return original[:at].count("\n") + 1


def _line_of(path: Path, needle: str) -> int:
    text = path.read_text(encoding="utf-8")
    return text[:text.index(needle)].count("\n") + 1


@pytest.mark.parametrize("where", ["training block", "preset", "configfile", "profile", "workflow profile"])
def test_repeated_yaml_key_is_refused_naming_file_key_and_lines(checkout, where):
    """A second `training:` in the tiny preset would train 15,000 iterations, a second `tiny:` would
    plan the whole grid; a repeated key in a --configfile or a profile is as silent. Each is refused."""
    args: list[str] = []
    config = checkout / "config.yaml"
    if where == "training block":
        first = _line_of(config, "    training:\n      iterations: 6\n")
        second = _insert_after(config, "      train: {threads: 1, mem_mb: 1000, runtime: 10, gpu: 0}\n",
                               "    training:\n      iterations: 15000\n")
        path, key = "config.yaml", "presets.tiny.training"
    elif where == "preset":
        first = _line_of(config, "\n  tiny:\n") + 1
        second = _insert_after(config, "      train: {threads: 1, mem_mb: 1000, runtime: 10, gpu: 0}\n",
                               "  tiny:\n    seeds: [0]\n")
        path, key = "config.yaml", "presets.tiny"
    elif where == "configfile":
        (checkout / "extra.yaml").write_text("presets:\n  tiny:\n    seeds: [0]\n    seeds: [1]\n", encoding="utf-8")
        args = ["--configfile", "extra.yaml"]
        first, second, path, key = 3, 4, str(checkout / "extra.yaml"), "presets.tiny.seeds"
    elif where == "profile":
        (checkout / "mine").mkdir()
        (checkout / "mine" / "config.yaml").write_text("printshellcmds: true\nkeep-going: true\nprintshellcmds: false\n",
                                                       encoding="utf-8")
        args = ["--profile", "mine"]
        first, second, path, key = 1, 3, "mine/config.yaml", "printshellcmds"
    else:
        profile = checkout / "profiles" / "default" / "config.yaml"
        first = _line_of(profile, "rerun-incomplete: true")
        second = _insert_after(profile, "show-failed-logs: true\n", "rerun-incomplete: false\n")
        path, key = "profiles/default/config.yaml", "rerun-incomplete"
    proc = snakemake(checkout, "-n", *args)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert (f"{path}: key '{key}' is given twice, on line {first} and line {second}; YAML mapping keys are "
            "unique") in out, out[-3000:]


def test_one_setting_overridden_for_one_run_on_the_command_line(pipeline):
    """The README's override: `--config 'presets={tiny: {training: {iterations: 8}}}'`. Snakemake passes
    the 8 as a string; it is read as the integer the schema wants, so the file's own value given
    again plans nothing, and 8 plans exactly what writing 8 in config.yaml plans."""
    same = snakemake(pipeline, "-n", "all", config=("presets={tiny: {training: {iterations: 6}}}", "train_server=false"))
    assert same.returncode == 0, same.stdout[-3000:] + same.stderr[-3000:]
    assert planned_jobs(same) == {}, same.stdout[-3000:]
    more = snakemake(pipeline, "-n", "all", config=("presets={tiny: {training: {iterations: 8}}}",))
    assert more.returncode == 0, more.stdout[-3000:] + more.stderr[-3000:]
    jobs = planned_jobs(more)
    assert jobs.get("train_cell", 0) > 0 and {"aggregate_tables", "render_report"} <= set(jobs)
    assert not {"generate_embedded", "index_dataset", "build_features"} & set(jobs)
    original = _edit_config(pipeline, r"^      iterations: 6$", "      iterations: 8")
    try:
        assert planned_jobs(snakemake(pipeline, "-n", "all")) == jobs
    finally:
        (pipeline / "config.yaml").write_text(original, encoding="utf-8")
    wrong = snakemake(pipeline, "-n", "all", config=("presets={tiny: {training: {iterations: 8.5}}}",))
    assert wrong.returncode != 0
    assert "config key 'presets.tiny.training.iterations': got '8.5'; expected an integer" in wrong.stdout + wrong.stderr


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
