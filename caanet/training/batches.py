"""The clips of a job on the training device and what runs over them in batches.

:class:`ClipTensors` holds a split on the device, :class:`BatchOrder` gives each iteration's batch
(:func:`caanet.data.loader.batch_indices` made fast), :func:`predict_scores` (class probabilities:
:func:`scene_probabilities`), :func:`predict`, :func:`device_accuracy` and :func:`validation_accuracy`
run a model over clips in eval mode (bf16 autocast on CUDA where asked).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from caanet.data.loader import CellData, Clips, chunks, epoch_permutation
from caanet.errors import TrainingError
from caanet.evaluation import evaluate_predictions
from caanet.training.config import TrainConfig


@dataclass
class ClipTensors:
    """A split's arrays as tensors on the training device, so batches are indexed there.

    On the CPU the tensors share the arrays' memory (no copy); on a GPU the split is copied once
    (a DCASE 2018 training split is under 1 GB) and no batch crosses the bus again. ``clips`` keeps
    the host-side metadata (filename, identifier) for outputs.
    """

    x: torch.Tensor  # (N, T, M) float32
    scene: torch.Tensor  # (N,) int64
    device: torch.Tensor  # (N,) int64
    clips: Clips

    @classmethod
    def of(cls, clips: Clips, dev: torch.device) -> "ClipTensors":
        return cls(torch.from_numpy(clips.x).to(dev), torch.from_numpy(clips.scene).to(dev),
                   torch.from_numpy(clips.device).to(dev), clips)

    @property
    def filename(self) -> np.ndarray:
        return self.clips.filename

    @property
    def identifier(self) -> np.ndarray:
        return self.clips.identifier

    def __len__(self) -> int:
        return len(self.clips)


class BatchOrder:
    """The positions (into the training split) of each iteration's batch, as a tensor on the device.

    The same batches as ``train_idx[batch_indices(len(train_idx), batch_size, seed, it)]``
    (:func:`caanet.data.loader.batch_indices`, a pure function of seed and iteration), but each
    epoch's permutation is drawn and copied to the device once, not once per iteration.
    """

    def __init__(self, train_idx: np.ndarray, batch_size: int, seed: int, dev: torch.device):
        self.train_idx, self.batch_size, self.seed, self.dev = np.asarray(train_idx, np.int64), batch_size, seed, dev
        self.n = int(self.train_idx.size)
        if self.n < 1:
            raise TrainingError("BatchOrder: no training clips")
        self._epochs: dict[int, torch.Tensor] = {}

    def _epoch(self, epoch: int) -> torch.Tensor:
        order = self._epochs.get(epoch)
        if order is None:
            if len(self._epochs) >= 2:  # iterations move forward: keep the current and the next epoch only
                self._epochs.pop(min(self._epochs))
            perm = epoch_permutation(self.n, self.seed, epoch)
            order = self._epochs[epoch] = torch.from_numpy(self.train_idx[perm]).to(self.dev)
        return order

    def __call__(self, iteration: int) -> torch.Tensor:
        bs, start, parts, filled = self.batch_size, iteration * self.batch_size, [], 0
        while filled < bs:
            epoch, offset = divmod(start + filled, self.n)
            take = min(bs - filled, self.n - offset)
            parts.append(self._epoch(epoch)[offset:offset + take])
            filled += take
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def _autocast(dev: torch.device, amp: bool):
    if dev.type == "cuda" and amp:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _batch(fs, positions, dev: torch.device):
    """``(x, scene, device)`` of the clips at ``positions``: indexed on the device for :class:`ClipTensors`
    (``positions`` a numpy array or a tensor on that device), else gathered on the host and copied."""
    if isinstance(fs, ClipTensors):
        idx = positions if isinstance(positions, torch.Tensor) else torch.from_numpy(np.asarray(positions, np.int64))
        idx = idx.to(fs.x.device)
        return fs.x.index_select(0, idx), fs.scene.index_select(0, idx), fs.device.index_select(0, idx)
    x = torch.from_numpy(fs.x[positions]).to(dev, non_blocking=True)
    y = torch.from_numpy(np.asarray(fs.scene[positions], dtype=np.int64)).to(dev)
    d = torch.from_numpy(np.asarray(fs.device[positions], dtype=np.int64)).to(dev)
    return x, y, d


@contextlib.contextmanager
def _eval_mode(model):
    was = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was)


@dataclass
class Scores:
    """What :func:`predict_scores` returns for ``n`` clips: ``scene`` ``(n,)`` int64 predicted scene (the
    argmax of ``proba``, first on ties), ``proba`` ``(n, K)`` float64 class probabilities, ``device``
    ``(n,)`` int64 CNN-d's predicted device or None (no CNN-d)."""

    scene: np.ndarray
    proba: np.ndarray
    device: np.ndarray | None


def scene_probabilities(scene_output: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``(B, K)`` float64 of a model's scene output: its softmax over classes.

    For the heads ending in log_softmax (``flatten``, ``max``, ``avg``, ``roi``) these are exactly
    their probabilities. The paper-mode attention heads (``att``, ``roi_att``; Eq. 5-6) output
    ``log Y`` with ``Y`` the attention-weighted per-bin softmax (clamped at 1e-7), which need not sum
    to exactly 1: the softmax gives ``Y / sum(Y)``. The reference-fidelity attention heads output the
    attention-weighted mean of per-bin log-probabilities: the softmax gives their normalised weighted
    geometric mean (what ``caanet predict`` reports too). Computed in float64 so that rows sum to 1 within
    1e-12 (``predictions.csv``'s ``prob_{scene}`` columns, DCASE's log loss)."""
    return torch.softmax(scene_output.double(), dim=1)


def predict_scores(model, fs, positions: np.ndarray, *, dev: torch.device, batch_size: int, amp: bool,
                   oracle: bool) -> Scores:
    """Scene probabilities and predictions (and CNN-d's device, if any) for ``fs`` clips at
    ``positions``, in eval mode (:class:`Scores`; probabilities: :func:`scene_probabilities`)."""
    proba, device = [], []
    with _eval_mode(model):
        for sl in chunks(len(positions), batch_size):
            x, _, d = _batch(fs, positions[sl], dev)
            with _autocast(dev, amp):
                out = model(x, d if oracle else None)
            proba.append(scene_probabilities(out.scene.float()).cpu().numpy())
            if out.device is not None:
                device.append(out.device.float().argmax(1).cpu().numpy())
    k = getattr(getattr(model, "config", None), "n_classes", 0)
    p = np.concatenate(proba) if proba else np.zeros((0, k), np.float64)
    return Scores(p.argmax(axis=1).astype(np.int64), p, np.concatenate(device) if device else None)


def predict(model, fs, positions: np.ndarray, *, dev: torch.device, batch_size: int, amp: bool,
            oracle: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Scene (and CNN-d device, if any) predictions for ``fs`` clips at ``positions``, in eval mode
    (:func:`predict_scores` without the probabilities)."""
    scores = predict_scores(model, fs, positions, dev=dev, batch_size=batch_size, amp=amp, oracle=oracle)
    return scores.scene, scores.device


def device_accuracy(model, fs, positions: np.ndarray, *, dev: torch.device, batch_size: int, amp: bool) -> float:
    """Plain accuracy of CNN-d alone (the scene network is not run) on ``fs`` clips at ``positions``."""
    correct = 0
    with _eval_mode(model):
        for sl in chunks(len(positions), batch_size):
            x, _, d = _batch(fs, positions[sl], dev)
            with _autocast(dev, amp):
                logp = model.device_net(x.unsqueeze(1))
            correct += int((logp.float().argmax(1) == d).sum())
    return correct / max(len(positions), 1)


def validation_accuracy(model, data: CellData, *, dev, cfg: TrainConfig, oracle: bool, clips=None,
                        amp: bool | None = None) -> float:
    """The paper's metric on the validation split, averaged over the devices present (for best_val).
    ``clips``: the training split as :class:`ClipTensors` (default ``data.train``); ``amp`` default ``cfg.amp``."""
    pos = data.val_idx
    pred, _ = predict(model, data.train if clips is None else clips, pos, dev=dev, batch_size=cfg.eval_batch_size,
                      amp=cfg.amp if amp is None else amp, oracle=oracle)
    df = pd.DataFrame({
        "device": [data.device_labels[i] for i in data.train.device[pos]],
        "scene": [data.scene_labels[i] for i in data.train.scene[pos]],
        "pred_scene": [data.scene_labels[i] for i in pred],
    })
    return evaluate_predictions(df, data.scene_labels, data.device_labels)["mean_all"]
