"""The outputs of a training job (docs/design.md, "Cell spec and training"): ``model.pt``,
``metrics.csv``, ``predictions.csv``, ``attention.npz`` (the attention examples; none for models
without an attention head) and ``evaluation.json``. They are written into a staging folder inside
the cell folder, then moved into place one by one (``evaluation.json`` last), and only while the job
is still wanted (:func:`publish_outputs`): a job trained for a client that has gone (a training
server's child whose ``train_cell`` job was killed) publishes nothing."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from caanet.data.loader import CellData, chunks
from caanet.errors import TrainingError
from caanet.evaluation import PREDICTION_COLUMNS, probability_columns, select_attention_examples
from caanet.io import atomic_path, write_csv_atomic, write_json_atomic
from caanet.paths import CELL_FILES
from caanet.training.batches import _autocast, _batch, _eval_mode
from caanet.training.config import TrainConfig

METRICS_COLUMNS = ("iteration", "loss", "loss_scene", "loss_device", "lr", "lambda", "device_acc", "elapsed_s",
                   "log_var_scene", "log_var_device")
#: The outputs (:data:`caanet.paths.CELL_FILES`) in the order they are moved into the cell folder:
#: ``evaluation.json``, the file that says a cell is done, comes last.
PUBLISH_ORDER = tuple(sorted(CELL_FILES.values(), key=lambda name: name == CELL_FILES["evaluation"]))


class Abandoned(TrainingError):
    """The job is no longer wanted (its client has gone): its outputs were discarded, not published."""


def _predictions_frame(data: CellData, scene_pred: np.ndarray, device_pred: np.ndarray | None,
                       proba: np.ndarray | None = None) -> pd.DataFrame:
    """``predictions.csv``'s rows: one per test clip, :data:`PREDICTION_COLUMNS` (labels as names;
    ``pred_device`` empty where the model has no CNN-d), then one ``prob_{scene}`` column per scene
    (:func:`caanet.evaluation.probability_columns`): ``proba`` ``(n_test, K)``, the softmax of the
    model's scene output (:func:`caanet.training.batches.scene_probabilities`: exact probabilities
    for log-softmax heads, ``Y / sum(Y)`` for the paper-mode attention heads), whose argmax is
    ``pred_scene``. Without ``proba`` the probability columns are left out."""
    t = data.test
    sl, dl = data.scene_labels, data.device_labels
    df = pd.DataFrame({
        "filename": t.filename, "identifier": t.identifier,
        "device": [dl[i] for i in t.device], "scene": [sl[i] for i in t.scene],
        "pred_scene": [sl[i] for i in scene_pred],
        "correct": (np.asarray(t.scene) == scene_pred).astype(int),
        "pred_device": [dl[i] for i in device_pred] if device_pred is not None else [""] * len(scene_pred),
    }, columns=list(PREDICTION_COLUMNS))
    if proba is not None:
        df = pd.concat([df, pd.DataFrame(np.asarray(proba, np.float64), columns=probability_columns(sl))], axis=1)
    return df


def _attention_examples(model, data: CellData, *, dev, cfg: TrainConfig, oracle: bool, amp: bool | None = None,
                        clips=None) -> dict | None:
    """Attention maps of the true class for a few test clips per class and device (None if no attention)."""
    t = data.test
    pos = select_attention_examples(t.filename, t.scene, t.device, data.device_labels,
                                    cfg.attention_examples_per_class_device)
    maps, preds = [], []
    with _eval_mode(model):
        for sl in chunks(len(pos), cfg.eval_batch_size):
            x, y, d = _batch(t if clips is None else clips, pos[sl], dev)
            with _autocast(dev, cfg.amp if amp is None else amp):
                out = model(x, d if oracle else None)
            if out.attention is None:
                return None
            att = out.attention.float()
            maps.append(att[torch.arange(len(y), device=att.device), y].cpu().numpy().astype(np.float16))
            preds.append(out.scene.float().argmax(1).cpu().numpy())
    if not maps:
        return None
    return {
        "maps": np.concatenate(maps),
        "filename": np.asarray(t.filename[pos]).astype(str),
        "scene": np.array([data.scene_labels[i] for i in t.scene[pos]]),
        "device": np.array([data.device_labels[i] for i in t.device[pos]]),
        "pred_scene": np.array([data.scene_labels[i] for i in np.concatenate(preds)]),
    }


NO_ATTENTION = {
    "maps": np.zeros((0, 0, 0), dtype=np.float16),
    **{key: np.zeros(0, dtype="<U1") for key in ("filename", "scene", "device", "pred_scene")},
}
"""``attention.npz`` of a model without an attention pooling: no examples (``maps`` of shape (0, 0, 0)),
so that the file is a declared output of every ``train_cell`` job (Snakemake has no optional outputs)."""


def _write_outputs(out_dir: Path, *, spec, cfg, model, model_cfg, data: CellData, metrics, evaluation, preds_df,
                   attention, feature_params: dict, still_wanted: Callable[[], bool] | None = None) -> None:
    """Write the job's outputs (:data:`PUBLISH_ORDER`) into a staging folder in ``out_dir``, then
    publish them there (:func:`publish_outputs`); ``feature_params``: the cache's (for ``model.pt``).

    Raises :class:`Abandoned` (nothing of this job left in ``out_dir``) when ``still_wanted()`` says no.
    """
    from caanet.modelfile import write_training_model_file  # the self-describing model file (caanet/modelfile.py)

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".outputs-", dir=out_dir))
    try:
        write_training_model_file(
            staging / CELL_FILES["model"], feature_params=feature_params, spec=spec, train_config=cfg, model=model,
            model_config=model_cfg, norm_mean=data.mean, norm_std=data.std, scene_labels=data.scene_labels,
            device_labels=data.device_labels, evaluation=evaluation, metrics=metrics)
        write_csv_atomic(staging / CELL_FILES["metrics"], pd.DataFrame(metrics, columns=list(METRICS_COLUMNS)))
        write_csv_atomic(staging / CELL_FILES["predictions"], preds_df)
        # a declared output of every cell: no examples without attention
        with atomic_path(staging / CELL_FILES["attention"]) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **(attention if attention is not None else NO_ATTENTION))
        write_json_atomic(staging / CELL_FILES["evaluation"], evaluation)
        publish_outputs(staging, out_dir, PUBLISH_ORDER, still_wanted)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_outputs(staging: Path, out_dir: Path, names, still_wanted: Callable[[], bool] | None = None) -> None:
    """Move the files ``names`` from ``staging`` into ``out_dir`` (``os.replace``, in that order),
    only while the job is still wanted.

    ``still_wanted()`` (default: always) is asked before the first move and after the last; a no
    before leaves ``out_dir`` untouched, a no after (the client went during the moves) removes the
    moved files again. Either way :class:`Abandoned` is raised naming ``out_dir``. ``staging`` must
    be in ``out_dir``'s file system (each move is then atomic).
    """
    def abandon(when: str):
        return Abandoned(f"{out_dir}: the job's client has gone ({when}); its outputs were discarded")

    if still_wanted is not None and not still_wanted():
        raise abandon("before its outputs were published")
    for name in names:
        os.replace(staging / name, out_dir / name)
    if still_wanted is not None and not still_wanted():
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                (out_dir / name).unlink()
        raise abandon("while its outputs were published")
