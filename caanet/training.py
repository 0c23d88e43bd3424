"""The training job of one table cell (paper Sec. III-B, IV-B) and its evaluation per recording device.

:func:`train_cell` trains the model a :class:`~caanet.spec.CellSpec` names on the cache's training
split and writes the contract's outputs (``docs/design.md``, "Cell spec and training"):
``model.pt``, ``metrics.csv``, ``evaluation.json``, ``predictions.csv`` and, for attention heads,
``attention.npz``; ``checkpoints/last.pt`` exists only while it runs.

Strategies (Fig. 2): ``single_device`` trains and tests on one device's clips; ``joint`` on all
devices without device input; ``teacher_forcing`` feeds the true device in training *and* at test
time (oracle information, recorded in ``evaluation.json``); ``multi_task`` adds CNN-d and the loss
``loss_scene + lambda * loss_device`` (Eq. 2), lambda following :class:`LambdaRule`;
``multi_task_learned`` (beyond the paper) learns the weights instead
(:mod:`caanet.models.loss_weighting`). Any number of devices: conditioned models are sized by the
devices seen in training, and test clips of unseen devices follow ``unseen_device`` (:mod:`caanet.devices`).

Everything that differs between the paper's text and the authors' code is read from
:class:`caanet.fidelity.Fidelity` (``lr_decay``, ``lambda_source``, ``lambda_sticky``).

Robustness: batches are a pure function of ``(seed, iteration)``
(:func:`caanet.data.loader.batch_indices`); checkpoints carry the model, optimiser, lambda rule, RNG
states and metrics so far; a killed job resumes bit-identically on CPU; SIGTERM/SIGINT finishes the
current iteration, checkpoints, and raises :class:`Preempted` (non-zero exit) so the scheduler
retries. Unlike the authors' code there is no evaluation of the whole training and test sets every
100 iterations: only what the lambda rule (CNN-d alone) and model selection need.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from caanet.data.loader import (
    epoch_permutation,
    cache_columns,
    cache_labels,
    carve_validation,
    chunks,
    held_out_counts,
    fit_normalisation,
    load_features,
    normalise_,
)
from caanet.devices import (
    DEFAULT_UNSEEN_POLICY,
    normalise_unseen_policy,
    seen_devices,
    seen_first_order,
    seen_unseen_summary,
    unseen_policy_for,
)
from caanet.errors import ConfigError, SpecError, TrainingError
from caanet.evaluation import evaluate_predictions, select_attention_examples
from caanet.fidelity import LAMBDA_ON, Fidelity, get_fidelity
from caanet.fidelity import lambda_source as _lambda_source
from caanet.io import atomic_path, write_csv_atomic, write_json_atomic
from caanet.rerun import TRAINING_KEYS_CHANGING_NOTHING
from caanet.optim import Adam
from caanet.runtime import keep_freed_memory
from caanet.spec import CellSpec

LOGGER = logging.getLogger("caanet.training")

METRICS_COLUMNS = ("iteration", "loss", "loss_scene", "loss_device", "lr", "lambda", "device_acc", "elapsed_s",
                   "log_var_scene", "log_var_device")
PREDICTION_COLUMNS = ("filename", "identifier", "device", "scene", "pred_scene", "correct", "pred_device")
SELECTIONS = ("last", "best_val")
CHECKPOINT_FORMAT = 1
# TrainConfig fields that change nothing computed, so a checkpoint written under another value resumes
# (the same list keeps them out of the workflow's params: caanet.rerun).
_RESUME_INDIFFERENT = TRAINING_KEYS_CHANGING_NOTHING


class Preempted(TrainingError):
    """SIGTERM/SIGINT arrived: the checkpoint is written, the job should be resubmitted to resume."""


# --------------------------------------------------------------------------------------------------
# Hyperparameters
# --------------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Every training hyperparameter; defaults are the paper's (Sec. IV-B) and the authors' code's.

    ``val_fraction`` is the fraction of training clips, taken as whole recording locations, held out
    for validation where it is needed (:func:`needs_validation`): a multi-task lambda rule measured on
    validation, ``selection="best_val"``, or Table I's cells under ``layer_selection: validation``;
    every device loses the same share (:func:`caanet.data.loader.carve_validation`).
    ``selection`` picks the evaluated weights: ``last`` (the paper and the authors) or ``best_val``
    (best validation accuracy every ``val_every`` iterations; never the test set).
    ``amp`` enables bf16 autocast on CUDA only (never in ``reference`` fidelity, which runs float32).
    ``lambda_on`` chooses where the lambda rule measures the device accuracy: ``"test"`` (the paper's
    text and the authors' code), ``"validation"`` (leak-free), or ``None`` for the fidelity's default
    (:attr:`caanet.fidelity.Fidelity.lambda_source`). ``log_every`` sets the metrics.csv rows.
    ``unseen_device``: what conditioned models get for test clips of devices absent from training,
    ``{teacher_forcing: zero|uniform, multi_task: predicted|zero|uniform}`` (a single name sets both;
    :mod:`caanet.devices` defines each policy; multi_task covers both multi-task strategies).
    ``deterministic``: deterministic kernels and a bit-reproducible run (CPU resume included); false
    lets cuDNN autotune (``cudnn.benchmark``), faster on a GPU.
    """

    iterations: int = 15000
    batch_size: int = 16
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    lr_decay: float = 0.9
    lr_decay_every: int = 200
    lambda_high: float = 1.0
    lambda_low: float = 1e-4
    lambda_switch_acc: float = 0.98
    lambda_check_every: int = 100
    val_fraction: float = 0.1
    selection: str = "last"
    val_every: int = 500
    checkpoint_every: int = 500
    log_every: int = 100
    eval_batch_size: int = 64
    channels: tuple[int, ...] = (64, 128, 256, 512)
    device_channels: tuple[int, ...] = (64, 128)
    amp: bool = True
    lambda_on: str | None = None
    attention_examples_per_class_device: int = 2
    deterministic: bool = True
    unseen_device: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_UNSEEN_POLICY))

    def __post_init__(self):
        for key in ("betas", "channels", "device_channels"):
            if isinstance(getattr(self, key), list):
                setattr(self, key, tuple(getattr(self, key)))
        self.validate()

    def validate(self, where: str = "training") -> "TrainConfig":
        """Check types and ranges; raise ConfigError naming ``{where}.{key}``."""

        def bad(key, msg):
            raise ConfigError(f"{where}.{key}: {msg}, got {getattr(self, key)!r}")

        def is_int(v):
            return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))

        def is_num(v):
            return (is_int(v) or isinstance(v, (float, np.floating))) and math.isfinite(float(v))

        for key in ("iterations", "batch_size", "lr_decay_every", "lambda_check_every", "val_every",
                    "checkpoint_every", "log_every", "eval_batch_size"):
            if not is_int(getattr(self, key)) or getattr(self, key) < 1:
                bad(key, "expected an integer >= 1")
        if not is_int(self.attention_examples_per_class_device) or self.attention_examples_per_class_device < 0:
            bad("attention_examples_per_class_device", "expected an integer >= 0")
        for key in ("lr", "eps"):
            if not is_num(getattr(self, key)) or not getattr(self, key) > 0:
                bad(key, "expected a positive number")
        for key in ("lambda_high", "lambda_low"):
            if not is_num(getattr(self, key)) or getattr(self, key) < 0:
                bad(key, "expected a number >= 0")
        if not is_num(self.lr_decay) or not 0 < self.lr_decay <= 1:
            bad("lr_decay", "expected a number in (0, 1]")
        if not is_num(self.lambda_switch_acc) or not 0 <= self.lambda_switch_acc <= 1:
            bad("lambda_switch_acc", "expected a number in [0, 1]")
        if not is_num(self.val_fraction) or not 0 <= self.val_fraction < 1:
            bad("val_fraction", "expected a number in [0, 1)")
        if not (isinstance(self.betas, tuple) and len(self.betas) == 2 and all(is_num(b) and 0 <= b < 1 for b in self.betas)):
            bad("betas", "expected two numbers in [0, 1)")
        for key in ("channels", "device_channels"):
            v = getattr(self, key)
            if not (isinstance(v, tuple) and v and all(is_int(c) and c >= 1 for c in v)):
                bad(key, "expected a non-empty list of positive integers")
        if self.selection not in SELECTIONS:
            bad("selection", f"expected one of {list(SELECTIONS)}")
        self.unseen_device = normalise_unseen_policy(self.unseen_device, f"{where}.unseen_device")
        if self.lambda_on is not None and self.lambda_on not in LAMBDA_ON:
            bad("lambda_on", f"expected one of {list(LAMBDA_ON)} or null (the fidelity's default)")
        for key in ("amp", "deterministic"):
            if not isinstance(getattr(self, key), bool):
                bad(key, "expected true or false")
        return self

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "training") -> "TrainConfig":
        """Build from a config mapping (YAML/JSON): unknown keys and wrong types raise ConfigError."""
        d = dict(d or {})
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown} (known: {sorted(known)})")
        for key in ("betas", "channels", "device_channels"):
            if key in d:
                if not isinstance(d[key], (list, tuple)):
                    raise ConfigError(f"{where}.{key}: expected a list, got {d[key]!r}")
                d[key] = tuple(d[key])
        for key, f in known.items():  # ints are acceptable where floats are expected (YAML writes 1 for 1.0)
            if key in d and f.default.__class__ is float and isinstance(d[key], int) and not isinstance(d[key], bool):
                d[key] = float(d[key])
        obj = cls.__new__(cls)
        for key, f in known.items():
            setattr(obj, key, d.get(key, f.default if f.default is not dataclasses.MISSING else f.default_factory()))
        return obj.validate(where)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key in ("betas", "channels", "device_channels"):
            d[key] = list(d[key])
        return d


def lr_at(iteration: int, cfg: TrainConfig, fidelity: Fidelity | str) -> float:
    """Learning rate of the 0-based ``iteration``: ``lr * lr_decay ** (iteration // lr_decay_every)``
    where the fidelity decays (the paper), else constant ``lr`` (the authors' code, reference item 2)."""
    fid = get_fidelity(fidelity)
    if iteration < 0:
        raise ConfigError(f"lr_at: iteration={iteration!r} must be >= 0")
    if not fid.lr_decay:
        return float(cfg.lr)
    return float(cfg.lr * cfg.lr_decay ** (iteration // cfg.lr_decay_every))


class LambdaRule:
    """Eq. 2's lambda: ``high`` until CNN-d's device accuracy reaches ``switch_acc``, then ``low``.

    Checked after every ``check_every`` completed iterations on ``source`` ("validation": the
    location-disjoint split carved from the training data, the paper; "test": the test fold, the
    authors' code). ``sticky``: once switched it stays low and needs no more checks (the paper);
    otherwise it is re-decided at each check and can switch back (the authors' code).
    """

    def __init__(self, *, high: float, low: float, switch_acc: float, check_every: int, sticky: bool, source: str):
        if source not in ("validation", "test"):
            raise ConfigError(f"lambda source {source!r} is not 'validation' or 'test'")
        self.high, self.low, self.switch_acc = float(high), float(low), float(switch_acc)
        self.check_every, self.sticky, self.source = int(check_every), bool(sticky), source
        self.value = self.high
        self.switched_at: int | None = None
        self.history: list[tuple[int, float, float]] = []  # (iteration, device accuracy, lambda after)

    @classmethod
    def from_config(cls, cfg: TrainConfig, fidelity: Fidelity | str) -> "LambdaRule":
        fid = get_fidelity(fidelity)
        return cls(high=cfg.lambda_high, low=cfg.lambda_low, switch_acc=cfg.lambda_switch_acc,
                   check_every=cfg.lambda_check_every, sticky=fid.lambda_sticky, source=lambda_source(cfg, fid))

    def due(self, iteration: int) -> bool:
        """Whether a device-accuracy check is needed after ``iteration`` completed iterations."""
        if iteration <= 0 or iteration % self.check_every:
            return False
        return not (self.sticky and self.switched_at is not None)

    def update(self, iteration: int, device_acc: float) -> float:
        """Record a check's device accuracy and return the lambda for the following iterations."""
        reached = float(device_acc) >= self.switch_acc
        if self.sticky:
            if reached and self.switched_at is None:
                self.value, self.switched_at = self.low, int(iteration)
        else:
            new = self.low if reached else self.high
            if new != self.value and new == self.low:
                self.switched_at = int(iteration)
            self.value = new
        self.history.append((int(iteration), float(device_acc), self.value))
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value, "switched_at": self.switched_at, "history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])
        self.switched_at = state["switched_at"]
        self.history = [tuple(h) for h in state["history"]]


def learned_or_switched_rule(spec: CellSpec, cfg: TrainConfig, fidelity: Fidelity, dev: torch.device):
    """The lambda rule of a cell: :class:`caanet.models.loss_weighting.LearnedLambda` (on ``dev``) for
    ``spec.lambda_rule == "learned"``, else Eq. 2's :class:`LambdaRule` (unused by unconditioned cells)."""
    if spec.lambda_rule == "learned":
        from caanet.models.loss_weighting import LearnedLambda

        return LearnedLambda().to(dev)
    return LambdaRule.from_config(cfg, fidelity)


def learned_lambda_columns(rule) -> dict:
    """metrics.csv's ``log_var_scene`` / ``log_var_device``: the ``s_i`` of a learned-lambda step (else empty)."""
    s = getattr(rule, "last_log_vars", None) or {}
    return {"log_var_scene": s.get("scene"), "log_var_device": s.get("device")}


# --------------------------------------------------------------------------------------------------
# Data of one cell
# --------------------------------------------------------------------------------------------------


@dataclass
class Clips:
    """The arrays of a loaded split that training uses (own, writable copies where needed)."""

    x: np.ndarray  # (N, T, M) float32
    scene: np.ndarray  # (N,) int64
    device: np.ndarray  # (N,) int64
    filename: np.ndarray  # (N,) str
    identifier: np.ndarray  # (N,) str

    @classmethod
    def from_featureset(cls, fs) -> "Clips":
        x = np.asarray(fs.x, dtype=np.float32)
        if not x.flags.writeable or not x.flags.c_contiguous:
            x = np.array(x, dtype=np.float32, order="C")
        return cls(x=x, scene=np.asarray(fs.scene, dtype=np.int64), device=np.asarray(fs.device, dtype=np.int64),
                   filename=np.asarray(fs.filename).astype(str), identifier=np.asarray(fs.identifier).astype(str))

    def __len__(self) -> int:
        return int(self.scene.shape[0])


@dataclass
class CellData:
    """Normalised training/test clips of one cell and the positions used for training and validation."""

    train: Clips  # split "train" (normalised in place)
    test: Clips  # split "test" (normalised in place)
    train_idx: np.ndarray
    val_idx: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    scene_labels: list
    device_labels: list
    n_seen: int | None = None  # devices 0..n_seen-1 have training clips (seen_devices_first); None: all


def seen_devices_first(features_path, data: CellData) -> CellData:
    """``data`` relabelled so that the devices seen in training come first (:mod:`caanet.devices`).

    Seen devices are those with clips in the cache's train split (all devices, before any cell's
    selection). ``device_labels`` becomes seen-then-unseen and every device index array follows;
    ``n_seen`` is set. For data whose devices all appear in training nothing but ``n_seen`` changes.
    """
    cols = cache_columns(features_path)
    seen = seen_devices(data.device_labels, cols["device"][cols["split"] == "train"])
    labels, old_to_new = seen_first_order(data.device_labels, seen)
    for clips in (data.train, data.test):
        clips.device = old_to_new[clips.device]
    return dataclasses.replace(data, device_labels=labels, n_seen=len(seen))


def lambda_source(cfg: TrainConfig, fidelity: Fidelity | str) -> str:
    """Where the lambda rule measures CNN-d: ``cfg.lambda_on``, else the fidelity's default."""
    return _lambda_source(fidelity, cfg.lambda_on)


def needs_validation(spec: CellSpec, cfg: TrainConfig, fidelity: Fidelity | str, *,
                     score_validation: bool = False) -> bool:
    """Whether this cell holds a validation split out of its training data.

    Only cells that use one do: a multi-task cell whose lambda rule measures on the validation split,
    every cell under ``selection="best_val"``, and a cell asked to score the validation split
    (``score_validation``: Table I's cells under ``layer_selection: validation``). Every other cell
    trains on the whole official training split."""
    uses_lambda = spec.strategy == "multi_task" and lambda_source(cfg, fidelity) == "validation"
    return cfg.selection == "best_val" or uses_lambda or bool(score_validation)


def effective_config(spec: CellSpec, cfg: TrainConfig) -> TrainConfig:
    """``cfg`` as this cell runs it: bf16 autocast off in a fidelity that runs float32 (``reference``)."""
    if cfg.amp and not get_fidelity(spec.fidelity).bf16_autocast:
        return dataclasses.replace(cfg, amp=False)
    return cfg


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


def check_spec(features_path, spec: CellSpec, cfg: TrainConfig) -> tuple[list, list]:
    """Reject a bad spec/config before anything runs; return the cache's ``(scene_labels, device_labels)``."""
    if not isinstance(spec, CellSpec):
        raise SpecError(f"train_cell needs a CellSpec, got {type(spec).__name__}")
    if not isinstance(cfg, TrainConfig):
        raise ConfigError(f"train_cell needs a TrainConfig, got {type(cfg).__name__}")
    spec.validate()
    cfg.validate()
    fid = get_fidelity(spec.fidelity)
    scene_labels, device_labels = cache_labels(features_path)
    if spec.strategy == "single_device" and spec.device not in device_labels:
        raise SpecError(f"cell {spec.cell_id}: device {spec.device!r} is not in the cache {features_path} "
                        f"(devices: {device_labels})")
    if spec.strategy == "multi_task" and lambda_source(cfg, fid) == "validation" and cfg.val_fraction == 0:
        raise ConfigError(f"training.val_fraction: 0 leaves no validation split for the lambda rule of {spec.cell_id}")
    if cfg.selection == "best_val" and cfg.val_fraction == 0:
        raise ConfigError("training.val_fraction: 0 leaves no validation split for selection='best_val'")
    return scene_labels, device_labels


def validation_filenames(features_path, spec: CellSpec, cfg: TrainConfig) -> set[str]:
    """Filenames of the validation clips: whole locations carved from the training split of ALL devices.

    Carving before any device selection gives every cell of a seed the same validation locations, so a
    single-device cell trains on exactly the device's share of what the joint cell trains on.
    """
    cols = cache_columns(features_path)
    rows = np.flatnonzero(cols["split"] == "train")
    _, val = carve_validation(cols["identifier"][rows], cols["scene"][rows], cols["device"][rows],
                              cfg.val_fraction, spec.seed)
    return set(cols["filename"][rows[val]].tolist())


def held_out_line(data: CellData) -> str:
    """One log line: the validation clips held out of each device's training clips (count and %)."""
    counts = held_out_counts(data.train.device, data.train_idx, data.val_idx, data.device_labels)
    parts = []
    for d in data.device_labels:
        tr, va = counts["train"].get(d, 0), counts["validation"].get(d, 0)
        if tr + va:
            parts.append(f"{d} {va} of {tr + va} ({100.0 * va / (tr + va):.1f} %)")
    return "validation clips held out per device: " + (", ".join(parts) if data.val_idx.size else "none")


def prepare_data(features_path, spec: CellSpec, cfg: TrainConfig, *, score_validation: bool = False) -> CellData:
    """Load the cell's clips, carve the validation split (only where :func:`needs_validation`), fit and
    apply the per-mel-bin normalisation."""
    fid = get_fidelity(spec.fidelity)
    devices = [spec.device] if spec.strategy == "single_device" else None
    train_fs = load_features(features_path, split="train", devices=devices)
    test_fs = load_features(features_path, split="test", devices=devices)
    train, test = Clips.from_featureset(train_fs), Clips.from_featureset(test_fs)
    for name, fs in (("train", train), ("test", test)):
        if len(fs) == 0:
            raise SpecError(f"cell {spec.cell_id}: the cache {features_path} has no {name} clips"
                            + (f" of device {spec.device!r}" if devices else ""))
    is_val = np.zeros(len(train), dtype=bool)
    needed = needs_validation(spec, cfg, fid, score_validation=score_validation)
    if needed:
        is_val = np.isin(train.filename, list(validation_filenames(features_path, spec, cfg)))
    train_idx, val_idx = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    if needed and val_idx.size == 0:
        raise TrainingError(f"cell {spec.cell_id}: no validation clips: {features_path} has too few recording "
                            "locations per scene and device to hold any out of training")
    mean, std = fit_normalisation(train.x, train_idx)
    normalise_(train.x, mean, std)
    normalise_(test.x, mean, std)
    return CellData(train, test, train_idx, val_idx, mean, std, list(train_fs.scene_labels), list(train_fs.device_labels))


# --------------------------------------------------------------------------------------------------
# Runtime helpers
# --------------------------------------------------------------------------------------------------


def _as_log(log) -> Callable[[str], None]:
    if log is None:
        return LOGGER.info
    if isinstance(log, logging.Logger):
        return log.info
    if callable(log):
        return log
    raise ConfigError(f"log must be a logging.Logger or a callable, got {type(log).__name__}")


def _resolve_device(device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device={device!r} is not a torch device ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r}: CUDA is not available on this machine")
    return dev


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ConfigError(f"threads={threads!r} must be an integer >= 1")
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only settable before the first inter-op parallel work
        torch.set_num_interop_threads(1)


def _use_deterministic_algorithms(mode: bool, *, warn_only: bool) -> None:
    """``torch.use_deterministic_algorithms`` without its import of ``torch._inductor`` (1.2 s per job).

    The public function also sets ``torch._inductor.config.deterministic``, which matters only to
    code compiled by inductor: it is set here too when inductor is already loaded, and nothing here
    compiles otherwise.
    """
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:  # a torch without the private setter: the public function
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
        return
    setter(mode, warn_only=warn_only)
    inductor_config = sys.modules.get("torch._inductor.config")
    if inductor_config is not None:
        inductor_config.deterministic = mode


@contextlib.contextmanager
def _determinism(enabled: bool, seed: int):
    """Seed torch/numpy and (if enabled) ask for deterministic kernels; restore the global flags after."""
    fill = getattr(torch.utils, "deterministic", None)
    prev = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.benchmark, getattr(fill, "fill_uninitialized_memory", None))
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        _use_deterministic_algorithms(True, warn_only=True)
        # deterministic mode would also fill every new tensor with NaN (a debugging aid against reads of
        # uninitialised memory, ~3 % of a small network's step); the kernels used here never read it
        if fill is not None:
            fill.fill_uninitialized_memory = False
        torch.backends.cudnn.benchmark = False
    else:  # cuDNN times the candidate algorithms once per shape and keeps the fastest (not bit-reproducible)
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        _use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.benchmark = prev[2]
        if fill is not None and prev[3] is not None:
            fill.fill_uninitialized_memory = prev[3]


class _StopFlag:
    """Turns SIGTERM/SIGINT into a flag checked once per iteration (installed in the main thread only)."""

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: leave handlers alone
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


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


def predict(model, fs, positions: np.ndarray, *, dev: torch.device, batch_size: int, amp: bool,
            oracle: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Scene (and CNN-d device, if any) predictions for ``fs`` clips at ``positions``, in eval mode."""
    scene, device = [], []
    with _eval_mode(model):
        for sl in chunks(len(positions), batch_size):
            x, _, d = _batch(fs, positions[sl], dev)
            with _autocast(dev, amp):
                out = model(x, d if oracle else None)
            scene.append(out.scene.float().argmax(1).cpu().numpy())
            if out.device is not None:
                device.append(out.device.float().argmax(1).cpu().numpy())
    cat = np.concatenate
    return (cat(scene) if scene else np.zeros(0, np.int64)), (cat(device) if device else None)


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


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------


def _fingerprint(spec: CellSpec, cfg: TrainConfig, data: CellData) -> dict:
    """What a checkpoint must match to be resumed: spec, config (less indifferent keys) and the data."""
    tc = cfg.to_dict()
    for key in _RESUME_INDIFFERENT:
        tc.pop(key)
    return {"spec": spec.to_dict(), "train_config": tc, "n_train": int(data.train_idx.size),
            "n_val": int(data.val_idx.size), "n_test": int(len(data.test)),
            "scene_labels": data.scene_labels, "device_labels": data.device_labels}


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, *, fingerprint, model, optimizer, rule, iteration, metrics, pending, elapsed,
                    best, val_history, code_version=None) -> None:
    """Write ``checkpoints/last.pt`` atomically.

    ``pending`` is ``(loss sums, count)`` of the iterations since the last metrics row, so a resumed
    job writes the same averaged rows as an uninterrupted one.
    """
    obj = {
        "format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "iteration": int(iteration),
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "lambda_rule": rule.state_dict(),
        "metrics": metrics, "pending": [[float(v) for v in pending[0]], int(pending[1])],
        "elapsed_s": float(elapsed), "best": best, "val_history": val_history, "rng": _rng_state(),
        "code_version": code_version,
    }
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _checkpoint_code_version(path: Path):
    """The ``code_version`` a checkpoint was written with (None if unreadable or not recorded)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True).get("code_version")
    except Exception:  # noqa: BLE001 - load_checkpoint reports unreadable files
        return None


def load_checkpoint(path: Path, fingerprint: dict) -> dict:
    """Read a checkpoint and refuse it (TrainingError naming the differing keys) if it is another job's."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise TrainingError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e}); delete it to start over") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path}: not a caanet checkpoint of format {CHECKPOINT_FORMAT}")
    old = ck["fingerprint"]
    diffs = []
    for group in fingerprint:
        a, b = old.get(group), fingerprint[group]
        if isinstance(b, dict) and isinstance(a, dict):
            diffs += [f"{group}.{k}: checkpoint {a.get(k)!r} != now {b.get(k)!r}"
                      for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            diffs.append(f"{group}: checkpoint {a!r} != now {b!r}")
    if diffs:
        raise TrainingError(f"{path} belongs to a different job; refusing to resume ({'; '.join(diffs)}). "
                            "Delete it to start over.")
    return ck


# --------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------


def _predictions_frame(data: CellData, scene_pred: np.ndarray, device_pred: np.ndarray | None) -> pd.DataFrame:
    t = data.test
    sl, dl = data.scene_labels, data.device_labels
    return pd.DataFrame({
        "filename": t.filename, "identifier": t.identifier,
        "device": [dl[i] for i in t.device], "scene": [sl[i] for i in t.scene],
        "pred_scene": [sl[i] for i in scene_pred],
        "correct": (np.asarray(t.scene) == scene_pred).astype(int),
        "pred_device": [dl[i] for i in device_pred] if device_pred is not None else [""] * len(scene_pred),
    }, columns=list(PREDICTION_COLUMNS))


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


def _write_outputs(out_dir: Path, *, spec, cfg, model, model_cfg, data: CellData, metrics, evaluation, preds_df,
                   attention, features_path) -> None:
    from caanet.modelfile import write_training_model_file  # the self-describing model file (caanet/modelfile.py)

    write_training_model_file(
        out_dir / "model.pt", features_path=features_path, spec=spec, train_config=cfg, model=model,
        model_config=model_cfg, norm_mean=data.mean, norm_std=data.std, scene_labels=data.scene_labels,
        device_labels=data.device_labels, evaluation=evaluation, metrics=metrics)
    write_csv_atomic(out_dir / "metrics.csv", pd.DataFrame(metrics, columns=list(METRICS_COLUMNS)))
    write_csv_atomic(out_dir / "predictions.csv", preds_df)
    if attention is not None:
        with atomic_path(out_dir / "attention.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **attention)
    else:
        with contextlib.suppress(FileNotFoundError):
            (out_dir / "attention.npz").unlink()
    write_json_atomic(out_dir / "evaluation.json", evaluation)


# --------------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------------


@dataclass
class TrainState:
    """What a checkpoint carries besides the model/optimiser/lambda rule: progress and bookkeeping."""

    iteration: int = 0  # completed iterations
    metrics: list = dataclasses.field(default_factory=list)  # metrics.csv rows so far
    sums: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(3))  # losses since the last row
    n_sum: int = 0
    elapsed_s: float = 0.0  # training seconds before this process
    best: dict | None = None  # best_val: {"iteration", "accuracy", "state_dict"}
    val_history: list = dataclasses.field(default_factory=list)  # [[iteration, validation accuracy], ...]


class CellTrainer:
    """The training loop of one cell: one :meth:`step` per iteration, checkpoints, final evaluation."""

    def __init__(self, spec: CellSpec, cfg: TrainConfig, data: CellData, dev: torch.device, say):
        from caanet.models import ModelConfig, build_model

        self.spec, self.cfg, self.data, self.dev, self.say = spec, cfg, data, dev, say
        self.fidelity = get_fidelity(spec.fidelity)
        self.multi = spec.device_source == "predicted"  # multi_task or multi_task_learned: CNN-d and Eq. 2
        self.learned = spec.lambda_rule == "learned"
        n_seen = data.n_seen if data.n_seen is not None else len(data.device_labels)
        self.unseen_policy = unseen_policy_for(cfg.unseen_device, spec.strategy)
        # the test device labels reach the model: teacher forcing, or a multi-task policy that must spot
        # the clips of unseen devices (caanet.devices)
        self.oracle = spec.device_source == "oracle" or (
            self.multi and self.unseen_policy in ("zero", "uniform") and bool(np.any(data.test.device >= n_seen)))
        n_frames, n_mels = data.train.x.shape[1:]
        self.model_cfg = ModelConfig.from_spec(
            spec, n_classes=len(data.scene_labels), n_devices=n_seen, channels=cfg.channels,
            device_channels=cfg.device_channels, input_shape=(int(n_frames), int(n_mels)),
            unseen_device=self.unseen_policy)
        self.model = build_model(self.model_cfg).to(dev)  # initialised from torch's seed (set by the caller)
        self.model.train()
        self.rule = learned_or_switched_rule(spec, cfg, self.fidelity, dev)
        params = list(self.model.parameters()) + (self.rule.parameters() if self.learned else [])
        self.optimizer = Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)  # no torch._dynamo import
        self.state = TrainState()
        self.fingerprint = _fingerprint(spec, cfg, data)
        self._t0 = time.monotonic()
        # bf16 autocast on CUDA where the config and the fidelity allow it (the reference runs float32)
        self.amp = bool(cfg.amp and self.fidelity.bf16_autocast)
        self.train_t, self.test_t = ClipTensors.of(data.train, dev), ClipTensors.of(data.test, dev)
        self.batches = BatchOrder(data.train_idx, cfg.batch_size, spec.seed, dev)
        if self.rule.source == "test":  # CNN-d can only name seen devices: its accuracy is on theirs
            self.lambda_clips, self.lambda_pos = self.test_t, np.flatnonzero(data.test.device < n_seen)
        else:
            self.lambda_clips, self.lambda_pos = self.train_t, data.val_idx

    @property
    def name(self) -> str:
        return f"{self.spec.cell_id} seed {self.spec.seed}"

    def elapsed(self) -> float:
        return self.state.elapsed_s + time.monotonic() - self._t0

    # ---- checkpoints

    def save(self, path: Path, code_version) -> None:
        st = self.state
        save_checkpoint(path, fingerprint=self.fingerprint, model=self.model, optimizer=self.optimizer,
                        rule=self.rule, iteration=st.iteration, metrics=st.metrics, pending=(st.sums, st.n_sum),
                        elapsed=self.elapsed(), best=st.best, val_history=st.val_history, code_version=code_version)

    def resume(self, path: Path, code_version) -> bool:
        """Load ``path`` if present (discarding one of other code); refuse one of another job."""
        if path.exists() and code_version is not None:
            stale = _checkpoint_code_version(path)
            if stale != code_version:
                self.say(f"{path}: written by code {stale!r}, this is {code_version!r}: starting over")
                path.unlink()
        if not path.exists():
            return False
        ck = load_checkpoint(path, self.fingerprint)
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.rule.load_state_dict(ck["lambda_rule"])
        self.state = TrainState(iteration=ck["iteration"], metrics=list(ck["metrics"]),
                                sums=np.array(ck["pending"][0], dtype=np.float64), n_sum=int(ck["pending"][1]),
                                elapsed_s=ck["elapsed_s"], best=ck["best"], val_history=list(ck["val_history"]))
        self._t0 = time.monotonic()
        _set_rng_state(ck["rng"])
        self.say(f"{self.name}: resuming from {path} at iteration {self.state.iteration}")
        return True

    # ---- one iteration

    def step(self, it: int) -> tuple[list[float], float, float | None]:
        """Train on the batch of 0-based iteration ``it``; return ``([loss, loss_scene, loss_device], lr, lambda)``."""
        cfg = self.cfg
        lr = lr_at(it, cfg, self.fidelity)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y, d = _batch(self.train_t, self.batches(it), self.dev)  # indexed on the device
        lam = self.rule.value if self.multi else None
        with _autocast(self.dev, self.amp):
            out = self.model(x, d if self.oracle else None)
        # losses in float32 (the network's outputs may be bf16 under autocast)
        loss_scene = F.nll_loss(out.scene.float(), y)
        loss_device = F.nll_loss(out.device.float(), d) if self.multi else torch.zeros((), device=loss_scene.device)
        if self.learned:
            loss = self.rule.combine(loss_scene, loss_device)
        else:
            loss = loss_scene + lam * loss_device if self.multi else loss_scene
        v_loss, v_scene, v_device = torch.stack([loss.detach(), loss_scene.detach(), loss_device.detach()]).tolist()
        values = {"loss_scene": v_scene, "loss_device": v_device, "loss": v_loss}  # one device->host sync
        for key, v in values.items():
            if not math.isfinite(v):
                raise TrainingError(f"{self.name}: {key} is {v} at iteration {it + 1}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return [values["loss"], values["loss_scene"], values["loss_device"]], lr, lam

    def after_step(self, done: int, values: list[float], lr: float, lam: float | None) -> None:
        """Bookkeeping after ``done`` completed iterations: lambda check, validation, metrics row."""
        cfg, st = self.cfg, self.state
        st.iteration = done
        st.sums += values
        st.n_sum += 1
        dev_acc = None
        if self.multi and self.rule.due(done):
            dev_acc = device_accuracy(self.model, self.lambda_clips, self.lambda_pos, dev=self.dev,
                                      batch_size=cfg.eval_batch_size, amp=self.amp)
            before = self.rule.value
            if self.rule.update(done, dev_acc) != before:
                self.say(f"{self.name}: iteration {done}: CNN-d {self.rule.source} accuracy {dev_acc:.4f}; "
                         f"lambda -> {self.rule.value:g}")
        if cfg.selection == "best_val" and (done % cfg.val_every == 0 or done == cfg.iterations):
            acc = validation_accuracy(self.model, self.data, dev=self.dev, cfg=cfg, oracle=self.oracle,
                                      clips=self.train_t, amp=self.amp)
            st.val_history.append([done, acc])
            if st.best is None or acc > st.best["accuracy"]:
                st.best = {"iteration": done, "accuracy": acc,
                           "state_dict": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}}
        if done % cfg.log_every == 0 or dev_acc is not None or done == cfg.iterations:
            mean = st.sums / st.n_sum
            st.metrics.append({
                "iteration": done, "loss": float(mean[0]), "loss_scene": float(mean[1]),
                "loss_device": float(mean[2]) if self.multi else None, "lr": lr, "lambda": lam,
                "device_acc": dev_acc, "elapsed_s": round(self.elapsed(), 3),
                **learned_lambda_columns(self.rule if self.learned else None),
            })
            st.sums, st.n_sum = np.zeros(3), 0

    # ---- the loop

    def run(self, ck_path: Path, code_version, stop: "_StopFlag", callback=None) -> None:
        """Iterate from the current state to ``cfg.iterations``, checkpointing; SIGTERM -> :class:`Preempted`."""
        cfg = self.cfg
        start = self.state.iteration
        if start >= cfg.iterations:
            return
        bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm
            bar = tqdm(total=cfg.iterations, initial=start, desc=self.spec.cell_id, unit="it", leave=False)
        try:
            for it in range(start, cfg.iterations):
                values, lr, lam = self.step(it)
                done = it + 1
                self.after_step(done, values, lr, lam)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{values[0]:.3f}")
                elif done % cfg.log_every == 0:
                    self.say(f"{self.name}: iteration {done}/{cfg.iterations} loss {self.state.metrics[-1]['loss']:.4f} "
                             f"lr {lr:.3g}" + (f" lambda {lam:g}" if self.multi else ""))
                if done % cfg.checkpoint_every == 0 or stop.signum is not None:
                    self.save(ck_path, code_version)
                if stop.signum is not None:
                    raise Preempted(f"{self.name}: signal {stop.signum} at iteration {done}; checkpoint written to "
                                    f"{ck_path}, resubmit to resume")
                if callback is not None:
                    callback(done)
        finally:
            if bar is not None:
                bar.close()
        self.save(ck_path, code_version)  # a kill while writing the outputs resumes straight to evaluation

    # ---- evaluation

    def unseen_and_lambda_keys(self, per_device: dict, device_pred: np.ndarray | None) -> dict:
        """evaluation.json's keys beyond the paper: seen/unseen devices and means, the unseen-device
        policy, CNN-d's accuracy on the seen devices' test clips, the lambda rule (and learned weights)."""
        data = self.data
        n_seen = data.n_seen if data.n_seen is not None else len(data.device_labels)
        out = seen_unseen_summary(per_device, data.device_labels[:n_seen])
        out["unseen_device_policy"] = self.unseen_policy if out["unseen_devices"] else None
        seen_test = data.test.device < n_seen
        out["device_accuracy_seen"] = (float(np.mean(device_pred[seen_test] == data.test.device[seen_test]))
                                       if device_pred is not None and seen_test.any() else None)
        out["lambda_rule"] = self.spec.lambda_rule
        out["lambda_final"] = float(self.rule.value) if self.multi else None
        out["loss_log_variances"] = self.rule.weighting.log_vars() if self.learned else None
        return out

    def evaluate(self, code_version=None, reference_device: str | None = None) -> tuple[dict, pd.DataFrame, dict | None]:
        """Evaluate the selected weights on the test clips: ``(evaluation, predictions, attention or None)``.

        ``reference_device`` (default: the cache's first device) is left out of ``mean_bc``. Where the cell
        holds a validation split, the selected weights' ``validation_accuracy`` (Avg over its devices) is
        recorded too; ``n_train_clips``/``n_validation_clips`` (and ``*_per_device``) say what it trained on."""
        cfg, data, st = self.cfg, self.data, self.state
        train_seconds = self.elapsed()
        selected = cfg.iterations
        if cfg.selection == "best_val" and st.best is not None:
            self.model.load_state_dict(st.best["state_dict"])
            selected = st.best["iteration"]
        scene_pred, device_pred = predict(self.model, self.test_t, np.arange(len(data.test)), dev=self.dev,
                                          batch_size=cfg.eval_batch_size, amp=self.amp, oracle=self.oracle)
        preds_df = _predictions_frame(data, scene_pred, device_pred)
        counts = held_out_counts(data.train.device, data.train_idx, data.val_idx, data.device_labels)
        present = [d for d in data.device_labels if counts["train"][d] + counts["validation"][d] > 0]
        val_acc = (validation_accuracy(self.model, data, dev=self.dev, cfg=cfg, oracle=self.oracle)
                   if data.val_idx.size else None)
        evaluation = {
            "cell_id": self.spec.cell_id, "spec": self.spec.to_dict(),
            "scene_labels": data.scene_labels, "device_labels": data.device_labels,
            **evaluate_predictions(preds_df, data.scene_labels, data.device_labels, reference_device=reference_device),
            "reference_device": reference_device or data.device_labels[0],
            "iterations": cfg.iterations, "train_seconds": round(train_seconds, 3),
            "device_accuracy": float(np.mean(device_pred == data.test.device)) if device_pred is not None else None,
            "fidelity": self.fidelity.name, "selection": cfg.selection, "selected_iteration": selected,
            "bf16_autocast": bool(cfg.amp and self.dev.type == "cuda"),
            "test_device_labels_used": self.oracle,
            "lambda_source": self.rule.source if self.multi else None,
            "lambda_switched_at": self.rule.switched_at if self.multi else None,
            "n_train_clips": int(data.train_idx.size), "n_validation_clips": int(data.val_idx.size),
            "n_train_clips_per_device": {d: counts["train"][d] for d in present},
            "n_validation_clips_per_device": {d: counts["validation"][d] for d in present},
            "n_test": len(data.test), "validation_accuracy": val_acc,
            "validation_history": st.val_history,
            "code_version": code_version,
        }
        evaluation.update(self.unseen_and_lambda_keys(evaluation["per_device"], device_pred))
        if self.oracle and self.spec.device_source == "predicted":
            evaluation["note"] = (f"unseen-device policy {self.unseen_policy!r}: the true device label of each "
                                  "test clip is used to spot the clips of devices absent from training "
                                  "(oracle information)")
        elif self.oracle:
            evaluation["note"] = ("teacher forcing: the true device label of each test clip is fed to the model "
                                  "(oracle information)")
        attention = _attention_examples(self.model, data, dev=self.dev, cfg=cfg, oracle=self.oracle, amp=self.amp,
                                        clips=self.test_t)
        return evaluation, preds_df, attention


def train_cell(features_path, spec: CellSpec, cfg: TrainConfig, out_dir, *, threads: int | None = None,
               device="auto", log=None, code_version: str | None = None,
               callback: Callable[[int], None] | None = None, score_validation: bool = False,
               reference_device: str | None = None) -> dict:
    """Train and evaluate one table cell; write the contract's outputs into ``out_dir``; return evaluation.json.

    ``threads`` sets torch's intra-op threads (inter-op 1) so a job uses the cores its rule declares.
    ``device``: "auto" (CUDA if available, else CPU) or a torch device. ``log``: a Logger or a
    callable taking a line (plain log lines every ``log_every`` iterations; a tqdm bar when stderr is
    a TTY). ``code_version`` (the workflow's hash of the training code) is recorded in
    ``evaluation.json``; a checkpoint written by other code is discarded (logged) rather than
    resumed, while one of another spec or config is refused. ``callback(iteration)`` is called after
    each completed iteration (a test hook; an exception raised there aborts the job like a kill,
    leaving the last periodic checkpoint). ``score_validation``: hold a validation split out and
    record the accuracy on it (Table I's cells under ``layer_selection: validation``).
    ``reference_device``: the device left out of ``mean_bc`` (default: the cache's first). A fidelity
    that runs float32 (``reference``) turns ``cfg.amp`` off (:func:`effective_config`). Nothing is
    written before the spec, config and cache have been checked.
    """
    features_path, out_dir = Path(features_path), Path(out_dir)
    say = _as_log(log)
    check_spec(features_path, spec, cfg)
    cfg = effective_config(spec, cfg)
    if score_validation and cfg.val_fraction == 0:
        raise ConfigError(f"training.val_fraction: 0 leaves no validation split to select {spec.cell_id}'s layer on "
                          "(grid.layer_selection: validation)")
    _, device_labels = cache_labels(features_path)
    if reference_device is not None and reference_device not in device_labels:
        raise ConfigError(f"reference_device={reference_device!r} is not one of the devices {device_labels} "
                          f"of {features_path}")
    dev = _resolve_device(device)
    _set_threads(threads)
    keep_freed_memory()  # no page faults for every step's activations (caanet.runtime)
    data = seen_devices_first(features_path, prepare_data(features_path, spec, cfg, score_validation=score_validation))
    ck_path = out_dir / "checkpoints" / "last.pt"
    with _determinism(cfg.deterministic, spec.seed), _StopFlag() as stop:
        trainer = CellTrainer(spec, cfg, data, dev, say)
        trainer.resume(ck_path, code_version)
        say(f"{trainer.name} ({trainer.fidelity.name}): {data.train_idx.size} training clips, {data.val_idx.size} "
            f"validation, {len(data.test)} test; {cfg.iterations} iterations on {dev}")
        say(f"{trainer.name}: " + held_out_line(data))
        trainer.run(ck_path, code_version, stop, callback)
        evaluation, preds_df, attention = trainer.evaluate(code_version, reference_device)
        _write_outputs(out_dir, spec=spec, cfg=cfg, model=trainer.model, model_cfg=trainer.model_cfg, data=data,
                       metrics=trainer.state.metrics, evaluation=evaluation, preds_df=preds_df, attention=attention,
                       features_path=features_path)
    with contextlib.suppress(FileNotFoundError):
        ck_path.unlink()
    with contextlib.suppress(OSError):
        ck_path.parent.rmdir()
    bc = evaluation["mean_bc"]
    say(f"{trainer.name}: mean_all {evaluation['mean_all']:.4f}, mean_bc {'-' if bc is None else f'{bc:.4f}'}, "
        f"{evaluation['train_seconds']:.1f} s of training")
    return evaluation
