"""Evaluation per recording device: the paper's metric and the contract's ``evaluation.json`` numbers.

The paper (Sec. IV-B) scores a model by the *unweighted average of class-wise accuracies*: for each
scene class, the fraction of its clips classified correctly, averaged over classes. Device-robust ASC
reports that figure per recording device; ``mean_all`` is the mean over the devices evaluated (the
paper's "Avg") and ``mean_bc`` the mean over the seen non-reference devices (DCASE's official B/C figure).

DCASE Task 1 (2020-2025) also asks for the multi-class **log loss** of the class probabilities,
overall, per scene and per device (:func:`log_loss`, :func:`log_loss_summary`); the probabilities are
``predictions.csv``'s ``prob_{scene}`` columns (:func:`probability_columns`).

Also here: the choice of the test clips whose attention maps are stored for Fig. 7 (a few per class
and device, preferring clips recorded in parallel on every device).
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import pandas as pd

from caanet.errors import ConfigError

PREDICTION_COLUMNS = ("filename", "identifier", "device", "scene", "pred_scene", "correct", "pred_device")
PROBABILITY_PREFIX = "prob_"
"""``predictions.csv`` holds, after :data:`PREDICTION_COLUMNS`, one column ``prob_{scene}`` per scene label."""
LOG_LOSS_EPS = 1e-15
"""Probabilities are clipped to ``[eps, 1 - eps]`` before the logarithm (:func:`log_loss`)."""


def _as_label_array(values, n_classes: int, what: str) -> np.ndarray:
    """Return ``values`` as an int64 array, checking every entry is a class index in [0, n_classes)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ConfigError(f"{what}: expected a 1-D array of class indices, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(f"{what}: expected integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    bad = (arr < 0) | (arr >= n_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ConfigError(f"{what}[{i}]={int(arr[i])} is not a class index in [0, {n_classes})")
    return arr


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """``(n_classes, n_classes)`` int64 counts; row = true class, column = predicted class."""
    if n_classes < 1:
        raise ConfigError(f"n_classes={n_classes!r} must be >= 1")
    t = _as_label_array(y_true, n_classes, "y_true")
    p = _as_label_array(y_pred, n_classes, "y_pred")
    if t.shape != p.shape:
        raise ConfigError(f"y_true has {t.size} entries but y_pred has {p.size}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def class_accuracies(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Per-class accuracy (float64, length n_classes); NaN for classes with no clips."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def class_wise_accuracy(y_true, y_pred, n_classes: int) -> float:
    """The paper's metric: the unweighted mean of per-class accuracies over the classes present."""
    acc = class_accuracies(y_true, y_pred, n_classes)
    present = ~np.isnan(acc)
    if not present.any():
        raise ConfigError("class_wise_accuracy: no clips to score (y_true is empty)")
    return float(acc[present].mean())


def _label_indices(values: pd.Series, labels: Sequence[str], column: str) -> np.ndarray:
    """Map a column of label strings to indices into ``labels``; unknown labels name the row."""
    lookup = {lab: i for i, lab in enumerate(labels)}
    out = np.empty(len(values), dtype=np.int64)
    for row, v in enumerate(values.astype(str)):
        try:
            out[row] = lookup[v]
        except KeyError:
            raise ConfigError(f"predictions row {row}: {column}={v!r} is not one of {list(labels)}") from None
    return out


def evaluate_device(y_true, y_pred, scene_labels: Sequence[str]) -> dict:
    """The ``per_device`` entry of one device: accuracy (paper metric), n, n_correct, class_accuracy, confusion."""
    n_classes = len(scene_labels)
    cm = confusion_matrix(y_true, y_pred, n_classes)
    acc = class_accuracies(y_true, y_pred, n_classes)
    present = ~np.isnan(acc)
    return {
        "accuracy": float(acc[present].mean()) if present.any() else None,
        "n": int(cm.sum()),
        "n_correct": int(np.trace(cm)),
        "class_accuracy": {lab: (float(a) if not np.isnan(a) else None) for lab, a in zip(scene_labels, acc)},
        "confusion": cm.tolist(),
    }


def evaluate_predictions(pred_df: pd.DataFrame, scene_labels: Sequence[str], device_labels: Sequence[str], *,
                         reference_device: str | None = None, unseen_devices: Sequence[str] = ()) -> dict:
    """Per-device scores of a predictions table (columns ``device``, ``scene``, ``pred_scene`` as labels).

    Returns ``{"per_device": {dev: {...}}, "mean_all": float|None, "mean_bc": float|None}`` where
    devices appear in ``device_labels`` order and only if they have clips; ``mean_all`` is the mean of
    their accuracies and ``mean_bc`` (DCASE's B/C figure) the mean over the seen devices other than
    ``reference_device`` (default: the first device label): ``unseen_devices`` (devices without training
    clips) are left out of it. ``None`` when there are none.
    """
    missing = [c for c in ("device", "scene", "pred_scene") if c not in pred_df.columns]
    if missing:
        raise ConfigError(f"predictions: missing columns {missing} (have {list(pred_df.columns)})")
    if not device_labels:
        raise ConfigError("evaluate_predictions: device_labels is empty")
    if reference_device is None:
        reference_device = device_labels[0]
    elif reference_device not in device_labels:
        raise ConfigError(f"reference_device={reference_device!r} is not one of {list(device_labels)}")
    dev = _label_indices(pred_df["device"], device_labels, "device")
    y = _label_indices(pred_df["scene"], scene_labels, "scene")
    p = _label_indices(pred_df["pred_scene"], scene_labels, "pred_scene")
    per_device = {}
    for d, name in enumerate(device_labels):
        mask = dev == d
        if mask.any():
            per_device[name] = evaluate_device(y[mask], p[mask], scene_labels)
    accs = {k: v["accuracy"] for k, v in per_device.items()}
    unseen = set(unseen_devices)
    stray = unseen - set(device_labels)
    if stray:
        raise ConfigError(f"unseen_devices {sorted(stray)} are not among the device labels {list(device_labels)}")
    bc = [a for k, a in accs.items() if k != reference_device and k not in unseen]
    return {
        "per_device": per_device,
        "mean_all": float(np.mean(list(accs.values()))) if accs else None,
        "mean_bc": float(np.mean(bc)) if bc else None,
    }


# --------------------------------------------------------------------------------------------------
# DCASE's log loss
# --------------------------------------------------------------------------------------------------


def probability_columns(scene_labels: Sequence[str]) -> list[str]:
    """The ``predictions.csv`` column of each scene's probability, in label order: ``prob_{scene}``."""
    return [f"{PROBABILITY_PREFIX}{s}" for s in scene_labels]


def probabilities_of(pred_df: pd.DataFrame, scene_labels: Sequence[str]) -> np.ndarray:
    """The ``(n_clips, n_scenes)`` float64 probabilities of a predictions table (:func:`probability_columns`).

    Raises ConfigError naming the missing columns, or the first row holding a value that is not a
    number in [0, 1]."""
    cols = probability_columns(scene_labels)
    missing = [c for c in cols if c not in pred_df.columns]
    if missing:
        raise ConfigError(f"predictions: missing probability columns {missing} (have {list(pred_df.columns)})")
    p = pred_df[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(p) | (p < 0) | (p > 1)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        value = pred_df[cols[col]].iloc[row]
        value = value.item() if hasattr(value, "item") else value
        raise ConfigError(f"predictions row {row}: {cols[col]}={value!r} is not a probability in [0, 1]")
    return p


def log_loss(y_true, proba, *, eps: float = LOG_LOSS_EPS) -> float:
    """Multi-class log loss (cross-entropy) of class probabilities, as DCASE Task 1 computes it.

    ``y_true``: ``(n,)`` class indices; ``proba``: ``(n, K)`` probabilities (rows need not sum to 1
    exactly). Each row is clipped to ``[eps, 1 - eps]`` and divided by its sum, and the result is the
    mean over clips of ``-ln p[i, y_i]`` (natural log, nats). Source: the DCASE 2020 Task 1A and
    DCASE 2022 Task 1 baselines of the organisers (toni-heittola/dcase2020_task1_baseline ``task1a.py``
    and marmoi/dcase2022_task1_baseline ``task1.py``, ``do_evaluation``), which call
    ``sklearn.metrics.log_loss(y_true, y_pred, labels=range(K))`` of the scikit-learn of the time
    (eps = 1e-15, clip, then renormalise each row) on all test clips ("overall"), on the clips of
    one scene ("class-wise") and on those of one device ("device-wise"). The official submission
    checkers (toni-heittola/dcase2020_task1_submission_validator, dcase2024_task1_submission_validator)
    require these three as ``logloss`` beside ``accuracy``. Written out here because scikit-learn is
    no dependency of caanet and its ``eps`` changed since (float64 machine epsilon from 1.3 on).
    Raises ConfigError for shapes that disagree, an empty input, a label outside ``[0, K)`` or a
    probability that is not a number in [0, 1].
    """
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 1:
        raise ConfigError(f"log_loss: proba must be (n_clips, n_classes), got shape {p.shape}")
    y = _as_label_array(y_true, p.shape[1], "y_true")
    if y.size != p.shape[0]:
        raise ConfigError(f"log_loss: y_true has {y.size} entries but proba has {p.shape[0]} rows")
    if y.size == 0:
        raise ConfigError("log_loss: no clips to score")
    bad = ~np.isfinite(p) | (p < 0) | (p > 1)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise ConfigError(f"log_loss: proba[{row}, {col}]={float(p[row, col])!r} is not a probability in [0, 1]")
    p = np.clip(p, eps, 1.0 - eps)
    p = p / p.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(p[np.arange(y.size), y])))


def log_loss_summary(pred_df: pd.DataFrame, scene_labels: Sequence[str], device_labels: Sequence[str], *,
                     seen_devices: Sequence[str] | None = None) -> dict:
    """``evaluation.json``'s ``log_loss``: DCASE's log loss (:func:`log_loss`) of a predictions table.

    ``pred_df`` has columns ``device``, ``scene`` (labels) and :func:`probability_columns`. Returns
    ``{"overall": all clips, "per_scene": {scene: over its clips, None where it has none},
    "per_device": {device: over its clips}, "mean_all": mean over the devices evaluated,
    "mean_seen"/"mean_unseen": means over the devices seen / unseen in training, "eps"}``. The
    device means count each device once, as the paper's Avg of accuracies does (DCASE's "overall"
    pools the clips instead: both agree when the devices have equally many test clips, as in the
    DCASE 2020 development fold). ``seen_devices`` (default: all) decides seen and unseen;
    ``mean_unseen`` is None without unseen devices, ``mean_seen`` without seen ones.
    """
    missing = [c for c in ("device", "scene") if c not in pred_df.columns]
    if missing:
        raise ConfigError(f"predictions: missing columns {missing} (have {list(pred_df.columns)})")
    y = _label_indices(pred_df["scene"], scene_labels, "scene")
    dev = _label_indices(pred_df["device"], device_labels, "device")
    p = probabilities_of(pred_df, scene_labels)
    per_scene = {s: (log_loss(y[y == k], p[y == k]) if (y == k).any() else None) for k, s in enumerate(scene_labels)}
    per_device = {d: log_loss(y[dev == k], p[dev == k]) for k, d in enumerate(device_labels) if (dev == k).any()}
    seen = set(device_labels if seen_devices is None else seen_devices)

    def mean(devices):
        values = [per_device[d] for d in devices]
        return float(np.mean(values)) if values else None

    return {
        "overall": log_loss(y, p), "per_scene": per_scene, "per_device": per_device,
        "mean_all": mean(list(per_device)), "mean_seen": mean([d for d in per_device if d in seen]),
        "mean_unseen": mean([d for d in per_device if d not in seen]), "eps": LOG_LOSS_EPS,
    }


def parallel_stem(filename: str, device_label: str) -> str:
    """The filename without folder, extension and trailing ``-{device}``: equal for parallel recordings.

    ``audio/airport-barcelona-0-0-a.wav`` (device ``a``) -> ``airport-barcelona-0-0``.
    """
    base = re.sub(r"\.[A-Za-z0-9]+$", "", str(filename).replace("\\", "/").rsplit("/", 1)[-1])
    suffix = f"-{device_label}"
    return base[: -len(suffix)] if base.endswith(suffix) else base


def select_attention_examples(filename: Sequence[str], scene: np.ndarray, device: np.ndarray,
                              device_labels: Sequence[str], per_class_device: int) -> np.ndarray:
    """Indices of a few clips per (scene, device) for the attention figure, parallel recordings first.

    For each scene, whole groups of parallel recordings (same :func:`parallel_stem`) covering every
    device present in the data are taken first (sorted by stem), so the figure can show one clip
    through all devices; remaining places per (scene, device) are filled with other clips sorted by
    filename. Deterministic; returns sorted indices.
    """
    if per_class_device < 0:
        raise ConfigError(f"attention_examples_per_class_device={per_class_device!r} must be >= 0")
    scene = np.asarray(scene)
    device = np.asarray(device)
    if per_class_device == 0 or len(filename) == 0:
        return np.zeros(0, dtype=np.int64)
    stems = [parallel_stem(f, device_labels[d]) for f, d in zip(filename, device)]
    devices_present = set(np.unique(device).tolist())
    chosen: list[int] = []
    for s in np.unique(scene):
        rows = np.flatnonzero(scene == s)
        groups: dict[str, dict[int, int]] = {}
        for i in sorted(rows, key=lambda i: filename[i]):
            groups.setdefault(stems[i], {}).setdefault(int(device[i]), int(i))
        complete = [g for g in sorted(groups) if set(groups[g]) == devices_present]
        picked = {d: [] for d in devices_present}
        for g in complete[:per_class_device]:
            for d, i in groups[g].items():
                picked[d].append(i)
        for d in devices_present:
            taken = set(picked[d])
            for i in sorted((i for i in rows if device[i] == d), key=lambda i: filename[i]):
                if len(picked[d]) >= per_class_device:
                    break
                if i not in taken:
                    picked[d].append(int(i))
            chosen.extend(picked[d])
    return np.array(sorted(chosen), dtype=np.int64)
