"""Device impulse response (DIR) augmentation (T. Morocutti, F. Schmid, K. Koutini, G. Widmer, EUSIPCO
2023, arXiv 2305.07499), written from the paper.

With probability ``p`` (0.6), a training clip of the reference device is replaced by the same clip
convolved with another device's impulse response, so the network hears the scene through devices it
has few or no recordings of. The paper convolves with the 66 measured MicIRP responses, which cannot
be fetched here; responses come from one of two sources (:func:`fit`):

* **estimated** (default, ``methods.dir_augment.responses: null``): per seen non-reference device
  ``d``, the magnitude response relative to the reference device from the parallel TRAINING
  recordings (:mod:`caanet.methods.device_response`), ``|H_d(f)| = 1/K sum_k S_{d,k}(f) / S_{r,k}(f)``
  (the inverse direction of spectrum correction's gain), turned into a minimum-phase FIR of
  ``n_taps`` taps (:func:`minimum_phase_fir`: the folded real cepstrum of ``log |H_d|``, computed on an
  8x finer frequency grid against cepstral aliasing, truncated with a half-Hann fade over its last
  eighth). A microphone is close to minimum phase; the relative gain of the device is kept;
* **a folder of WAV/FLAC impulse responses** (``methods.dir_augment.responses: PATH``, e.g. MicIRP):
  every file, down-mixed, resampled to the features' rate (soxr HQ, as the pipeline's audio) and
  scaled to unit energy (a measured response's level is the measurement's, not the device's).

The convolution is true convolution on audio (:func:`convolve`: ``y * h`` cut to the clip's length,
causal), followed by the very log-mel of the cache (:func:`caanet.features.logmel`): no log-mel offset
shortcut. :func:`build_features` precomputes the augmented log-mels of every reference-device training
clip for each response (or ``variants_per_clip`` of them, drawn once per clip) into a derived cache
that the training transform (:class:`DIRAugment`) draws from: per sample of a batch, with probability
``p``, a reference-device clip is swapped for one of its convolved versions, uniformly. Randomness is a
pure function of the cell's seed and the iteration (resume is exact).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Sequence

import numpy as np
import pandas as pd

from caanet.errors import CacheError, ConfigError, DatasetError, TrainingError
from caanet.io import atomic_path, open_hdf5
from caanet.methods.device_response import floored, mean_pair_ratio, pair_spectra

SALT = 0xD1A0
"""Separates this method's random stream from the batch order's and Freq-MixStyle's."""
ASSIGN_SALT = 0xD1A1
"""Seeds the choice of ``variants_per_clip`` responses per clip (fixed: the cache is the same for all cells)."""
OVERSAMPLE = 8
AUDIO_SUFFIXES = (".wav", ".flac")


@dataclass(frozen=True)
class DIRAugmentSettings:
    """``p``: probability that a reference-device training clip of a batch is swapped for a convolved
    version; ``responses``: a folder of impulse responses (WAV/FLAC), or None to estimate them from the
    parallel training recordings; ``n_taps``: length of an estimated response; ``variants_per_clip``:
    convolved versions kept per clip (None: one per response). The schema documents each
    (``#/$defs/methods/properties/dir_augment``)."""

    p: float = 0.6
    responses: str | None = None
    n_taps: int = 1024
    variants_per_clip: int | None = None
    FIT_KEYS: ClassVar[tuple[str, ...]] = ("responses", "n_taps")
    FEATURE_KEYS: ClassVar[tuple[str, ...]] = ("variants_per_clip",)


# --- responses ----------------------------------------------------------------------------------------

def minimum_phase_fir(magnitude: np.ndarray, n_taps: int, oversample: int = OVERSAMPLE) -> np.ndarray:
    """The minimum-phase FIR ``(n_taps,)`` whose magnitude response approximates ``magnitude``, given on
    the ``F = n_fft/2 + 1`` bins of an ``n_fft``-point DFT (DC to Nyquist).

    Homomorphic method (Oppenheim and Schafer, Discrete-Time Signal Processing, Sec. 13.5): the real
    cepstrum of ``log |H|`` on an ``oversample``-times finer grid (``log |H|`` interpolated linearly),
    folded onto positive quefrencies (``c[0]``, ``2 c[n]``, ``c[N/2]``), exponentiated back to a
    minimum-phase spectrum, and its impulse response cut to ``n_taps`` with a half-Hann fade over the
    last eighth. ValueError for fewer than 2 bins or taps."""
    magnitude = np.asarray(magnitude, dtype=np.float64)
    if magnitude.ndim != 1 or magnitude.size < 2 or n_taps < 2:
        raise ValueError(f"minimum_phase_fir: need >= 2 bins and taps, got {magnitude.shape} and {n_taps}")
    n_fft = 2 * (magnitude.size - 1)
    n_fine = max(n_fft * oversample, 2 * n_taps)
    grid = np.linspace(0.0, 1.0, magnitude.size)
    fine = np.linspace(0.0, 1.0, n_fine // 2 + 1)
    log_mag = np.interp(fine, grid, np.log(floored(magnitude)))
    cep = np.fft.irfft(log_mag, n=n_fine)
    fold = np.zeros(n_fine)
    fold[0] = cep[0]
    fold[1:n_fine // 2] = 2.0 * cep[1:n_fine // 2]
    fold[n_fine // 2] = cep[n_fine // 2]
    h = np.fft.irfft(np.exp(np.fft.rfft(fold)), n=n_fine)[:n_taps].copy()
    fade = max(1, n_taps // 8)
    h[-fade:] *= 0.5 * (1.0 + np.cos(np.pi * np.arange(1, fade + 1) / fade))
    return h


def estimate_responses(train: pd.DataFrame, pairs: dict, spectra: np.ndarray, n_taps: int) -> tuple[list, list, list]:
    """``(names, responses, details)``: a minimum-phase FIR per non-reference device with parallel
    training pairs, from the mean over pairs of ``S_d / S_r`` (module docstring)."""
    names, responses, details = [], [], []
    for device, p in pairs.items():
        if not len(p):
            continue
        ratio = mean_pair_ratio(spectra[p["device"].to_numpy()], spectra[p["reference"].to_numpy()])
        names.append(device)
        responses.append(minimum_phase_fir(ratio, n_taps))
        details.append(f"estimated from {len(p)} parallel training pairs")
    return names, responses, details


def read_responses(folder, sample_rate: int) -> tuple[list, list, list]:
    """``(names, responses, details)`` of every WAV/FLAC file in ``folder`` (sorted by name): down-mixed,
    resampled to ``sample_rate`` (soxr HQ) and scaled to unit energy. ConfigError naming
    ``methods.dir_augment.responses`` for a missing folder or one without audio; AudioError naming a
    bad file; DatasetError for a silent response."""
    from caanet.audio import read_audio, resample, to_mono

    folder = Path(folder)
    key = "methods.dir_augment.responses"
    if not folder.is_dir():
        raise ConfigError(f"config key {key!r}: got {str(folder)!r}; expected a folder of impulse responses "
                          "(WAV or FLAC files)")
    files = response_files(folder)
    if not files:
        raise ConfigError(f"config key {key!r}: got {str(folder)!r}; expected a folder holding at least one "
                          f"{'/'.join(AUDIO_SUFFIXES)} file")
    names, responses, details = [], [], []
    for path in files:
        y, sr = read_audio(path)
        h = resample(to_mono(y).astype(np.float64), sr, sample_rate).astype(np.float64)
        energy = float(np.sum(h * h))
        if not energy > 0:
            raise DatasetError(f"{path}: the impulse response is silent (all zeros)")
        names.append(path.stem)
        responses.append(h / np.sqrt(energy))
        details.append(f"{path.name}: {len(y.T) if y.ndim > 1 else len(y)} samples at {sr} Hz, unit energy")
    return names, responses, details


def response_files(folder) -> list[Path]:
    """The impulse-response files of a folder (WAV/FLAC, any case), sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def fit(audio_index: pd.DataFrame, params, settings: DIRAugmentSettings, *, reference_device: str,
        devices: Sequence[str] = (), out_path, n_jobs: int = 1, log: Callable[[str], None] = print) -> dict:
    """The responses (module docstring), written to ``out_path`` (``.npz``: ``names``, ``responses``
    float64 ``(R, L)`` zero-padded, ``lengths``, ``details``, ``source`` (``estimated``/``folder``),
    ``sample_rate``), atomically. DatasetError when no response results (no parallel pair)."""
    if settings.responses is not None:
        names, responses, details = read_responses(settings.responses, params.sample_rate)
        source = "folder"
    else:
        train, pairs, spectra = pair_spectra(audio_index, params, reference_device, n_jobs=n_jobs, log=log)
        names, responses, details = estimate_responses(train, pairs, spectra, settings.n_taps)
        source = "estimated"
    if not responses:
        raise DatasetError(f"device impulse responses: no device has parallel training recordings with reference "
                           f"device {reference_device!r}; give a folder of responses (methods.dir_augment.responses)")
    lengths = np.array([len(h) for h in responses])
    table = np.zeros((len(responses), int(lengths.max())))
    for i, h in enumerate(responses):
        table[i, :len(h)] = h
    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, names=np.array(names), responses=table, lengths=lengths, details=np.array(details),
                     source=np.array(source), sample_rate=np.array(params.sample_rate),
                     reference_device=np.array(reference_device))
    for name, detail in zip(names, details):
        log(f"device impulse response {name}: {detail}")
    return {"names": names, "responses": responses, "details": details, "source": source}


def read_fit(path) -> dict:
    """The responses written by :func:`fit` (``names``, ``responses`` as a list of arrays, ``details``,
    ``source``, ``sample_rate``, ``reference_device``); CacheError naming the file otherwise."""
    try:
        with np.load(path, allow_pickle=False) as z:
            lengths = [int(k) for k in z["lengths"]]
            table = np.asarray(z["responses"], float)
            return {"names": [str(n) for n in z["names"]], "responses": [table[i, :k] for i, k in enumerate(lengths)],
                    "details": [str(d) for d in z["details"]], "source": str(z["source"]),
                    "sample_rate": int(z["sample_rate"]), "reference_device": str(z["reference_device"])}
    except (OSError, KeyError, ValueError, IndexError) as exc:
        raise CacheError(f"{path}: not a device impulse response fit ({exc})") from None


# --- the augmented cache --------------------------------------------------------------------------------

def convolve(y: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``y`` convolved with the impulse response ``h``, causal and cut to ``len(y)`` (float32)."""
    from scipy.signal import oaconvolve

    return oaconvolve(np.asarray(y, np.float64), np.asarray(h, np.float64), mode="full")[: len(y)].astype(np.float32)


def assigned_responses(n_clips: int, n_responses: int, variants: int | None) -> np.ndarray:
    """``(n_clips, K)`` response indices per clip: all of them (``variants`` None or >= the responses),
    else ``variants`` distinct ones per clip, drawn once from a fixed seed (sorted)."""
    if variants is None or variants >= n_responses:
        return np.tile(np.arange(n_responses), (n_clips, 1))
    return np.stack([np.sort(np.random.default_rng(np.random.SeedSequence([ASSIGN_SALT, i]))
                             .choice(n_responses, size=variants, replace=False)) for i in range(n_clips)])


def _augment_chunk(chunk, params):
    from caanet.features import clip_signal, logmel, single_threaded_blas

    paths, assigned, responses = chunk
    out = np.empty((len(paths), assigned.shape[1], params.n_frames, params.n_mels), np.float32)
    with single_threaded_blas():
        for i, path in enumerate(paths):
            y, _ = clip_signal(path, params)
            for k, r in enumerate(assigned[i]):
                logmel(convolve(y, responses[r]), params, out=out[i, k])
    return out


def build_features(audio_index: pd.DataFrame, params, settings: DIRAugmentSettings, fit_path, out_path, *,
                   dataset: str, scene_labels: Sequence[str] = (), device_labels: Sequence[str] = (),
                   reference_device: str, n_jobs: int = 1, log: Callable[[str], None] = print) -> dict:
    """The augmented cache (HDF5, written atomically): ``logmel`` float32 ``(N, K, T, M)``, the log-mel of
    each of the N reference-device TRAINING clips convolved with each of its K responses (``response``
    int16 ``(N, K)``, indices into the attribute ``response_names``), ``filename`` (N,); attributes
    ``derived_method`` (``dir_augment``), ``params``, ``params_hash``, ``dataset``, ``reference_device``,
    ``response_names``, ``method_details`` (JSON)."""
    from caanet.audio import contiguous_chunks, map_chunks
    from caanet.features import _analysis

    fitted = read_fit(fit_path)
    if fitted["sample_rate"] != params.sample_rate:
        raise CacheError(f"{fit_path}: responses at {fitted['sample_rate']} Hz, the features need {params.sample_rate} Hz")
    ref = audio_index[(audio_index["split"] == "train") & (audio_index["device"].astype(str) == reference_device)]
    if ref.empty:
        raise DatasetError(f"{dataset}: the reference device {reference_device!r} has no training clip to augment")
    paths = ref["audio_path"].astype(str).tolist()
    assigned = assigned_responses(len(paths), len(fitted["responses"]), settings.variants_per_clip)
    chunks = contiguous_chunks(len(paths), n_jobs, per_job=4, max_size=16)
    _analysis(params)
    with atomic_path(out_path) as tmp:
        with open_hdf5(tmp, "w") as h5:
            shape = (len(paths), assigned.shape[1], params.n_frames, params.n_mels)
            dset = h5.create_dataset("logmel", shape=shape, dtype=np.float32, chunks=(1,) + shape[1:])
            work = [(paths[r.start:r.stop], assigned[r.start:r.stop], fitted["responses"]) for r in chunks]
            for r, feats in zip(chunks, map_chunks(_augment_chunk, work, n_jobs, params)):
                dset[r.start:r.stop] = feats
            h5.create_dataset("response", data=assigned.astype(np.int16))
            import h5py

            h5.create_dataset("filename", data=np.array(ref["filename"].astype(str).tolist(), dtype=object),
                              dtype=h5py.string_dtype("utf-8"))
            h5.attrs.update({"derived_method": "dir_augment", "params": params.to_json(), "params_hash": params.hash(),
                             "dataset": dataset, "reference_device": reference_device,
                             "response_names": json.dumps(fitted["names"]),
                             "method_details": json.dumps({"source": fitted["source"],
                                                           "responses": dict(zip(fitted["names"], fitted["details"]))})})
    log(f"dir_augment: {len(paths)} training clips of device {reference_device!r} x {assigned.shape[1]} responses "
        f"({fitted['source']}: {', '.join(fitted['names'])}) -> {out_path}")
    return {"n_clips": len(paths), "n_variants": int(assigned.shape[1]), "path": str(out_path)}


def read_augmented(path, params) -> dict:
    """The augmented cache of :func:`build_features`: ``{"logmel" (N, K, T, M), "filename" (N,),
    "response" (N, K), "response_names", "reference_device", "details"}``. CacheError naming the file
    when it is not one or was computed with other feature parameters than ``params``."""
    try:
        with open_hdf5(path, "r") as h5:
            attrs = dict(h5.attrs)
            if attrs.get("derived_method") != "dir_augment":
                raise CacheError(f"{path}: not a dir_augment cache (derived_method {attrs.get('derived_method')!r})")
            if attrs.get("params_hash") != params.hash():
                raise CacheError(f"{path}: computed with feature parameters {attrs.get('params_hash')!r}, the cell's "
                                 f"cache has {params.hash()!r}")
            return {"logmel": h5["logmel"][...], "filename": np.asarray(h5["filename"].asstr()[...], dtype=object),
                    "response": h5["response"][...], "response_names": json.loads(attrs["response_names"]),
                    "reference_device": str(attrs["reference_device"]),
                    "details": json.loads(attrs.get("method_details", "{}"))}
    except (OSError, KeyError) as exc:
        raise CacheError(f"{path}: not a readable dir_augment cache ({exc})") from None


# --- the training transform ---------------------------------------------------------------------------

class DIRAugment:
    """The training transform of a cell: ``transform(x, positions, iteration) -> x``. Each sample of the
    batch that is a reference-device training clip is, with probability ``p``, swapped for one of its
    convolved versions (uniformly), standardised with the cell's per-mel statistics; draws from
    ``(seed, iteration, SALT)``. Returns the same tensor when nothing is swapped."""

    def __init__(self, settings: DIRAugmentSettings, *, seed: int, data, derived, dev, params):
        import torch

        if derived is None:
            raise TrainingError("dir_augment needs its augmented cache (rule build_method_features)")
        aug = read_augmented(derived, params)
        row = {f: i for i, f in enumerate(aug["filename"])}
        self.settings, self.seed = settings, int(seed)
        self.rows = np.array([row.get(str(f), -1) for f in data.train.filename], dtype=np.int64)
        if not (self.rows >= 0).any():
            raise TrainingError(f"{derived}: none of the cell's training clips is among its "
                                f"{len(row)} reference-device ({aug['reference_device']}) clips")
        x = aug["logmel"].astype(np.float32)
        x -= data.mean
        x /= data.std
        self.x = torch.from_numpy(x).to(dev)
        self.n_variants = x.shape[1]
        self.names = aug["response_names"]
        self.details = aug["details"]

    def draws(self, iteration: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """``(swap, variant)`` of ``iteration``: per sample, a uniform draw below ``p`` and a uniform
        variant index (before the reference-device mask); a pure function of seed and iteration."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(iteration), SALT]))
        return rng.random(batch) < self.settings.p, rng.integers(self.n_variants, size=batch)

    def __call__(self, x, positions, iteration: int):
        import torch

        pos = positions.cpu().numpy() if isinstance(positions, torch.Tensor) else np.asarray(positions)
        rows = self.rows[pos]
        swap, variant = self.draws(iteration, len(pos))
        swap &= rows >= 0
        if not swap.any():
            return x
        out = x.clone()
        where = torch.from_numpy(np.flatnonzero(swap)).to(x.device)
        out[where] = self.x[torch.from_numpy(rows[swap]).to(self.x.device),
                            torch.from_numpy(variant[swap]).to(self.x.device)].to(x.dtype)
        return out

    def describe(self) -> dict:
        """What ``evaluation.json`` records of the transform."""
        return {"p": self.settings.p, "responses": self.names, "variants_per_clip": self.n_variants,
                "source": self.details.get("source"), "reference_clips": int((self.rows >= 0).sum())}
