"""Data for one training job: reading the feature cache, the validation carve-out, normalisation, batches.

* :func:`cache_labels` / :func:`cache_columns` read only the label lists / string columns of a cache
  (cheap checks and the validation carve-out); :func:`load_features` reads clips through
  ``caanet.features.load_cache`` (the contract's reader).
* :func:`carve_validation` holds out whole recording locations (``identifier``) of the training data
  for validation, stratified so each scene and device appears on both sides where possible.
* :func:`fit_normalisation` / :func:`normalise_` standardise each mel bin with the statistics of the
  training clips actually used (the authors' features, reference item 8).
* :func:`batch_indices` makes uniform random mini-batches as a pure function of ``(seed, iteration)``:
  epoch ``e`` is a permutation drawn from ``(seed, e)``, and iteration ``i`` takes positions
  ``i*batch_size ...`` of the concatenated epochs, so a resumed job sees exactly the same batches.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from caanet.errors import CacheError, ConfigError

def _json_attr(path, attrs, key):
    try:
        return json.loads(attrs[key])
    except KeyError:
        raise CacheError(f"{path}: attribute {key!r} is missing") from None
    except (TypeError, ValueError) as e:
        raise CacheError(f"{path}: attribute {key!r} is not valid JSON ({e})") from None


def _file_key(path: Path) -> tuple:
    """Identity of a file's current content for memoising reads: path, inode, size, mtime."""
    st = path.stat()
    return (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)


def cache_labels(path: str | Path) -> tuple[list, list]:
    """``(scene_labels, device_labels)`` from a cache's attributes, without reading any features
    (a cheap check before a job starts; :func:`load_features` validates the whole layout).
    Read once per file content in a process (a job asks several times)."""
    path = Path(path)
    if not path.is_file():
        raise CacheError(f"{path}: feature cache does not exist")
    scenes, devices = _cache_labels(path, _file_key(path))
    return list(scenes), list(devices)


@functools.lru_cache(maxsize=8)
def _cache_labels(path: Path, file_key: tuple) -> tuple[tuple, tuple]:
    from caanet.io import open_hdf5

    try:
        with open_hdf5(path, "r") as f:
            return tuple(_json_attr(path, f.attrs, "scene_labels")), tuple(_json_attr(path, f.attrs, "device_labels"))
    except OSError as e:  # a lock failure is an HDF5LockError (a CacheError), raised as is
        raise CacheError(f"{path}: not a readable HDF5 file ({e})") from None


def cache_columns(path: str | Path) -> dict[str, np.ndarray]:
    """The string columns (filename, scene, device, identifier, split) of a cache, without its features.
    Read once per file content in a process; the arrays are read-only."""
    path = Path(path)
    cache_labels(path)  # existence and readability, with clear errors
    return dict(_cache_columns(path, _file_key(path)))


@functools.lru_cache(maxsize=8)
def _cache_columns(path: Path, file_key: tuple) -> dict[str, np.ndarray]:
    from caanet.io import open_hdf5

    out = {}
    with open_hdf5(path, "r") as f:
        for key in ("filename", "scene", "device", "identifier", "split"):
            if key not in f:
                raise CacheError(f"{path}: dataset {key!r} is missing")
            out[key] = np.asarray(f[key].asstr()[...]).astype(str)
            out[key].flags.writeable = False
    return out


def load_features(path: str | Path, *, split: str | None = None, devices: Sequence[str] | None = None):
    """A split (and some devices) of the cache as a ``caanet.features.FeatureSet`` (the contract's reader)."""
    from caanet.features import load_cache

    return load_cache(path, split=split, devices=list(devices) if devices is not None else None)


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
