"""The paper's metric (unweighted mean of class-wise accuracies) per device, against hand-computed values."""

import numpy as np
import pandas as pd
import pytest

from caanet.errors import ConfigError
from caanet.evaluation import (
    class_accuracies,
    class_wise_accuracy,
    confusion_matrix,
    evaluate_predictions,
    parallel_stem,
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
