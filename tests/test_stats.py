"""caanet.stats: the paper's one-tailed two-proportion z-test, McNemar, and the comparisons table."""

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from caanet import grid, stats
from caanet.errors import ConfigError, ResultsError
from caanet.spec import CellSpec

N_DCASE2018_TEST = 2518 + 180 + 180   # test clips of devices A, B, C (Sec. IV-A)


def phi_sf(z):
    return 0.5 * math.erfc(z / math.sqrt(2.0))


# --------------------------------------------------------------------------- z-test

def test_ztest_against_hand_computation():
    # k1/n1 = 0.60, k2/n2 = 0.45, pooled 0.525
    z, p = stats.two_proportion_ztest(60, 100, 45, 100)
    z_hand = 0.15 / math.sqrt(0.525 * 0.475 * (2 / 100))
    assert z == pytest.approx(z_hand) and z == pytest.approx(2.12398, abs=1e-4)
    assert p == pytest.approx(phi_sf(z_hand))
    # unequal sizes
    z, p = stats.two_proportion_ztest(30, 40, 50, 100)
    pooled = 80 / 140
    assert z == pytest.approx((0.75 - 0.5) / math.sqrt(pooled * (1 - pooled) * (1 / 40 + 1 / 100)))


def test_ztest_alternatives():
    z, p_greater = stats.two_proportion_ztest(60, 100, 45, 100, "greater")
    _, p_less = stats.two_proportion_ztest(60, 100, 45, 100, "less")
    _, p_two = stats.two_proportion_ztest(60, 100, 45, 100, "two-sided")
    assert p_greater + p_less == pytest.approx(1.0)
    assert p_two == pytest.approx(2 * p_greater)
    z_rev, p_rev = stats.two_proportion_ztest(45, 100, 60, 100)
    assert z_rev == pytest.approx(-z) and p_rev == pytest.approx(p_less)


def test_ztest_reproduces_the_papers_two_claims_from_its_own_numbers():
    z1, p1 = stats.ztest_from_percent(68.0, N_DCASE2018_TEST, 65.0, N_DCASE2018_TEST)
    assert p1 < 0.01
    assert p1 > 0.001     # the claim is p < 0.01, not stronger
    assert z1 == pytest.approx(2.41, abs=0.02)
    z2, p2 = stats.ztest_from_percent(68.0, N_DCASE2018_TEST, 49.0, N_DCASE2018_TEST)
    assert p2 < 0.001 and z2 > 14


def test_ztest_degenerate_and_bad_input():
    assert stats.two_proportion_ztest(0, 10, 0, 20) == (0.0, 0.5)
    assert stats.two_proportion_ztest(10, 10, 20, 20, "two-sided") == (0.0, 1.0)
    with pytest.raises(ConfigError, match="k1"):
        stats.two_proportion_ztest(11, 10, 1, 10)
    with pytest.raises(ConfigError, match="n2"):
        stats.two_proportion_ztest(1, 10, 0, 0)
    with pytest.raises(ConfigError, match="alternative"):
        stats.two_proportion_ztest(1, 10, 1, 10, "bigger")
    with pytest.raises(ConfigError, match="acc2"):
        stats.ztest_from_percent(50.0, 10, 150.0, 10)


# --------------------------------------------------------------------------- McNemar

def paired(b, c, both_right=5, both_wrong=3):
    a = [True] * b + [False] * c + [True] * both_right + [False] * both_wrong
    bb = [False] * b + [True] * c + [True] * both_right + [False] * both_wrong
    return np.array(a), np.array(bb)


def test_mcnemar_exact_against_hand_binomial():
    res = stats.mcnemar(*paired(8, 2))
    assert (res.b, res.c, res.method) == (8, 2, "exact")
    assert res.p == pytest.approx(2 * (1 + 10 + 45) / 1024)      # 2 P(X <= 2), X ~ Bin(10, 1/2)
    one = stats.mcnemar(*paired(8, 2), alternative="greater")
    assert one.p == pytest.approx((45 + 10 + 1) / 1024)          # P(X >= 8)
    other = stats.mcnemar(*paired(8, 2), alternative="less")
    assert other.p == pytest.approx(1 - (45 + 10 + 1) / 1024 + math.comb(10, 8) / 1024)


def test_mcnemar_chi_square_with_continuity_correction():
    res = stats.mcnemar(*paired(30, 15))
    assert res.method == "chi2_cc"
    stat = (15 - 1) ** 2 / 45
    assert res.statistic == pytest.approx(stat)
    assert res.p == pytest.approx(math.erfc(math.sqrt(stat / 2)))   # chi2(1) survival function
    assert res.p == pytest.approx(sps.chi2.sf(stat, 1))
    one = stats.mcnemar(*paired(30, 15), alternative="greater")
    assert one.p == pytest.approx(phi_sf(14 / math.sqrt(45)))
    assert one.p == pytest.approx(res.p / 2)


def test_mcnemar_switch_and_forced_method():
    assert stats.mcnemar(*paired(13, 12)).method == "chi2_cc"      # b + c = 25
    assert stats.mcnemar(*paired(12, 12)).method == "exact"        # b + c = 24 < 25


def test_mcnemar_edge_cases():
    res = stats.mcnemar(*paired(0, 0))
    assert (res.statistic, res.p) == (0.0, 1.0)
    forced = stats.mcnemar(*paired(30, 15), exact=True)
    assert forced.method == "exact" and forced.p == pytest.approx(sps.binomtest(30, 45).pvalue)
    with pytest.raises(ConfigError, match="correct_b has 3"):
        stats.mcnemar([True, False], [True, False, True])
    with pytest.raises(ConfigError, match="correct_a"):
        stats.mcnemar(np.array([0.5, 1.0]), np.array([1, 0]))


# --------------------------------------------------------------------------- compare_cells

def preds(correct, prefix="audio/c", devices=None):
    n = len(correct)
    return pd.DataFrame({"filename": [f"{prefix}{i:03d}.wav" for i in range(n)], "identifier": "x",
                         "device": devices or ["a"] * n, "scene": "park", "pred_scene": "park",
                         "correct": correct, "pred_device": ""})


def test_compare_cells_aligns_on_filename():
    a = preds([True, True, True, False, True, False])
    b = preds([True, False, False, False, True, True]).iloc[::-1]       # other order
    res = stats.compare_cells(a, b, "A", "B")
    assert res["n"] == 6 and res["k_a"] == 4 and res["k_b"] == 3
    assert res["acc_a"] == pytest.approx(400 / 6)
    assert (res["mcnemar_b"], res["mcnemar_c"]) == (2, 1)
    z, p = stats.two_proportion_ztest(4, 6, 3, 6)
    assert (res["z"], res["p_z"]) == (pytest.approx(z), pytest.approx(p))
    assert res["mcnemar_p"] == pytest.approx(sps.binomtest(2, 3, 0.5, alternative="greater").pvalue)


def test_compare_cells_errors_on_mismatched_clip_sets():
    a = preds([True] * 4)
    b = preds([True] * 4, prefix="audio/other")
    with pytest.raises(ResultsError, match=r"atrous-att-joint vs cnn_pool-max-joint.*clip sets differ"):
        stats.compare_cells(a, b, "atrous-att-joint", "cnn_pool-max-joint")
    with pytest.raises(ResultsError, match="correct"):
        stats.compare_cells(a.drop(columns="correct"), a, "A", "B")
    bad = preds(["yes", "no"])
    with pytest.raises(ResultsError, match="row 0"):
        stats.compare_cells(bad, preds([True, False]), "A", "B")


def test_compare_cells_concatenates_single_device_cells():
    full = preds([True, False, True, True, False, False], devices=list("aabbcc"))
    parts = [full[full.device == d] for d in "abc"]
    other = preds([True, True, True, False, False, True], devices=list("aabbcc"))
    res = stats.compare_cells(other, parts, "multi", "single[a+b+c]")
    assert res["n"] == 6 and res["k_b"] == 3
    with pytest.raises(ResultsError, match="more than one"):
        stats.compare_cells(other, [parts[0], parts[0], parts[1], parts[2]], "multi", "single")


# --------------------------------------------------------------------------- the paper's comparisons

PRESET = {
    "tables": {"table1": {"dataset": "e18"}, "table2": {"dataset": "e18"}, "table3": {"dataset": "e19"}},
    "seeds": [0], "seeds_by_pooling": {"att": [0, 1]},
    "datasets": {"e18": {"devices": ["a", "b", "c"]}, "e19": {"devices": ["a", "b", "c"]}},
}
LAYERS = {row: 3 for row in grid.DEFAULT_ROWS}


def test_paper_comparisons_enumerates_claims_and_row_tests():
    comps = stats.paper_comparisons(PRESET, LAYERS)
    assert len(comps) == 2 + 14 * 4 + 3 * 4
    claim1, claim2 = comps[:2]
    assert claim1.label_a == "atrous-att-multi_task-L3"
    assert claim1.label_b == "atrous-att-single_device[a+b+c]" and claim1.paper_claim == "claim1"
    assert claim2.label_b == "cnn_nopool-roi-single_device[a+b+c]" and claim2.paper_claim == "claim2"
    assert claim1.seeds == (0, 1) and claim2.seeds == (0,)            # roi has only seed 0
    assert {c.table for c in comps[2:]} == {"table2", "table3"}
    assert {c.comparison for c in comps[2:]} == {"teacher_forcing vs single_device", "teacher_forcing vs joint",
                                                  "multi_task vs single_device", "multi_task vs joint"}
    assert all(c.dataset == "e19" for c in comps if c.table == "table3")


def test_paper_comparisons_skip_what_the_grid_lacks():
    preset = dict(PRESET, grid={"rows": [["atrous", "att"]], "strategies": ["joint", "multi_task"]})
    comps = stats.paper_comparisons(preset, LAYERS)
    assert [(c.table, c.comparison) for c in comps] == [("table2", "multi_task vs joint")] + [
        ("table3", "multi_task vs joint")] * 3


def write_preds(root, spec, df):
    path = grid.cell_dir(root, spec) / "predictions.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)


def written_predictions(root):
    """Every predictions.csv under ``root``: what a run_stats rule declares as its inputs."""
    return sorted(root.rglob("predictions.csv"))


def test_predictions_loader_reads_only_the_files_given(tmp_path):
    spec = CellSpec.from_id("atrous-att-multi_task-L2", dataset="d", seed=1)
    other = CellSpec.from_id("atrous-att-joint", dataset="d", seed=1)
    frame = preds([True, False], devices=["a", "b"])
    write_preds(tmp_path, spec, frame)
    write_preds(tmp_path, other, frame)                       # on disk, but not given: not read
    given = grid.cell_dir(tmp_path, spec) / "predictions.csv"
    load = stats.predictions_loader([given])
    assert len(load(spec)) == 2
    assert load(other) is None and load(CellSpec(**{**spec.to_dict(), "seed": 0})) is None
    missing = grid.cell_dir(tmp_path / "elsewhere", spec) / "predictions.csv"
    with pytest.raises(ResultsError, match=re.escape(str(missing))):
        stats.predictions_loader([missing])(spec)
    with pytest.raises(ValueError, match="not a cell file"):
        stats.predictions_loader([tmp_path / "predictions.csv"])
    with pytest.raises(ValueError, match="not a predictions.csv file"):
        stats.predictions_loader([grid.cell_dir(tmp_path, spec) / "metrics.csv"])


def test_run_comparisons_from_files(tmp_path):
    rng = np.random.default_rng(0)
    devices = ["a"] * 40 + ["b"] * 10 + ["c"] * 10
    comps = [c for c in stats.paper_comparisons(PRESET, LAYERS)[:1]]   # claim 1, seeds 0 and 1
    mt = comps[0].model_a[0]
    right_mt = rng.random(60) < 0.8
    write_preds(tmp_path, mt, preds(list(right_mt), devices=devices))
    single = preds(list(rng.random(60) < 0.5), devices=devices)
    for spec in comps[0].model_b:
        write_preds(tmp_path, spec, single[single.device == spec.device])
    # seed 1: only the multi-task model exists -> no row
    write_preds(tmp_path, CellSpec(**{**mt.to_dict(), "seed": 1}), preds(list(right_mt), devices=devices))
    out = stats.run_comparisons(comps, stats.predictions_loader(written_predictions(tmp_path)))
    assert list(out.columns) == stats.COMPARISON_COLUMNS
    assert len(out) == 1 and out["seed"].item() == 0 and out["n"].item() == 60
    k_a, k_b = int(right_mt.sum()), int(single["correct"].sum())
    z, p = stats.two_proportion_ztest(k_a, 60, k_b, 60)
    assert out["acc_a"].item() == pytest.approx(100 * k_a / 60)
    assert out["z"].item() == pytest.approx(z) and out["p_z"].item() == pytest.approx(p)
    assert out["paper_claim"].item() == "claim1"


def test_load_predictions_names_the_file(tmp_path):
    path = tmp_path / "predictions.csv"
    pd.DataFrame({"filename": ["x.wav"], "scene": ["park"]}).to_csv(path, index=False)
    with pytest.raises(ResultsError, match=r"predictions\.csv.*correct"):
        stats.load_predictions(path)


# --------------------------------------------------------------------------- the paper's claims

SCENES = [f"s{i}" for i in range(10)]
TEST_CLIPS = {"a": 2518, "b": 180, "c": 180}     # DCASE 2018 Task 1B development fold 1


def device_predictions(device, accuracy, n_clips):
    """Predictions of one device's test clips whose class-wise accuracy is ``accuracy`` (percent).

    The clips are spread evenly over 10 scenes; round(accuracy * clips) of them are right, spread evenly too."""
    rows = []
    for i in range(n_clips):
        scene = SCENES[i % 10]
        rows.append((f"audio/{scene}-{i:04d}-{device}.wav", device, scene))
    df = pd.DataFrame(rows, columns=["filename", "device", "scene"])
    df["pred_scene"] = df["scene"]
    right = int(round(accuracy / 100 * n_clips))
    for j, (scene, idx) in enumerate(df.groupby("scene").groups.items()):
        wrong = len(idx) - (right // 10 + (j < right % 10))
        other = SCENES[(SCENES.index(scene) + 1) % 10]
        df.loc[idx[:wrong], "pred_scene"] = other
    df["correct"] = (df["scene"] == df["pred_scene"]).astype(int)
    df["identifier"], df["pred_device"] = "x", ""
    return df


def table2_predictions(topology, pooling, strategy):
    paper = grid.paper_table("table2")
    sel = paper[(paper.topology == topology) & (paper.pooling == pooling) & (paper.strategy == strategy)]
    acc = dict(zip(sel.device, sel.paper_acc))
    return {d: device_predictions(d, acc[d], n) for d, n in TEST_CLIPS.items()}


def test_paper_claims_on_the_papers_own_numbers():
    claim1, claim2 = stats.PAPER_CLAIMS
    assert (claim1.paper_avg("a"), claim1.paper_avg("b")) == (68.0, 65.0)
    assert claim2.paper_avg("b") == 49.0 and claim1.paper_n == 2878
    z, p = stats.ztest_from_percent(68.0, 2878, 65.0, 2878)
    assert round(z, 2) == 2.40 and round(p, 4) == 0.0082
    z, p = stats.ztest_from_percent(68.0, 2878, 49.0, 2878)
    assert round(z, 1) == 14.6 and p == pytest.approx(8.7e-49, rel=0.01)
    row = stats.judge_claim(claim1, [])
    assert row["paper_z"] == pytest.approx(2.4017, abs=1e-4) and row["paper_p"] == pytest.approx(0.00816, abs=1e-5)
    assert row["paper_holds"] is True and "holds" not in row


def test_avg_percent_is_the_mean_of_class_wise_device_accuracies():
    df = pd.concat([device_predictions("a", 80.0, 100), device_predictions("b", 50.0, 20)])
    assert stats.avg_percent(df, "m") == pytest.approx(65.0)          # clip-level would be 75.0
    with pytest.raises(ResultsError, match="pred_scene"):
        stats.avg_percent(df.drop(columns=["pred_scene"]), "m")


def test_claims_from_table2_accuracies_hold_with_the_papers_statistic(tmp_path):
    """Predictions reproducing Table II's per-device accuracies: both claims hold, as in the paper;
    the clip-level test (87 % of the clips from device A) would not decide claim 1 at p < 0.01."""
    preset = dict(PRESET, seeds_by_pooling={})
    layers = {row: 3 for row in grid.DEFAULT_ROWS}
    for claim in stats.PAPER_CLAIMS:
        comp = stats.claim_comparison(preset, claim, layers)
        mt = table2_predictions(*claim.row_a, "multi_task")
        write_preds(tmp_path, comp.model_a[0], pd.concat(mt.values(), ignore_index=True))
        single = table2_predictions(*claim.row_b, "single_device")
        for spec in comp.model_b:
            write_preds(tmp_path, spec, single[spec.device])
    out = stats.run_claims(preset, layers, stats.predictions_loader(written_predictions(tmp_path)))
    assert list(out.columns) == stats.CLAIM_COLUMNS and list(out["claim"]) == ["claim1", "claim2"]
    c1, c2 = out.iloc[0], out.iloc[1]
    assert c1["status"] == "evaluated" and c1["n"] == 2878 and c1["seeds"] == "0"
    assert c1["ours_a"] == pytest.approx((72.4 + 68.9 + 62.8) / 3, abs=0.05)
    assert c1["ours_b"] == pytest.approx((70.7 + 61.1 + 63.3) / 3, abs=0.05)
    assert c1["z"] == pytest.approx(2.40, abs=0.02) and c1["p"] < 0.01 and bool(c1["holds"])
    assert c1["clip_z"] == pytest.approx(1.62, abs=0.05) and c1["clip_p"] > 0.05   # not the deciding test
    assert bool(c2["holds"]) and c2["p"] < 0.001 and c2["ours_b"] == pytest.approx(49.0, abs=0.05)
    assert c1["paper_z"] == pytest.approx(2.40, abs=0.005) and bool(c1["paper_holds"])
    assert 0 <= c1["mcnemar_p"] <= 1 and c1["mcnemar_b"] + c1["mcnemar_c"] > 0


def test_claims_outside_the_grid_still_have_a_row():
    preset = dict(PRESET, grid={"rows": [["atrous", "att"]], "strategies": ["joint", "multi_task"]})
    out = stats.run_claims(preset, LAYERS, lambda spec: None)
    assert list(out["status"]) == ["not in this preset's grid"] * 2
    assert out["holds"].isna().all() and out["paper_p"].notna().all()


def test_claims_seed_mean_and_mismatched_clips(tmp_path):
    claim = stats.PAPER_CLAIMS[0]
    base = {"n": 100, "acc_a": 70.0, "acc_b": 60.0, "mcnemar_b": 12, "mcnemar_c": 2, "mcnemar_p": 0.01}
    row = stats.judge_claim(claim, [dict(base, avg_a=70.0, avg_b=60.0),
                                    dict(base, avg_a=60.0, avg_b=62.0, mcnemar_p=0.2, mcnemar_b=5)])
    assert row["ours_a"] == 65.0 and row["ours_b"] == 61.0
    assert row["z"] == pytest.approx(stats.ztest_from_percent(65.0, 100, 61.0, 100)[0])
    assert row["mcnemar_p"] == 0.2 and row["mcnemar_b"] == 5             # the largest p over seeds
    with pytest.raises(ResultsError, match="different numbers of clips"):
        stats.judge_claim(claim, [dict(base, avg_a=1.0, avg_b=1.0), dict(base, n=99, avg_a=1.0, avg_b=1.0)])


# --------------------------------------------------------------------------- Table IV (beyond the paper)

DEVICES9 = ["a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"]
T4_PRESET = {**PRESET, "tables": {**PRESET["tables"], "table4": {"dataset": "e20", "seeds": [0]}},
             "datasets": {**PRESET["datasets"], "e20": {"devices": DEVICES9, "unseen_devices": ["s4", "s5", "s6"]}}}


def test_table4_comparisons_are_each_conditional_strategy_vs_joint_per_attention_row():
    comps = stats.table4_comparisons(T4_PRESET, LAYERS)
    assert len(comps) == 3 * 3 and {c.table for c in comps} == {"table4"} and {c.dataset for c in comps} == {"e20"}
    assert [c.comparison for c in comps[:3]] == ["teacher_forcing vs joint", "multi_task vs joint",
                                                 "multi_task_learned vs joint"]
    assert comps[2].label_a == "cnn_pool-att-multi_task_learned-L3" and comps[2].label_b == "cnn_pool-att-joint"
    assert {c.seeds for c in comps} == {(0,)}        # tables.table4.seeds, not seeds_by_pooling (att: 0, 1)
    assert stats.table4_comparisons(PRESET, LAYERS) == []
    # a single-device model of the 2020-style data is its seen devices' cells
    single = stats._model(grid.grid_config(T4_PRESET), "e20", ("atrous", "att"), "single_device", LAYERS)
    assert [c.device for c in single] == ["a", "b", "c", "s1", "s2", "s3"]


def test_table4_test_on_the_avg_over_seen_and_unseen_devices(tmp_path):
    """The z-test on the Avg over all nine devices: hand-computed from the per-device accuracies."""
    comp = stats.table4_comparisons(T4_PRESET, LAYERS)[-1]        # atrous-att multi_task_learned vs joint
    acc_a = dict(zip(DEVICES9, [80, 70, 70, 60, 60, 60, 50, 40, 30]))
    acc_b = dict(zip(DEVICES9, [70, 60, 60, 50, 50, 50, 40, 40, 20]))
    for spec, acc in ((comp.model_a[0], acc_a), (comp.model_b[0], acc_b)):
        write_preds(tmp_path, spec, pd.concat([device_predictions(d, acc[d], 20) for d in DEVICES9]))
    out = stats.run_comparisons([comp], stats.predictions_loader(written_predictions(tmp_path)))
    avg_a, avg_b = 520 / 9, 440 / 9
    assert out["avg_a"].item() == pytest.approx(avg_a) and out["avg_b"].item() == pytest.approx(avg_b)
    z, p = stats.ztest_from_percent(avg_a, 180, avg_b, 180)
    assert out["n"].item() == 180 and out["z_avg"].item() == pytest.approx(z) and out["p_avg"].item() == pytest.approx(p)
