"""caanet.render: paper-layout tables (LaTeX/HTML round trips), Figs. 5-7, curves, the report, the PDF."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest

from caanet import claims as C
from caanet import stats
from caanet.errors import ResultsError
from caanet.render import figures as F
from caanet.render import report as R
from caanet.render import tables as T
from helpers import best_cell, column_key, parse_html_table, parse_latex_table

SCENES = ["airport", "bus", "metro", "metro_station", "park", "public_square", "shopping_mall",
          "street_pedestrian", "street_traffic", "tram"]
# deliberately not in the paper's order: the renderer must sort them
ROWS = [("atrous", "att"), ("cnn_pool", "max"), ("cnn_nopool", "roi")]
PAPER_ORDER = [("cnn_pool", "max"), ("cnn_nopool", "roi"), ("atrous", "att")]
STRATEGIES = ["single_device", "joint", "teacher_forcing", "multi_task"]
SELECTED = {("atrous", "att"): 2, ("cnn_pool", "max"): 1, ("cnn_nopool", "roi"): 2}
PRESET = {
    "name": "tinytest", "fidelity": "paper", "seeds": [0], "seeds_by_pooling": {"att": [0, 1, 2]},
    "grid": {"rows": [list(r) for r in ROWS], "layers": [1, 2], "table3_rows": [["atrous", "att"]]},
    "tables": {"table1": {"dataset": "embedded2018"}, "table2": {"dataset": "embedded2018"},
               "table3": {"dataset": "embedded2019"}},
    "datasets": {"embedded2018": {"source": "embedded", "devices": ["a", "b", "c"], "clip_seconds": 2.0},
                 "embedded2019": {"source": "embedded", "devices": ["a", "b", "c"], "clip_seconds": 2.0}},
}
VERSIONS = {"python": "3.11.2", "torch": "2.13.0", "numpy": "2.0", "snakemake": "9.27", "librosa": "0.11"}


# --------------------------------------------------------------------------------------------- fixtures

def _rows_for(rng, table, dataset, topology, pooling, strategy, layer):
    seeds = 3 if pooling == "att" else 1
    acc = {d: float(np.round(rng.uniform(35, 80), 2)) for d in "abc"}
    acc["avg"] = float(np.mean([acc[d] for d in "abc"]))
    acc["bc"] = float(np.mean([acc["b"], acc["c"]]))
    out = []
    for dev, mean in acc.items():
        std = float(np.round(rng.uniform(0.2, 3), 2)) if seeds > 1 else np.nan
        out.append({"table": table, "dataset": dataset, "topology": topology, "pooling": pooling,
                    "strategy": strategy, "cond_layer": layer, "device": dev, "acc_mean": mean, "acc_std": std,
                    "acc_ci_low": mean - 2 if seeds > 1 else np.nan, "acc_ci_high": mean + 2 if seeds > 1 else np.nan,
                    "n_seeds": seeds})
    return out


def make_summary(table: str, seed: int = 0) -> pd.DataFrame:
    """A long-format summary in the upstream format (table{n}.csv)."""
    rng = np.random.default_rng(seed)
    rows = []
    if table == "table1":
        for t, p in ROWS:
            for layer in (1, 2):
                rows += _rows_for(rng, table, "embedded2018", t, p, "teacher_forcing", layer)
    else:
        dataset = "embedded2018" if table == "table2" else "embedded2019"
        for t, p in (ROWS if table == "table2" else [("atrous", "att")]):
            for s in STRATEGIES:
                layer = SELECTED[(t, p)] if s in ("teacher_forcing", "multi_task") else None
                rows += _rows_for(rng, table, dataset, t, p, s, layer)
    return pd.DataFrame(rows)


def make_cells(summary1: pd.DataFrame, summary2: pd.DataFrame) -> pd.DataFrame:
    """cells.csv: one row per (cell, seed, device)."""
    rows = []
    for summary in (summary1, summary2):
        for r in summary[summary.device.isin(list("abc"))].to_dict("records"):
            layer = None if pd.isna(r["cond_layer"]) else int(r["cond_layer"])
            cid = f"{r['topology']}-{r['pooling']}-{r['strategy']}" + (f"-L{layer}" if layer else "")
            if r["strategy"] == "single_device":
                cid += f"-{r['device']}"
            for seed in range(int(r["n_seeds"])):
                rows.append({"dataset": r["dataset"], "cell_id": cid, "topology": r["topology"],
                             "pooling": r["pooling"], "strategy": r["strategy"], "cond_layer": layer,
                             "device": r["device"], "seed": seed, "accuracy": r["acc_mean"] + seed - 1,
                             "n": 30, "n_correct": 15, "n_train_clips": 90 if r["device"] == "a" else 18,
                             "n_validation_clips": (10 if r["device"] == "a" else 2)
                             if r["strategy"] == "multi_task" else 0, "validation_accuracy": None})
    return pd.DataFrame(rows).drop_duplicates(["dataset", "cell_id", "device", "seed"])


def make_evaluation(cell_id="atrous-att-multi_task-L2", n_scenes=10, rng=None):
    rng = rng or np.random.default_rng(1)
    per = {}
    for dev in "abc":
        conf = rng.integers(0, 6, (n_scenes, n_scenes))
        conf[np.diag_indices(n_scenes)] += 10
        per[dev] = {"accuracy": 0.6, "n": int(conf.sum()), "n_correct": int(np.trace(conf)),
                    "class_accuracy": {s: 0.6 for s in SCENES[:n_scenes]}, "confusion": conf.tolist()}
    return {"cell_id": cell_id, "spec": {}, "scene_labels": SCENES[:n_scenes], "device_labels": list("abc"),
            "per_device": per, "mean_all": 0.6, "mean_bc": 0.55, "iterations": 20, "train_seconds": 1.0,
            "device_accuracy": 0.99}


def write_attention(path, *, parallel: bool, scenes=SCENES[:4], rng=None):
    """attention.npz: two clips per (scene, device); parallel = the same stems across devices."""
    rng = rng or np.random.default_rng(2)
    fn, sc, dv = [], [], []
    for i, s in enumerate(scenes):
        for d in "abc":
            for seg in range(2):
                loc = i if parallel else f"{i}{d}"  # non-parallel: every device at its own location
                fn.append(f"audio/{s}-lisbon-{loc}-{seg}-{d}.wav")
                sc.append(s)
                dv.append(d)
    maps = rng.random((len(fn), 12, 6)).astype(np.float16)
    np.savez(path, maps=maps, filename=np.array(fn), scene=np.array(sc), device=np.array(dv),
             pred_scene=np.array(sc))
    return path


def write_metrics(path, with_device=True):
    df = pd.DataFrame({"iteration": [0, 10, 20], "loss": [2.3, 1.4, 0.9], "loss_scene": [2.2, 1.3, 0.8],
                       "loss_device": [1.1, 0.4, 0.1] if with_device else [np.nan] * 3,
                       "lr": [1e-3, 9e-4, 8.1e-4], "lambda": [1.0, 1.0, 1e-4] if with_device else [np.nan] * 3,
                       "device_acc": [np.nan, 0.7, 0.99] if with_device else [np.nan] * 3,
                       "elapsed_s": [0.0, 1.0, 2.0]})
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path


BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def write_bench(path, s, cpu):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(BENCH_HEADER + f"{s}\t0:00:{int(s):02d}\t100\t100\t100\t100\t0\t0\t50\t{cpu}\n")


def make_comparisons(table="table2", rows=("atrous-att", "cnn_pool-max", "cnn_nopool-roi"), tests=None,
                     dataset="embedded2018", claim=True):
    """comparisons.csv rows in the runner's format: per test one seed-0 row and one seed-mean row (seed
    empty); the atrous-att tests have paired p = 0.001 (significant after Holm over the family), the
    others 0.2; the paper's z-test p = 0.03 for atrous-att, 0.2 for the others."""
    tests = tests or [(a, b, "all", "greater") for a, b in R.CLAIM_TESTS]
    comps = []
    if claim:
        base = {"table": table, "dataset": dataset, "family": "", "comparison": "multi_task vs single_device",
                "row": "atrous-att", "scope": "all", "alternative": "greater", "model_a": "atrous-att-multi_task-L2",
                "model_b": "atrous-att-single_device[a+b+c]", "n": 300, "n_eff": 180.0, "avg_a": 68.0, "avg_b": 60.0,
                "z_avg": 2.04, "p_avg": 0.0207, "paired_diff": 8.0, "paired_se": 3.1, "paired_z": 2.58,
                "paired_p": 0.0049, "stratified_z": 1.6, "stratified_p": 0.0548, "acc_a": 70.0, "acc_b": 66.0,
                "z": 1.0, "p_z": 0.15, "paper_claim": "claim1"}
        comps += [dict(base, seed=0, seeds="0", mcnemar_b=30, mcnemar_c=12, mcnemar_p=0.004, method="chi2"),
                  dict(base, seed=None, seeds="0")]
    family = []
    for row in rows:
        for a, b, scope, alternative in tests:
            base = {"table": table, "dataset": dataset, "family": table, "comparison": f"{a} vs {b}", "row": row,
                    "scope": scope, "alternative": alternative, "model_a": f"{row}-{a}", "model_b": f"{row}-{b}",
                    "n": 300, "n_eff": 180.0, "avg_a": 62.0, "avg_b": 56.0, "z_avg": 1.5,
                    "p_avg": 0.03 if row == "atrous-att" else 0.2, "paired_diff": 6.0, "paired_se": 2.0,
                    "paired_z": 3.0, "paired_p": 0.001 if row == "atrous-att" else 0.2, "stratified_z": 1.2,
                    "stratified_p": 0.12, "acc_a": 61.0, "acc_b": 55.0, "z": 1.5, "p_z": 0.2, "paper_claim": ""}
            comps.append(dict(base, seed=0, seeds="0", mcnemar_b=10, mcnemar_c=5, mcnemar_p=0.15, method="exact"))
            family.append(dict(base, seed=None, seeds="0 1 2"))
    holm = stats.holm([r["paired_p"] for r in family])
    for r, p in zip(family, holm):
        r.update(p_holm=p, significant=bool(p < stats.FAMILY_ALPHA))
    return comps + family


@pytest.fixture
def results(tmp_path):
    """A tiny results tree in the upstream formats; returns its root."""
    return make_results(tmp_path / "results")


def make_results(root):
    (root / "tables").mkdir(parents=True)
    (root / "stats").mkdir()
    s = {t: make_summary(t, i) for i, t in enumerate(("table1", "table2", "table3"))}
    for t, df in s.items():
        df.to_csv(root / "tables" / f"{t}.csv", index=False)
    make_cells(s["table1"], s["table2"]).to_csv(root / "tables" / "cells.csv", index=False)
    pd.DataFrame([{"topology": t, "pooling": p, "cond_layer": l, "acc_mean": 60.0} for (t, p), l in SELECTED.items()]
                 ).to_csv(root / "tables" / "layers.csv", index=False)
    pd.DataFrame(make_comparisons(), columns=stats.COMPARISON_COLUMNS).to_csv(root / "stats" / "comparisons.csv",
                                                                              index=False)
    seed0 = {"n": 300, "avg_a": 68.0, "avg_b": 60.0, "acc_a": 70.0, "acc_b": 66.0, "mcnemar_b": 30, "mcnemar_c": 12,
             "mcnemar_p": 0.004}
    mean = {"n_eff": 180.0, "paired_diff": 8.0, "paired_se": 3.1, "paired_z": 2.58, "paired_p": 0.0049,
            "stratified_z": 1.6, "stratified_p": 0.0548}
    claim1, claim2 = C.PAPER_CLAIMS
    claims = [dict(C.judge_claim(claim1, [seed0], mean), status="evaluated", seeds="0", dataset="embedded2018",
                   cell_a="atrous-att-multi_task-L2", cell_b="atrous-att-single_device[a+b+c]"),
              dict(C.judge_claim(claim2, []), status="not in this preset's grid", seeds="")]
    pd.DataFrame(claims, columns=C.CLAIM_COLUMNS).to_csv(root / "stats" / "claims.csv", index=False)
    cell = root / "cells" / "embedded2018" / "atrous-att-multi_task-L2" / "seed0"
    cell.mkdir(parents=True)
    (cell / "evaluation.json").write_text(json.dumps(make_evaluation()))
    write_attention(cell / "attention.npz", parallel=True)
    write_metrics(cell / "metrics.csv")
    write_metrics(root / "cells" / "embedded2018" / "cnn_pool-max-joint" / "seed0" / "metrics.csv", with_device=False)
    bench = root / "benchmarks"
    write_bench(bench / "train_cell" / "embedded2018" / "atrous-att-teacher_forcing-L1" / "seed0.tsv", 10, 8)
    write_bench(bench / "train_cell" / "embedded2018" / "atrous-att-multi_task-L2" / "seed0.tsv", 20, 15)
    write_bench(bench / "train_cell" / "embedded2019" / "atrous-att-multi_task-L2" / "seed0.tsv", 40, 30)
    write_bench(bench / "render_tables.tsv", 3, 2)
    return root


# --------------------------------------------------------------------------------------------- wide frames

def test_table1_frame_has_paper_row_order_and_layer_columns():
    s = make_summary("table1")
    wide = T.table1_frame(s)
    assert list(wide.index) == PAPER_ORDER
    assert list(wide.columns) == [1, 2]
    avg = s[(s.device == "avg") & (s.topology == "cnn_nopool") & (s.cond_layer == 2)].acc_mean.item()
    assert wide.loc[("cnn_nopool", "roi"), 2] == pytest.approx(avg)


def test_strategies_frame_columns_are_strategy_by_device():
    s = make_summary("table2")
    wide = T.strategies_frame(s)
    assert list(wide.index) == PAPER_ORDER
    assert list(wide.columns.get_level_values(0).unique()) == STRATEGIES
    assert list(wide.columns.get_level_values(1)[:5]) == ["a", "b", "c", "avg", "bc"]
    want = s[(s.topology == "atrous") & (s.strategy == "joint") & (s.device == "bc")].acc_mean.item()
    assert wide.loc[("atrous", "att"), ("joint", "bc")] == pytest.approx(want)


def test_design_md_column_names_are_accepted():
    s = make_summary("table2").rename(columns={"acc_mean": "accuracy_mean", "acc_std": "accuracy_std",
                                               "acc_ci_low": "ci95_low", "acc_ci_high": "ci95_high"})
    pd.testing.assert_frame_equal(T.strategies_frame(s), T.strategies_frame(make_summary("table2")))


def test_bad_summaries_raise_naming_file_row_and_value(tmp_path):
    s = make_summary("table2")
    s.loc[5, "pooling"] = "median"
    path = tmp_path / "table2.csv"
    s.to_csv(path, index=False)
    with pytest.raises(ResultsError, match=r"table2\.csv: row 7: pooling='median'"):
        T.read_summary(path)
    with pytest.raises(ResultsError, match="missing column"):
        T.check_summary(make_summary("table2").drop(columns="acc_mean"))
    dup = pd.concat([make_summary("table2").iloc[:2], make_summary("table2").iloc[:1]])
    with pytest.raises(ResultsError, match="duplicate"):
        T.check_summary(dup)
    assert T.normalise_table_name("IV") == T.normalise_table_name(4) == "table4"
    with pytest.raises(ResultsError, match="table5"):
        T.normalise_table_name("table5")


def test_paper_values_derive_bc_from_b_and_c():
    p = T.paper_values("II")
    row = p[(p.topology == "atrous") & (p.pooling == "att") & (p.strategy == "multi_task")].set_index("device").paper_acc
    assert row["avg"] == pytest.approx(68.0)
    assert row["bc"] == pytest.approx((68.9 + 62.8) / 2)


def test_paper_values_are_aggregate_paper_table_plus_bc(monkeypatch):
    """The paper's CSVs have one reader (caanet.aggregate.paper_table): the rendered tables show its values."""
    from caanet import aggregate

    keys = ["topology", "pooling", "strategy", "cond_layer", "device", "paper_acc"]
    for table in ("table1", "table2", "table3", "table4"):
        printed = T.paper_values(table)
        pd.testing.assert_frame_equal(printed[printed.device != "bc"].reset_index(drop=True),
                                      aggregate.paper_table(table)[keys].reset_index(drop=True))
    calls = []
    monkeypatch.setattr(aggregate, "paper_table", lambda table: calls.append(table) or pd.DataFrame(columns=keys))
    monkeypatch.setattr(T, "paper_table", aggregate.paper_table)
    assert T.paper_values("III").empty and calls == ["table3"]


# --------------------------------------------------------------------------------------------- LaTeX / HTML

def _balanced(tex: str) -> None:
    stripped = re.sub(r"\\[{}]", "", tex)
    depth = 0
    for ch in stripped:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0, "a closing brace without its opening one"
    assert depth == 0, "unbalanced braces"
    stack = []
    for kind, env in re.findall(r"\\(begin|end)\{([^}]*)\}", tex):
        if kind == "begin":
            stack.append(env)
        else:
            assert stack and stack.pop() == env, f"\\end{{{env}}} does not close the open environment"
    assert not stack, f"unclosed environments {stack}"


def _expected_long(summary: pd.DataFrame, table: str) -> pd.DataFrame:
    """What a parsed table must contain: our numbers rounded, the paper's, the row best."""
    paper = T.paper_values(table)
    rows = []
    wide = T.table1_frame(summary) if table == "table1" else T.strategies_frame(summary)
    for (t, p), series in wide.iterrows():
        for col, mean in series.items():
            if table == "table1":
                sel = summary[(summary.topology == t) & (summary.pooling == p) & (summary.cond_layer == col)
                              & (summary.device == "avg")]
                ref = paper[(paper.topology == t) & (paper.pooling == p) & (paper.cond_layer == col) & (paper.device == "avg")]
                key = (col,)
            else:
                s, d = col
                sel = summary[(summary.topology == t) & (summary.pooling == p) & (summary.strategy == s) & (summary.device == d)]
                ref = paper[(paper.topology == t) & (paper.pooling == p) & (paper.strategy == s) & (paper.device == d)]
                key = col
            n = int(sel.n_seeds.item())
            rows.append({"topology": t, "pooling": p, "key": key, "mean": round(mean, 1),
                         "std": round(sel.acc_std.item(), 1) if n > 1 else np.nan,
                         "paper": round(ref.paper_acc.item(), 1) if len(ref) else np.nan})
    return pd.DataFrame(rows)


def _check_roundtrip(parsed: pd.DataFrame, summary: pd.DataFrame, table: str) -> None:
    parsed = parsed.assign(key=[column_key(table, c) for c in parsed.column])
    want = _expected_long(summary, table)
    merged = want.merge(parsed, on=["topology", "pooling", "key"], suffixes=("", "_got"), how="outer",
                        indicator=True)
    assert (merged["_merge"] == "both").all(), merged[merged["_merge"] != "both"]
    np.testing.assert_allclose(merged["mean_got"], merged["mean"], atol=1e-9)
    np.testing.assert_allclose(merged["std_got"], merged["std"], atol=1e-9)  # NaN == NaN here
    np.testing.assert_allclose(merged["paper_got"], merged["paper"], atol=1e-9)
    has_paper = merged["paper"].notna()
    np.testing.assert_allclose(merged.loc[has_paper, "diff"], (merged["mean"] - merged["paper"])[has_paper], atol=1e-9)
    # exactly one bold cell per row, on the row best
    for (t, p), g in merged.groupby(["topology", "pooling"]):
        assert g["best"].sum() == 1, (t, p)
        if table == "table1":
            assert g.loc[g["best"], "mean"].item() == g["mean"].max()
        else:
            avgs = g[[k[1] == "avg" for k in g["key"]]]
            assert g.loc[g["best"], "key"].item() == avgs.loc[avgs["mean"].idxmax(), "key"]


@pytest.mark.parametrize("table", ["table1", "table2", "table3"])
def test_latex_is_balanced_booktabs_and_round_trips(table):
    summary = make_summary(table)
    tex = T.render_latex(summary, table, caption="ours vs the paper_s values, 100% honest", label=f"tab:{table}")
    _balanced(tex)
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert rule in tex
    assert r"paper\_s" in tex and r"100\%" in tex
    if table != "table1":
        assert tex.count(r"\multicolumn{5}{c}") == 4 and r"\cmidrule(lr)" in tex
    _check_roundtrip(parse_latex_table(tex), summary, table)


@pytest.mark.parametrize("table", ["table1", "table2", "table3"])
def test_html_round_trips(table):
    summary = make_summary(table)
    text = T.render_html(summary, table, caption="a <caption> & more")
    assert "a &lt;caption&gt; &amp; more" in text
    assert text.count('class="num best"') == summary.groupby(["topology", "pooling"]).ngroups
    _check_roundtrip(parse_html_table(text), summary, table)


def test_column_parts_keep_strategy_groups_whole():
    grid = T.build_grid(make_summary("table2"), "table2")
    assert T.column_parts(grid) == [[0, 1], [2, 3]]  # two strategies of A, B, C, Avg, B/C per part
    assert T.column_parts(grid, max_columns=14) == [[0, 1], [2, 3]]
    assert T.column_parts(grid, max_columns=3) == [[0], [1], [2], [3]]  # a group is never split
    assert T.column_parts(T.build_grid(make_summary("table1"), "table1")) == [[0]]
    with pytest.raises(ResultsError, match="max_columns"):
        T.column_parts(grid, max_columns=0)


def _body_lines(tex: str) -> list[str]:
    """The body rows of every tabular (between ``\\midrule`` after the header and ``\\bottomrule``)."""
    out = []
    for seg in tex.split(r"\toprule")[1:]:
        body = seg.split(r"\bottomrule")[0].split(r"\midrule", 1)[1]
        out += [l for l in body.replace(r"\midrule", "").splitlines() if l.strip()]
    return out


def test_wide_latex_tables_have_narrow_two_line_cells_in_parts():
    summary = make_summary("table2")
    tex = T.render_latex(summary, "table2", caption="cap", label="tab:table2")
    _balanced(tex)
    assert [len(r) for r in re.findall(r"\\begin\{tabular\}\{lll(r+)\}", tex)] == [10, 10]
    assert tex.count(r"\begin{table}") == 1 and r"\clearpage" not in tex  # 2 x 3 rows fit one float
    assert r"\footnotesize" in tex and r"\setlength{\tabcolsep}{3pt}" in tex
    assert r"\resizebox{\linewidth}" not in tex  # shrunk only when wider than the line
    rows = _body_lines(tex)
    assert len(rows) == 2 * 3
    for line in rows:  # one cell per column and no line break inside a cell
        assert line.count("&") == 12 and line.count(r"\\") == 1, line
        assert line.count(r"\caanetcell{") == 10, line
    cell = re.search(r"\\caanetcell\{([^{}]*)\}\{([^{}]*)\}", tex)
    assert re.fullmatch(r"\d+\.\d", cell.group(1)) and re.fullmatch(r"\(\d+\.\d, [+-]\d+\.\d\)", cell.group(2))
    assert r"\providecommand{\caanetcell}" in tex and r"{\scriptsize #2}" in tex


def test_long_wide_tables_continue_in_a_second_float_that_round_trips():
    summary = make_summary("table2")
    tex = T.render_latex(summary, "table2", caption="cap", label="tab:table2", max_rows=3)
    _balanced(tex)
    assert tex.count(r"\begin{table}") == 2 and tex.count(r"\label{tab:table2}") == 1
    first, second = tex.split(r"\clearpage")
    assert r"\caption{cap}" in first and r"\providecommand{\caanetcell}" in second
    assert r"\addtocounter{table}{-1}" in second and r"\caption{cap (continued)}" in second
    assert "Single-device" in first and "Multi-task" in second
    _check_roundtrip(parse_latex_table(tex), summary, "table2")
    with pytest.raises(ResultsError, match="toprule"):
        parse_latex_table("no table here")


def test_round_trip_detects_a_changed_number():
    summary = make_summary("table2")
    tex = T.render_latex(summary, "table2")
    first = re.search(r"\d+\.\d\$\\pm\$", tex)
    corrupted = tex[: first.start()] + "99.9$\\pm$" + tex[first.end():]
    with pytest.raises(AssertionError):
        _check_roundtrip(parse_latex_table(corrupted), summary, "table2")


def test_cells_without_paper_value_or_with_missing_numbers():
    s = make_summary("table1")
    s.loc[(s.topology == "cnn_pool") & (s.cond_layer == 2) & (s.device == "avg"), "acc_mean"] = np.nan
    parsed = parse_html_table(T.render_html(s, "table1", paper_df=pd.DataFrame()))
    assert parsed["paper"].isna().all()
    missing = parsed[(parsed.topology == "cnn_pool") & (parsed.column == "Layer 2")]
    assert missing["mean"].isna().all() and not missing["best"].any()


def test_render_all_writes_tex_and_html(tmp_path):
    csvs = []
    for t in ("table1", "table2", "table3"):
        csvs.append(tmp_path / f"{t}.csv")
        make_summary(t).to_csv(csvs[-1], index=False)
    tex = [tmp_path / "out" / f"{t}.tex" for t in ("table1", "table2", "table3")]
    htm = [tmp_path / "out" / f"{t}.html" for t in ("table1", "table2", "table3")]
    T.render_all(csvs, tex_paths=tex, html_paths=htm)
    assert "Layer 1" in tex[0].read_text() and "Multi-task" in htm[1].read_text()
    assert "embedded2019" in htm[2].read_text()
    with pytest.raises(ResultsError, match="summaries"):
        T.render_all(csvs, tex_paths=tex[:2], html_paths=htm)


# --------------------------------------------------------------------------------------------- figures

def _is_png_and_pdf(paths):
    png, pdf = paths
    assert png.suffix == ".png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.suffix == ".pdf" and pdf.read_bytes()[:5] == b"%PDF-"


def test_fig5_layers_writes_png_and_pdf(tmp_path, results):
    _is_png_and_pdf(F.fig5_layers(results / "tables" / "cells.csv", tmp_path / "fig5"))
    # no Table I cells at all: a placeholder, not a crash
    cells = pd.read_csv(results / "tables" / "cells.csv")
    _is_png_and_pdf(F.fig5_layers(cells[cells.strategy == "joint"], tmp_path / "fig5_empty"))
    with pytest.raises(ResultsError, match="missing column"):
        F.fig5_layers(cells.drop(columns="accuracy"), tmp_path / "bad")


def _drawn_bars(draw, *args, **kwargs):
    """The bars a figure function draws: ``{(panel title, legend label, bar x): height}``, and the
    figure's title (its Figure is caught before it is saved)."""
    caught = []
    with mock.patch.object(F, "save_figure", side_effect=lambda fig, stem: caught.append(fig) or []):
        draw(*args, **kwargs)
    fig = caught[0]
    bars = {}
    for ax in fig.axes:
        for container in ax.containers:
            label = container.get_label()
            for patch in getattr(container, "patches", []):
                bars[(ax.get_title(), label, round(patch.get_x() + patch.get_width() / 2, 3))] = patch.get_height()
    return bars, fig._suptitle.get_text()


def test_fig5_draws_exactly_table1s_cells(tmp_path, results):
    """Fig. 5 is Table I's figure: cells.csv also holds Table III's and Table IV's teacher-forcing cells
    (other datasets, devices S1-S6) and a seed Table I does not have; the figure draws Table I's alone."""
    cells = pd.read_csv(results / "tables" / "cells.csv", dtype={"device": str})
    t1 = cells[(cells.strategy == "teacher_forcing") & (cells.dataset == "embedded2018")]
    others = [t1.assign(dataset="embedded2019", accuracy=99.0),
              pd.concat([t1.assign(device=d) for d in ("s1", "s6")]).assign(dataset="tiny2020", accuracy=1.0),
              t1.assign(seed=t1["seed"] + 10, accuracy=0.0)]
    mixed = pd.concat([cells] + others, ignore_index=True)
    selected = F.table1_cells(mixed, PRESET)
    assert set(selected["dataset"]) == {"embedded2018"} and len(selected) == len(t1)
    bars, title = _drawn_bars(F.fig5_layers, selected, tmp_path / "fig5")
    assert {label for _, label, _ in bars} == {"Device A", "Device B", "Device C"} and "embedded2018" in title
    want = t1.groupby(["topology", "pooling", "cond_layer", "device"])["accuracy"].mean()
    assert sorted(round(h, 6) for h in bars.values()) == sorted(round(v, 6) for v in want.to_numpy())
    # the whole rendering selects the same way
    with mock.patch.object(F, "fig5_layers", wraps=F.fig5_layers) as spy:
        mixed.to_csv(tmp_path / "cells.csv", index=False)
        ev = results / "cells" / "embedded2018" / "atrous-att-multi_task-L2" / "seed0" / "evaluation.json"
        F.render_all(cells_csv=tmp_path / "cells.csv", preset=PRESET, fig6_evaluation=ev, fig7_evaluation=ev,
                     metrics_csvs=[], out_dir=tmp_path / "figs")
    drawn = spy.call_args.args[0]
    assert set(zip(drawn.dataset, drawn.cell_id, drawn.seed)) == set(zip(t1.dataset, t1.cell_id, t1.seed))


def test_device_colours_are_distinct_for_any_number_of_devices():
    for n in range(1, 40):
        devices = ["a", "b", "c"] + [f"s{i}" for i in range(1, n)]
        colours = F.device_colours(devices)
        assert len(set(colours.values())) == len(devices), n
        assert colours["a"] == F.DEVICE_COLOURS["a"]
    nine = F.device_colours(["a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"])
    assert nine["s1"] != nine["s6"]                     # they shared a purple before


def test_best_cell_picks_the_best_multi_task_cell_and_seed(results):
    cells = pd.read_csv(results / "tables" / "cells.csv")
    ds, cid, seed = best_cell(cells)
    mt = cells[cells.strategy == "multi_task"].groupby("cell_id").accuracy.mean()
    assert cid == mt.idxmax() and ds == "embedded2018"
    assert seed == cells[cells.cell_id == cid].groupby("seed").accuracy.mean().idxmax()
    assert best_cell(cells, strategy="multi_task", dataset="nope") is None


def test_fig6_confusion_and_its_validation(tmp_path):
    ev = make_evaluation()
    _is_png_and_pdf(F.fig6_confusion(ev, tmp_path / "fig6"))
    path = tmp_path / "evaluation.json"
    bad = make_evaluation()
    bad["per_device"]["b"]["confusion"] = [[1, 2], [3, 4]]
    path.write_text(json.dumps(bad))
    with pytest.raises(ResultsError, match=r"evaluation\.json: per_device\.b\.confusion has shape \(2, 2\)"):
        F.fig6_confusion(path, tmp_path / "bad")


def test_attention_clip_choice_prefers_parallel_recordings(tmp_path):
    att = F.load_attention(write_attention(tmp_path / "p.npz", parallel=True))
    scenes, devices, chosen, missing = F.choose_attention_clips(att, SCENES)
    assert scenes == SCENES[:4] and devices == ["a", "b", "c"] and missing == []
    for s in scenes:
        stems = {F.clip_stem(att["filename"][chosen[(s, d)]], d) for d in devices}
        assert len(stems) == 1  # the same recording on every device
    att = F.load_attention(write_attention(tmp_path / "n.npz", parallel=False))
    _, _, chosen, missing = F.choose_attention_clips(att, SCENES)
    assert missing == SCENES[:4] and len(chosen) == 12


def test_fig7_attention_with_and_without_parallel_clips(tmp_path):
    _is_png_and_pdf(F.fig7_attention(write_attention(tmp_path / "p.npz", parallel=True), tmp_path / "f7p"))
    _is_png_and_pdf(F.fig7_attention(write_attention(tmp_path / "n.npz", parallel=False), tmp_path / "f7n"))
    np.savez(tmp_path / "empty.npz", maps=np.zeros((0, 4, 4), np.float16), filename=np.array([], str),
             scene=np.array([], str), device=np.array([], str))
    _is_png_and_pdf(F.fig7_attention(tmp_path / "empty.npz", tmp_path / "f7e"))
    np.savez(tmp_path / "bad.npz", maps=np.zeros((2, 4, 4)), filename=np.array(["x", "y"]))
    with pytest.raises(ResultsError, match=r"bad\.npz: missing array 'scene'"):
        F.fig7_attention(tmp_path / "bad.npz", tmp_path / "f7b")


def test_clip_stem_strips_only_the_device_suffix():
    assert F.clip_stem("audio/airport-lisbon-1000-40000-b.wav", "b") == "airport-lisbon-1000-40000"
    assert F.clip_stem("audio/airport-lisbon-1000-40000-a.wav", "b") == "airport-lisbon-1000-40000-a"


def test_training_curves_with_and_without_optional_columns(tmp_path, results):
    paths = sorted((results / "cells").rglob("metrics.csv"))
    _is_png_and_pdf(F.training_curves(paths, tmp_path / "curves"))
    _is_png_and_pdf(F.training_curves([paths[0]], tmp_path / "curves_one"))  # no lambda/device_acc
    many = {f"cnn_pool-max-{s}-L1/seed{i}": pd.read_csv(paths[-1]) for s in STRATEGIES for i in range(4)}
    _is_png_and_pdf(F.training_curves(many, tmp_path / "curves_many"))
    with pytest.raises(ResultsError, match="missing column"):
        F.training_curves({"x": pd.DataFrame({"iteration": [1]})}, tmp_path / "bad")


def test_render_all_figures(context):
    assert [f["key"] for f in context["figures"]] == ["fig5_layers", "fig6_confusion", "fig7_attention", "training_curves"]
    for f in context["figures"]:
        assert f["png_b64"].startswith("iVBORw0KGgo")  # base64 of the PNG signature
        assert open(f["pdf"], "rb").read(5) == b"%PDF-"


def test_render_all_reads_fig7s_attention_only_where_named(tmp_path, results):
    """Fig. 7's attention maps are a named input: a missing one is an error naming it; a model without
    attention pooling (no file named) gets the placeholder saying so, whatever lies beside its files."""
    ev = results / "cells" / "embedded2018" / "atrous-att-multi_task-L2" / "seed0" / "evaluation.json"
    args = dict(cells_csv=results / "tables" / "cells.csv", preset=PRESET, fig6_evaluation=ev, fig7_evaluation=ev,
                metrics_csvs=sorted((results / "cells").rglob("metrics.csv")))
    missing = tmp_path / "elsewhere" / "attention.npz"
    with pytest.raises(ResultsError, match=re.escape(str(missing))):
        F.render_all(**args, fig7_attention_npz=missing, out_dir=tmp_path / "f1")
    (tmp_path / "beside").mkdir()
    shutil.copy(ev, tmp_path / "beside" / "evaluation.json")
    write_attention(tmp_path / "beside" / "attention.npz", parallel=True)   # not named: not read
    reads = []
    with mock.patch.object(F, "fig7_attention", side_effect=lambda *a, **k: reads.append(a)):
        done = F.render_all(**dict(args, fig7_evaluation=tmp_path / "beside" / "evaluation.json"),
                            out_dir=tmp_path / "f2")
    assert reads == [] and all(p.stat().st_size > 0 for p in done["fig7_attention"])


# --------------------------------------------------------------------------------------------- report

@pytest.fixture(scope="module")
def context(tmp_path_factory):
    """The report context of the tiny results tree, figures rendered once for the module."""
    tmp_path = tmp_path_factory.mktemp("report")
    results = make_results(tmp_path / "results")
    ev = results / "cells" / "embedded2018" / "atrous-att-multi_task-L2" / "seed0" / "evaluation.json"
    F.render_all(cells_csv=results / "tables" / "cells.csv", preset=PRESET, fig6_evaluation=ev, fig7_evaluation=ev,
                 fig7_attention_npz=ev.with_name("attention.npz"),
                 metrics_csvs=sorted((results / "cells").rglob("metrics.csv")), out_dir=tmp_path / "reports" / "figures")
    return R.build_context(preset=PRESET, results_dir=results, figures=tmp_path / "reports" / "figures",
                           versions=VERSIONS, commit="0123abc", date="2026-01-01 00:00 UTC")


def test_report_html_is_self_contained_and_complete(tmp_path, context):
    out = tmp_path / "paper.html"
    R.render_report_html(context, out)
    html = out.read_text()
    for t in ("table1", "table2", "table3"):
        assert f'data-table="{t}"' in html
    assert "SYNTHETIC" in html and "embedded2018" in html
    for field in ("tinytest", "0123abc", "2026-01-01", "fidelity mode", "att: 0, 1, 2", "torch 2.13.0",
                  "snakemake 9.27", "librosa 0.11", "numpy 2.0", "python 3.11.2"):
        assert field in html, field
    assert html.count("data:image/png;base64,") == 4
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<link" not in html
    assert "oracle information" in html and "does not hold at p &lt; 0.01" in html
    assert "decided by" in html and "McNemar&#39;s test uses the pairing too" in html
    assert "winner&#39;s curse" in html and 'id="training-data"' in html and 'id="why-tests-differ"' in html
    # Table I's models train alike; Table II's multi-task cells hold out validation clips the others do not
    assert ("<td>Table I</td><td>embedded2018</td><td>Atrous CNN + att</td><td>2</td><td>3</td>"
            "<td>a 90, b 18, c 18 (126)</td><td>a 0, b 0, c 0 (0)</td><td>yes</td>") in html
    assert "<td><strong>no</strong>: Single-device 126 trained, 0 held out; Joint 126 trained" in html
    assert "<td>Table II</td><td>1</td><td>0:00:20</td><td>0:00:15</td>" in html


def test_report_statistics_and_claims_are_computed(context):
    claim, other = context["stats"]["claims"]
    assert claim["verdict"] == "does not hold at p < 0.01" and claim["holds"] is False   # Avg 68 vs 60, n = 300
    assert claim["z"] == "2.04" and claim["p"] == "0.0206" and "z=2.40, p=0.0082 (holds)" in claim["paper"]
    assert other["verdict"].startswith("not tested here") and "z=14.63, p<0.0001 (holds)" in other["paper"]
    # the tests whose variance is the Avg's: ours beside the paper's, and the paper's numbers through them
    assert claim["paired"] == "Δ = 8.0 ± 3.1 points, z=2.58, p=0.0049 (holds at p < 0.01)"
    assert claim["stratified"] == "z=1.60, p=0.0548 (n_eff = 180)"
    assert claim["paper_stratified"] == ("clips a:2518 b:180 c:180 (n_eff = 782): z=1.24, p=0.1077 (does not hold)")
    assert "about 782 clips" in context["stats"]["why"] and "p = 0.1077" in context["stats"]["why"]
    (family,) = context["stats"]["families"]
    assert (family["family"], family["m"], family["n_significant"], family["n_paper_significant"]) == ("table2", 12, 4, 4)
    first = family["tests"][0]
    assert (first["row"], first["comparison"], first["seeds"], first["diff"]) == ("atrous-att",
                                                                                "Teacher forcing vs Single-device",
                                                                                "0 1 2", "+6.0 ± 2.0")
    assert first["p_holm"] == "0.0120" and first["significant"] and first["verdict"] == "a better (Holm p < 0.05)"
    s2 = make_summary("table2", 1)  # the fixture's Table II, recomputed by hand

    wide = T.strategies_frame(s2)
    wins_b = int((wide[("multi_task", "b")].round(1) > wide[("joint", "b")].round(1)).sum())
    entry = next(c for c in context["claims"] if c["table"] == "table2" and c["strategy_a"] == "Multi-task"
                 and c["strategy_b"] == "Joint")
    assert entry["devices"][0] == {"device": "B", "wins": wins_b, "total": 3,
                                   "paper_wins": entry["devices"][0]["paper_wins"], "paper_total": 3}
    # the paper's own numbers for these three rows: multi-task beats joint on B in 2 of them
    # (cnn_pool max 58.3 > 57.2, cnn_nopool roi 50.0 < 50.6, atrous att 68.9 > 64.4)
    assert entry["devices"][0]["paper_wins"] == 2
    assert (entry["significant"], entry["paper_significant"], entry["tests"], entry["m"]) == (1, 1, 3, 12)
    assert any("Table II, Multi-task better than Joint: B:" in s for s in context["claims_sentences"])


def test_compute_cost_attribution(context):
    cost = {c["label"]: c for c in context["compute"]}
    assert cost["Table I"]["jobs"] == 1 and cost["Table I"]["wall_s"] == 10
    assert cost["Table II"]["jobs"] == 1 and cost["Table II"]["cpu_s"] == 15  # teacher forcing L1 is not Table II's layer
    assert cost["Table III"]["wall_s"] == 40
    other = next(c for c in context["compute"] if c["label"].startswith("Other"))
    assert other["jobs"] == 1 and other["wall_s"] == 3


def test_benchmark_file_validation(tmp_path):
    bad = tmp_path / "b.tsv"
    bad.write_text("x\ty\n1\t2\n")
    with pytest.raises(ResultsError, match=r"b\.tsv: benchmark file lacks column\(s\) \['s', 'cpu_time'\]"):
        R.read_benchmark(bad)


def test_report_without_stats_or_figures_still_renders(tmp_path, results):
    (results / "stats" / "comparisons.csv").unlink()
    (results / "stats" / "claims.csv").unlink()
    (results / "tables" / "table3.csv").unlink()
    real = dict(PRESET, datasets={"dcase2018_task1b": {"source": "zenodo", "devices": ["a", "b", "c"]}},
                tables={"table1": {"dataset": "dcase2018_task1b"}})
    ctx = R.build_context(preset=real, results_dir=results, figures=[], versions=VERSIONS, commit="x", date="d")
    assert any("table3.csv is missing" in w for w in ctx["warnings"])
    out = tmp_path / "r.html"
    R.render_report_html(ctx, out)
    html = out.read_text()
    assert "SYNTHETIC" not in html and "No statistics are available" in html and "No figures" in html


def test_provenance_gathers_versions_and_commit():
    prov = R.provenance(PRESET)
    for pkg in ("python", "torch", "numpy", "snakemake", "librosa"):
        assert prov["versions"][pkg]
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", prov["git_commit"])


def test_report_tex_is_balanced_and_includes_figure_pdfs(tmp_path, context):
    out = Path(context["figures"][0]["pdf"]).parent.parent / "paper.tex"  # beside figures/
    R.render_report_tex(context, out)
    tex = out.read_text()
    _balanced(tex)
    assert tex.count(r"\includegraphics") == 4 and "{figures/fig7_attention.pdf}" in tex
    assert r"\toprule" in tex and r"\begin{landscape}" in tex and "Synthetic data" in tex
    assert r"\VAR{" not in tex and r"\BLOCK{" not in tex
    assert r"\usepackage{pdflscape}" in tex and r"\usepackage{lscape}" not in tex  # pages display rotated
    per_row = tex.split(r"\subsection*{Table II's tests}", 1)[1].split(r"\section", 1)[0]
    assert r"\begin{longtable}" in per_row and r"\begin{table}" not in per_row  # breaks across pages
    rows = [l for l in per_row.splitlines() if l.startswith(("atrous-att & ", "cnn\\_pool-max & ", "cnn\\_nopool-roi & "))]
    assert len(rows) == context["stats"]["families"][0]["m"] == 12
    assert (r"cnn\_pool-max & Multi-task vs Single-device & all & one-sided & 0 1 2 & 300 (180) & 62.0 & 56.0 & "
            r"+6.0 ± 2.0 & 0.2000 & 1.0000 & not significant \\") in per_row
    assert "4 of 12 significant" in per_row and "results/stats/comparisons.csv" in per_row


def test_build_pdf_without_latex_returns_a_message(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    tex = tmp_path / "paper.tex"
    tex.write_text("\\documentclass{article}\\begin{document}x\\end{document}\n")
    message = R.build_pdf(tex, tmp_path / "paper.pdf")
    assert "LaTeX is not installed" in message and "HTML report is complete" in message
    assert not (tmp_path / "paper.pdf").exists()


@pytest.mark.skipif(not (shutil.which("pdflatex") or shutil.which("latexmk")), reason="LaTeX is not installed")
def test_build_pdf_compiles_the_report(tmp_path, context):
    tex = Path(context["figures"][0]["pdf"]).parent.parent / "paper.tex"
    R.render_report_tex(context, tex)
    assert R.build_pdf(tex, tmp_path / "paper.pdf") is None
    assert (tmp_path / "paper.pdf").read_bytes()[:5] == b"%PDF-"


def test_report_reads_the_files_it_is_given_and_no_other(tmp_path, results):
    """The workflow names every input (no results tree): those are read, a table not named is a
    warning, and nothing else under the results tree is looked at."""
    given = dict(summaries=[results / "tables" / f"table{n}.csv" for n in (1, 2)],
                 layers_csv=results / "tables" / "layers.csv", cells_csv=results / "tables" / "cells.csv",
                 stats_csv=results / "stats" / "comparisons.csv", claims_csv=results / "stats" / "claims.csv",
                 benchmarks=sorted((results / "benchmarks").rglob("*.tsv"))[:1])
    opened = []
    real_read_csv = pd.read_csv

    def spy(path, *a, **k):
        opened.append(Path(path.name if hasattr(path, "read") else path))   # a path or an open file
        return real_read_csv(path, *a, **k)
    with mock.patch.object(pd, "read_csv", side_effect=spy):
        ctx = R.build_context(preset=PRESET, figures=[], versions=VERSIONS, commit="x", date="d", **given)
    declared = {Path(p) for v in given.values() for p in (v if isinstance(v, list) else [v])}
    opened_results = {p for p in opened if results in p.parents}     # not the package's paper tables
    assert opened_results and opened_results <= declared
    assert [t["key"] for t in ctx["tables"]] == ["table1", "table2"]
    assert any("table3.csv is missing" in w for w in ctx["warnings"])
    assert len(ctx["layers"]) == len(SELECTED) and ctx["training_data"] and ctx["stats"]


def test_report_uses_the_rendered_table_files(tmp_path, results):
    csvs = [results / "tables" / f"table{n}.csv" for n in (1, 2, 3)]
    tex = [tmp_path / "tables" / f"table{n}.tex" for n in (1, 2, 3)]
    htm = [tmp_path / "tables" / f"table{n}.html" for n in (1, 2, 3)]
    T.render_all(csvs, tex_paths=tex, html_paths=htm)
    htm[1].write_text(htm[1].read_text().replace("<caption>", "<caption>MARKER "))
    ctx = R.build_context(preset=PRESET, results_dir=results, tables_dir=tex + htm, figures=[],
                          benchmarks=[], versions=VERSIONS, commit="x", date="d")
    by_key = {t["key"]: t for t in ctx["tables"]}
    assert "MARKER" in by_key["table2"]["html"] and by_key["table1"]["latex"] == tex[0].read_text()
    assert ctx["compute"] == []


def test_selection_notes_state_every_choice_that_touches_test_labels():
    paper = R.selection_notes(PRESET, [{"selected_on": "test"}])
    assert paper[0].startswith("Layer selection: on the test set") and "winner's curse" in paper[0]
    assert "VALIDATION split" in paper[1] and "deliberate, leak-free departure" in paper[1]
    assert "after the last iteration" in paper[2] and "best Avg" in paper[3]
    literal = R.selection_notes(dict(PRESET, training={"lambda_on": "test", "selection": "best_val"}),
                                [{"selected_on": "validation"}])
    assert literal[0].startswith("Layer selection: on a validation split")
    assert "TEST split" in literal[1] and "test labels steer" in literal[1] and "best validation" in literal[2]
    reference = R.selection_notes(dict(PRESET, fidelity="reference"), [])
    assert "TEST split" in reference[1] and "winner's curse" in reference[0]     # no layers yet: the default


def test_training_data_rows_say_whether_every_model_of_a_row_trains_on_the_same_clips():
    """Per table and row: the models' training and held-out clips per device, and whether they agree in
    each seed; a single-device model is its cells together."""
    def cells(strategy, layer, device, train, val, seed=0):
        return {"dataset": "d", "cell_id": f"x-{strategy}-{device}", "topology": "atrous", "pooling": "att",
                "strategy": strategy, "cond_layer": layer, "device": device, "seed": seed,
                "n_train_clips": train, "n_validation_clips": val}
    alike = pd.DataFrame([cells("single_device", None, "a", 90, 10), cells("single_device", None, "b", 18, 2),
                          cells("joint", None, "a", 90, 10), cells("joint", None, "b", 18, 2),
                          cells("multi_task", 2, "a", 90, 10), cells("multi_task", 2, "b", 18, 2)])
    (row,) = R.training_data_rows({"table2": alike}, {"d": "a"})
    assert (row["table"], row["row"], row["models"], row["same"]) == ("Table II", "Atrous CNN + att", 3, True)
    assert row["train"] == "a 90, b 18 (108)" and row["validation"] == "a 10, b 2 (12)"
    unlike = alike.copy()
    unlike.loc[unlike.strategy != "multi_task", ["n_train_clips", "n_validation_clips"]] = [[100, 0], [20, 0]] * 2
    (row,) = R.training_data_rows({"table2": unlike})
    assert not row["same"] and row["train"] == "differs"
    assert row["detail"] == ("Single-device 120 trained, 0 held out; Joint 120 trained, 0 held out; "
                             "Multi-task L2 108 trained, 12 held out")
    assert R.training_data_rows({}) == [] and R.training_data_rows({"table2": alike.drop(columns="n_train_clips")}) == []


# --------------------------------------------------------------------------------------------- Table IV

DEVICES9 = ["a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"]
UNSEEN3 = ("s4", "s5", "s6")
T4_ROWS = [("atrous", "att"), ("cnn_pool", "att")]
T4_STRATEGIES = ["single_device", "joint", "teacher_forcing", "multi_task", "multi_task_learned"]


def make_table4(seeds=(0, 1)) -> pd.DataFrame:
    """Table IV's summary through the real aggregation (caanet.aggregate) from hand-made cell accuracies."""
    from caanet import aggregate
    from caanet.spec import CellSpec

    rows = []
    for r, (t, p) in enumerate(T4_ROWS):
        for k, strategy in enumerate(T4_STRATEGIES):
            layer = 2 if strategy in ("teacher_forcing", "multi_task", "multi_task_learned") else None
            devices = DEVICES9[:6] if strategy == "single_device" else DEVICES9
            for seed in seeds:
                for i, dev in enumerate(devices):
                    spec = CellSpec("tiny2020", t, p, strategy, cond_layer=layer, seed=seed,
                                    device=dev if strategy == "single_device" else None)
                    acc = 30.0 + 5 * k + 2 * r + (10.0 if i < 6 else 0.0) + seed + i / 4
                    rows.append(dict(dataset="tiny2020", cell_id=spec.cell_id, topology=t, pooling=p,
                                     strategy=strategy, cond_layer=layer, device=dev, seed=seed, accuracy=acc,
                                     n=20, n_correct=int(acc / 5)))
    cells = pd.DataFrame(rows, columns=aggregate.CELL_COLUMNS).astype({"cond_layer": "Int64"})
    return aggregate.summarise_table(cells, "table4", reference_device={"tiny2020": "a"},
                                     unseen_devices={"tiny2020": UNSEEN3})


def test_table4_renders_devices_avg_seen_unseen_per_strategy_and_round_trips():
    summary = make_table4()
    wide = T.strategies_frame(summary, summary_columns=T.SUMMARY_COLUMNS_OF["table4"])
    assert list(dict.fromkeys(wide.columns.get_level_values(0))) == T4_STRATEGIES
    assert list(dict.fromkeys(wide.columns.get_level_values(1))) == DEVICES9 + ["avg", "seen", "unseen"]
    for render, parse in ((T.render_latex, parse_latex_table), (T.render_html, parse_html_table)):
        text = render(summary, "table4", caption=T.table_caption("table4", summary))
        if render is T.render_latex:
            _balanced(text)
        parsed = parse(text)
        parsed["key"] = [column_key("table4", c) for c in parsed["column"]]
        assert len(parsed) == len(T4_ROWS) * len(T4_STRATEGIES) * 12
        assert parsed["paper"].isna().all()                                   # beyond the paper
        got = {(r.topology, r.pooling) + r.key: r.mean for r in parsed.itertuples()}
        # hand values, seeds 0 and 1 (mean adds 0.5): atrous-att (r=0) joint (k=1): s4 = 35 + 6/4 + 0.5
        assert got[("atrous", "att", "joint", "s4")] == pytest.approx(37.0)
        seen = 35 + 10 + np.mean([i / 4 for i in range(6)]) + 0.5           # 46.125
        unseen = 35 + np.mean([i / 4 for i in range(6, 9)]) + 0.5           # 37.25
        assert got[("atrous", "att", "joint", "seen")] == pytest.approx(round(seen, 1))
        assert got[("atrous", "att", "joint", "unseen")] == pytest.approx(round(unseen, 1))
        assert got[("atrous", "att", "joint", "avg")] == pytest.approx(round((6 * seen + 3 * unseen) / 9, 1))
        # the learned lambda's column reads back; single-device has no Avg and no Unseen
        assert ("atrous", "att", "multi_task_learned", "s6") in got
        assert np.isnan(got[("atrous", "att", "single_device", "avg")])
        assert np.isnan(got[("atrous", "att", "single_device", "unseen")])
        assert not any(k[3] == "bc" for k in got)
        # the best Avg per row: multi_task_learned (k = 4) has the highest accuracies
        best = parsed[parsed["best"]]
        assert len(best) == len(T4_ROWS) and set(best["key"]) == {("multi_task_learned", "avg")}


T4_PRESET = {**PRESET, "tables": {**PRESET["tables"], "table4": {"dataset": "tiny2020", "seeds": [0]}},
             "datasets": {**PRESET["datasets"], "tiny2020": {"source": "embedded", "devices": DEVICES9,
                                                              "unseen_devices": list(UNSEEN3), "clip_seconds": 1.0}}}


def write_table4(root, policy, **extra_columns):
    """Table IV's summary, cells (atrous-att, seed 0, every device) and tests into a results tree."""
    make_table4().to_csv(root / "tables" / "table4.csv", index=False)
    cells = pd.read_csv(root / "tables" / "cells.csv")
    rows = []
    for strategy in T4_STRATEGIES:
        layer = 2 if strategy in policy else None
        devices = DEVICES9[:6] if strategy == "single_device" else DEVICES9
        for d in devices:
            cid = f"atrous-att-{strategy}" + (f"-L{layer}" if layer else "") + (f"-{d}" if strategy == "single_device" else "")
            rows.append({"dataset": "tiny2020", "cell_id": cid, "topology": "atrous", "pooling": "att",
                         "strategy": strategy, "cond_layer": layer, "device": d, "seed": 0, "accuracy": 50.0,
                         "n": 20, "n_correct": 10, "unseen_device_policy": policy.get(strategy) if d in UNSEEN3 else None,
                         **{k: v(strategy) for k, v in extra_columns.items()}})
    pd.concat([cells, pd.DataFrame(rows)]).to_csv(root / "tables" / "cells.csv", index=False)
    tests = [(a, "joint", "all", "greater") for a in policy] + [("multi_task_learned", "multi_task", "all", "two-sided"),
                                                               ("multi_task_learned", "multi_task", "unseen", "two-sided")]
    comps = pd.read_csv(root / "stats" / "comparisons.csv")
    t4 = pd.DataFrame(make_comparisons("table4", ("atrous-att",), tests, "tiny2020", claim=False))
    pd.concat([comps, t4]).to_csv(root / "stats" / "comparisons.csv", index=False)


def test_table4_report_section_says_beyond_the_paper_policies_and_tests(tmp_path):
    root = make_results(tmp_path / "results")
    policy = {"teacher_forcing": "uniform", "multi_task": "predicted", "multi_task_learned": "predicted"}
    write_table4(root, policy)
    ctx = R.build_context(preset=T4_PRESET, results_dir=root, versions=VERSIONS, commit="0123abc",
                          date="2026-01-01 00:00 UTC")
    t4s = ctx["table4"]
    assert t4s and "table4" not in [t["key"] for t in ctx["tables"]]
    assert t4s["seen"] == "a, b, c, s1, s2, s3" and t4s["unseen"] == "s4, s5, s6"
    assert [(p["strategy"], p["policy"]) for p in t4s["policies"]] == list(policy.items())
    # one family of 5 tests (paired p = 0.001 each: all significant after Holm), learned vs switched picked out
    assert t4s["m"] == 5 and t4s["n_significant"] == 5 and "unseen devices alone" in t4s["statistic"]
    assert [(c["comparison"], c["scope"], c["alternative"]) for c in t4s["learned_vs_switched"]] == [
        ("Multi-task (learned λ) vs Multi-task", "all", "two-sided"),
        ("Multi-task (learned λ) vs Multi-task", "unseen", "two-sided")]
    assert t4s["layer_note"].startswith("Table IV's conditional strategies use") and "Tables II and III" not in t4s["layer_note"]
    R.render_report_html(ctx, tmp_path / "paper.html")
    R.render_report_tex(ctx, tmp_path / "paper.tex")
    html, tex = (tmp_path / "paper.html").read_text(), (tmp_path / "paper.tex").read_text()
    assert "Table IV goes beyond the paper" in html and "no paper values" in html
    assert 'data-table="table4"' in html and "Multi-task (learned λ): <code>predicted</code>" in html
    assert "5 of 5 tests" in html and "Learned against switched λ, Table IV" in html
    assert "Table IV goes beyond the paper" in tex and r"\label{tab:table4}" in tex
    assert t4s["has_single_device"] and "Single-device models exist for the seen devices only" in html
    _balanced(tex)
    # a Table IV without single-device columns (tables.table4.strategies) says so
    summary = pd.read_csv(root / "tables" / "table4.csv")
    summary[summary["strategy"] != "single_device"].to_csv(root / "tables" / "table4.csv", index=False)
    ctx = R.build_context(preset=T4_PRESET, results_dir=root, versions=VERSIONS, commit="0", date="2026")
    assert not ctx["table4"]["has_single_device"] and "Single-device" not in ctx["table4"]["strategies"]
    R.render_report_html(ctx, tmp_path / "paper.html")
    assert "has no single-device columns" in (tmp_path / "paper.html").read_text()
    # a preset without Table IV: no section, no warning about a table4.csv it never asked for
    ctx = R.build_context(preset=PRESET, results_dir=root, versions=VERSIONS, commit="0", date="2026")
    assert ctx["table4"] is None and not any("table4" in w for w in ctx["warnings"])


def test_report_tex_has_only_characters_pdflatex_can_typeset(tmp_path, context):
    """Every non-ASCII character of the regenerated paper's TeX (report and tables) is one the template
    declares (\\DeclareUnicodeCharacter) or Latin-1, which T1 + utf8 inputenc typeset; anything else
    (a lone combining accent such as the hat of "p̂") stops pdflatex."""
    import re

    out = Path(context["figures"][0]["pdf"]).parent.parent / "paper.tex"
    R.render_report_tex(context, out)
    tex = out.read_text(encoding="utf-8")
    tables = "".join(p.read_text(encoding="utf-8") for p in out.parent.rglob("tables/*.tex"))
    declared = {chr(int(h, 16)) for h in re.findall(r"\\DeclareUnicodeCharacter\{([0-9A-Fa-f]+)\}", tex)}
    bad = sorted({ch for ch in tex + tables if ord(ch) > 0xFF and ch not in declared})
    assert not bad, [f"U+{ord(c):04X}" for c in bad]
    assert r"\^{p}\_a" in tex  # the estimate's hat, as a TeX accent


def test_latex_escape_turns_combining_accents_into_tex_accents():
    assert T.latex_escape("p\u0302_a & 5%") == r"\^{p}\_a \& 5\%"
    assert T.latex_escape("e\u0301t\u00e9") == r"\'{e}t" + "\u00e9"
    assert T.latex_escape("\u0302x") == "\u0302x"  # nothing to put the accent on: left as it is


def test_report_tex_tables_have_as_many_columns_as_cells(tmp_path, context):
    """Every row of every tabular/longtable in the report's TeX fits its column specification (an
    extra cell stops pdflatex: "Extra alignment tab has been changed to \\cr")."""
    import re

    out = Path(context["figures"][0]["pdf"]).parent.parent / "paper.tex"
    R.render_report_tex(context, out)
    tex = out.read_text(encoding="utf-8")
    envs = re.findall(r"\\begin\{(tabular|longtable)\}(?:\[[^\]]*\])?\{((?:[^{}]|\{[^{}]*\})*)\}(.*?)\\end\{\1\}",
                      tex, flags=re.S)
    assert envs
    for env, spec, body in envs:
        n_cols = len(re.findall(r"[lrcp]", re.sub(r"[@p]\{[^{}]*\}", lambda m: "p" if m.group()[0] == "p" else "", spec)))
        for row in body.split(r"\\"):
            row = re.sub(r"\\(toprule|midrule|bottomrule|endhead|endfirsthead|endfoot|endlastfoot|hline)", "", row)
            cells = len(re.findall(r"(?<!\\)&", row)) + 1
            if row.strip():
                assert cells <= n_cols, f"{env} {{{spec}}}: {cells} cells in {row.strip()[:120]!r}"


def test_report_sections_are_registered_in_order_and_each_has_both_templates(monkeypatch):
    """Every registered section has an HTML and a TeX template; a new section goes where ``after``
    says, a key registered twice or two sections setting one context key are refused."""
    from caanet.render.report import sections as S

    keys = [s.key for s in S.SECTIONS]
    assert keys[:3] == ["provenance", "results", "table4"] and keys[-1] == "compute"
    for key in keys:
        for ext in ("html", "tex"):
            assert (R.TEMPLATES / "sections" / f"{key}.{ext}.j2").is_file(), (key, ext)
    monkeypatch.setattr(S, "SECTIONS", list(S.SECTIONS))
    S.register_section(S.Section("extra", lambda inp: {"extra": 1}), after="table4")
    assert [s.key for s in S.SECTIONS][3] == "extra"
    with pytest.raises(ResultsError, match="already registered"):
        S.register_section(S.Section("extra", lambda inp: {}))
    with pytest.raises(ResultsError, match="no section 'nowhere'"):
        S.register_section(S.Section("other", lambda inp: {}), after="nowhere")
    S.register_section(S.Section("clash", lambda inp: {"extra": 2}))
    with pytest.raises(ResultsError, match=r"'clash' sets context keys \['extra'\]"):
        S.build_sections(R.load_inputs(preset=PRESET))


# --------------------------------------------------------------------------------------------- λ, findings, numerics

def _switch_cells():
    """Table II's multi-task cells of two rows: atrous-att switched in seeds 0 and 2 of 3, cnn_pool-max in
    its one seed; a learned-λ cell (no switch rule) that must not count."""
    rows = []
    for seed, at in ((0, 200.0), (1, float("nan")), (2, 400.0)):
        rows.append({"dataset": "d", "cell_id": "atrous-att-multi_task-L2", "topology": "atrous", "pooling": "att",
                     "strategy": "multi_task", "cond_layer": 2, "device": "a", "seed": seed, "lambda_switched_at": at})
    rows.append({"dataset": "d", "cell_id": "cnn_pool-max-multi_task-L1", "topology": "cnn_pool", "pooling": "max",
                 "strategy": "multi_task", "cond_layer": 1, "device": "a", "seed": 0, "lambda_switched_at": 100.0})
    rows.append({"dataset": "d", "cell_id": "atrous-att-multi_task_learned-L2", "topology": "atrous", "pooling": "att",
                 "strategy": "multi_task_learned", "cond_layer": 2, "device": "a", "seed": 0,
                 "lambda_switched_at": float("nan")})
    return pd.DataFrame(rows)


def test_lambda_switch_marks_and_counts():
    from caanet.render import switches as SW

    marks, note = SW.switch_marks(_switch_cells())
    assert marks == {("atrous", "att", "multi_task"): "†2/3", ("cnn_pool", "max", "multi_task"): "†"}
    assert "switched in 3 of 4 switched-λ cells" in note
    assert "Atrous CNN + att, Multi-task: 200, —, 400" in note and "CNN w/ pool + max, Multi-task: 100" in note
    assert SW.switch_count(_switch_cells()) == (3, 4)
    never = _switch_cells().assign(lambda_switched_at=float("nan"))
    assert SW.switch_marks(never) == ({}, SW.switch_marks(never)[1]) and "never switched" in SW.switch_marks(never)[1]
    assert SW.switch_marks(_switch_cells().drop(columns="lambda_switched_at")) == ({}, "")   # not recorded
    # CNN-d's accuracy (seen devices, percent) in the cells that never switched: atrous-att seed 1 alone
    acc = _switch_cells().assign(device_accuracy_seen=[97.0, 71.5, 99.0, 98.5, 60.0])
    assert SW.unswitched_device_accuracy(acc) == (71.5, 71.5)
    assert SW.unswitched_device_accuracy(_switch_cells()) is None                      # not recorded
    from caanet.render.report.multitask import switch_counts

    sentence = switch_counts({"table4": acc}, 0.98)["sentence"]
    assert "switched in 3 of 4" in sentence and "(the switch needs 98 %): Table IV, mean 71.5 %, at most 71.5 %" in sentence
    assert "Where it never switched" not in switch_counts({"table4": acc.assign(lambda_switched_at=100.0)})["sentence"]
    # the rendered table carries the marks on the multi-task Avg and the note below it, and reads back
    summary = make_summary("table2")
    for render, parse in ((T.render_html, parse_html_table), (T.render_latex, parse_latex_table)):
        text = render(summary, "table2", marks=marks, footnote=note)
        parsed = parse(text)
        marked = parsed[parsed["mark"] != ""]
        assert {(r.topology, r.pooling, r.column, r.mark) for r in marked.itertuples()} == {
            ("atrous", "att", "Multi-task/Avg", "†2/3"), ("cnn_pool", "max", "Multi-task/Avg", "†")}
        _check_roundtrip(parsed, summary, "table2")            # the numbers are unchanged by the marks
        assert "switched in 3 of 4" in text
    assert r"\textsuperscript{\dag{}2/3}" in T.render_latex(summary, "table2", marks=marks)


def test_multitask_section_shows_the_finding_its_tests_and_the_runs_numbers(tmp_path, monkeypatch):
    """FINDINGS (caanet.fidelity) with their tests, the device accuracy the argmax multi-task cells share
    per dataset and seed (cells.csv), the switch count per table, and the learned-vs-switched tests."""
    from caanet import fidelity
    from caanet.render.report import multitask as MT

    finding = {"name": "argmax_detach", "title": "λ acts on disjoint parameters",
               "text": "L_scene and L_device update disjoint parameters.", "tests": ["tests/test_models.py::test_x"]}
    monkeypatch.setattr(fidelity, "FINDINGS", (finding,), raising=False)
    root = make_results(tmp_path / "results")
    policy = {"teacher_forcing": "uniform", "multi_task": "predicted", "multi_task_learned": "predicted"}
    write_table4(root, policy, device_accuracy=lambda s: 96.83 if s in ("multi_task", "multi_task_learned") else None,
                 lambda_switched_at=lambda s: 300.0 if s == "multi_task" else None)
    ctx = R.build_context(preset=T4_PRESET, results_dir=root, versions=VERSIONS, commit="0", date="d")
    mt = ctx["multitask"]
    assert mt["findings"] == [finding]
    assert mt["device_accuracy"] == [
        "tiny2020, seed 0: the 2 argmax multi-task cells (multi_task, multi_task_learned) all report one device "
        "accuracy of CNN-d, 96.83 %."]
    # Table II's five multi-task cells (cell x seed) never switched, Table IV's one did
    assert mt["switches"]["sentence"].startswith("λ of Eq. (2) switched in 1 of 6 multi-task cells")
    assert "Table II 0 of 5; Table IV 1 of 1" in mt["switches"]["sentence"]
    R.render_report_html(ctx, tmp_path / "paper.html")
    R.render_report_tex(ctx, tmp_path / "paper.tex")
    html, tex = (tmp_path / "paper.html").read_text(), (tmp_path / "paper.tex").read_text()
    assert 'id="finding-argmax_detach"' in html and "<code>tests/test_models.py::test_x</code>" in html
    assert "96.83 %" in html and 'id="lambda-switch"' in html and "Learned against switched λ" in html
    assert r"\paragraph{λ acts on disjoint parameters.}" in tex
    _balanced(tex)
    # differing device accuracies are said so
    groups = MT.device_accuracy_groups({"table2": pd.DataFrame({
        "dataset": "d", "cell_id": ["m1", "m2", "m3"], "seed": 0, "strategy": "multi_task",
        "device_accuracy": [90.0, 91.5, 90.0]})})
    assert MT.device_accuracy_sentences(groups) == [
        "d, seed 0: the 3 argmax multi-task cells (multi_task) report 2 different device accuracies of CNN-d, "
        "90.00–91.50 %."]
    # results without the columns (written before them): no sentence, no finding without FINDINGS
    monkeypatch.setattr(fidelity, "FINDINGS", (), raising=False)
    plain = R.build_context(preset=PRESET, results_dir=make_results(tmp_path / "plain"), versions=VERSIONS,
                            commit="0", date="d")["multitask"]
    assert plain == {"findings": [], "device_accuracy": [], "switches": {"tables": [], "switched": 0, "cells": 0,
                                                                         "sentence": ""}}


def test_bf16_autocast_is_named_for_every_cell_that_used_it():
    def frame(flags):
        return pd.DataFrame({"dataset": "d", "cell_id": [f"c{i}" for i in range(len(flags))], "seed": 0,
                             "bf16_autocast": flags})
    assert R.bf16_note({"table2": frame([True, True])}).startswith("Numerics: bf16 autocast on CUDA")
    assert "Table II: all 2 cells" in R.bf16_note({"table2": frame([True, True]), "table1": frame([False])})
    some = R.bf16_note({"table4": frame([True, False, "True"])})
    assert "Table IV: 2 of 3 cells (c0 seed 0; c2 seed 0)" in some and "float32 in every other cell" in some
    assert R.bf16_note({"table2": frame([False])}) == "Numerics: float32 in every cell (no cell ran under bf16 autocast)."
    assert R.bf16_note({"table2": frame([None])}).startswith("Numerics: not recorded")


def test_layer_selection_note_once_per_table_in_its_own_words(tmp_path, context):
    out = tmp_path / "paper.html"
    R.render_report_html(context, out)
    html = out.read_text()
    for name in ("Table II", "Table III"):
        assert html.count(f"{name}&#39;s conditional strategies use, per row") == 1, name
    assert "Table I&#39;s conditional strategies use" not in html
    notes = {t["key"]: t["layer_note"] for t in context["tables"]}
    assert notes["table1"] == "" and "Table III's comparisons" in notes["table3"] and "embedded2018" in notes["table2"]
    tex_path = Path(context["figures"][0]["pdf"]).parent.parent / "paper.tex"
    R.render_report_tex(context, tex_path)
    assert tex_path.read_text().count("Table II's conditional strategies use, per row") == 1


def test_report_text_names_each_datasets_own_devices(tmp_path):
    """A dataset whose devices are x, y, z: titles, captions and the claims' device counts use them, and
    no "A, B, C" appears outside the quotations of the paper."""
    root = make_results(tmp_path / "results")
    rename = {"a": "x", "b": "y", "c": "z"}
    for name in ("table1", "table2", "table3", "cells"):
        path = root / "tables" / f"{name}.csv"
        df = pd.read_csv(path, dtype={"device": str})
        df["device"] = df["device"].replace(rename)
        df.to_csv(path, index=False)
    preset = {**PRESET, "datasets": {k: {**v, "devices": ["x", "y", "z"]} for k, v in PRESET["datasets"].items()}}
    ctx = R.build_context(preset=preset, results_dir=root, figures=[], versions=VERSIONS, commit="0", date="d")
    t1 = next(t for t in ctx["tables"] if t["key"] == "table1")
    assert t1["title"].endswith("(average over devices X, Y, Z)") and t1["devices"] == "X, Y, Z"
    assert "devices X, Y, Z" in t1["html"] and "A, B, C" not in t1["html"]
    entry = ctx["claims"][0]
    assert [d["device"] for d in entry["devices"]] == ["Y", "Z", "Avg"]     # x is the reference device
    assert entry["devices"][0]["paper_total"] == 0 and "(not in the paper)" in ctx["claims_sentences"][0]
    assert R.figure_entries([], preset) == []
    fig5 = R.FIGURES[0][2].format(dataset="embedded2018", devices="X, Y and Z")
    assert "bars are devices X, Y and Z" in fig5
