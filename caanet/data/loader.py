"""Data for one training job: the feature cache, the validation carve-out, normalisation, batches.

* :func:`open_cache` opens the cache once (:class:`caanet.features.FeatureCache`, the contract's one
  reader); :func:`prepare_cell_data` reads a cell's clips from it, carves the validation split and
  normalises them into a :class:`CellData`; :func:`seen_devices_first` orders the devices seen in
  training first. :func:`load_features` reads a split in one call (opening and closing the file).
* :func:`carve_validation` holds out whole recording locations (``identifier``) of the training data
  for validation, stratified so each scene and device appears on both sides where possible.
* :func:`fit_normalisation` / :func:`normalise_` standardise each mel bin with the statistics of the
  training clips actually used (the authors' features, reference item 8).
* :func:`batch_indices` makes uniform random mini-batches as a pure function of ``(seed, iteration)``:
  epoch ``e`` is a permutation drawn from ``(seed, e)``, and iteration ``i`` takes positions
  ``i*batch_size ...`` of the concatenated epochs, so a resumed job sees exactly the same batches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from caanet.devices import seen_devices, seen_first_order
from caanet.errors import ConfigError, SpecError, TrainingError


@contextlib.contextmanager
def open_cache(features) -> Iterator:
    """``features`` as an open :class:`caanet.features.FeatureCache`: a path is opened here and closed
    on exit; an open cache is passed through (and left open for its owner)."""
    from caanet.features import FeatureCache  # h5py and the cache layout: only where a cache is read

    if isinstance(features, FeatureCache):
        yield features
        return
    with FeatureCache(features) as cache:
        yield cache


def load_features(path: str | os.PathLike, *, split: str | None = None, devices: Sequence[str] | None = None):
    """A split (and some devices) of the cache as a ``caanet.features.FeatureSet`` (one open, one read)."""
    from caanet.features import load_cache

    return load_cache(path, split=split, devices=list(devices) if devices is not None else None)


# --------------------------------------------------------------------------------------------------
# The clips of one cell
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


def validation_split_filenames(cache, val_fraction: float, seed: int) -> set[str]:
    """Filenames of the validation clips of an open cache (:func:`open_cache`): whole locations carved
    (:func:`carve_validation`) from the training split of ALL devices.

    Carving before any device selection gives every cell of a seed the same validation locations, so a
    single-device cell trains on exactly the device's share of what the joint cell trains on.
    """
    cols = cache.columns
    rows = np.flatnonzero(cols["split"] == "train")
    _, val = carve_validation(cols["identifier"][rows].astype(str), cols["scene"][rows].astype(str),
                              cols["device"][rows].astype(str), val_fraction, seed)
    return set(cols["filename"][rows[val]].astype(str).tolist())


def prepare_cell_data(cache, *, cell_id: str, devices: Sequence[str] | None, hold_out_validation: bool,
                      val_fraction: float, seed: int, require_validation: bool | None = None) -> CellData:
    """Read a cell's clips from an open cache (:func:`open_cache`), carve the validation split (only when
    ``hold_out_validation``), fit and apply the per-mel-bin normalisation.

    ``devices``: the devices whose clips the cell uses (None: all). The validation clips are those of
    :func:`validation_split_filenames` (``val_fraction``, ``seed``). ``require_validation`` (default:
    ``hold_out_validation``): the cell uses the split, so an empty one is an error; a cell that only
    holds it out so as to train on the same clips as the others of its dataset may find none of its
    devices' clips in it (then it trains on all of them, as the others do). Raises SpecError when a
    split has no clips and TrainingError when a required validation split is empty.
    """
    train_fs = cache.select(split="train", devices=devices)
    test_fs = cache.select(split="test", devices=devices)
    train, test = Clips.from_featureset(train_fs), Clips.from_featureset(test_fs)
    for name, fs in (("train", train), ("test", test)):
        if len(fs) == 0:
            raise SpecError(f"cell {cell_id}: the cache {cache.path} has no {name} clips"
                            + (f" of device {devices[0]!r}" if devices else ""))
    is_val = np.zeros(len(train), dtype=bool)
    if hold_out_validation:
        is_val = np.isin(train.filename, list(validation_split_filenames(cache, val_fraction, seed)))
    train_idx, val_idx = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    if require_validation is None:
        require_validation = hold_out_validation
    if hold_out_validation and require_validation and val_idx.size == 0:
        raise TrainingError(f"cell {cell_id}: no validation clips: {cache.path} has too few recording "
                            "locations per scene and device to hold any out of training")
    mean, std = fit_normalisation(train.x, train_idx)
    normalise_(train.x, mean, std)
    normalise_(test.x, mean, std)
    return CellData(train, test, train_idx, val_idx, mean, std, list(train_fs.scene_labels), list(train_fs.device_labels))


def seen_devices_first(cache, data: CellData) -> CellData:
    """``data`` relabelled so that the devices seen in training come first (:mod:`caanet.devices`).

    Seen devices are those with clips in the cache's train split (all devices, before any cell's
    selection; ``cache`` an open cache, :func:`open_cache`). ``device_labels`` becomes
    seen-then-unseen and every device index array follows; ``n_seen`` is set. For data whose devices
    all appear in training nothing but ``n_seen`` changes.
    """
    cols = cache.columns
    seen = seen_devices(data.device_labels, cols["device"][cols["split"] == "train"].astype(str))
    labels, old_to_new = seen_first_order(data.device_labels, seen)
    for clips in (data.train, data.test):
        clips.device = old_to_new[clips.device]
    return dataclasses.replace(data, device_labels=labels, n_seen=len(seen))


def held_out_line(data: CellData) -> str:
    """One log line: the validation clips held out of each device's training clips (count and %)."""
    counts = held_out_counts(data.train.device, data.train_idx, data.val_idx, data.device_labels)
    parts = []
    for d in data.device_labels:
        tr, va = counts["train"].get(d, 0), counts["validation"].get(d, 0)
        if tr + va:
            parts.append(f"{d} {va} of {tr + va} ({100.0 * va / (tr + va):.1f} %)")
    return "validation clips held out per device: " + (", ".join(parts) if data.val_idx.size else "none")


# --------------------------------------------------------------------------------------------------
# Validation carve-out, normalisation, batches
# --------------------------------------------------------------------------------------------------


def carve_validation(identifier: Sequence[str], scene: np.ndarray, device: np.ndarray, fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split training clips into ``(train_idx, val_idx)`` by whole locations (``identifier``), holding
    out the same share ``fraction`` of **every device's** clips (within about one location's worth).

    Scenes are visited in sorted order, each scene's locations in a seeded random order. Greedily, a
    location that reduces ``sum_d ((held_d - fraction * seen_d) / N_d) ** 2`` is held out (the first in
    seeded order reducing it by at least half the best reduction) until none reduces it, where ``held_d``
    and ``seen_d`` count device ``d``'s held-out clips and all its clips in the scenes visited so far
    and ``N_d`` all its clips (a device's surplus or shortfall in one scene is made up in the next).
    Weighting by ``1 / N_d`` balances the devices' *shares*, so a device recorded at few locations (B
    and C of DCASE Task 1B) does not lose a larger share of its training data than device A. A
    location is never taken when it would leave one of its (scene, device) pairs without a training
    location, and no location is on both sides. Balance comes first: with few locations per scene a
    scene may have none in the validation part. ``fraction == 0`` returns an empty validation part.

    Shapes: three length-N sequences; returns two sorted int64 index arrays. Raises
    :class:`ConfigError` for a fraction outside [0, 1) or sequences of different lengths.
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"val_fraction={fraction!r} must be in [0, 1)")
    identifier = np.asarray(identifier).astype(str)
    scene = np.asarray(scene)
    device = np.asarray(device)
    n = identifier.size
    if not (scene.shape == device.shape == (n,)):
        raise ConfigError("carve_validation: identifier, scene and device must have the same length")
    if fraction == 0.0 or n == 0:
        return np.arange(n, dtype=np.int64), np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5A11]))
    devices, totals = np.unique(device, return_counts=True)
    total = dict(zip(devices.tolist(), totals.astype(float).tolist()))
    held = dict.fromkeys(total, 0.0)
    seen = dict.fromkeys(total, 0.0)

    def cost(extra: dict) -> float:
        return sum(((held[d] + extra.get(d, 0) - fraction * seen[d]) / total[d]) ** 2 for d in total)

    val_ids: set[str] = set()
    for s in np.unique(scene):
        rows = np.flatnonzero(scene == s)
        ids = np.unique(identifier[rows])
        ids = ids[rng.permutation(ids.size)].tolist()
        counts = {}
        for i in ids:
            devs, k = np.unique(device[rows[identifier[rows] == i]], return_counts=True)
            counts[i] = dict(zip(devs.tolist(), k.tolist()))
        for d, k in zip(*np.unique(device[rows], return_counts=True)):
            seen[d.item() if hasattr(d, "item") else d] += int(k)
        train_locs = {d: sum(d in counts[i] for i in ids) for d in set(device[rows].tolist())}
        remaining = list(ids)
        while remaining:
            allowed = [i for i in remaining if all(train_locs[d] > 1 for d in counts[i])]
            if not allowed:
                break
            now = cost({})
            gains = [now - cost(counts[i]) for i in allowed]
            top = max(gains)
            if top <= 1e-15:
                break
            # the first location in seeded order that gains at least half the best gain
            best = allowed[next(k for k, g in enumerate(gains) if g >= 0.5 * top)]
            remaining.remove(best)
            val_ids.add(best)
            for d, k in counts[best].items():
                held[d] += k
                train_locs[d] -= 1
    is_val = np.isin(identifier, list(val_ids))
    return np.flatnonzero(~is_val).astype(np.int64), np.flatnonzero(is_val).astype(np.int64)


def held_out_counts(device: Sequence, train_idx: np.ndarray, val_idx: np.ndarray,
                    device_labels: Sequence[str] | None = None) -> dict[str, dict]:
    """``{"train": {device: clips}, "validation": {device: clips}}`` of a carve-out (labels as str).

    ``device`` holds each training clip's device (label, or index into ``device_labels``)."""
    device = np.asarray(device)

    def count(idx):
        labs = device[np.asarray(idx, dtype=np.int64)]
        if device_labels is not None:
            labs = np.asarray(device_labels, dtype=object)[labs.astype(np.int64)] if labs.size else labs
        out = {str(d): 0 for d in (device_labels if device_labels is not None else np.unique(device).tolist())}
        for d, k in zip(*np.unique(labs.astype(str), return_counts=True)):
            out[str(d)] = int(k)
        return out

    return {"train": count(train_idx), "validation": count(val_idx)}


def fit_normalisation(x: np.ndarray, idx: np.ndarray | None = None, *,
                      chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-mel-bin mean and std (float32, length M) over all frames of the clips ``x[idx]``.

    Accumulated in float64 chunk by chunk, so no copy of the whole set is made. A bin with zero
    variance gets std 1 (it carries no information; this avoids dividing by zero).
    """
    if x.ndim != 3:
        raise ConfigError(f"fit_normalisation: expected (clips, frames, mels), got shape {x.shape}")
    idx = np.arange(x.shape[0]) if idx is None else np.asarray(idx)
    if idx.size == 0:
        raise ConfigError("fit_normalisation: no training clips to compute statistics from")
    m = x.shape[2]
    total, total_sq, count = np.zeros(m), np.zeros(m), 0
    for start in range(0, idx.size, chunk):
        block = x[idx[start:start + chunk]].astype(np.float64).reshape(-1, m)
        total += block.sum(axis=0)
        total_sq += np.square(block).sum(axis=0)
        count += block.shape[0]
    mean = total / count
    var = np.maximum(total_sq / count - np.square(mean), 0.0)
    std = np.sqrt(var)
    std[std <= 1e-12] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def normalise_(x: np.ndarray, mean: np.ndarray, std: np.ndarray, *, chunk: int = 256) -> np.ndarray:
    """Standardise ``x`` (clips, frames, mels) in place per mel bin; returns ``x``."""
    for start in range(0, x.shape[0], chunk):
        block = x[start:start + chunk]
        block -= mean
        block /= std
    return x


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the ``n`` training clips in epoch ``epoch``: a pure function of (seed, epoch)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch)])).permutation(n)


def batch_indices(n: int, batch_size: int, seed: int, iteration: int) -> np.ndarray:
    """Positions (into the training clips) of the mini-batch of 0-based ``iteration``.

    Uniform sampling without replacement within an epoch; a batch that straddles two epochs takes
    the end of one permutation and the start of the next.
    """
    if n < 1:
        raise ConfigError("batch_indices: no training clips")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be >= 1")
    start = iteration * batch_size
    parts, filled = [], 0
    while filled < batch_size:
        epoch, offset = divmod(start + filled, n)
        take = min(batch_size - filled, n - offset)
        parts.append(epoch_permutation(n, seed, epoch)[offset:offset + take])
        filled += take
    return np.concatenate(parts).astype(np.int64)


def chunks(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of ``range(n)`` of at most ``size`` elements (for evaluation batches)."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))
