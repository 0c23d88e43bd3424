"""Table V's rendering and report section (caanet.render.field): the numbers printed are the summary's,
and the paragraph is computed from them."""

from __future__ import annotations

import pandas as pd
import pytest

from caanet.errors import ResultsError
from caanet.render import field as F
from caanet.render import report

DEVICES = ["a", "b", "s4"]


def parse_html(text: str) -> pd.DataFrame:
    """The header and body cells of a rendered table, tags stripped."""
    import html as H
    import re

    def cells(row, tag):
        return [H.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(rf"<{tag}>(.*?)</{tag}>", row)]

    head = cells(re.search(r"<thead>(.*?)</thead>", text).group(1), "th")
    rows = [cells(r, "td") for r in re.findall(r"<tr>(.*?)</tr>", re.search(r"<tbody>(.*?)</tbody>", text).group(1))]
    return pd.DataFrame(rows, columns=head)


def summary_rows():
    """Two models x devices a, b (seen), s4 (unseen), hand-made means over seeds."""
    values = {("joint", "none"): (60.0, 50.0, 30.0), ("joint", "dir_augment"): (62.0, 56.0, 41.0),
              ("multi_task", "none"): (61.0, 55.0, 33.0), ("multi_task", "dir_augment"): (59.0, 57.0, 45.0)}
    rows = []
    for (strategy, method), accs in values.items():
        seen = (accs[0] + accs[1]) / 2
        for device, acc in list(zip(DEVICES, accs)) + [("avg", sum(accs) / 3), ("seen", seen), ("unseen", accs[2]),
                                                       ("bc", (accs[1] + accs[2]) / 2)]:
            rows.append({"table": "table5", "dataset": "d", "topology": "atrous", "pooling": "att",
                         "strategy": strategy, "method": method,
                         "cond_layer": 3 if strategy == "multi_task" else None, "device": device, "acc_mean": acc,
                         "acc_std": 1.5, "acc_ci_low": None, "acc_ci_high": None, "n_seeds": 3})
    return pd.DataFrame(rows)


def preset():
    return {"tables": {"table1": {"dataset": "d"}, "table5": {"dataset": "d", "methods": ["none", "dir_augment"]}},
            "datasets": {"d": {"devices": DEVICES, "unseen_devices": ["s4"], "source": "embedded"}}}


def test_wide_frame_orders_models_and_columns():
    wide = F.table5_frame(summary_rows())
    assert list(wide.columns) == ["avg", "seen", "unseen", "a", "b", "s4"]          # B/C left out
    assert [k[2:] for k in wide.index] == [("joint", "none"), ("joint", "dir_augment"), ("multi_task", "none"),
                                          ("multi_task", "dir_augment")]
    assert wide.loc[("atrous", "att", "joint", "dir_augment"), "unseen"] == 41.0


def test_html_prints_the_summary_and_bolds_the_best_avg():
    html = F.render_table5_html(summary_rows(), "cap")
    body = parse_html(html)
    assert list(body.columns) == ["network", "training", "Avg", "Seen", "Unseen", "A", "B", "S4"]
    assert body["training"].tolist() == ["Joint", "Joint + Device IR augmentation", "Multi-task",
                                         "Multi-task + Device IR augmentation"]
    assert body.loc[1, "Unseen"] == "41.0±1.5" and body.loc[0, "A"] == "60.0±1.5"
    assert html.count("<strong>") == 1 and "<strong>53.7±1.5</strong>" in html    # MT+DIR: (59+57+45)/3
    tex = F.render_table5_latex(summary_rows(), "cap")
    assert r"\textbf{53.7$\pm$1.5}" in tex and "Multi-task + Device IR augmentation" in tex


def test_check_names_bad_vocabulary():
    bad = summary_rows()
    bad.loc[3, "method"] = "bogus"
    with pytest.raises(ResultsError, match="row 5: method='bogus'"):
        F.check_table5(bad)


def test_section_states_methods_oracle_information_findings_and_tests():
    base = {"dataset": "d", "row": "atrous-att", "n": 300, "acc_a": 1, "acc_b": 1, "z": 0, "p_z": 0.5,
            "mcnemar_b": 1, "mcnemar_c": 1, "mcnemar_p": 1.0, "method": "exact", "paper_claim": "", "scope": "all",
            "alternative": "greater"}
    comps = pd.DataFrame([
        # a per-seed row and the seed-mean row (seed empty) that Holm's correction decides
        {**base, "table": "table5", "family": "table5", "comparison": "joint+dir_augment vs joint",
         "model_a": "atrous-att-joint+dir_augment", "model_b": "atrous-att-joint", "seed": 0, "avg_a": 53.0,
         "avg_b": 46.7, "z_avg": 2.0, "p_avg": 0.02, "paired_diff": 6.3, "paired_se": 2.0, "paired_p": 0.001},
        {**base, "table": "table5", "family": "table5", "comparison": "joint+dir_augment vs joint",
         "model_a": "atrous-att-joint+dir_augment", "model_b": "atrous-att-joint", "seed": None, "seeds": "0",
         "avg_a": 53.0, "avg_b": 46.7, "z_avg": 2.0, "p_avg": 0.02, "paired_diff": 6.3, "paired_se": 2.0,
         "paired_p": 0.001, "p_holm": 0.001, "significant": True},
        {**base, "table": "table4", "family": "table4", "comparison": "x", "row": "r", "model_a": "a",
         "model_b": "b", "seed": None, "n": 1, "avg_a": 1, "avg_b": 1, "z_avg": 0, "p_avg": 0.5, "paired_diff": 0.0,
         "paired_p": 0.5, "p_holm": 0.5, "significant": False}])
    section = F.table5_section(preset(), summary_rows(), comps)
    assert [m["name"] for m in section["methods"]] == ["dir_augment"] and "Morocutti" in section["methods"][0]["citation"]
    assert section["caanet"] == "Multi-task" and len(section["tests"]) == 1 and section["n_significant"] == 1
    text = " ".join(section["findings"])
    assert "the best on Avg is Multi-task + Device IR augmentation (53.7 %)" in text
    assert "the best on the unseen devices is Multi-task + Device IR augmentation (45.0 %)" in text
    # joint: Avg (60 + 50 + 30) / 3 = 46.7, with DIR 53.0; multi-task 49.7, with DIR 53.7
    assert "Device IR augmentation +6.3 points on Avg (+11.0 on Unseen)" in text          # vs joint
    assert "added to CAA-Net (Multi-task): Device IR augmentation +4.0 points on Avg (+12.0 on Unseen)" in text
    assert "not real phones" in section["synthetic"] and "not in this run's results" in section["metrics_missing"]
    assert [r["model"] for r in section["metrics"]] == ["Joint", "Joint + Device IR augmentation", "Multi-task",
                                                       "Multi-task + Device IR augmentation"]
    sc = F.method_entries(["spectrum_correction"], ["joint", "multi_task"], ["s4"])[0]
    assert "TRUE device label" in sc["oracle"] and "(s4) have no fit" in sc["oracle"] and sc["combined"] == "Joint, Multi-task"
    assert F.table5_section({**preset(), "tables": {"table1": {"dataset": "d"}}}, summary_rows(), comps) is None


def test_report_renders_table5_from_its_file(tmp_path):
    from caanet.render.report import load_inputs
    from caanet.render.report import table5 as section

    path = tmp_path / "table5.csv"
    summary_rows().to_csv(path, index=False)
    ctx = section.build(load_inputs(preset=preset(), summaries=[path]))
    assert ctx["table5"]["html"].startswith('<table class="grid">') and ctx["table5"]["tests"] == []
    inp = load_inputs(preset=preset(), summaries=[])
    assert section.build(inp)["table5"] is None and any("Table V is not shown" in w for w in inp.warnings)


def test_caanet_choice_names_the_variant_and_tableivs_evidence():
    assert "paper's multi-task training" in F.caanet_choice("multi_task", ["atrous-att"], None)
    assert F.caanet_choice(None, ["atrous-att"], None) == ""
    comps = pd.DataFrame([
        {"family": "table4", "seed": None, "comparison": "multi_task_posterior vs multi_task", "scope": "all",
         "row": "atrous-att", "paired_diff": 3.58, "p_holm": 0.0101},
        {"family": "table4", "seed": None, "comparison": "multi_task_posterior vs multi_task", "scope": "unseen",
         "row": "atrous-att", "paired_diff": 9.0, "p_holm": 0.5},
        {"family": "table4", "seed": None, "comparison": "multi_task_posterior vs multi_task", "scope": "all",
         "row": "cnn_pool-att", "paired_diff": -5.7, "p_holm": 0.0001}])
    text = F.caanet_choice("multi_task_posterior", ["atrous-att"], comps)
    assert "Multi-task (posterior)" in text and "atrous-att: +3.6 points on the Avg, Holm p = 0.0101" in text
    assert "cnn_pool" not in text and "9.0" not in text and "same test set" in text
