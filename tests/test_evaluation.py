"""The paper's metric (unweighted mean of class-wise accuracies) per device, against hand-computed values."""

import math

import numpy as np
import pandas as pd
import pytest

from caanet.errors import ConfigError
from caanet.evaluation import (
    LOG_LOSS_EPS,
    class_accuracies,
    class_wise_accuracy,
    confusion_matrix,
    evaluate_predictions,
    log_loss,
    log_loss_summary,
    parallel_stem,
    probabilities_of,
    probability_columns,
    select_attention_examples,
)


def test_confusion_matrix_rows_true_columns_pred():
    cm = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert cm.dtype == np.int64


def test_class_wise_accuracy_is_unweighted_mean_over_present_classes():
    # class 0: 1/2, class 1: 1/1, class 2: 2/3, class 3 absent -> (0.5 + 1 + 2/3) / 3
    y = [0, 0, 1, 2, 2, 2]
    p = [0, 1, 1, 2, 0, 2]
    assert class_wise_accuracy(y, p, 4) == pytest.approx((0.5 + 1.0 + 2 / 3) / 3)
    # differs from plain accuracy (4/6)
    assert class_wise_accuracy(y, p, 4) != pytest.approx(4 / 6)
    acc = class_accuracies(y, p, 4)
    assert np.isnan(acc[3]) and acc[1] == 1.0


def test_bad_labels_and_empty_input_raise():
    with pytest.raises(ConfigError, match=r"y_pred\[1\]=5"):
        confusion_matrix([0, 1], [0, 5], 3)
    with pytest.raises(ConfigError, match="y_true"):
        confusion_matrix([-1], [0], 3)
    with pytest.raises(ConfigError, match="empty"):
        class_wise_accuracy([], [], 3)


def _preds(rows):
    return pd.DataFrame(rows, columns=["device", "scene", "pred_scene"])


def test_evaluate_predictions_per_device_and_means():
    scenes = ["bus", "park"]
    devices = ["a", "b", "c"]
    df = _preds([
        ("a", "bus", "bus"), ("a", "bus", "bus"), ("a", "park", "bus"), ("a", "park", "park"),  # 1.0, 0.5 -> 0.75
        ("b", "bus", "park"), ("b", "park", "park"),  # 0, 1 -> 0.5
        ("c", "bus", "bus"), ("c", "park", "park"), ("c", "park", "park"),  # 1, 1 -> 1.0
    ])
    ev = evaluate_predictions(df, scenes, devices)
    assert list(ev["per_device"]) == ["a", "b", "c"]
    a = ev["per_device"]["a"]
    assert a["accuracy"] == pytest.approx(0.75)
    assert (a["n"], a["n_correct"]) == (4, 3)
    assert a["class_accuracy"] == {"bus": 1.0, "park": 0.5}
    assert a["confusion"] == [[2, 0], [1, 1]]
    assert ev["per_device"]["b"]["accuracy"] == pytest.approx(0.5)
    assert ev["mean_all"] == pytest.approx((0.75 + 0.5 + 1.0) / 3)
    assert ev["mean_bc"] == pytest.approx(0.75)
    ev_b = evaluate_predictions(df, scenes, devices, reference_device="b")
    assert ev_b["mean_bc"] == pytest.approx((0.75 + 1.0) / 2)
    # B/C is over the SEEN non-reference devices: an unseen device (no training clip) is not in it
    ev_u = evaluate_predictions(df, scenes, devices, unseen_devices=["c"])
    assert ev_u["mean_bc"] == pytest.approx(0.5) and ev_u["mean_all"] == ev["mean_all"]
    with pytest.raises(ConfigError, match=r"unseen_devices \['z'\]"):
        evaluate_predictions(df, scenes, devices, unseen_devices=["z"])


def test_evaluate_predictions_single_device_has_no_bc():
    ev = evaluate_predictions(_preds([("a", "bus", "bus")]), ["bus", "park"], ["a", "b"])
    assert list(ev["per_device"]) == ["a"]
    assert ev["mean_all"] == 1.0 and ev["mean_bc"] is None
    assert ev["per_device"]["a"]["class_accuracy"]["park"] is None
    ev = evaluate_predictions(_preds([("b", "park", "bus")]), ["bus", "park"], ["a", "b"])
    assert ev["mean_bc"] == 0.0 and ev["mean_all"] == 0.0


def test_evaluate_predictions_rejects_unknown_labels_and_columns():
    with pytest.raises(ConfigError, match=r"row 1: scene='beach'"):
        evaluate_predictions(_preds([("a", "bus", "bus"), ("a", "beach", "bus")]), ["bus"], ["a"])
    with pytest.raises(ConfigError, match=r"device='z'"):
        evaluate_predictions(_preds([("z", "bus", "bus")]), ["bus"], ["a"])
    with pytest.raises(ConfigError, match="pred_scene"):
        evaluate_predictions(pd.DataFrame({"device": ["a"], "scene": ["bus"]}), ["bus"], ["a"])
    with pytest.raises(ConfigError, match="reference_device"):
        evaluate_predictions(_preds([("a", "bus", "bus")]), ["bus"], ["a"], reference_device="q")


def test_parallel_stem():
    assert parallel_stem("audio/airport-barcelona-0-0-a.wav", "a") == "airport-barcelona-0-0"
    assert parallel_stem("audio/airport-barcelona-0-0-b.wav", "b") == "airport-barcelona-0-0"
    assert parallel_stem("x/park-1-c.wav", "a") == "park-1-c"


def test_attention_examples_prefer_parallel_recordings():
    labels = ["a", "b", "c"]
    files = [
        "audio/bus-x-1-0-a.wav", "audio/bus-x-0-0-a.wav",  # bus-x-0-0 has no parallel b/c
        "audio/bus-x-1-0-b.wav", "audio/bus-x-1-0-c.wav",
        "audio/bus-x-2-0-b.wav", "audio/bus-x-3-0-a.wav",
        "audio/park-y-0-0-a.wav", "audio/park-y-5-0-c.wav",
    ]
    scene = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    device = np.array([0, 0, 1, 2, 1, 0, 0, 2])
    idx = select_attention_examples(files, scene, device, labels, 1)
    # bus: the complete parallel group x-1-0 on a, b, c; park: no complete group, first per device
    assert [files[i] for i in idx] == [
        "audio/bus-x-1-0-a.wav", "audio/bus-x-1-0-b.wav", "audio/bus-x-1-0-c.wav",
        "audio/park-y-0-0-a.wav", "audio/park-y-5-0-c.wav",
    ]
    idx2 = select_attention_examples(files, scene, device, labels, 2)
    picked = [files[i] for i in idx2]
    assert "audio/bus-x-0-0-a.wav" in picked and "audio/bus-x-2-0-b.wav" in picked
    assert select_attention_examples(files, scene, device, labels, 0).size == 0


# ------------------------------------------------------------------------------ DCASE's log loss

PROBA = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.5, 0.0]]


def test_log_loss_is_the_mean_negative_log_probability_of_the_true_class():
    # -ln 0.7 = 0.356675, -ln 0.8 = 0.223144, -ln 0.4 = 0.916291, -ln 0.5 = 0.693147
    assert log_loss([0, 1, 2, 1], PROBA) == pytest.approx(
        (0.35667494393873245 + 0.2231435513142097 + 0.916290731874155 + 0.6931471805599453) / 4, rel=1e-12)
    # natural log, not log2: a uniform guess over K classes scores ln K
    assert log_loss([0, 1], np.full((2, 10), 0.1)) == pytest.approx(math.log(10))


def test_log_loss_clips_at_eps_and_renormalises_rows():
    # a zero probability of the true class is clipped to 1e-15 (then the row renormalised): finite
    assert LOG_LOSS_EPS == 1e-15
    assert log_loss([2], [[0.5, 0.5, 0.0]]) == pytest.approx(-math.log(1e-15 / (1 + 1e-15)), rel=1e-12)
    assert log_loss([0], [[1.0, 0.0]]) == pytest.approx(-math.log((1 - 1e-15) / (1 - 1e-15 + 1e-15)), abs=1e-14)
    # rows that do not sum to one are divided by their sum (scikit-learn's log_loss of DCASE 2020-2022)
    assert log_loss([0], [[0.2, 0.2]]) == pytest.approx(math.log(2))


def test_log_loss_equals_scikit_learn_on_normalised_probabilities():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(10), size=200)
    y = rng.integers(0, 10, 200)
    assert log_loss(y, p) == pytest.approx(metrics.log_loss(y, p, labels=list(range(10))), rel=1e-12)


def test_log_loss_rejects_bad_input_naming_it():
    with pytest.raises(ConfigError, match="shape"):
        log_loss([0], [0.5, 0.5])
    with pytest.raises(ConfigError, match="2 entries but proba has 1 rows"):
        log_loss([0, 1], [[0.5, 0.5]])
    with pytest.raises(ConfigError, match=r"y_true\[0\]=3"):
        log_loss([3], [[0.5, 0.5]])
    with pytest.raises(ConfigError, match=r"proba\[0, 1\]=nan"):
        log_loss([0], [[0.5, float("nan")]])
    with pytest.raises(ConfigError, match="no clips"):
        log_loss([], np.zeros((0, 2)))


def _prob_preds(rows, scenes):
    cols = ["device", "scene"] + probability_columns(scenes)
    return pd.DataFrame([(d, s, *p) for d, s, p in rows], columns=cols)


def test_log_loss_summary_overall_per_scene_per_device_and_device_means():
    scenes, devices = ["bus", "park"], ["a", "b", "s4"]
    df = _prob_preds([
        ("a", "bus", (0.8, 0.2)), ("a", "park", (0.4, 0.6)),      # -ln .8, -ln .6
        ("b", "bus", (0.5, 0.5)),                                 # -ln .5
        ("s4", "park", (0.9, 0.1)), ("s4", "park", (0.2, 0.8)),   # -ln .1, -ln .8
    ], scenes)
    ll = log_loss_summary(df, scenes, devices, seen_devices=["a", "b"])
    l8, l6, l5, l1 = -math.log(0.8), -math.log(0.6), -math.log(0.5), -math.log(0.1)
    assert ll["overall"] == pytest.approx((l8 + l6 + l5 + l1 + l8) / 5)
    assert ll["per_scene"] == pytest.approx({"bus": (l8 + l5) / 2, "park": (l6 + l1 + l8) / 3})
    assert ll["per_device"] == pytest.approx({"a": (l8 + l6) / 2, "b": l5, "s4": (l1 + l8) / 2})
    assert list(ll["per_device"]) == devices
    assert ll["mean_all"] == pytest.approx(((l8 + l6) / 2 + l5 + (l1 + l8) / 2) / 3)   # each device once
    assert ll["mean_seen"] == pytest.approx(((l8 + l6) / 2 + l5) / 2)
    assert ll["mean_unseen"] == pytest.approx((l1 + l8) / 2)
    # a scene without clips is None; all devices seen: no unseen mean
    one = log_loss_summary(df[df["device"] == "b"], scenes, devices)
    assert one["per_scene"] == {"bus": pytest.approx(l5), "park": None} and one["mean_unseen"] is None


def test_probability_columns_missing_or_bad_are_named():
    scenes = ["bus", "park"]
    df = _prob_preds([("a", "bus", (0.8, 0.2))], scenes)
    assert probabilities_of(df, scenes).tolist() == [[0.8, 0.2]]
    with pytest.raises(ConfigError, match="prob_tram"):
        probabilities_of(df, scenes + ["tram"])
    df.loc[0, "prob_park"] = 1.5
    with pytest.raises(ConfigError, match="row 0: prob_park=1.5"):
        log_loss_summary(df, scenes, ["a"])
