"""caanet.stats: the paper's one-tailed two-proportion z-test, McNemar, and the comparisons table."""

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from caanet import claims as C
from caanet import aggregate, grid, stats
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
    comps = C.paper_comparisons(PRESET, LAYERS)
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
    comps = C.paper_comparisons(preset, LAYERS)
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
    comps = [c for c in C.paper_comparisons(PRESET, LAYERS)[:1]]   # claim 1, seeds 0 and 1
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
    assert len(out) == 2 and out["seed"].tolist()[0] == 0 and pd.isna(out["seed"].tolist()[1])  # seed 0, its mean
    assert out["seeds"].tolist() == ["0", "0"] and (out["n"] == 60).all()
    out = out.iloc[:1]
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
    paper = aggregate.paper_table("table2")
    sel = paper[(paper.topology == topology) & (paper.pooling == pooling) & (paper.strategy == strategy)]
    acc = dict(zip(sel.device, sel.paper_acc))
    return {d: device_predictions(d, acc[d], n) for d, n in TEST_CLIPS.items()}


def test_paper_claims_on_the_papers_own_numbers():
    claim1, claim2 = C.PAPER_CLAIMS
    assert (claim1.paper_avg("a"), claim1.paper_avg("b")) == (68.0, 65.0)
    assert claim2.paper_avg("b") == 49.0 and claim1.paper_n == 2878
    z, p = stats.ztest_from_percent(68.0, 2878, 65.0, 2878)
    assert round(z, 2) == 2.40 and round(p, 4) == 0.0082
    z, p = stats.ztest_from_percent(68.0, 2878, 49.0, 2878)
    assert round(z, 1) == 14.6 and p == pytest.approx(8.7e-49, rel=0.01)
    row = C.judge_claim(claim1, [])
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
    for claim in C.PAPER_CLAIMS:
        comp = C.claim_comparison(preset, claim, layers)
        mt = table2_predictions(*claim.row_a, "multi_task")
        write_preds(tmp_path, comp.model_a[0], pd.concat(mt.values(), ignore_index=True))
        single = table2_predictions(*claim.row_b, "single_device")
        for spec in comp.model_b:
            write_preds(tmp_path, spec, single[spec.device])
    out = C.run_claims(preset, layers, stats.predictions_loader(written_predictions(tmp_path)))
    assert list(out.columns) == C.CLAIM_COLUMNS and list(out["claim"]) == ["claim1", "claim2"]
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
    out = C.run_claims(preset, LAYERS, lambda spec: None)
    assert list(out["status"]) == ["not in this preset's grid"] * 2
    assert out["holds"].isna().all() and out["paper_p"].notna().all()


def test_claims_seed_mean_and_mismatched_clips(tmp_path):
    claim = C.PAPER_CLAIMS[0]
    base = {"n": 100, "acc_a": 70.0, "acc_b": 60.0, "mcnemar_b": 12, "mcnemar_c": 2, "mcnemar_p": 0.01}
    row = C.judge_claim(claim, [dict(base, avg_a=70.0, avg_b=60.0),
                                    dict(base, avg_a=60.0, avg_b=62.0, mcnemar_p=0.2, mcnemar_b=5)])
    assert row["ours_a"] == 65.0 and row["ours_b"] == 61.0
    assert row["z"] == pytest.approx(stats.ztest_from_percent(65.0, 100, 61.0, 100)[0])
    assert row["mcnemar_p"] == 0.2 and row["mcnemar_b"] == 5             # the largest p over seeds
    with pytest.raises(ResultsError, match="different numbers of clips"):
        C.judge_claim(claim, [dict(base, avg_a=1.0, avg_b=1.0), dict(base, n=99, avg_a=1.0, avg_b=1.0)])


# --------------------------------------------------------------------------- Table IV (beyond the paper)

DEVICES9 = ["a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"]
T4_PRESET = {**PRESET, "tables": {**PRESET["tables"], "table4": {"dataset": "e20", "seeds": [0]}},
             "datasets": {**PRESET["datasets"], "e20": {"devices": DEVICES9, "unseen_devices": ["s4", "s5", "s6"]}}}


def test_table4_comparisons_are_each_conditional_strategy_vs_joint_per_attention_row():
    comps = stats.table4_comparisons(T4_PRESET, LAYERS)
    assert {c.table for c in comps} == {"table4"} == {c.family for c in comps} and {c.dataset for c in comps} == {"e20"}
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
    comp = next(c for c in stats.table4_comparisons(T4_PRESET, LAYERS) if c.row == "atrous-att"
                and c.comparison == "multi_task_learned vs joint" and c.scope == "all")
    acc_a = dict(zip(DEVICES9, [80, 70, 70, 60, 60, 60, 50, 40, 30]))
    acc_b = dict(zip(DEVICES9, [70, 60, 60, 50, 50, 50, 40, 40, 20]))
    for spec, acc in ((comp.model_a[0], acc_a), (comp.model_b[0], acc_b)):
        write_preds(tmp_path, spec, pd.concat([device_predictions(d, acc[d], 20) for d in DEVICES9]))
    out = stats.run_comparisons([comp], stats.predictions_loader(written_predictions(tmp_path))).iloc[:1]
    avg_a, avg_b = 520 / 9, 440 / 9
    assert out["avg_a"].item() == pytest.approx(avg_a) and out["avg_b"].item() == pytest.approx(avg_b)
    z, p = stats.ztest_from_percent(avg_a, 180, avg_b, 180)
    assert out["n"].item() == 180 and out["z_avg"].item() == pytest.approx(z) and out["p_avg"].item() == pytest.approx(p)


# --------------------------------------------------------------------------- tests that fit the Avg (caanet.stratified)

from caanet import stratified as ST     # noqa: E402


def test_paired_stratified_test_against_hand_computation():
    """Device a: scene x deltas [1, 0, 0, 1], scene y [0, 0]; device b: scene x [1, -1, 1].
    Weights 1/(D S_d): a-x 1/4, a-y 1/4, b-x 1/2. Delta = 1/4 * 1/2 + 0 + 1/2 * 1/3 = 7/24.
    Var = (1/4)^2 (1/3)/4 + 0 + (1/2)^2 (4/3)/3 = 1/192 + 1/9 (s^2 with ddof=1: 1/3, 0, 4/3)."""
    device = ["a"] * 6 + ["b"] * 3
    scene = ["x"] * 4 + ["y"] * 2 + ["x"] * 3
    ca = [1, 0, 0, 1, 1, 0, 1, 0, 1]
    cb = [0, 0, 0, 0, 1, 0, 0, 1, 0]
    res = ST.paired_stratified_test(device, scene, ca, cb)
    var = 1 / 192 + 1 / 9
    assert res.diff == pytest.approx(100 * 7 / 24) and res.se == pytest.approx(100 * math.sqrt(var))
    assert res.z == pytest.approx((7 / 24) / math.sqrt(var)) and res.z == pytest.approx(0.85514, abs=1e-4)
    assert res.p == pytest.approx(phi_sf(res.z)) and res.n == 9
    assert res.n_eff == pytest.approx(4 / (1 / 6 + 1 / 3))
    assert ST.paired_stratified_test(device, scene, ca, cb, alternative="two-sided").p == pytest.approx(2 * res.p)
    # the difference is the difference of the two Avgs
    assert res.diff == pytest.approx(ST.stratified_avg(device, scene, ca) - ST.stratified_avg(device, scene, cb))


def test_paired_stratified_test_of_one_stratum_is_the_paired_z_test_and_lone_clips_borrow_their_device():
    d = np.array([1, 0, 1, 1, -1, 0, 1, 0])
    ca, cb = (d > 0).astype(int), (d < 0).astype(int)
    res = ST.paired_stratified_test(["a"] * 8, ["x"] * 8, ca, cb)
    assert res.z == pytest.approx(d.mean() / (d.std(ddof=1) / math.sqrt(8)))
    # a stratum of one clip (device a, scene y) takes device a's pooled variance of the differences
    lone = ST.paired_stratified_test(["a"] * 9, ["x"] * 8 + ["y"], list(ca) + [1], list(cb) + [0])
    pooled = np.var(list(d) + [1], ddof=1)
    var = 0.25 * d.var(ddof=1) / 8 + 0.25 * pooled / 1
    assert lone.se == pytest.approx(100 * math.sqrt(var))
    with pytest.raises(ResultsError, match=r"correct_a must lie in \[0, 1\]"):
        ST.paired_stratified_test(["a"], ["x"], [2], [0])


def test_paired_stratified_test_matches_a_stratified_paired_bootstrap():
    """The analytic standard error agrees with a paired bootstrap that resamples clips within each
    device x scene stratum (numpy, fixed seed): the variance formula is the Avg's."""
    rng = np.random.default_rng(7)
    device = np.repeat(["a", "b", "c"], [600, 60, 60])
    scene = np.concatenate([np.tile(SCENES[:5], n // 5) for n in (600, 60, 60)])
    ca = (rng.random(720) < np.where(device == "a", 0.7, 0.55)).astype(float)
    cb = np.where(rng.random(720) < 0.7, ca, (rng.random(720) < 0.5).astype(float))
    res = ST.paired_stratified_test(device, scene, ca, cb)
    # resample each stratum's clips (4000 replicates); the Avg difference is sum_s w_s mean(delta_s*)
    delta, boot = ca - cb, np.zeros(4000)
    for d in "abc":
        for s in SCENES[:5]:
            idx = np.flatnonzero((device == d) & (scene == s))
            boot += delta[rng.choice(idx, (boot.size, idx.size))].mean(axis=1) / (3 * 5) * 100
    assert boot.mean() == pytest.approx(res.diff, abs=0.3)
    # the bootstrap's plug-in variance uses ddof=0: (n - 1) / n of ours, n = 12 or 120 per stratum
    assert boot.std() == pytest.approx(res.se, rel=0.06)


def test_device_stratified_test_on_the_papers_claims_by_hand():
    """Claim 1 (Table II): multi-task atrous + att A/B/C 72.4/68.9/62.8 vs single-device 70.7/61.1/63.3 on
    2,518/180/180 test clips. Per device the pooled accuracy under H0 and its binomial variance with both
    models' clips, divided by D^2 = 9: p = 0.108, not the paper's 0.008 with n = 2,878."""
    n = {"a": 2518, "b": 180, "c": 180}
    mt, sd = {"a": 72.4, "b": 68.9, "c": 62.8}, {"a": 70.7, "b": 61.1, "c": 63.3}
    pooled = {"a": 0.7155, "b": 0.65, "c": 0.6305}
    var = (pooled["a"] * (1 - pooled["a"]) * 2 / 2518 + pooled["b"] * (1 - pooled["b"]) * 2 / 180
           + pooled["c"] * (1 - pooled["c"]) * 2 / 180) / 9
    diff = (72.4 + 68.9 + 62.8 - 70.7 - 61.1 - 63.3) / 3 / 100            # 0.03
    res = ST.device_stratified_ztest(mt, n, sd)
    assert res.diff == pytest.approx(100 * diff) and res.z == pytest.approx(diff / math.sqrt(var))
    assert res.z == pytest.approx(1.2388, abs=1e-4) and res.p == pytest.approx(0.1077, abs=1e-4)
    assert res.n == 2878 and res.n_eff == pytest.approx(9 / (1 / 2518 + 2 / 180)) and round(res.n_eff) == 782
    roi = {"a": 60.4, "b": 43.3, "c": 43.3}                                  # claim 2 still holds at 0.001
    res2 = ST.device_stratified_ztest(mt, n, roi)
    assert res2.z == pytest.approx(7.576, abs=1e-3) and res2.p < 1e-13


def test_device_stratified_test_reduces_to_the_papers_test():
    # one device: the paper's pooled two-proportion test
    one = ST.device_stratified_ztest({"a": 60.0}, {"a": 200}, {"a": 45.0})
    assert one.z == pytest.approx(stats.two_proportion_ztest(120, 200, 90, 200)[0])
    # equal accuracies on every device: the paper's test with n replaced by the effective n
    n = {"a": 1000, "b": 100, "c": 100}
    eq = ST.device_stratified_ztest({d: 60.0 for d in n}, n, {d: 50.0 for d in n})
    n_eff = ST.effective_n(n)
    assert eq.z == pytest.approx(0.1 / math.sqrt(0.55 * 0.45 * 2 / n_eff))
    with pytest.raises(ConfigError, match="devices differ"):
        ST.device_stratified_ztest({"a": 1.0}, {"a": 10}, {"b": 1.0})
    with pytest.raises(ConfigError, match="every device needs test clips"):
        ST.effective_n({"a": 0})


def test_holm_against_hand_computation():
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): 0.02, 0.03, 0.06, max(0.06, 0.04) = 0.06
    adj = ST.holm([0.01, 0.04, 0.03, 0.005])
    assert adj == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert np.isnan(ST.holm([0.2, np.nan, 0.01])).tolist() == [False, True, False]
    assert ST.holm([0.2, np.nan, 0.01])[[0, 2]] == pytest.approx([0.2, 0.02])   # m = 2: NaN does not count
    assert ST.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])                    # capped at 1
    with pytest.raises(ConfigError, match="p-values"):
        ST.holm([1.5])


def test_compare_models_seed_mean_and_device_scope():
    """Several seeds: each clip's correctness is averaged, so the Avg is the mean of the seeds' Avgs and
    the paired test is the seed-mean model's; McNemar is per seed only. ``devices`` keeps those clips."""
    acc = {"a": [80, 60], "b": [50, 70], "s4": [40, 20]}
    seeds_a = [pd.concat([device_predictions(d, acc[d][k], 40) for d in acc]) for k in range(2)]
    seeds_b = [pd.concat([device_predictions(d, 50.0, 40) for d in acc]) for _ in range(2)]
    res = stats.compare_models(seeds_a, seeds_b, "A", "B")
    avg_a = np.mean([np.mean([acc[d][k] for d in acc]) for k in range(2)])
    assert res["avg_a"] == pytest.approx(avg_a) and res["avg_b"] == pytest.approx(50.0)
    assert res["paired_diff"] == pytest.approx(avg_a - 50.0) and res["seeds"] == 2
    assert np.isnan(res["mcnemar_p"]) and res["method"] == ""
    one = stats.compare_models(seeds_a[:1], seeds_b[:1], "A", "B")
    assert one["mcnemar_b"] + one["mcnemar_c"] > 0 and one["k_a"] == 32 + 20 + 16
    unseen = stats.compare_models(seeds_a, seeds_b, "A", "B", devices=("s4",))
    assert unseen["n"] == 40 and unseen["avg_a"] == pytest.approx(30.0) and unseen["n_eff"] == pytest.approx(40)
    with pytest.raises(ResultsError, match="seeds classified different clips"):
        stats.compare_models([seeds_a[0], seeds_a[1].iloc[1:]], seeds_b, "A", "B")


def test_run_comparisons_adjusts_each_family_by_holm_on_the_seed_mean_rows(tmp_path):
    preset = dict(PRESET, seeds_by_pooling={"att": [0, 1]}, grid={"rows": [["atrous", "att"], ["cnn_pool", "max"]]})
    comps = C.paper_comparisons(preset, LAYERS)
    assert [c.family for c in comps[:1]] == [""] and {c.family for c in comps[1:]} == {"table2", "table3"}
    rng = np.random.default_rng(3)
    for comp in comps:
        for seed in comp.seeds:
            for cells in (comp.model_a, comp.model_b):
                for spec in cells:
                    spec = CellSpec(**{**spec.to_dict(), "seed": seed})
                    frame = pd.concat([device_predictions(d, float(rng.uniform(30, 80)), 30) for d in "abc"])
                    if spec.device:
                        frame = frame[frame.device == spec.device]
                    write_preds(tmp_path, spec, frame)
    out = stats.run_comparisons(comps, stats.predictions_loader(written_predictions(tmp_path)))
    pooled = out[out["seed"].isna()]
    assert len(pooled) == len(comps) and set(out.loc[out["seed"].notna(), "seeds"]) <= {"0", "1"}
    assert set(pooled.loc[pooled["row"] == "atrous-att", "seeds"]) == {"0 1"}
    for family in ("table2", "table3"):
        g = pooled[pooled["family"] == family]
        assert g["p_holm"].to_numpy() == pytest.approx(ST.holm(g["paired_p"].to_numpy()))
        assert (g["significant"] == (g["p_holm"] < stats.FAMILY_ALPHA)).all()
    claim = pooled[pooled["paper_claim"] != ""]
    assert claim["p_holm"].isna().all() and claim["significant"].isna().all()
    assert out.loc[out["seed"].notna(), "p_holm"].isna().all()


def test_table4_family_has_learned_vs_switched_and_unseen_only_tests():
    comps = [c for c in stats.table4_comparisons(T4_PRESET, LAYERS) if c.row == "atrous-att"]
    got = {(c.comparison, c.scope, c.alternative) for c in comps}
    assert ("multi_task_learned vs multi_task", "all", "two-sided") in got
    assert ("multi_task_learned vs multi_task", "unseen", "two-sided") in got
    assert {("teacher_forcing vs joint", "unseen", "greater"), ("multi_task vs joint", "unseen", "greater")} <= got
    assert all(c.devices == ("s4", "s5", "s6") for c in comps if c.scope == "unseen")
    assert all(c.devices == () for c in comps if c.scope == "all")
    # only tests of strategies Table IV has; names are registered or the two posterior strategies of the
    # round-3 design (caanet.vocab registers them with the training side)
    from caanet.spec import STRATEGIES

    names = {s for t in stats.TABLE4_TESTS for s in (t.strategy_a, t.strategy_b)}
    assert names - set(STRATEGIES) <= {"multi_task_posterior", "multi_task_learned_posterior"}
    assert {s for c in comps for s in (c.model_a[0].strategy, c.model_b[0].strategy)} <= set(STRATEGIES)
    # every conditional strategy of Table IV is tested against joint, on all devices and on the unseen ones
    conditional = [s for s in grid.table_strategies(T4_PRESET, "table4") if s in ("teacher_forcing",) or "multi" in s]
    for s in conditional:
        assert (f"{s} vs joint", "all", "greater") in got and (f"{s} vs joint", "unseen", "greater") in got
    # a dataset without unseen devices has no unseen-only tests
    no_unseen = {**T4_PRESET, "datasets": {**T4_PRESET["datasets"], "e20": {"devices": DEVICES9}}}
    assert all(c.scope == "all" for c in stats.table4_comparisons(no_unseen, LAYERS))


def test_claims_csv_gives_both_tests_for_ours_and_the_papers_numbers(tmp_path):
    preset = dict(PRESET, seeds_by_pooling={})
    layers = {row: 3 for row in grid.DEFAULT_ROWS}
    for claim in C.PAPER_CLAIMS:
        comp = C.claim_comparison(preset, claim, layers)
        write_preds(tmp_path, comp.model_a[0], pd.concat(table2_predictions(*claim.row_a, "multi_task").values()))
        single = table2_predictions(*claim.row_b, "single_device")
        for spec in comp.model_b:
            write_preds(tmp_path, spec, single[spec.device])
    out = C.run_claims(preset, layers, stats.predictions_loader(written_predictions(tmp_path)))
    c1, c2 = out.iloc[0], out.iloc[1]
    assert c1["paper_n_by_device"] == "a:2518 b:180 c:180" and c1["paper_n_eff"] == pytest.approx(782.05, abs=0.01)
    assert c1["paper_stratified_p"] == pytest.approx(0.1077, abs=1e-4) and not c1["paper_stratified_holds"]
    assert bool(c1["paper_holds"]) and bool(c2["paper_stratified_holds"])
    # ours reproduce the paper's per-device accuracies (to a clip): the unpaired test gives the paper's p
    assert c1["stratified_p"] == pytest.approx(c1["paper_stratified_p"], abs=0.01)
    assert c1["n_eff"] == pytest.approx(782.05, abs=0.01) and bool(c1["holds"])
    assert c1["paired_diff"] == pytest.approx(c1["ours_a"] - c1["ours_b"])
    # here the better model is right on (almost) every clip the other one gets right (McNemar c = 1): the
    # paired test sees that correlation, which no unpaired test can, and is far stronger than either
    assert c1["mcnemar_c"] <= 1 and c1["paired_p"] < 1e-4 < c1["p"] < c1["stratified_p"] and bool(c1["paired_holds"])
    assert bool(c2["paired_holds"]) and c2["paired_p"] < 1e-6
