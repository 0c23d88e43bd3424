"""The training job of one table cell (paper Sec. III-B, IV-B) and its evaluation per recording device.

:func:`train_cell` trains the model a :class:`~caanet.spec.CellSpec` names on the cache's training
split and writes the contract's outputs (``docs/design.md``, "Cell spec and training"):
``model.pt``, ``metrics.csv``, ``evaluation.json``, ``predictions.csv`` and, for attention heads,
``attention.npz``; ``checkpoints/last.pt`` exists only while it runs.

Strategies (Fig. 2): ``single_device`` trains and tests on one device's clips; ``joint`` on all
devices without device input; ``teacher_forcing`` feeds the true device in training *and* at test
time (oracle information, recorded in ``evaluation.json``); ``multi_task`` adds CNN-d and the loss
``loss_scene + lambda * loss_device`` (Eq. 2), lambda following :class:`LambdaRule`.

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

import caanet
from caanet.data.loader import (
    epoch_permutation,
    cache_columns,
    cache_labels,
    carve_validation,
    chunks,
    fit_normalisation,
    load_features,
    normalise_,
)
from caanet.errors import ConfigError, SpecError, TrainingError
from caanet.evaluation import evaluate_predictions, select_attention_examples
from caanet.fidelity import Fidelity, get_fidelity
from caanet.io import atomic_path, write_csv_atomic, write_json_atomic
from caanet.optim import Adam
from caanet.runtime import keep_freed_memory
from caanet.spec import CellSpec

LOGGER = logging.getLogger("caanet.training")

METRICS_COLUMNS = ("iteration", "loss", "loss_scene", "loss_device", "lr", "lambda", "device_acc", "elapsed_s")
PREDICTION_COLUMNS = ("filename", "identifier", "device", "scene", "pred_scene", "correct", "pred_device")
SELECTIONS = ("last", "best_val")
CHECKPOINT_FORMAT = 1
# TrainConfig fields that change nothing computed, so a checkpoint written under another value resumes.
_RESUME_INDIFFERENT = ("checkpoint_every",)


class Preempted(TrainingError):
    """SIGTERM/SIGINT arrived: the checkpoint is written, the job should be resubmitted to resume."""


# --------------------------------------------------------------------------------------------------
# Hyperparameters
# --------------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Every training hyperparameter; defaults are the paper's (Sec. IV-B) and the authors' code's.

    ``val_fraction`` is the fraction of training clips, taken as whole recording locations, held out
    for validation where it is needed: the paper-mode lambda rule, or ``selection="best_val"``.
    ``selection`` picks the evaluated weights: ``last`` (the paper and the authors) or ``best_val``
    (best validation accuracy every ``val_every`` iterations; never the test set).
    ``amp`` enables bf16 autocast on CUDA only (and only where the fidelity allows it:
    ``Fidelity.mixed_precision``). ``deterministic``: deterministic kernels and a bit-reproducible
    run (CPU resume included); false lets cuDNN autotune (``cudnn.benchmark``), faster on a GPU.
    ``log_every`` sets the metrics.csv rows.
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
    attention_examples_per_class_device: int = 2
    deterministic: bool = True

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
            setattr(obj, key, d.get(key, f.default))
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
                   check_every=cfg.lambda_check_every, sticky=fid.lambda_sticky, source=fid.lambda_source)

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


def needs_validation(cfg: TrainConfig, fidelity: Fidelity) -> bool:
    """Whether the cell holds out a validation split: the paper's lambda source or best-on-validation."""
    return cfg.selection == "best_val" or fidelity.lambda_source == "validation"


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
    if spec.strategy == "multi_task" and fid.lambda_source == "validation" and cfg.val_fraction == 0:
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


def prepare_data(features_path, spec: CellSpec, cfg: TrainConfig) -> CellData:
    """Load the cell's clips, carve the validation split, fit and apply the per-mel-bin normalisation."""
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
    if needs_validation(cfg, fid):
        is_val = np.isin(train.filename, list(validation_filenames(features_path, spec, cfg)))
    train_idx, val_idx = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    needed = cfg.selection == "best_val" or (spec.strategy == "multi_task" and fid.lambda_source == "validation")
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
                   attention) -> None:
    with atomic_path(out_dir / "model.pt") as tmp:
        torch.save({
            "state_dict": model.state_dict(), "spec": spec.to_dict(), "model_config": model_cfg.to_dict(),
            "train_config": cfg.to_dict(), "norm_mean": torch.from_numpy(data.mean.copy()),
            "norm_std": torch.from_numpy(data.std.copy()), "scene_labels": data.scene_labels,
            "device_labels": data.device_labels, "caanet_version": caanet.__version__,
        }, tmp)
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
        self.multi = spec.strategy == "multi_task"
        self.oracle = spec.device_source == "oracle"
        n_frames, n_mels = data.train.x.shape[1:]
        self.model_cfg = ModelConfig.from_spec(
            spec, n_classes=len(data.scene_labels), n_devices=len(data.device_labels), channels=cfg.channels,
            device_channels=cfg.device_channels, input_shape=(int(n_frames), int(n_mels)))
        self.model = build_model(self.model_cfg).to(dev)  # initialised from torch's seed (set by the caller)
        self.model.train()
        self.optimizer = Adam(self.model.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)  # no torch._dynamo import
        self.rule = LambdaRule.from_config(cfg, self.fidelity)
        self.state = TrainState()
        self.fingerprint = _fingerprint(spec, cfg, data)
        self._t0 = time.monotonic()
        # bf16 autocast on CUDA where the config and the fidelity allow it (the reference runs float32)
        self.amp = bool(cfg.amp and self.fidelity.mixed_precision)
        self.train_t, self.test_t = ClipTensors.of(data.train, dev), ClipTensors.of(data.test, dev)
        self.batches = BatchOrder(data.train_idx, cfg.batch_size, spec.seed, dev)
        if self.rule.source == "test":
            self.lambda_clips, self.lambda_pos = self.test_t, np.arange(len(data.test))
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

    def evaluate(self, code_version=None) -> tuple[dict, pd.DataFrame, dict | None]:
        """Evaluate the selected weights on the test clips: ``(evaluation, predictions, attention or None)``."""
        cfg, data, st = self.cfg, self.data, self.state
        train_seconds = self.elapsed()
        selected = cfg.iterations
        if cfg.selection == "best_val" and st.best is not None:
            self.model.load_state_dict(st.best["state_dict"])
            selected = st.best["iteration"]
        scene_pred, device_pred = predict(self.model, self.test_t, np.arange(len(data.test)), dev=self.dev,
                                          batch_size=cfg.eval_batch_size, amp=self.amp, oracle=self.oracle)
        preds_df = _predictions_frame(data, scene_pred, device_pred)
        evaluation = {
            "cell_id": self.spec.cell_id, "spec": self.spec.to_dict(),
            "scene_labels": data.scene_labels, "device_labels": data.device_labels,
            **evaluate_predictions(preds_df, data.scene_labels, data.device_labels),
            "iterations": cfg.iterations, "train_seconds": round(train_seconds, 3),
            "device_accuracy": float(np.mean(device_pred == data.test.device)) if device_pred is not None else None,
            "fidelity": self.fidelity.name, "selection": cfg.selection, "selected_iteration": selected,
            "test_device_labels_used": self.oracle,
            "lambda_source": self.rule.source if self.multi else None,
            "lambda_switched_at": self.rule.switched_at if self.multi else None,
            "n_train": int(data.train_idx.size), "n_val": int(data.val_idx.size), "n_test": len(data.test),
            "validation_history": st.val_history,
            "code_version": code_version,
        }
        if self.oracle:
            evaluation["note"] = ("teacher forcing: the true device label of each test clip is fed to the model "
                                  "(oracle information)")
        attention = _attention_examples(self.model, data, dev=self.dev, cfg=cfg, oracle=self.oracle, amp=self.amp,
                                        clips=self.test_t)
        return evaluation, preds_df, attention


def train_cell(features_path, spec: CellSpec, cfg: TrainConfig, out_dir, *, threads: int | None = None,
               device="auto", log=None, code_version: str | None = None,
               callback: Callable[[int], None] | None = None) -> dict:
    """Train and evaluate one table cell; write the contract's outputs into ``out_dir``; return evaluation.json.

    ``threads`` sets torch's intra-op threads (inter-op 1) so a job uses the cores its rule declares.
    ``device``: "auto" (CUDA if available, else CPU) or a torch device. ``log``: a Logger or a
    callable taking a line (plain log lines every ``log_every`` iterations; a tqdm bar when stderr is
    a TTY). ``code_version`` (the workflow's hash of the training code) is recorded in
    ``evaluation.json``; a checkpoint written by other code is discarded (logged) rather than
    resumed, while one of another spec or config is refused. ``callback(iteration)`` is called after
    each completed iteration (a test hook; an exception raised there aborts the job like a kill,
    leaving the last periodic checkpoint). Nothing is written before the spec, config and cache
    have been checked.
    """
    features_path, out_dir = Path(features_path), Path(out_dir)
    say = _as_log(log)
    check_spec(features_path, spec, cfg)
    dev = _resolve_device(device)
    _set_threads(threads)
    keep_freed_memory()  # no page faults for every step's activations (caanet.runtime)
    data = prepare_data(features_path, spec, cfg)
    ck_path = out_dir / "checkpoints" / "last.pt"
    with _determinism(cfg.deterministic, spec.seed), _StopFlag() as stop:
        trainer = CellTrainer(spec, cfg, data, dev, say)
        trainer.resume(ck_path, code_version)
        say(f"{trainer.name} ({trainer.fidelity.name}): {data.train_idx.size} training clips, {data.val_idx.size} "
            f"validation, {len(data.test)} test; {cfg.iterations} iterations on {dev}")
        trainer.run(ck_path, code_version, stop, callback)
        evaluation, preds_df, attention = trainer.evaluate(code_version)
        _write_outputs(out_dir, spec=spec, cfg=cfg, model=trainer.model, model_cfg=trainer.model_cfg, data=data,
                       metrics=trainer.state.metrics, evaluation=evaluation, preds_df=preds_df, attention=attention)
    with contextlib.suppress(FileNotFoundError):
        ck_path.unlink()
    with contextlib.suppress(OSError):
        ck_path.parent.rmdir()
    bc = evaluation["mean_bc"]
    say(f"{trainer.name}: mean_all {evaluation['mean_all']:.4f}, mean_bc {'-' if bc is None else f'{bc:.4f}'}, "
        f"{evaluation['train_seconds']:.1f} s of training")
    return evaluation
