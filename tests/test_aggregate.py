"""caanet.aggregate: aggregation over seeds, layer selection, the paper's tables (what the grid's cells
produced; which cells exist is tests/test_grid.py)."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from caanet import aggregate, grid
from caanet.errors import ConfigError, ResultsError
from caanet.spec import CellSpec
from helpers import compare_with_paper
from test_grid import DEVICES9, LAYERS, UNSEEN3, table4_preset

T_975_DF2 = 4.302652729911275  # Student t quantile 0.975 with 2 degrees of freedom (tables)


# --------------------------------------------------------------------------- aggregation over seeds

def cell_rows(cell_id, dataset="d", seed=0, **acc_by_device):
    spec = CellSpec.from_id(cell_id, dataset=dataset, seed=seed)
    return [dict(dataset=dataset, cell_id=cell_id, topology=spec.topology, pooling=spec.pooling,
                 strategy=spec.strategy, cond_layer=spec.cond_layer, device=dev, seed=seed, accuracy=acc,
                 n=100, n_correct=int(acc)) for dev, acc in acc_by_device.items()]


def frame(rows):
    return pd.DataFrame(rows, columns=aggregate.CELL_COLUMNS).astype({"cond_layer": "Int64"})


def pick(summary, **where):
    sel = summary
    for k, v in where.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, where
    return sel.iloc[0]


def test_summarise_three_seeds_against_hand_computation():
    rows = (cell_rows("atrous-att-multi_task-L3", seed=0, a=60.0, b=50.0, c=40.0)
            + cell_rows("atrous-att-multi_task-L3", seed=1, a=62.0, b=52.0, c=44.0)
            + cell_rows("atrous-att-multi_task-L3", seed=2, a=67.0, b=48.0, c=42.0))
    s = aggregate.summarise_table(frame(rows), "table2", reference_device="a")
    assert list(s.columns) == aggregate.SUMMARY_COLUMNS
    assert list(s["device"]) == ["a", "b", "c", "avg", "bc"]
    a = pick(s, device="a")
    std = math.sqrt(13.0)   # values 60, 62, 67: mean 63, squares 9 + 1 + 16 = 26, /2
    assert a["acc_mean"] == pytest.approx(63.0)
    assert a["acc_std"] == pytest.approx(std)
    assert a["acc_ci_low"] == pytest.approx(63.0 - T_975_DF2 * std / math.sqrt(3))
    assert a["acc_ci_high"] == pytest.approx(63.0 + T_975_DF2 * std / math.sqrt(3))
    assert a["n_seeds"] == 3 and a["table"] == "table2" and a["cond_layer"] == 3
    avg = pick(s, device="avg")   # per seed 50, 52.667, 52.333
    assert avg["acc_mean"] == pytest.approx((50.0 + 158 / 3 + 157 / 3) / 3)
    bc = pick(s, device="bc")     # per seed 45, 48, 45
    assert bc["acc_mean"] == pytest.approx(46.0)
    assert bc["acc_std"] == pytest.approx(math.sqrt(3.0))


def test_single_device_avg_and_bc_come_from_three_cells_per_seed():
    rows = []
    for seed, (a, b, c) in enumerate([(70.0, 60.0, 50.0), (72.0, 58.0, 56.0)]):
        rows += cell_rows("cnn_pool-max-single_device-a", seed=seed, a=a)
        rows += cell_rows("cnn_pool-max-single_device-b", seed=seed, b=b)
        rows += cell_rows("cnn_pool-max-single_device-c", seed=seed, c=c)
    s = aggregate.summarise_table(frame(rows), "table2", reference_device="a")
    assert set(s["strategy"]) == {"single_device"} and len(s) == 5
    assert pick(s, device="avg")["acc_mean"] == pytest.approx((60.0 + 62.0) / 2)
    assert pick(s, device="bc")["acc_mean"] == pytest.approx((55.0 + 57.0) / 2)
    assert pick(s, device="b")["acc_mean"] == pytest.approx(59.0)
    assert pd.isna(pick(s, device="avg")["cond_layer"])


def test_incomplete_single_device_seed_is_left_out_of_avg():
    rows = (cell_rows("cnn_pool-max-single_device-a", seed=0, a=70.0)
            + cell_rows("cnn_pool-max-single_device-b", seed=0, b=60.0)
            + cell_rows("cnn_pool-max-single_device-a", seed=1, a=90.0))
    s = aggregate.summarise_table(frame(rows), "table2", reference_device="a")
    assert pick(s, device="avg")["acc_mean"] == pytest.approx(65.0)
    assert pick(s, device="avg")["n_seeds"] == 1
    assert pick(s, device="a")["n_seeds"] == 2


def test_one_seed_has_no_spread_and_reference_device_is_configurable():
    rows = cell_rows("atrous-max-joint", a=60.0, b=50.0, c=40.0)
    s = aggregate.summarise_table(frame(rows), "table2", reference_device={"d": "c"})
    avg = pick(s, device="avg")
    assert avg["n_seeds"] == 1 and pd.isna(avg["acc_std"]) and pd.isna(avg["acc_ci_low"])
    assert pick(s, device="bc")["acc_mean"] == pytest.approx(55.0)   # a and b when c is the reference


def test_summarise_rejects_duplicates():
    rows = cell_rows("atrous-max-joint", a=60.0) * 2
    with pytest.raises(ResultsError, match="duplicate"):
        aggregate.summarise_table(frame(rows), "table2", reference_device="a")


def write_eval(path, spec, per_device):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "cell_id": spec.cell_id, "spec": spec.to_dict(), "scene_labels": [], "device_labels": list(per_device),
        "per_device": {d: {"accuracy": acc, "n": 10, "n_correct": k} for d, (acc, k) in per_device.items()},
        "mean_all": 0.0, "mean_bc": None, "iterations": 1, "train_seconds": 0.1}))
    return path


def test_collect_cells_and_filter(tmp_path):
    tf = CellSpec(dataset="d", topology="atrous", pooling="att", strategy="teacher_forcing", cond_layer=2, seed=1)
    sd = CellSpec(dataset="d", topology="atrous", pooling="att", strategy="single_device", device="b")
    paths = [write_eval(grid.cell_dir(tmp_path, tf) / "evaluation.json", tf, {"a": (0.7, 7), "b": (0.5, 5)}),
             write_eval(grid.cell_dir(tmp_path, sd) / "evaluation.json", sd, {"b": (0.25, 3)})]
    df = aggregate.collect_cells(paths)
    assert list(df.columns) == (aggregate.CELL_COLUMNS + aggregate.CLIP_COLUMNS + aggregate.LOG_LOSS_COLUMNS + aggregate.LAMBDA_COLUMNS
                                + aggregate.POLICY_COLUMNS)
    assert len(df) == 3
    assert df["n_train_clips"].isna().all()          # an evaluation.json without clip counts
    assert df["log_loss"].isna().all()               # ... and without log loss
    assert df["bf16_autocast"].isna().all()          # ... or the numerics it ran in
    ev = json.loads(paths[0].read_text())
    paths[0].write_text(json.dumps({**ev, "bf16_autocast": True}))
    assert set(aggregate.collect_cells(paths).groupby("cell_id")["bf16_autocast"].first()) == {True, None}
    row = df[(df["cell_id"] == "atrous-att-teacher_forcing-L2") & (df["device"] == "a")].iloc[0]
    assert row["accuracy"] == pytest.approx(70.0) and row["seed"] == 1 and row["cond_layer"] == 2
    assert row["n"] == 10 and row["n_correct"] == 7
    assert pd.isna(df[df["strategy"] == "single_device"]["cond_layer"].iloc[0])
    only_sd = aggregate.filter_cells(df, [sd])
    assert list(only_sd["cell_id"]) == ["atrous-att-single_device-b"]
    with pytest.raises(ResultsError, match="already read"):
        aggregate.collect_cells(paths + paths[:1])


def test_collect_cells_names_file_and_key(tmp_path):
    spec = CellSpec(dataset="d", topology="atrous", pooling="att", strategy="joint")
    path = write_eval(tmp_path / "evaluation.json", spec, {"a": (0.7, 7)})
    ev = json.loads(path.read_text())
    del ev["per_device"]["a"]["n_correct"]
    path.write_text(json.dumps(ev))
    with pytest.raises(ResultsError, match=r"evaluation\.json.*n_correct"):
        aggregate.collect_cells([path])
    ev["per_device"]["a"].update(n_correct=7, accuracy=70.0)
    path.write_text(json.dumps(ev))
    with pytest.raises(ResultsError, match="accuracy"):
        aggregate.collect_cells([path])


def test_collect_cells_reads_the_log_loss_per_device(tmp_path):
    spec = CellSpec(dataset="d", topology="atrous", pooling="att", strategy="joint")
    path = write_eval(tmp_path / "evaluation.json", spec, {"a": (0.7, 7), "b": (0.5, 5)})
    ev = json.loads(path.read_text())
    ev["log_loss"] = {"overall": 1.0, "per_device": {"a": 0.8, "b": 1.25}}
    path.write_text(json.dumps(ev))
    df = aggregate.collect_cells([path])
    assert df.set_index("device")["log_loss"].to_dict() == {"a": 0.8, "b": 1.25}
    ev["log_loss"]["per_device"]["b"] = -0.1
    path.write_text(json.dumps(ev))
    with pytest.raises(ResultsError, match=r"evaluation\.json: log_loss\.per_device\.b = -0\.1"):
        aggregate.collect_cells([path])


def test_summarise_log_loss_like_accuracy_against_hand_computation():
    ll = {0: {"a": 0.9, "b": 1.2, "c": 1.5}, 1: {"a": 1.1, "b": 1.4, "c": 1.3}}
    rows = []
    for seed, acc in ((0, dict(a=60.0, b=50.0, c=40.0)), (1, dict(a=62.0, b=52.0, c=44.0))):
        for r in cell_rows("atrous-att-joint", seed=seed, **acc):
            rows.append({**r, "log_loss": ll[seed][r["device"]]})
    df = pd.DataFrame(rows, columns=aggregate.CELL_COLUMNS + ["log_loss"]).astype({"cond_layer": "Int64"})
    s = aggregate.summarise_table(df, "table2", reference_device="a")
    assert list(s.columns) == aggregate.SUMMARY_COLUMNS
    a = pick(s, device="a")
    assert a["ll_mean"] == pytest.approx(1.0) and a["ll_std"] == pytest.approx(math.sqrt(0.02))
    # avg per seed first: (0.9+1.2+1.5)/3 = 1.2 and (1.1+1.4+1.3)/3 = 1.2666..; bc: 1.35 and 1.35
    avg = pick(s, device="avg")
    assert avg["ll_mean"] == pytest.approx((1.2 + 3.8 / 3) / 2)
    half = 12.706204736174698 * np.std([1.2, 3.8 / 3], ddof=1) / math.sqrt(2)   # t(0.975, 1)
    assert (avg["ll_ci_low"], avg["ll_ci_high"]) == pytest.approx((avg["ll_mean"] - half, avg["ll_mean"] + half))
    bc = pick(s, device="bc")
    assert bc["ll_mean"] == pytest.approx(1.35) and bc["ll_std"] == pytest.approx(0.0)
    # a seed without its log loss (a file written before) makes the statistics NaN, not a partial mean
    df.loc[(df["seed"] == 1) & (df["device"] == "c"), "log_loss"] = np.nan
    s = aggregate.summarise_table(df, "table2", reference_device="a")
    assert math.isnan(pick(s, device="avg")["ll_mean"]) and math.isnan(pick(s, device="c")["ll_mean"])
    assert pick(s, device="a")["ll_mean"] == pytest.approx(1.0)
    # without the column every ll_* is NaN and the accuracies are unchanged
    plain = aggregate.summarise_table(df.drop(columns="log_loss"), "table2", reference_device="a")
    assert plain["ll_mean"].isna().all()
    pd.testing.assert_series_equal(plain["acc_mean"], s["acc_mean"])


# --------------------------------------------------------------------------- layer selection

def table1_summary(values):
    """values: {(topology, pooling): [avg accuracy of layers 1..4]}"""
    rows = [dict(table="table1", dataset="d", topology=t, pooling=p, strategy="teacher_forcing", cond_layer=i + 1,
                 device=dev, acc_mean=(v if dev == "avg" else 99.0), acc_std=float("nan"), acc_ci_low=float("nan"),
                 acc_ci_high=float("nan"), n_seeds=1)
            for (t, p), accs in values.items() for i, v in enumerate(accs) for dev in ("a", "avg")]
    return pd.DataFrame(rows, columns=aggregate.SUMMARY_COLUMNS)


def test_select_layers_best_avg_ties_to_lowest():
    summary = table1_summary({("atrous", "att"): [65.8, 62.7, 65.3, 67.0],
                              ("cnn_pool", "max"): [60.0, 63.8, 63.8, 59.7],
                              ("cnn_nopool", "roi"): [52.9, 52.9, 50.2, 51.0]})
    assert aggregate.select_layers(summary) == {("atrous", "att"): 4, ("cnn_pool", "max"): 2, ("cnn_nopool", "roi"): 1}
    lt = aggregate.layers_table(summary)
    assert list(lt.columns) == aggregate.LAYER_COLUMNS
    assert lt.set_index(["topology", "pooling"]).loc[("atrous", "att"), "acc_mean"] == pytest.approx(67.0)


def test_select_layers_on_the_papers_table1_reproduces_its_highlights():
    paper = aggregate.paper_table("table1").rename(columns={"paper_acc": "acc_mean"})
    layers = aggregate.select_layers(paper)
    assert layers[("atrous", "att")] == 4 and layers[("cnn_pool", "att")] == 3
    assert layers[("cnn_nopool", "roi")] == 1  # 52.9 at layers 1 and 2: lowest wins


def test_select_layers_from_full_summary_pipeline():
    rows = []
    for layer, accs in {1: (60.0, 61.0), 2: (64.0, 66.0), 3: (66.0, 63.0)}.items():
        for seed, acc in enumerate(accs):
            rows += cell_rows(f"atrous-att-teacher_forcing-L{layer}", seed=seed, a=acc + 10, b=acc - 5, c=acc - 5)
    s = aggregate.summarise_table(frame(rows), "table1", reference_device="a")
    assert aggregate.select_layers(s) == {("atrous", "att"): 2}   # means 60.5, 65, 64.5


# --------------------------------------------------------------------------- paper tables

def test_paper_tables_load_in_our_vocabulary():
    t1, t2, t3 = (aggregate.paper_table(t) for t in ("table1", "table2", "table3"))
    assert len(t1) == 56 and len(t2) == 14 * 4 * 4 and len(t3) == 3 * 4 * 4
    assert set(t2["topology"]) == {"cnn_pool", "cnn_nopool", "atrous"}
    row = t2[(t2.topology == "atrous") & (t2.pooling == "att") & (t2.strategy == "multi_task") & (t2.device == "avg")]
    assert row["paper_acc"].item() == pytest.approx(68.0)
    assert aggregate.paper_table("table4").empty and aggregate.paper_table("table5").empty   # beyond the paper: no values
    with pytest.raises(ConfigError, match="table6"):
        aggregate.paper_table("table6")


def test_compare_with_paper_adds_diff():
    rows = cell_rows("atrous-att-multi_task-L3", dataset="embedded2018", a=72.4, b=70.9, c=62.8)
    s = compare_with_paper(aggregate.summarise_table(frame(rows), "table2", reference_device="a"), "table2")
    assert pick(s, device="b")["diff"] == pytest.approx(2.0)
    assert pick(s, device="avg")["paper_acc"] == pytest.approx(68.0)
    assert pd.isna(pick(s, device="bc")["paper_acc"])
    t1 = aggregate.summarise_table(frame(cell_rows("atrous-att-teacher_forcing-L2", a=63.7, b=62.7, c=61.7)), "table1", reference_device="a")
    c1 = compare_with_paper(t1, "table1")
    assert pick(c1, device="avg")["paper_acc"] == pytest.approx(62.7)
    assert pick(c1, device="avg")["diff"] == pytest.approx(0.0, abs=1e-9)


# --------------------------------------------------------------------------- reference device, validation, seeds

def test_reference_device_named_otherwise_is_one_definition_from_config_to_table(tmp_path):
    """Devices [zoom, phone1, phone2] at 90/50/40 %, zoom the reference: B/C is 45.0, not 60.0."""
    import yaml

    from caanet.config import check_config
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    config["datasets"]["mine"] = {"source": "local", "path": str(tmp_path), "clip_seconds": 1.0,
                                  "devices": ["phone1", "zoom", "phone2"], "reference_device": "zoom"}
    config["presets"]["mine"] = {"tables": {t: {"dataset": "mine"} for t in ("table1", "table2", "table3")}}
    config["preset"] = "mine"
    check_config(config)                                       # the schema accepts reference_device
    from caanet.config import resolve
    preset = resolve(config)
    assert grid.reference_devices(preset) == {"mine": "zoom"}
    rows = cell_rows("cnn_pool-max-joint", dataset="mine", zoom=90.0, phone1=50.0, phone2=40.0)
    s = aggregate.summarise_table(frame(rows), "table2", reference_device=grid.reference_devices(preset))
    assert pick(s, device="bc")["acc_mean"] == pytest.approx(45.0)
    assert pick(s, device="avg")["acc_mean"] == pytest.approx(60.0)
    bad = dict(config, datasets=dict(config["datasets"], mine=dict(config["datasets"]["mine"], reference_device="a")))
    with pytest.raises(ConfigError, match="reference_device"):
        grid.grid_config(resolve(bad))


def test_reference_device_with_more_than_three_devices():
    rows = cell_rows("cnn_pool-max-joint", dataset="d", s1=80.0, s2=70.0, s3=60.0, s4=50.0, s5=40.0)
    s = aggregate.summarise_table(frame(rows), "table2", reference_device={"d": "s3"})
    assert pick(s, device="bc")["acc_mean"] == pytest.approx((80 + 70 + 50 + 40) / 4)
    assert pick(s, device="avg")["acc_mean"] == pytest.approx(60.0)
    with pytest.raises(ConfigError, match="no reference device for dataset 'd'"):
        aggregate.summarise_table(frame(rows), "table2", reference_device={"other": "s1"})


def test_layer_selection_on_validation_uses_the_validation_scores():
    preset = {"tables": {"table1": {"dataset": "d"}}, "datasets": {"d": {"devices": ["a", "b", "c"]}},
              "grid": {"rows": [["atrous", "att"]], "layers": [1, 2], "layer_selection": "validation"}}
    cfg = grid.grid_config(preset)
    assert cfg.layer_selection == "validation"
    tf1, tf2 = grid.table1_cells(preset)
    assert grid.scores_validation(preset, tf1) and grid.scores_validation(preset, tf2)
    joint = CellSpec("d", "atrous", "att", "joint")
    assert not grid.scores_validation(preset, joint)
    assert not grid.scores_validation(dict(preset, grid={"rows": [["atrous", "att"]]}), tf1)   # test: the paper's
    with pytest.raises(ConfigError, match="layer_selection"):
        grid.grid_config(dict(preset, grid={"layer_selection": "train"}))
    # layer 1 is best on test (70 > 60), layer 2 on validation (55 > 50)
    rows = (cell_rows(tf1.cell_id, a=70.0, b=70.0, c=70.0) + cell_rows(tf2.cell_id, a=60.0, b=60.0, c=60.0))
    cells = frame(rows)
    cells["validation_accuracy"] = [50.0] * 3 + [55.0] * 3
    summary = aggregate.summarise_table(cells[aggregate.CELL_COLUMNS], "table1", reference_device="a")
    on_test = aggregate.select_layers_table(cells, summary, "test")
    on_val = aggregate.select_layers_table(cells, summary, "validation")
    assert on_test[["cond_layer", "selected_on"]].values.tolist() == [[1, "test"]]
    assert on_val[["cond_layer", "acc_mean", "selected_on"]].values.tolist() == [[2, 55.0, "validation"]]
    cells["validation_accuracy"] = float("nan")
    with pytest.raises(ResultsError, match="no validation accuracy"):
        aggregate.select_layers_table(cells, summary, "validation")


def test_figures_show_the_seed_with_the_best_avg(tmp_path):
    from caanet import workflow_support as ws

    preset = {"tables": {"table1": {"dataset": "d"}, "table2": {"dataset": "d"}, "table3": {"dataset": "d3"}},
              "datasets": {"d": {"devices": ["a", "b", "c"]}, "d3": {"devices": ["a", "b", "c"]}},
              "seeds_by_pooling": {"att": [0, 1, 2]}, "grid": {"rows": [["atrous", "att"]]}}
    cid = "atrous-att-multi_task-L2"
    rows = (cell_rows(cid, seed=0, a=60.0, b=50.0, c=40.0) + cell_rows(cid, seed=1, a=70.0, b=60.0, c=50.0)
            + cell_rows(cid, seed=2, a=80.0, b=50.0, c=50.0))   # Avg 50, 60, 60: seed 1 (tie -> lowest)
    cells = frame(rows)
    spec = CellSpec.from_id(cid, dataset="d")
    assert aggregate.best_seed(cells, spec) == 1
    with pytest.raises(ResultsError, match="no results of cell"):
        aggregate.best_seed(cells, CellSpec.from_id("atrous-att-multi_task-L1", dataset="d"))
    # Table III's cell of the same id (another dataset) and a seed Table II does not have: never chosen
    other = cell_rows(cid, dataset="d3", seed=0, a=99.0, b=99.0, c=99.0) + cell_rows(cid, seed=7, a=99.0, b=99.0, c=99.0)
    pd.concat([cells, frame(other)]).to_csv(tmp_path / "cells.csv", index=False)
    table2 = aggregate.summarise_table(cells, "table2", reference_device="a")
    table2.to_csv(tmp_path / "table2.csv", index=False)
    out = ws.figure_cells(preset, tmp_path / "table2.csv", tmp_path / "cells.csv", {("atrous", "att"): 2})
    assert out["fig6"] == f"results/cells/d/{cid}/seed1/evaluation.json" == out["fig7"]
    assert out["fig7_attention"] == f"results/cells/d/{cid}/seed1/attention.npz"   # an input, declared
    # no attention row: Fig. 7 shows Fig. 6's model, and no attention file is asked for
    mid = "atrous-max-multi_task-L2"
    frame([dict(r, pooling="max", cell_id=mid) for r in rows]).to_csv(tmp_path / "cells.csv", index=False)
    table2.assign(pooling="max").to_csv(tmp_path / "table2.csv", index=False)
    preset.update(grid={"rows": [["atrous", "max"]], "table3_rows": [["atrous", "max"]]}, seeds=[0, 1, 2])
    out = ws.figure_cells(preset, tmp_path / "table2.csv", tmp_path / "cells.csv", {("atrous", "max"): 2})
    assert out == {"fig6": f"results/cells/d/{mid}/seed1/evaluation.json", "fig7": out["fig6"]}


# --------------------------------------------------------------------------- Table IV (beyond the paper)

def test_seen_and_unseen_means_against_hand_computation():
    """9 devices, 3 unseen, two seeds: avg/seen/unseen per seed, then mean and std over seeds."""
    acc0 = dict(zip(DEVICES9, [70.0, 60.0, 50.0, 40.0, 30.0, 20.0, 10.0, 20.0, 30.0]))
    acc1 = dict(zip(DEVICES9, [72.0, 62.0, 52.0, 42.0, 32.0, 22.0, 14.0, 24.0, 34.0]))
    rows = (cell_rows("atrous-att-joint", dataset="tiny2020", seed=0, **acc0)
            + cell_rows("atrous-att-joint", dataset="tiny2020", seed=1, **acc1))
    # single-device: one cell per seen device, seed 0 only
    for dev in DEVICES9[:6]:
        rows += cell_rows(f"atrous-att-single_device-{dev}", dataset="tiny2020", seed=0, **{dev: acc0[dev] + 1})
    s = aggregate.summarise_table(frame(rows), "table4", reference_device={"tiny2020": "a"},
                             unseen_devices={"tiny2020": UNSEEN3})
    joint = s[s.strategy == "joint"]
    # seed 0: seen (70+60+50+40+30+20)/6 = 45, unseen (10+20+30)/3 = 20, avg 330/9 = 36.667
    # seed 1: seen 47, unseen 24, avg (282 + 72)/9 = 39.333
    assert pick(joint, device="seen")["acc_mean"] == pytest.approx(46.0)
    assert pick(joint, device="unseen")["acc_mean"] == pytest.approx(22.0)
    assert pick(joint, device="avg")["acc_mean"] == pytest.approx((330 / 9 + 354 / 9) / 2)
    assert pick(joint, device="unseen")["acc_std"] == pytest.approx(math.sqrt(8.0))   # 20, 24: ddof=1
    # B/C: the seen devices other than the reference (b, c, s1-s3), never the unseen ones
    assert pick(joint, device="bc")["acc_mean"] == pytest.approx(((200 / 5) + (210 / 5)) / 2)
    single = s[s.strategy == "single_device"]
    assert pick(single, device="seen")["acc_mean"] == pytest.approx(46.0)   # (71+61+51+41+31+21)/6
    assert not {"avg", "unseen"} & set(single["device"])   # no result on unseen devices: no Avg
    assert set(single["device"]) == set(DEVICES9[:6]) | {"seen", "bc"}
    # a dataset without unseen devices: no seen/unseen rows, the Avg as before
    plain = aggregate.summarise_table(frame(cell_rows("atrous-att-joint", a=60.0, b=40.0, c=20.0)), "table2",
                                 reference_device="a", unseen_devices={"tiny2020": UNSEEN3})
    assert set(plain["device"]) == {"a", "b", "c", "avg", "bc"}
    assert pick(plain, device="avg")["acc_mean"] == pytest.approx(40.0)


def test_table_cells_frame_selects_exactly_a_tables_cells():
    """The one selection of a table's rows of cells.csv: its cells on its dataset and seeds, nothing of
    another table that shares cell ids (Table IV's teacher forcing on the 2020 data, other seeds)."""
    preset = table4_preset(seeds=[0])
    layers = {**LAYERS, ("cnn_pool", "att"): 3, ("cnn_nopool", "att"): 2, ("atrous", "att"): 4}
    rows = []
    for table in ("table1", "table2", "table3", "table4"):
        for spec in grid.table_cells(preset, table, layers):
            rows += cell_rows(spec.cell_id, dataset=spec.dataset, seed=spec.seed, a=50.0)
    rows += cell_rows("atrous-att-joint", dataset="tiny2020", seed=1, a=50.0)   # a seed Table IV does not have
    cells = frame(rows).drop_duplicates(["dataset", "cell_id", "seed", "device"])
    for table in ("table1", "table2", "table3", "table4"):
        got = aggregate.table_cells_frame(cells, preset, table, layers)
        want = {(s.dataset, s.cell_id, s.seed) for s in grid.table_cells(preset, table, layers)}
        assert set(zip(got["dataset"], got["cell_id"], got["seed"])) == want, table
    t4 = aggregate.table_cells_frame(cells, preset, "table4", layers)
    assert set(t4["dataset"]) == {"tiny2020"} and set(t4["seed"]) == {0}


# --------------------------------------------------------------------------- Table V (beyond the paper)

def test_summaries_keep_methods_apart():
    rows = []
    for seed, (plain, mixed) in enumerate(((40.0, 50.0), (44.0, 56.0))):
        rows += cell_rows("atrous-att-joint", dataset="tiny2020", seed=seed, **dict(zip(DEVICES9, [plain] * 9)))
        rows += [dict(r, method="freq_mixstyle") for r in
                 cell_rows("atrous-att-joint+freq_mixstyle", dataset="tiny2020", seed=seed,
                           **dict(zip(DEVICES9, [mixed] * 6 + [mixed - 30] * 3)))]
    s = aggregate.summarise_table(frame(rows), "table5", reference_device="a", unseen_devices={"tiny2020": UNSEEN3})
    assert list(s.columns) == aggregate.SUMMARY_COLUMNS
    assert pick(s, method="none", device="avg")["acc_mean"] == pytest.approx(42.0)
    mixed = s[s["method"] == "freq_mixstyle"]
    assert pick(mixed, device="seen")["acc_mean"] == pytest.approx(53.0)
    assert pick(mixed, device="unseen")["acc_mean"] == pytest.approx(23.0)
    assert pick(mixed, device="avg")["acc_mean"] == pytest.approx((6 * 53.0 + 3 * 23.0) / 9)
    assert list(dict.fromkeys(s["method"])) == ["none", "freq_mixstyle"]
    # frames without a method column (cells.csv before Table V) are the paper's training
    old = frame(rows[:9]).drop(columns="method")
    assert set(aggregate.summarise_table(old, "table5", reference_device="a")["method"]) == {"none"}


def test_collect_cells_reads_the_method(tmp_path):
    ev = {"cell_id": "atrous-att-joint+dir_augment", "per_device": {"a": {"accuracy": 0.5, "n": 10, "n_correct": 5}},
          "spec": CellSpec.from_id("atrous-att-joint+dir_augment", dataset="d").to_dict()}
    (tmp_path / "e.json").write_text(json.dumps(ev))
    old = dict(ev, cell_id="atrous-att-joint", spec={k: v for k, v in CellSpec.from_id(
        "atrous-att-joint", dataset="d", seed=1).to_dict().items() if k != "method"})
    (tmp_path / "old.json").write_text(json.dumps(old))
    cells = aggregate.collect_cells([tmp_path / "e.json", tmp_path / "old.json"])
    assert cells["method"].tolist() == ["dir_augment", "none"]


def test_an_evaluation_file_that_is_not_a_json_object_is_named(tmp_path):
    from caanet.errors import ResultsError
    from caanet.io import read_results_json

    cases = {"list.json": b"[1, 2]", "latin1.json": b'{"spec": "\xe9"}', "cut.json": b'{"spec": '}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ResultsError, match=name):
            read_results_json(tmp_path / name)
    with pytest.raises(ResultsError, match="not found"):
        read_results_json(tmp_path / "missing.json")
