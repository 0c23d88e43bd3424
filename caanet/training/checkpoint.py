"""Checkpoints of a training job: ``checkpoints/last.pt`` while it runs, resumed bit-identically on CPU.

A checkpoint is :meth:`caanet.training.trainer.CellTrainer.state_dict` (written atomically by
:func:`write_checkpoint`): the model, optimiser, lambda rule and RNG states, a fingerprint of the job,
the code version, and the fields of :class:`TrainState` under their own names. :func:`read_checkpoint`
reads one back (a checkpoint of format 1, written before the trainer had ``state_dict``, is upgraded);
:func:`fingerprint_differences` says why a checkpoint belongs to another job.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from caanet.data.loader import CellData
from caanet.errors import TrainingError
from caanet.io import atomic_path
from caanet.rerun import TRAINING_KEYS_CHANGING_NOTHING
from caanet.spec import CellSpec
from caanet.training.config import TrainConfig

# 2: TrainState's fields under their own names (format 1 kept the pending losses as "pending": [sums, n])
CHECKPOINT_FORMAT = 2
READABLE_FORMATS = (1, 2)
# TrainConfig fields that change nothing computed, so a checkpoint written under another value resumes
# (the same list keeps them out of the workflow's params: caanet.rerun).
_RESUME_INDIFFERENT = TRAINING_KEYS_CHANGING_NOTHING


@dataclass
class TrainState:
    """What a checkpoint carries besides the model/optimiser/lambda rule: progress and bookkeeping.

    ``sums``/``n_sum`` are the loss sums and count of the iterations since the last metrics row, so a
    resumed job writes the same averaged rows as an uninterrupted one."""

    iteration: int = 0  # completed iterations
    metrics: list = dataclasses.field(default_factory=list)  # metrics.csv rows so far
    sums: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(3))  # losses since the last row
    n_sum: int = 0
    elapsed_s: float = 0.0  # training seconds before this process
    best: dict | None = None  # best_val: {"iteration", "accuracy", "state_dict"}
    val_history: list = dataclasses.field(default_factory=list)  # [[iteration, validation accuracy], ...]

    def state_dict(self) -> dict:
        """The fields under their own names, as plain values ``torch.load(weights_only=True)`` reads."""
        return {"iteration": int(self.iteration), "metrics": self.metrics, "sums": [float(v) for v in self.sums],
                "n_sum": int(self.n_sum), "elapsed_s": float(self.elapsed_s), "best": self.best,
                "val_history": self.val_history}

    @classmethod
    def from_state_dict(cls, state: dict) -> "TrainState":
        return cls(iteration=int(state["iteration"]), metrics=list(state["metrics"]),
                   sums=np.array(state["sums"], dtype=np.float64), n_sum=int(state["n_sum"]),
                   elapsed_s=float(state["elapsed_s"]), best=state["best"], val_history=list(state["val_history"]))


def fingerprint(spec: CellSpec, cfg: TrainConfig, data: CellData, method_settings=None) -> dict:
    """What a checkpoint must match to be resumed: spec, config (less indifferent keys), the data and,
    for a device-robustness method, its settings (:mod:`caanet.methods`)."""
    tc = cfg.to_dict()
    for key in _RESUME_INDIFFERENT:
        tc.pop(key)
    out = {"spec": spec.to_dict(), "train_config": tc, "n_train": int(data.train_idx.size),
           "n_val": int(data.val_idx.size), "n_test": int(len(data.test)),
           "scene_labels": data.scene_labels, "device_labels": data.device_labels}
    if method_settings is not None:
        out["method_settings"] = dataclasses.asdict(method_settings)
    return out


def fingerprint_differences(old: dict, new: dict) -> list[str]:
    """``group.key: checkpoint X != now Y`` for every fingerprint entry that differs (empty: the same job)."""
    diffs = []
    for group in new:
        a, b = old.get(group), new[group]
        if isinstance(b, dict) and isinstance(a, dict):
            diffs += [f"{group}.{k}: checkpoint {a.get(k)!r} != now {b.get(k)!r}"
                      for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            diffs.append(f"{group}: checkpoint {a!r} != now {b!r}")
    return diffs


def rng_state() -> dict:
    """torch's (and every CUDA device's) RNG state."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_checkpoint(path: Path, state: dict) -> None:
    """Write a trainer's ``state_dict()`` (plus ``code_version``) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def checkpoint_code_version(path: Path):
    """The ``code_version`` a checkpoint was written with (None if unreadable or not recorded)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True).get("code_version")
    except Exception:  # noqa: BLE001 - read_checkpoint reports unreadable files
        return None


def read_checkpoint(path: Path) -> dict:
    """A checkpoint as a trainer's ``state_dict()`` of format :data:`CHECKPOINT_FORMAT` (one of format 1
    is upgraded). An unreadable file or another format raises TrainingError naming ``path``, with the
    remedy (delete it to start over)."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise TrainingError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e}); delete it to start over") from None
    if not isinstance(ck, dict) or ck.get("format") not in READABLE_FORMATS:
        raise TrainingError(f"{path}: not a caanet checkpoint of format {list(READABLE_FORMATS)}; "
                            "delete it to start over")
    if ck["format"] == 1:
        sums, n_sum = ck.pop("pending")
        ck.update(format=CHECKPOINT_FORMAT, sums=sums, n_sum=n_sum)
    return ck
