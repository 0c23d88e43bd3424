"""caanet.grid: expansion of the paper's grid (which cells exist; how their results aggregate is
tests/test_aggregate.py)."""

import copy
import dataclasses
import time
from pathlib import Path

import pytest

from caanet import grid
from caanet.errors import ConfigError
from caanet.spec import CellSpec


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


# --------------------------------------------------------------------------- hold-out, training options

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
