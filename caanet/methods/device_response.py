"""What spectrum correction and device-response estimates share: the parallel recordings of the
TRAINING split and their mean STFT magnitude spectra.

DCASE Task 1B and 2020 Task 1A (and the embedded sets) record the same segments with several devices
at once: ``audio/{scene}-{city}-{location}-{segment}-{device}.wav``, the same ``identifier`` (location).
Two training clips are **parallel** when their file names agree but for the device suffix and their
identifiers agree (:func:`segment_key`). For each device ``d`` other than the reference ``r``,
:func:`parallel_pairs` lists the training segments both recorded; :func:`mean_spectra` gives each
clip's mean STFT magnitude over time, ``S(f) = mean_t |X(t, f)|`` (the STFT of the log-mel,
:func:`caanet.features.mean_stft_magnitude`), so that a per-pair ratio ``S_a(f) / S_b(f)`` compares the
devices on the same sound. Only clips of the ``train`` split are read: nothing of the test split
informs a fit.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

from caanet.audio import contiguous_chunks, map_chunks, require_columns
from caanet.errors import DatasetError

RATIO_FLOOR = 1e-10
"""Relative floor of a mean spectrum (times its mean over bins) before a ratio is taken: the DC bin is
removed by the STFT's detrend, and a device's band edges can be empty."""


def segment_key(filename: str, device: str) -> str:
    """The recording's segment: ``filename`` without its ``-{device}`` suffix (and extension), e.g.
    ``audio/bus-lyon-1-2-b.wav`` -> ``audio/bus-lyon-1-2``. DatasetError for a name not ending so."""
    stem = str(filename).rsplit(".", 1)[0]
    suffix = f"-{device}"
    if not stem.endswith(suffix):
        raise DatasetError(f"clip {filename!r}: its name does not end in '-{device}' (its device), so its "
                           "parallel recordings cannot be found (DCASE's layout: scene-city-location-segment-device)")
    return stem[: -len(suffix)]


def training_clips(index: pd.DataFrame) -> pd.DataFrame:
    """The ``train`` split's clips of an audio index (columns ``filename, identifier, device, split,
    audio_path``) with their ``segment`` key; DatasetError when there are none."""
    require_columns(index, ("filename", "identifier", "device", "split", "audio_path"), "audio index")
    train = index[index["split"] == "train"].copy()
    if train.empty:
        raise DatasetError("audio index: no clip in the train split to fit a device response from")
    train["segment"] = [segment_key(f, d) for f, d in zip(train["filename"], train["device"].astype(str))]
    return train.reset_index(drop=True)


def parallel_pairs(train: pd.DataFrame, reference_device: str) -> dict[str, pd.DataFrame]:
    """``{device: pairs}`` for each device of ``train`` (:func:`training_clips`) other than the reference:
    the segments both it and ``reference_device`` recorded, as a frame with columns ``segment``,
    ``reference`` and ``device`` (the two clips' row positions in ``train``), sorted by segment. A
    device without any parallel segment gets an empty frame; DatasetError when the reference device
    has no training clip or two clips share a segment and device."""
    dup = train.duplicated(["segment", "device"], keep=False)
    if dup.any():
        row = train[dup].iloc[0]
        raise DatasetError(f"audio index: several training clips of device {row['device']!r} record segment "
                           f"{row['segment']!r} (e.g. {row['filename']!r})")
    ref = train[train["device"] == reference_device]
    if ref.empty:
        raise DatasetError(f"audio index: the reference device {reference_device!r} has no training clip")
    ref_pos = dict(zip(ref["segment"], ref.index))
    ref_id = dict(zip(ref["segment"], ref["identifier"].astype(str)))
    out = {}
    for device in sorted(set(train["device"]) - {reference_device}):
        clips = train[train["device"] == device]
        keep = [s in ref_pos and ref_id[s] == str(i) for s, i in zip(clips["segment"], clips["identifier"])]
        clips = clips[keep].sort_values("segment")
        out[device] = pd.DataFrame({"segment": clips["segment"].to_numpy(),
                                    "reference": [ref_pos[s] for s in clips["segment"]],
                                    "device": clips.index.to_numpy()}).reset_index(drop=True)
    return out


def _spectra_chunk(paths: Sequence[str], params) -> np.ndarray:
    from caanet.features import clip_signal, mean_stft_magnitude, single_threaded_blas

    with single_threaded_blas():
        return np.stack([mean_stft_magnitude(clip_signal(p, params)[0], params) for p in paths])


def mean_spectra(paths: Sequence[str], params, *, n_jobs: int = 1) -> np.ndarray:
    """``(len(paths), n_fft//2+1)`` float64: each audio file's mean STFT magnitude over time, read and
    length-fitted as the feature cache reads it (:func:`caanet.features.clip_signal`)."""
    paths = [str(p) for p in paths]
    if not paths:
        return np.zeros((0, params.n_fft // 2 + 1))
    chunks = contiguous_chunks(len(paths), n_jobs, per_job=4, max_size=32)
    parts = map_chunks(_spectra_chunk, [paths[r.start:r.stop] for r in chunks], n_jobs, params)
    return np.concatenate(list(parts))


def floored(spectrum: np.ndarray) -> np.ndarray:
    """``spectrum`` (``(..., F)``) floored at :data:`RATIO_FLOOR` times its mean over bins (per row)."""
    spectrum = np.asarray(spectrum, dtype=np.float64)
    floor = RATIO_FLOOR * np.maximum(spectrum.mean(axis=-1, keepdims=True), np.finfo(float).tiny)
    return np.maximum(spectrum, floor)


def mean_pair_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """The mean over pairs of the per-pair ratio ``numerator_k(f) / denominator_k(f)`` of mean spectra
    ``(pairs, F)`` (each floored, :func:`floored`): Kośmider's correction coefficients when the
    numerator is the reference device. ValueError without pairs or for unequal shapes."""
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    if numerator.shape != denominator.shape or numerator.ndim != 2 or numerator.shape[0] == 0:
        raise ValueError(f"mean_pair_ratio: need two equal (pairs >= 1, bins) arrays, got {numerator.shape} "
                         f"and {denominator.shape}")
    return (floored(numerator) / floored(denominator)).mean(axis=0)


def pair_spectra(index: pd.DataFrame, params, reference_device: str, *, n_jobs: int = 1,
                 log: Callable[[str], None] = print) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], np.ndarray]:
    """``(train, pairs, spectra)``: the training clips (:func:`training_clips`), the parallel pairs of
    each non-reference device (:func:`parallel_pairs`) and the mean spectra ``(len(train), F)`` of the
    clips that appear in a pair (rows of the others are NaN), read once."""
    train = training_clips(index)
    pairs = parallel_pairs(train, reference_device)
    used = sorted({int(i) for p in pairs.values() for col in ("reference", "device") for i in p[col]})
    spectra = np.full((len(train), params.n_fft // 2 + 1), np.nan)
    if used:
        spectra[used] = mean_spectra(train.loc[used, "audio_path"].tolist(), params, n_jobs=n_jobs)
    log(f"device responses: {len(used)} training clips read; parallel pairs with reference device "
        f"{reference_device!r}: " + ", ".join(f"{d} {len(p)}" for d, p in pairs.items()))
    return train, pairs, spectra
