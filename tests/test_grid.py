"""caanet.grid: expansion of the paper's grid, layer selection, aggregation over seeds, paper tables."""

import copy
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from caanet import grid
from caanet.errors import ConfigError, ResultsError
from caanet.spec import CellSpec
from helpers import compare_with_paper

T_975_DF2 = 4.302652729911275  # Student t quantile 0.975 with 2 degrees of freedom (tables)


def paper_preset(**overrides):
    preset = {
        "tables": {"table1": {"dataset": "embedded2018"}, "table2": {"dataset": "embedded2018"},
                   "table3": {"dataset": "embedded2019"}},
        "seeds": [0],
        "fidelity": "paper",
        "datasets": {"embedded2018": {"devices": ["a", "b", "c"]}, "embedded2019": {"devices": ["a", "b", "c"]}},
    }
    preset.update(overrides)
    return preset


LAYERS = {row: 1 + i % 4 for i, row in enumerate(grid.DEFAULT_ROWS)}


# --------------------------------------------------------------------------- expansion

def test_default_rows_are_the_papers_14():
    assert len(grid.DEFAULT_ROWS) == 14
    assert sum(1 for t, _ in grid.DEFAULT_ROWS if t == "cnn_pool") == 4
    assert grid.TABLE3_ROWS == (("cnn_pool", "att"), ("cnn_nopool", "att"), ("atrous", "att"))


def test_paper_grid_counts_per_seed():
    preset = paper_preset()
    t1 = grid.table1_cells(preset)
    t2 = grid.table2_cells(preset, LAYERS)
    t3 = grid.table3_cells(preset, LAYERS)
    assert len(t1) == 56
    assert len(t2) == 14 * 6
    assert len(set(t2) - set(t1)) == 70          # 3 single + joint + multi_task per row
    assert len(t3) == 18
    assert len(grid.all_cells(preset, LAYERS)) == 56 + 70 + 18
    assert {s.strategy for s in t1} == {"teacher_forcing"}
    assert {s.dataset for s in t3} == {"embedded2019"}


def test_table2_teacher_forcing_reuses_table1_cell_at_selected_layer():
    preset = paper_preset()
    t1 = set(grid.table1_cells(preset))
    tf = [s for s in grid.table2_cells(preset, LAYERS) if s.strategy == "teacher_forcing"]
    assert len(tf) == 14 and all(s in t1 for s in tf)
    for s in grid.table2_cells(preset, LAYERS) + grid.table3_cells(preset, LAYERS):
        if s.conditional:
            assert s.cond_layer == LAYERS[(s.topology, s.pooling)]


def test_seeds_multiply_and_seeds_by_pooling_applies():
    preset = paper_preset(seeds=[0, 1], seeds_by_pooling={"att": [0, 1, 2], "roi_att": [0, 1, 2]})
    assert grid.seeds_for(preset, "att") == [0, 1, 2]
    assert grid.seeds_for(preset, "max") == [0, 1]
    t1 = grid.table1_cells(preset)
    # 9 non-attention rows x 4 layers x 2 seeds + 5 attention rows x 4 layers x 3 seeds
    assert len(t1) == 9 * 4 * 2 + 5 * 4 * 3
    t3 = grid.table3_cells(preset, LAYERS)
    assert len(t3) == 18 * 3 and {s.seed for s in t3} == {0, 1, 2}
    flat = [s for s in grid.table2_cells(preset, LAYERS) if s.pooling == "flatten"]
    assert len(flat) == 6 * 2


def test_cell_ids_unique_and_fidelity_carried():
    preset = paper_preset(seeds=[0, 3], fidelity="reference")
    cells = grid.all_cells(preset, LAYERS)
    keys = [(s.dataset, s.cell_id, s.seed) for s in cells]
    assert len(keys) == len(set(keys))
    assert {s.fidelity for s in cells} == {"reference"}
    assert len({(s.dataset, s.cell_id) for s in cells}) == 144


def test_all_cells_without_layers_are_those_that_need_no_selection():
    preset = paper_preset()
    cells = grid.all_cells(preset)
    assert len(cells) == 56 + 14 * 4 + 3 * 4
    assert not any(s.conditional and s.dataset == "embedded2019" for s in cells)
    assert set(cells) <= set(grid.all_cells(preset, LAYERS))


def test_paper_grid_expands_fast():
    preset = paper_preset(seeds_by_pooling={"att": [0, 1, 2], "roi_att": [0, 1, 2]})
    start = time.perf_counter()
    cells = grid.all_cells(preset, LAYERS)
    elapsed = time.perf_counter() - start
    assert len(cells) >= 144
    assert elapsed < 0.5


def test_missing_selected_layer_names_the_row():
    layers = dict(LAYERS)
    del layers[("atrous", "roi")]
    with pytest.raises(ConfigError, match="atrous-roi"):
        grid.table2_cells(paper_preset(), layers)


def test_custom_rows_strategies_and_absent_tables():
    preset = paper_preset(grid={"rows": [["atrous", "att"]], "layers": [2, 4],
                                "strategies": ["joint", "multi_task"]})
    del preset["tables"]["table3"]
    assert [s.cell_id for s in grid.table1_cells(preset)] == [
        "atrous-att-teacher_forcing-L2", "atrous-att-teacher_forcing-L4"]
    assert [s.cell_id for s in grid.table2_cells(preset, {("atrous", "att"): 4})] == [
        "atrous-att-joint", "atrous-att-multi_task-L4"]
    assert grid.table3_cells(preset, {("atrous", "att"): 4}) == []


def test_cell_dir(tmp_path):
    spec = CellSpec(dataset="embedded2018", topology="atrous", pooling="att", strategy="multi_task",
                    cond_layer=3, seed=2)
    assert grid.cell_dir(tmp_path, spec) == tmp_path / "cells" / "embedded2018" / "atrous-att-multi_task-L3" / "seed2"


@pytest.mark.parametrize("mutate, key", [
    (lambda p: p["grid"].__setitem__("rows", [["atrous", "bogus"]]), "grid.rows[0]"),
    (lambda p: p["grid"].__setitem__("rows", [["atrous"]]), "grid.rows[0]"),
    (lambda p: p["grid"].__setitem__("layers", [1, 5]), "grid.layers[1]"),
    (lambda p: p["grid"].__setitem__("strategies", ["joint", "magic"]), "grid.strategies[1]"),
    (lambda p: p["grid"].__setitem__("table3_rows", [["cnn_pool", "att"], ["cnn_pool", "att"]]), "grid.table3_rows"),
    (lambda p: p["grid"].__setitem__("colums", []), "grid"),
    (lambda p: p.__setitem__("seeds", [0, -1]), "seeds[1]"),
    (lambda p: p.__setitem__("seeds", []), "seeds"),
    (lambda p: p.__setitem__("seeds_by_pooling", {"attention": [0]}), "seeds_by_pooling.attention"),
    (lambda p: p.__setitem__("seeds_by_pooling", {"att": [0, 0]}), "seeds_by_pooling.att"),
    (lambda p: p.__setitem__("fidelity", "novel"), "fidelity"),
    (lambda p: p["tables"].__setitem__("table2", {"dataset": "nowhere"}), "tables.table2.dataset"),
    (lambda p: p["tables"].pop("table1"), "tables.table1"),
    (lambda p: p["tables"].__setitem__("table9", {"dataset": "embedded2018"}), "tables"),
    (lambda p: p["datasets"]["embedded2019"].pop("devices"), "datasets.embedded2019.devices"),
    (lambda p: p["datasets"]["embedded2018"].__setitem__("reference_device", "z"),
     "datasets.embedded2018.reference_device"),
    (lambda p: p.pop("datasets"), "datasets"),
])
def test_bad_grid_config_names_the_key(mutate, key):
    preset = copy.deepcopy(paper_preset(grid={}))
    mutate(preset)
    with pytest.raises(ConfigError) as err:
        grid.table1_cells(preset)
    assert key in str(err.value)


# --------------------------------------------------------------------------- aggregation

def cell_rows(cell_id, dataset="d", seed=0, **acc_by_device):
    spec = CellSpec.from_id(cell_id, dataset=dataset, seed=seed)
    return [dict(dataset=dataset, cell_id=cell_id, topology=spec.topology, pooling=spec.pooling,
                 strategy=spec.strategy, cond_layer=spec.cond_layer, device=dev, seed=seed, accuracy=acc,
                 n=100, n_correct=int(acc)) for dev, acc in acc_by_device.items()]


def frame(rows):
    return pd.DataFrame(rows, columns=grid.CELL_COLUMNS).astype({"cond_layer": "Int64"})


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
    s = grid.summarise_table(frame(rows), "table2", reference_device="a")
    assert list(s.columns) == grid.SUMMARY_COLUMNS
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
    s = grid.summarise_table(frame(rows), "table2", reference_device="a")
    assert set(s["strategy"]) == {"single_device"} and len(s) == 5
    assert pick(s, device="avg")["acc_mean"] == pytest.approx((60.0 + 62.0) / 2)
    assert pick(s, device="bc")["acc_mean"] == pytest.approx((55.0 + 57.0) / 2)
    assert pick(s, device="b")["acc_mean"] == pytest.approx(59.0)
    assert pd.isna(pick(s, device="avg")["cond_layer"])


def test_incomplete_single_device_seed_is_left_out_of_avg():
    rows = (cell_rows("cnn_pool-max-single_device-a", seed=0, a=70.0)
            + cell_rows("cnn_pool-max-single_device-b", seed=0, b=60.0)
            + cell_rows("cnn_pool-max-single_device-a", seed=1, a=90.0))
    s = grid.summarise_table(frame(rows), "table2", reference_device="a")
    assert pick(s, device="avg")["acc_mean"] == pytest.approx(65.0)
    assert pick(s, device="avg")["n_seeds"] == 1
    assert pick(s, device="a")["n_seeds"] == 2


def test_one_seed_has_no_spread_and_reference_device_is_configurable():
    rows = cell_rows("atrous-max-joint", a=60.0, b=50.0, c=40.0)
    s = grid.summarise_table(frame(rows), "table2", reference_device={"d": "c"})
    avg = pick(s, device="avg")
    assert avg["n_seeds"] == 1 and pd.isna(avg["acc_std"]) and pd.isna(avg["acc_ci_low"])
    assert pick(s, device="bc")["acc_mean"] == pytest.approx(55.0)   # a and b when c is the reference


def test_summarise_rejects_duplicates():
    rows = cell_rows("atrous-max-joint", a=60.0) * 2
    with pytest.raises(ResultsError, match="duplicate"):
        grid.summarise_table(frame(rows), "table2", reference_device="a")


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
    df = grid.collect_cells(paths)
    assert list(df.columns) == (grid.CELL_COLUMNS + grid.CLIP_COLUMNS + grid.LOG_LOSS_COLUMNS + grid.LAMBDA_COLUMNS
                                + grid.POLICY_COLUMNS)
    assert len(df) == 3
    assert df["n_train_clips"].isna().all()          # an evaluation.json without clip counts
    assert df["log_loss"].isna().all()               # ... and without log loss
    assert df["bf16_autocast"].isna().all()          # ... or the numerics it ran in
    ev = json.loads(paths[0].read_text())
    paths[0].write_text(json.dumps({**ev, "bf16_autocast": True}))
    assert set(grid.collect_cells(paths).groupby("cell_id")["bf16_autocast"].first()) == {True, None}
    row = df[(df["cell_id"] == "atrous-att-teacher_forcing-L2") & (df["device"] == "a")].iloc[0]
    assert row["accuracy"] == pytest.approx(70.0) and row["seed"] == 1 and row["cond_layer"] == 2
    assert row["n"] == 10 and row["n_correct"] == 7
    assert pd.isna(df[df["strategy"] == "single_device"]["cond_layer"].iloc[0])
    only_sd = grid.filter_cells(df, [sd])
    assert list(only_sd["cell_id"]) == ["atrous-att-single_device-b"]
    with pytest.raises(ResultsError, match="already read"):
        grid.collect_cells(paths + paths[:1])


def test_collect_cells_names_file_and_key(tmp_path):
    spec = CellSpec(dataset="d", topology="atrous", pooling="att", strategy="joint")
    path = write_eval(tmp_path / "evaluation.json", spec, {"a": (0.7, 7)})
    ev = json.loads(path.read_text())
    del ev["per_device"]["a"]["n_correct"]
    path.write_text(json.dumps(ev))
    with pytest.raises(ResultsError, match=r"evaluation\.json.*n_correct"):
        grid.collect_cells([path])
    ev["per_device"]["a"].update(n_correct=7, accuracy=70.0)
    path.write_text(json.dumps(ev))
    with pytest.raises(ResultsError, match="accuracy"):
        grid.collect_cells([path])


def test_collect_cells_reads_the_log_loss_per_device(tmp_path):
    spec = CellSpec(dataset="d", topology="atrous", pooling="att", strategy="joint")
    path = write_eval(tmp_path / "evaluation.json", spec, {"a": (0.7, 7), "b": (0.5, 5)})
    ev = json.loads(path.read_text())
    ev["log_loss"] = {"overall": 1.0, "per_device": {"a": 0.8, "b": 1.25}}
    path.write_text(json.dumps(ev))
    df = grid.collect_cells([path])
    assert df.set_index("device")["log_loss"].to_dict() == {"a": 0.8, "b": 1.25}
    ev["log_loss"]["per_device"]["b"] = -0.1
    path.write_text(json.dumps(ev))
    with pytest.raises(ResultsError, match=r"evaluation\.json: log_loss\.per_device\.b = -0\.1"):
        grid.collect_cells([path])


def test_summarise_log_loss_like_accuracy_against_hand_computation():
    ll = {0: {"a": 0.9, "b": 1.2, "c": 1.5}, 1: {"a": 1.1, "b": 1.4, "c": 1.3}}
    rows = []
    for seed, acc in ((0, dict(a=60.0, b=50.0, c=40.0)), (1, dict(a=62.0, b=52.0, c=44.0))):
        for r in cell_rows("atrous-att-joint", seed=seed, **acc):
            rows.append({**r, "log_loss": ll[seed][r["device"]]})
    df = pd.DataFrame(rows, columns=grid.CELL_COLUMNS + ["log_loss"]).astype({"cond_layer": "Int64"})
    s = grid.summarise_table(df, "table2", reference_device="a")
    assert list(s.columns) == grid.SUMMARY_COLUMNS
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
    s = grid.summarise_table(df, "table2", reference_device="a")
    assert math.isnan(pick(s, device="avg")["ll_mean"]) and math.isnan(pick(s, device="c")["ll_mean"])
    assert pick(s, device="a")["ll_mean"] == pytest.approx(1.0)
    # without the column every ll_* is NaN and the accuracies are unchanged
    plain = grid.summarise_table(df.drop(columns="log_loss"), "table2", reference_device="a")
    assert plain["ll_mean"].isna().all()
    pd.testing.assert_series_equal(plain["acc_mean"], s["acc_mean"])


# --------------------------------------------------------------------------- layer selection

def table1_summary(values):
    """values: {(topology, pooling): [avg accuracy of layers 1..4]}"""
    rows = [dict(table="table1", dataset="d", topology=t, pooling=p, strategy="teacher_forcing", cond_layer=i + 1,
                 device=dev, acc_mean=(v if dev == "avg" else 99.0), acc_std=float("nan"), acc_ci_low=float("nan"),
                 acc_ci_high=float("nan"), n_seeds=1)
            for (t, p), accs in values.items() for i, v in enumerate(accs) for dev in ("a", "avg")]
    return pd.DataFrame(rows, columns=grid.SUMMARY_COLUMNS)


def test_select_layers_best_avg_ties_to_lowest():
    summary = table1_summary({("atrous", "att"): [65.8, 62.7, 65.3, 67.0],
                              ("cnn_pool", "max"): [60.0, 63.8, 63.8, 59.7],
                              ("cnn_nopool", "roi"): [52.9, 52.9, 50.2, 51.0]})
    assert grid.select_layers(summary) == {("atrous", "att"): 4, ("cnn_pool", "max"): 2, ("cnn_nopool", "roi"): 1}
    lt = grid.layers_table(summary)
    assert list(lt.columns) == grid.LAYER_COLUMNS
    assert lt.set_index(["topology", "pooling"]).loc[("atrous", "att"), "acc_mean"] == pytest.approx(67.0)


def test_select_layers_on_the_papers_table1_reproduces_its_highlights():
    paper = grid.paper_table("table1").rename(columns={"paper_acc": "acc_mean"})
    layers = grid.select_layers(paper)
    assert layers[("atrous", "att")] == 4 and layers[("cnn_pool", "att")] == 3
    assert layers[("cnn_nopool", "roi")] == 1  # 52.9 at layers 1 and 2: lowest wins


def test_select_layers_from_full_summary_pipeline():
    rows = []
    for layer, accs in {1: (60.0, 61.0), 2: (64.0, 66.0), 3: (66.0, 63.0)}.items():
        for seed, acc in enumerate(accs):
            rows += cell_rows(f"atrous-att-teacher_forcing-L{layer}", seed=seed, a=acc + 10, b=acc - 5, c=acc - 5)
    s = grid.summarise_table(frame(rows), "table1", reference_device="a")
    assert grid.select_layers(s) == {("atrous", "att"): 2}   # means 60.5, 65, 64.5


# --------------------------------------------------------------------------- paper tables

def test_paper_tables_load_in_our_vocabulary():
    t1, t2, t3 = (grid.paper_table(t) for t in ("table1", "table2", "table3"))
    assert len(t1) == 56 and len(t2) == 14 * 4 * 4 and len(t3) == 3 * 4 * 4
    assert set(t2["topology"]) == {"cnn_pool", "cnn_nopool", "atrous"}
    row = t2[(t2.topology == "atrous") & (t2.pooling == "att") & (t2.strategy == "multi_task") & (t2.device == "avg")]
    assert row["paper_acc"].item() == pytest.approx(68.0)
    assert grid.paper_table("table4").empty and grid.paper_table("table5").empty   # beyond the paper: no values
    with pytest.raises(ConfigError, match="table6"):
        grid.paper_table("table6")


def test_compare_with_paper_adds_diff():
    rows = cell_rows("atrous-att-multi_task-L3", dataset="embedded2018", a=72.4, b=70.9, c=62.8)
    s = compare_with_paper(grid.summarise_table(frame(rows), "table2", reference_device="a"), "table2")
    assert pick(s, device="b")["diff"] == pytest.approx(2.0)
    assert pick(s, device="avg")["paper_acc"] == pytest.approx(68.0)
    assert pd.isna(pick(s, device="bc")["paper_acc"])
    t1 = grid.summarise_table(frame(cell_rows("atrous-att-teacher_forcing-L2", a=63.7, b=62.7, c=61.7)), "table1", reference_device="a")
    c1 = compare_with_paper(t1, "table1")
    assert pick(c1, device="avg")["paper_acc"] == pytest.approx(62.7)
    assert pick(c1, device="avg")["diff"] == pytest.approx(0.0, abs=1e-9)


# --------------------------------------------------------------------------- reference device, layer selection

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
    s = grid.summarise_table(frame(rows), "table2", reference_device=grid.reference_devices(preset))
    assert pick(s, device="bc")["acc_mean"] == pytest.approx(45.0)
    assert pick(s, device="avg")["acc_mean"] == pytest.approx(60.0)
    bad = dict(config, datasets=dict(config["datasets"], mine=dict(config["datasets"]["mine"], reference_device="a")))
    with pytest.raises(ConfigError, match="reference_device"):
        grid.grid_config(resolve(bad))


def test_reference_device_with_more_than_three_devices():
    rows = cell_rows("cnn_pool-max-joint", dataset="d", s1=80.0, s2=70.0, s3=60.0, s4=50.0, s5=40.0)
    s = grid.summarise_table(frame(rows), "table2", reference_device={"d": "s3"})
    assert pick(s, device="bc")["acc_mean"] == pytest.approx((80 + 70 + 50 + 40) / 4)
    assert pick(s, device="avg")["acc_mean"] == pytest.approx(60.0)
    with pytest.raises(ConfigError, match="no reference device for dataset 'd'"):
        grid.summarise_table(frame(rows), "table2", reference_device={"other": "s1"})


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
    summary = grid.summarise_table(cells[grid.CELL_COLUMNS], "table1", reference_device="a")
    on_test = grid.select_layers_table(cells, summary, "test")
    on_val = grid.select_layers_table(cells, summary, "validation")
    assert on_test[["cond_layer", "selected_on"]].values.tolist() == [[1, "test"]]
    assert on_val[["cond_layer", "acc_mean", "selected_on"]].values.tolist() == [[2, 55.0, "validation"]]
    cells["validation_accuracy"] = float("nan")
    with pytest.raises(ResultsError, match="no validation accuracy"):
        grid.select_layers_table(cells, summary, "validation")


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
    assert grid.best_seed(cells, spec) == 1
    with pytest.raises(ResultsError, match="no results of cell"):
        grid.best_seed(cells, CellSpec.from_id("atrous-att-multi_task-L1", dataset="d"))
    # Table III's cell of the same id (another dataset) and a seed Table II does not have: never chosen
    other = cell_rows(cid, dataset="d3", seed=0, a=99.0, b=99.0, c=99.0) + cell_rows(cid, seed=7, a=99.0, b=99.0, c=99.0)
    pd.concat([cells, frame(other)]).to_csv(tmp_path / "cells.csv", index=False)
    table2 = grid.summarise_table(cells, "table2", reference_device="a")
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


def test_train_options_carry_the_layer_selection_and_reference_device():
    from caanet import workflow_support as ws

    preset = {"tables": {"table1": {"dataset": "d"}, "table2": {"dataset": "d"}},
              "datasets": {"d": {"devices": ["p1", "zoom", "p2"], "reference_device": "zoom"}},
              "grid": {"rows": [["atrous", "att"]], "layers": [1, 2], "layer_selection": "validation"}}
    assert ws.train_options(preset, "d", "atrous-att-teacher_forcing-L2", "0") == {
        "score_validation": True, "hold_validation": True, "reference_device": "zoom"}
    assert ws.train_options(preset, "d", "atrous-att-joint", "1") == {"score_validation": False,
                                                                      "hold_validation": True,
                                                                      "reference_device": "zoom"}
    paper = dict(preset, grid={"rows": [["atrous", "att"]], "layers": [1, 2]})
    assert ws.train_options(paper, "d", "atrous-att-teacher_forcing-L2", "0")["score_validation"] is False


def holdout_preset(strategies, **extra):
    preset = {"tables": {"table1": {"dataset": "d"}, "table2": {"dataset": "d"}, "table3": {"dataset": "e"}},
              "datasets": {"d": {"devices": ["a", "b", "c"]}, "e": {"devices": ["a", "b", "c"]},
                           "f": {"devices": ["a", "b"]}},
              "grid": {"rows": [["atrous", "att"]], "layers": [1, 2], "strategies": strategies}}
    for key, value in extra.items():
        preset[key] = {**preset.get(key, {}), **value}
    return preset


def test_holds_validation_is_decided_per_dataset_by_any_cell_that_uses_a_split():
    """Like for like (issue 17 §3): one cell of a dataset using a validation split makes every cell of that
    dataset hold the same one out; no such cell, no hold-out."""
    paper4 = ["single_device", "joint", "teacher_forcing", "multi_task"]
    no_switch = ["single_device", "joint", "teacher_forcing", "multi_task_learned"]
    held = lambda preset: {d: grid.holds_validation(preset, d) for d in ("d", "e", "f")}  # noqa: E731
    # paper fidelity measures the switched lambda on validation: Tables I-II's d and Table III's e hold out
    assert held(holdout_preset(paper4)) == {"d": True, "e": True, "f": False}
    assert held(holdout_preset(["joint", "multi_task_posterior"])) == {"d": True, "e": True, "f": False}
    # the learned lambda, and the authors' lambda on the test fold, need no split: nobody holds out
    assert held(holdout_preset(no_switch)) == {"d": False, "e": False, "f": False}
    assert held(dict(holdout_preset(paper4), fidelity="reference")) == {"d": False, "e": False, "f": False}
    assert held(holdout_preset(paper4, training={"lambda_on": "test"})) == {"d": False, "e": False, "f": False}
    assert held(dict(holdout_preset(paper4, training={"lambda_on": "validation"}), fidelity="reference"))["e"]
    # best_val selects every cell's weights on validation; layer_selection: validation scores Table I's d
    assert held(holdout_preset(no_switch, training={"selection": "best_val"})) == {"d": True, "e": True, "f": False}
    assert held(holdout_preset(no_switch, grid={"layer_selection": "validation"})) == {"d": True, "e": False,
                                                                                      "f": False}
    # Table IV has every strategy, multi_task included, whatever grid.strategies says
    with_t4 = holdout_preset(no_switch, tables={"table4": {"dataset": "f"}})
    assert held(with_t4) == {"d": False, "e": False, "f": True}


def test_every_cell_of_a_dataset_gets_the_same_hold_out_option_and_table_i_tf_cells_stay_shared():
    """The option is a function of the dataset alone, so Table I's teacher-forcing cells are still the very
    jobs of Table II (one spec, one set of options) and a row's cells all train on the same clips."""
    from caanet import workflow_support as ws

    preset = holdout_preset(["single_device", "joint", "teacher_forcing", "multi_task"])
    layers = {row: 2 for row in grid.TABLE3_ROWS}
    t1, t2 = grid.table1_cells(preset), grid.table2_cells(preset, layers)
    tf2 = [c for c in t2 if c.strategy == "teacher_forcing"]
    assert tf2 and set(tf2) <= set(t1)
    options = {(c.dataset, ws.train_options(preset, c.dataset, c.cell_id, c.seed)["hold_validation"])
               for c in grid.all_cells(preset, layers)}
    assert options == {("d", True), ("e", True)}
    assert len(grid.all_cells(preset, layers)) == len(set(t1) | set(t2) | set(grid.table3_cells(preset, layers)))


# --------------------------------------------------------------------------- Table IV (beyond the paper)

DEVICES9 = ["a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"]
UNSEEN3 = ["s4", "s5", "s6"]


def table4_preset(**table4):
    preset = paper_preset(seeds_by_pooling={"att": [0, 1, 2]})
    preset["tables"]["table4"] = {"dataset": "tiny2020", **table4}
    preset["datasets"]["tiny2020"] = {"devices": DEVICES9, "unseen_devices": UNSEEN3}
    return preset


def test_table4_cells_are_attention_rows_by_every_strategy_single_device_for_seen_devices_only():
    preset = table4_preset(seeds=[0])
    layers = {("cnn_pool", "att"): 3, ("cnn_nopool", "att"): 2, ("atrous", "att"): 4}
    cells = grid.table4_cells(preset, layers)
    # every registered strategy, the posterior conditioning's two included
    assert grid.TABLE4_STRATEGIES == ("single_device", "joint", "teacher_forcing", "multi_task", "multi_task_learned",
                                      "multi_task_posterior", "multi_task_learned_posterior")
    # 6 seen devices + joint, TF, MT, MT-learned, MT-posterior, MT-learned-posterior
    assert len(cells) == 3 * (6 + 6)
    assert {c.dataset for c in cells} == {"tiny2020"} and {c.seed for c in cells} == {0}
    singles = [c for c in cells if c.strategy == "single_device"]
    assert sorted({c.device for c in singles}) == ["a", "b", "c", "s1", "s2", "s3"]
    assert {c.strategy for c in cells} == set(grid.TABLE4_STRATEGIES)
    learned = [c for c in cells if c.strategy == "multi_task_learned"]
    assert {(c.topology, c.cond_layer) for c in learned} == {("cnn_pool", 3), ("cnn_nopool", 2), ("atrous", 4)}
    # tables.table4.seeds replaces seeds_by_pooling (att: 0, 1, 2) for Table IV only
    assert len(grid.table4_cells(table4_preset(), layers)) == 3 * 12 * 3
    assert grid.seeds_for(preset, "att", "table4") == [0] and grid.seeds_for(preset, "att", "table3") == [0, 1, 2]
    assert set(cells) <= set(grid.all_cells(preset, {**LAYERS, **layers}))
    assert grid.table_cells(preset, "table4", layers) == cells


def test_table4_strategies_are_a_setting_of_the_table():
    """tables.table4.strategies chooses Table IV's columns (the default preset leaves single-device out:
    no test of its family uses it); its family keeps only the tests of the strategies it has."""
    from caanet import stats

    layers = {("cnn_pool", "att"): 3, ("cnn_nopool", "att"): 2, ("atrous", "att"): 4}
    preset = table4_preset(seeds=[0], strategies=["joint", "multi_task", "multi_task_posterior"])
    cells = grid.table4_cells(preset, layers)
    assert [c.strategy for c in cells[:3]] == ["joint", "multi_task", "multi_task_posterior"] and len(cells) == 3 * 3
    assert grid.table_strategies(preset, "table4") == ("joint", "multi_task", "multi_task_posterior")
    assert grid.table_strategies(table4_preset(), "table4") == grid.TABLE4_STRATEGIES
    tests = {c.comparison for c in stats.table4_comparisons(preset, layers)}
    assert tests == {"multi_task vs joint", "multi_task_posterior vs joint", "multi_task_posterior vs multi_task"}
    with pytest.raises(ConfigError, match=r"tables\.table4\.strategies"):
        grid.grid_config(table4_preset(strategies=["bogus"]))
    from caanet import config as C

    t4 = C.schema()["$defs"]["tables"]["properties"]["table4"]["properties"]
    assert tuple(t4["strategies"]["default"]) == grid.TABLE4_STRATEGIES     # the schema documents the code's default
    assert grid.table4_cells(paper_preset(), layers) == []   # no tables.table4: no cells


def test_single_device_cells_skip_unseen_devices_in_every_table():
    preset = table4_preset()
    preset["tables"]["table3"] = {"dataset": "tiny2020"}
    cells = grid.table3_cells(preset, {row: 1 for row in grid.TABLE3_ROWS})
    assert {c.device for c in cells if c.strategy == "single_device"} == {"a", "b", "c", "s1", "s2", "s3"}
    assert grid.seen_devices_of(preset, "tiny2020") == ("a", "b", "c", "s1", "s2", "s3")


def test_table4_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"'tables\.table4\.repeats': got 2; expected a known key"):
        grid.grid_config(table4_preset(repeats=2))
    bad = table4_preset()
    bad["tables"]["table2"]["seeds"] = [0]                  # only Table IV has cells of its own
    with pytest.raises(ConfigError, match=r"'tables\.table2\.seeds': got \[0\]; expected a known key"):
        grid.grid_config(bad)
    with pytest.raises(ConfigError, match=r"tables\.table4\.seeds"):
        grid.grid_config(table4_preset(seeds=[0, 0]))
    bad = table4_preset()
    bad["datasets"]["tiny2020"]["devices"] = ["a", "b", "seen"]
    bad["datasets"]["tiny2020"]["unseen_devices"] = []
    with pytest.raises(ConfigError, match=r"datasets\.tiny2020\.devices\[2\]': got 'seen'; expected .*not a summary pseudo-device"):
        grid.grid_config(bad)


def test_seen_and_unseen_means_against_hand_computation():
    """9 devices, 3 unseen, two seeds: avg/seen/unseen per seed, then mean and std over seeds."""
    acc0 = dict(zip(DEVICES9, [70.0, 60.0, 50.0, 40.0, 30.0, 20.0, 10.0, 20.0, 30.0]))
    acc1 = dict(zip(DEVICES9, [72.0, 62.0, 52.0, 42.0, 32.0, 22.0, 14.0, 24.0, 34.0]))
    rows = (cell_rows("atrous-att-joint", dataset="tiny2020", seed=0, **acc0)
            + cell_rows("atrous-att-joint", dataset="tiny2020", seed=1, **acc1))
    # single-device: one cell per seen device, seed 0 only
    for dev in DEVICES9[:6]:
        rows += cell_rows(f"atrous-att-single_device-{dev}", dataset="tiny2020", seed=0, **{dev: acc0[dev] + 1})
    s = grid.summarise_table(frame(rows), "table4", reference_device={"tiny2020": "a"},
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
    plain = grid.summarise_table(frame(cell_rows("atrous-att-joint", a=60.0, b=40.0, c=20.0)), "table2",
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
        got = grid.table_cells_frame(cells, preset, table, layers)
        want = {(s.dataset, s.cell_id, s.seed) for s in grid.table_cells(preset, table, layers)}
        assert set(zip(got["dataset"], got["cell_id"], got["seed"])) == want, table
    t4 = grid.table_cells_frame(cells, preset, "table4", layers)
    assert set(t4["dataset"]) == {"tiny2020"} and set(t4["seed"]) == {0}


def test_default_presets_table4_has_three_seeds_of_every_strategy_and_holds_out_everywhere():
    """Issue 17: Table IV of the default preset has >= 3 seeds and both conditionings (argmax and posterior)
    of both lambda rules; every dataset of the default grid holds its validation clips out of every cell."""
    import yaml

    from caanet.config import resolve

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    preset = resolve({**config, "preset": "default"})
    cells = grid.table4_cells(preset, {row: 2 for row in grid.TABLE3_ROWS})
    assert {c.seed for c in cells} == {0, 1, 2}
    assert {c.strategy for c in cells} >= {"multi_task", "multi_task_learned", "multi_task_posterior",
                                           "multi_task_learned_posterior"}
    assert len(cells) == 3 * 3 * 6 and "single_device" not in {c.strategy for c in cells}   # its tests' strategies
    assert all(grid.holds_validation(preset, d) for d in ("embedded2018", "embedded2019", "embedded2020"))


# --------------------------------------------------------------------------- Table V (beyond the paper)

def table5_preset(table4=None, **table5):
    preset = table4_preset(**(table4 or {}))
    preset["tables"]["table5"] = {"dataset": "tiny2020", **table5}
    return preset


T5_LAYERS = {("cnn_pool", "att"): 3, ("cnn_nopool", "att"): 2, ("atrous", "att"): 4}


def test_table5_cells_are_strategies_by_methods_and_share_table4s():
    preset = table5_preset(table4={"seeds": [0, 1, 2]}, seeds=[0, 1, 2])
    cells = grid.table5_cells(preset, T5_LAYERS)
    models = sorted({(c.strategy, c.method, c.cond_layer) for c in cells})
    assert models == sorted((s, m, 4 if s == "multi_task" else None) for s in ("joint", "multi_task")
                            for m in ("none", "freq_mixstyle", "spectrum_correction", "dir_augment"))
    assert len(cells) == 8 * 3 and {(c.topology, c.pooling) for c in cells} == {("atrous", "att")}
    plain = [c for c in cells if c.method == "none"]
    assert set(plain) <= set(grid.table4_cells(preset, T5_LAYERS))                 # the very same jobs
    everything = grid.all_cells(preset, {**LAYERS, **T5_LAYERS})
    assert len(everything) == len(set(everything)) and set(cells) <= set(everything)
    assert len(set(everything) - set(grid.all_cells(table4_preset(seeds=[0, 1, 2]), {**LAYERS, **T5_LAYERS}))) == 18
    assert [c.cell_id for c in cells[:2]] == ["atrous-att-joint", "atrous-att-joint"]
    assert grid.table_cells(preset, "table5", T5_LAYERS) == cells
    assert grid.table_strategies(preset, "table5") == ("joint", "multi_task")
    # without Table I's layers only the unconditioned cells can start
    assert {c.strategy for c in grid.all_cells(preset) if c.dataset == "tiny2020"} <= {"joint", "single_device"}
    assert grid.table5_cells(table4_preset(), T5_LAYERS) == []


def test_table5_expands_each_method_with_the_strategies_it_combines_with():
    preset = table5_preset(strategies=["joint", "teacher_forcing", "multi_task_learned"], methods=["none", "freq_mixstyle",
                                                                                                 "spectrum_correction"])
    models = {(c.strategy, c.method) for c in grid.table5_cells(preset, T5_LAYERS)}
    assert ("teacher_forcing", "freq_mixstyle") not in models and ("teacher_forcing", "spectrum_correction") in models
    assert ("multi_task_learned", "freq_mixstyle") in models and len(models) == 3 + 2 + 3


def test_table5_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"'tables\.table5\.strategies'.*multi-device strategies"):
        grid.grid_config(table5_preset(strategies=["single_device", "joint"]))
    with pytest.raises(ConfigError, match=r"'tables\.table5\.methods': got 'freq_mixstyle'.*combined with"):
        grid.grid_config(table5_preset(strategies=["teacher_forcing"], methods=["freq_mixstyle"]))
    with pytest.raises(ConfigError, match=r"'tables\.table5\.methods\[0\]'"):
        grid.grid_config(table5_preset(methods=["bogus"]))


def test_table5_defaults_are_the_schemas():
    from caanet import config as C

    t5 = C.schema()["$defs"]["tables"]["properties"]["table5"]["properties"]
    assert [tuple(r) for r in t5["rows"]["default"]] == list(grid.DEFAULT_TABLE5_ROWS)
    assert tuple(t5["strategies"]["default"]) == grid.DEFAULT_TABLE5_STRATEGIES
    assert tuple(t5["methods"]["default"]) == grid.DEFAULT_TABLE5_METHODS
    assert grid.grid_config(table5_preset()).table5 == grid.Table5Config()


def test_summaries_keep_methods_apart():
    rows = []
    for seed, (plain, mixed) in enumerate(((40.0, 50.0), (44.0, 56.0))):
        rows += cell_rows("atrous-att-joint", dataset="tiny2020", seed=seed, **dict(zip(DEVICES9, [plain] * 9)))
        rows += [dict(r, method="freq_mixstyle") for r in
                 cell_rows("atrous-att-joint+freq_mixstyle", dataset="tiny2020", seed=seed,
                           **dict(zip(DEVICES9, [mixed] * 6 + [mixed - 30] * 3)))]
    s = grid.summarise_table(frame(rows), "table5", reference_device="a", unseen_devices={"tiny2020": UNSEEN3})
    assert list(s.columns) == grid.SUMMARY_COLUMNS
    assert pick(s, method="none", device="avg")["acc_mean"] == pytest.approx(42.0)
    mixed = s[s["method"] == "freq_mixstyle"]
    assert pick(mixed, device="seen")["acc_mean"] == pytest.approx(53.0)
    assert pick(mixed, device="unseen")["acc_mean"] == pytest.approx(23.0)
    assert pick(mixed, device="avg")["acc_mean"] == pytest.approx((6 * 53.0 + 3 * 23.0) / 9)
    assert list(dict.fromkeys(s["method"])) == ["none", "freq_mixstyle"]
    # frames without a method column (cells.csv before Table V) are the paper's training
    old = frame(rows[:9]).drop(columns="method")
    assert set(grid.summarise_table(old, "table5", reference_device="a")["method"]) == {"none"}


def test_collect_cells_reads_the_method(tmp_path):
    ev = {"cell_id": "atrous-att-joint+dir_augment", "per_device": {"a": {"accuracy": 0.5, "n": 10, "n_correct": 5}},
          "spec": CellSpec.from_id("atrous-att-joint+dir_augment", dataset="d").to_dict()}
    (tmp_path / "e.json").write_text(json.dumps(ev))
    old = dict(ev, cell_id="atrous-att-joint", spec={k: v for k, v in CellSpec.from_id(
        "atrous-att-joint", dataset="d", seed=1).to_dict().items() if k != "method"})
    (tmp_path / "old.json").write_text(json.dumps(old))
    cells = grid.collect_cells([tmp_path / "e.json", tmp_path / "old.json"])
    assert cells["method"].tolist() == ["dir_augment", "none"]


def test_table5_comparisons_test_each_model_against_joint_and_caanet():
    from caanet import field

    preset = table5_preset(seeds=[0, 1])
    comps = field.table5_comparisons(preset, T5_LAYERS)
    names = [c.comparison for c in comps]
    assert len(comps) == 2 * (7 + 6) and names[3] == "multi_task vs joint"
    assert {c.family for c in comps} == {"table5"} and [c.scope for c in comps] == ["all"] * 13 + ["unseen"] * 13
    assert all(c.devices == tuple(UNSEEN3) for c in comps[13:])
    assert "joint+freq_mixstyle vs multi_task" in names and "multi_task+dir_augment vs multi_task" in names
    assert not any(n.endswith("vs multi_task") and "+" not in n.split(" vs ")[0] for n in names)
    c = next(c for c in comps if c.comparison == "multi_task+spectrum_correction vs joint")
    assert (c.label_a, c.label_b, c.seeds, c.table) == ("atrous-att-multi_task-L4+spectrum_correction",
                                                        "atrous-att-joint", (0, 1), "table5")
    assert set(c for comp in comps for c in comp.model_a + comp.model_b) <= {
        dataclasses.replace(s, seed=0) for s in grid.table5_cells(preset, T5_LAYERS)}
    assert field.caanet_strategy(["joint", "multi_task_learned", "multi_task"]) == "multi_task_learned"
    only_joint = field.table5_comparisons(table5_preset(strategies=["joint"]), T5_LAYERS)
    assert [c.comparison for c in only_joint] == ["joint+freq_mixstyle vs joint", "joint+spectrum_correction vs joint",
                                                  "joint+dir_augment vs joint"] * 2
    assert field.table5_comparisons(table4_preset(), T5_LAYERS) == []


def test_train_inputs_and_options_of_method_cells():
    from caanet import workflow_support as ws

    preset = table5_preset()
    preset["datasets"]["tiny2020"]["clip_seconds"] = 1.0
    preset["methods"] = {"dir_augment": {"p": 0.5}}
    plain = ws.train_inputs(preset, "tiny2020", "atrous-att-joint")
    assert list(plain) == ["cache"] and plain["cache"].startswith("results/features/tiny2020-")
    corrected = ws.train_inputs(preset, "tiny2020", "atrous-att-joint+spectrum_correction")
    assert corrected == {"cache": plain["cache"].replace(".h5", "+spectrum_correction.h5")}
    assert ws.train_inputs(preset, "tiny2020", "atrous-att-multi_task-L2+dir_augment") == {
        "cache": plain["cache"], "method_cache": plain["cache"].replace(".h5", "+dir_augment.h5")}
    assert ws.train_options(preset, "tiny2020", "atrous-att-joint+dir_augment", 0)["method_settings"] == {"p": 0.5}
    assert ws.train_options(preset, "tiny2020", "atrous-att-joint+freq_mixstyle", 0)["method_settings"] == {}
    assert "method_settings" not in ws.train_options(preset, "tiny2020", "atrous-att-joint", 0)
