"""The report's DCASE metrics (caanet.render.dcase_metrics): log loss per strategy table, the complexity
table, the limits sentences, and the section in the HTML and LaTeX report."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import pytest

from caanet import paths
from caanet.complexity import complexity_record
from caanet.complexity_table import TABLE_COLUMNS
from caanet.render import dcase_metrics as D
from caanet.render import report as R
from test_render import PRESET, VERSIONS, _balanced, make_results


def summary_with_log_loss(seeds: int = 2) -> pd.DataFrame:
    rows = []
    for (t, p) in (("atrous", "att"), ("cnn_pool", "max")):
        for s, ll in (("joint", 1.5), ("multi_task", 1.25)):
            for d in ("a", "b", "avg", "seen", "unseen"):
                rows.append({"table": "table4", "dataset": "e20", "topology": t, "pooling": p, "strategy": s,
                             "cond_layer": 3 if s == "multi_task" else pd.NA, "device": d, "acc_mean": 50.0,
                             "acc_std": 1.0, "acc_ci_low": 40.0, "acc_ci_high": 60.0, "n_seeds": seeds,
                             "ll_mean": ll + (0.5 if d == "unseen" else 0.0), "ll_std": 0.0125,
                             "ll_ci_low": ll - 0.1, "ll_ci_high": ll + 0.1})
    return pd.DataFrame(rows)


def test_log_loss_frame_shows_avg_seen_unseen_per_strategy_in_the_papers_order():
    f = D.log_loss_frame(summary_with_log_loss())
    assert list(f.index) == [("cnn_pool", "max"), ("atrous", "att")]          # the paper's row order
    assert list(f.columns) == [(s, d) for s in ("joint", "multi_task") for d in ("avg", "seen", "unseen")]
    assert f.loc[("atrous", "att"), ("multi_task", "unseen")] == "1.750±0.013"
    one = D.log_loss_frame(summary_with_log_loss(seeds=1))
    assert one.loc[("atrous", "att"), ("joint", "avg")] == "1.500"            # no ±std with one seed
    assert D.log_loss_frame(summary_with_log_loss().drop(columns=["ll_mean", "ll_std"])).empty
    html = D.render_log_loss_html(summary_with_log_loss(), "cap")
    assert html.count("<tr") == 4 and "Multi-task" in html and "1.750±0.013" in html
    tex = D.render_log_loss_latex(summary_with_log_loss(), "cap", label="tab:x")
    _balanced(tex)
    assert r"1.750$\pm$0.013" in tex and r"\multicolumn{3}{c}{Multi-task}" in tex


def complexity_rows() -> pd.DataFrame:
    rows = []
    for ds, n_dev in (("e18", 3), ("e20", 6)):
        for s, layer, params, macs, cnn_d in (("joint", None, 6112, 839_832, False),
                                               ("single_device", None, 6112, 839_832, False),
                                               ("multi_task", 2, 7000 + n_dev, 2_000_000, True),
                                               ("multi_task", 3, 7008 + n_dev, 2_000_000, True)):
            rec = complexity_record(params, macs, 1.0, input_shape=(31, 64), device_cnn=cnn_d)
            rows.append({"dataset": ds, "topology": "cnn_pool", "pooling": "att", "strategy": s, "cond_layer": layer,
                         "method": "none", "cell_ids": "x", "n_cells": 1,
                         **{k: v for k, v in rec.items() if k != "counted_with"}})
    rows.append({**rows[0], "topology": "atrous", "params": 200_000, "bytes_fp32": 800_000, "bytes_fp16": 400_000,
                 "bytes_int8": 200_000, "macs_per_clip": 40_000_000, "macs_per_second": 40e6,
                 "fits_dcase_params_int8": False, "fits_dcase_macs": False})
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def test_complexity_frame_groups_by_kind_of_model_with_ranges():
    f = D.complexity_frame(complexity_rows())
    assert list(f.index) == [("cnn_pool", "att"), ("atrous", "att")]
    assert [k for k, _ in dict.fromkeys(f.columns)] == ["none"] * 3 + ["predicted"] * 3
    assert f.loc[("cnn_pool", "att"), ("none", "params")] == "6,112"            # single-device and joint alike
    assert f.loc[("cnn_pool", "att"), ("predicted", "params")] == "7,003–7,014"  # layers and datasets
    assert f.loc[("cnn_pool", "att"), ("none", "mmacs")] == "0.84"
    assert f.loc[("cnn_pool", "att"), ("none", "kb_int8")] == "6.1"
    assert f.loc[("atrous", "att"), ("predicted", "params")] == "—"
    sentences = D.limits_sentences(complexity_rows())
    assert sentences[0].startswith("Of the 9 distinct models") and "8 fit DCASE's parameter limit" in sentences[0]
    assert "8 its MAC limit and 8 both" in sentences[0]
    assert "smallest has 6,112 parameters (" in sentences[1] and "0.84 MMAC/s" in sentences[1]
    assert "the largest 200,000 (" in sentences[1] and "40.00 MMAC/s" in sentences[1]
    _balanced(D.render_complexity_latex(complexity_rows()))


def test_render_complexity_files_and_an_empty_table(tmp_path):
    csv = tmp_path / "complexity.csv"
    complexity_rows().to_csv(csv, index=False)
    D.render_complexity_files(csv, tex_path=tmp_path / "c.tex", html_path=tmp_path / "c.html")
    assert "MMAC/s" in (tmp_path / "c.html").read_text() and r"\toprule" in (tmp_path / "c.tex").read_text()
    pd.DataFrame(columns=TABLE_COLUMNS).to_csv(csv, index=False)
    D.render_complexity_files(csv, tex_path=tmp_path / "c.tex", html_path=tmp_path / "c.html")
    assert (tmp_path / "c.html").read_text() == "<p>No models.</p>\n"


def test_report_has_the_dcase_section_in_html_and_latex(tmp_path):
    root = make_results(tmp_path / "results")
    t2 = pd.read_csv(root / "tables" / "table2.csv")
    t2["ll_mean"], t2["ll_std"] = np.linspace(0.8, 2.0, len(t2)), 0.01
    t2.to_csv(root / "tables" / "table2.csv", index=False)
    complexity_rows().to_csv(paths.results_file(paths.COMPLEXITY, root), index=False)
    ctx = R.build_context(preset=PRESET, results_dir=root, figures=[], versions=VERSIONS, commit="x", date="d")
    sec = ctx["dcase_metrics"]
    assert [t["key"] for t in sec["log_loss"]] == ["table2"]   # Table III has no log loss; Table I is left out
    assert sec["complexity_html"] and len(sec["limits"]) == 2
    R.render_report_html(ctx, tmp_path / "paper.html")
    R.render_report_tex(ctx, tmp_path / "paper.tex")
    html, tex = (tmp_path / "paper.html").read_text(), (tmp_path / "paper.tex").read_text()
    assert 'id="dcase-metrics"' in html and 'data-table="complexity"' in html and 'data-table="log-loss"' in html
    assert "Of the 9 distinct models" in html
    assert r"\section{DCASE's metrics" in tex and "tab:table2-logloss" in tex and "tab:complexity" in tex
    _balanced(tex)
    if shutil.which("pdflatex") or shutil.which("latexmk"):   # the section compiles (unicode, tables)
        assert R.build_pdf(tmp_path / "paper.tex", tmp_path / "paper.pdf") is None
    # without complexity.csv and log losses: no section; with complexity.csv alone: a section saying so
    (root / "tables" / "complexity.csv").unlink()
    t2.drop(columns=["ll_mean", "ll_std"]).to_csv(root / "tables" / "table2.csv", index=False)
    ctx = R.build_context(preset=PRESET, results_dir=root, figures=[], versions=VERSIONS, commit="x", date="d")
    assert ctx["dcase_metrics"] is None
    R.render_report_html(ctx, tmp_path / "paper.html")
    assert 'id="dcase-metrics"' not in (tmp_path / "paper.html").read_text()


def test_log_loss_definition_names_the_source_and_eps():
    assert "1e-15" in D.LOG_LOSS_DEFINITION and "scikit-learn" in D.LOG_LOSS_DEFINITION
    assert math.isclose(math.log(10), 2.302585, rel_tol=1e-6) and "2.303" in D.LOG_LOSS_DEFINITION
    with pytest.raises(Exception):
        D.log_loss_frame(pd.DataFrame({"topology": ["x"]}))
