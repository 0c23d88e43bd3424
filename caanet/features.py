"""The paper's log-mel features (Sec. IV-B) and their HDF5 cache (docs/design.md, "Features").

Exactly the authors' features: ``scipy.signal.spectrogram(y, fs, window=hamming(2048, sym=True),
nperseg=2048, noverlap=672, mode='magnitude')`` (density scaling, each frame's mean removed, no
centring), Slaney mel filters from ``librosa.filters.mel`` (64 bins, 20 Hz to 22,050 Hz) applied
to the magnitude, then ``log(x + 1e-8)``; time x mel, 320 frames for 10 s at 44.1 kHz.

The computation is the same maths made fast: the window and the (scaled) mel matrix are built once
per parameter set, frames are strided views, the FFT runs in float64 (float32 misses 1e-4 on pure
tones) and the mel product in float32 (sums of positive terms: no cancellation).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import h5py
import numpy as np
import pandas as pd

import caanet
from caanet.audio import require_columns, contiguous_chunks, map_chunks, read_audio, to_mono
from caanet.config import validate_section
from caanet.errors import AudioError, CacheError, ConfigError, DatasetError, config_error
from caanet.io import atomic_path, open_hdf5

# scipy.signal.get_window names that need no parameter (checked against scipy by tests/test_features.py),
# so validating the usual FeatureParams, e.g. when a training job reads a cache, needs no scipy.signal import.
_PLAIN_WINDOWS = frozenset({"hamming", "hann", "blackman", "bartlett", "boxcar", "triang", "parzen", "bohman",
                            "blackmanharris", "nuttall", "barthann", "flattop", "cosine", "lanczos", "tukey"})

LOGGER = logging.getLogger("caanet.features")
Log = Callable[[str], None]

SPLITS = ("train", "test", "none")
STRING_KEYS = ("filename", "scene", "device", "identifier", "split")
INDEX_COLUMNS = STRING_KEYS + ("audio_path",)
REQUIRED_ATTRS = ("params", "params_hash", "dataset", "scene_labels", "device_labels", "n_padded", "n_cropped")
N_EXAMPLES = 5  # padded / cropped file names kept in the log and the attrs


# ----------------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------------

_INT_FIELDS = ("sample_rate", "n_fft", "hop_length", "n_mels")
_FLOAT_FIELDS = ("fmin", "fmax", "log_offset", "clip_seconds")


@dataclass(frozen=True)
class FeatureParams:
    """Log-mel parameters; the defaults are the paper's (Sec. IV-B) and the authors' code's."""

    sample_rate: int = 44100
    n_fft: int = 2048
    hop_length: int = 1376  # 2048 - 672 (the paper's overlap)
    window: str = "hamming"  # symmetric, as scipy.signal.get_window(..., fftbins=False)
    n_mels: int = 64
    fmin: float = 20.0
    fmax: float = 22050.0
    log_offset: float = 1e-8
    clip_seconds: float = 10.0

    def __post_init__(self):
        """Each field is checked by the schema (``#/$defs/feature_params``: types and ranges), then
        normalised (ints and floats, numpy scalars from cache attributes included); the rules that
        span fields are :meth:`_validate`'s. Errors are ConfigErrors naming ``features.<key>``."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values = {k: v.item() if isinstance(v, np.generic) else v for k, v in values.items()}
        validate_section(values, "#/$defs/feature_params", "features")
        for key in _INT_FIELDS:
            object.__setattr__(self, key, int(values[key]))
        for key in _FLOAT_FIELDS:
            object.__setattr__(self, key, float(values[key]))
        self._validate()

    def _validate(self) -> None:
        """The rules that span fields: ``fmin < fmax <= sample_rate / 2``, a clip of at least ``n_fft``
        samples, and a window that scipy knows at ``n_fft``."""
        def bad(key, expected):
            raise config_error(f"features.{key}", getattr(self, key), expected)

        if not self.fmin < self.fmax:
            bad("fmin", f"a frequency below fmax={self.fmax}")
        if self.fmax > self.sample_rate / 2:
            bad("fmax", f"a frequency up to the Nyquist frequency {self.sample_rate / 2} (sample_rate / 2)")
        if self.n_samples < self.n_fft:
            bad("clip_seconds", f"at least n_fft={self.n_fft} samples (it gives {self.n_samples})")
        if self.window not in _PLAIN_WINDOWS:  # scipy.signal costs ~0.4 s to import: only for other names
            import scipy.signal

            try:
                scipy.signal.get_window(self.window, self.n_fft, fftbins=False)
            except (ValueError, TypeError) as exc:
                bad("window", f"a scipy window name ({exc})")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, where: str = "features") -> "FeatureParams":
        """Build from a mapping (config or cache attrs), checked against the schema's
        ``feature_params`` (unknown keys, types, ranges: ConfigError naming ``where.<key>``)."""
        d = dict(d or {})
        validate_section({k: v.item() if isinstance(v, np.generic) else v for k, v in d.items()},
                         "#/$defs/feature_params", where)
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): what :meth:`hash` digests."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def hash(self) -> str:
        """Short stable hex digest of the fields (names the cache file)."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()[:10]

    @property
    def n_samples(self) -> int:
        """Samples per clip: ``round(clip_seconds * sample_rate)`` (441,000)."""
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def n_frames(self) -> int:
        """Frames per clip: ``1 + (n_samples - n_fft) // hop_length`` (320), no centring."""
        return 1 + (self.n_samples - self.n_fft) // self.hop_length


def cache_filename(dataset: str, params: FeatureParams) -> str:
    """The cache file name of a dataset and parameter set: ``{dataset}-{hash}.h5``."""
    return f"{dataset}-{params.hash()}.h5"


# ----------------------------------------------------------------------------------------------
# Log-mel
# ----------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _analysis(params: FeatureParams) -> tuple[np.ndarray, np.ndarray]:
    """The float64 analysis window and the float32 ``(n_fft//2+1, n_mels)`` mel matrix.

    The matrix includes scipy's density scaling of the STFT, ``sqrt(1 / (fs * sum(win**2)))``.
    """
    import librosa  # slow import: only where the filters are built
    import scipy.signal

    window = scipy.signal.get_window(params.window, params.n_fft, fftbins=False).astype(np.float64)
    mel = librosa.filters.mel(
        sr=params.sample_rate, n_fft=params.n_fft, n_mels=params.n_mels,
        fmin=params.fmin, fmax=params.fmax, htk=False, norm="slaney",
    )
    scale = np.sqrt(1.0 / (params.sample_rate * np.sum(window * window)))
    mel_t = np.ascontiguousarray((mel.T.astype(np.float64) * scale).astype(np.float32))
    window.setflags(write=False)
    mel_t.setflags(write=False)
    return window, mel_t


FRAME_BLOCK = 32  # frames per pass: keeps the float64 working set in L2 (measured 2x faster than one pass)


def _frames(y: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Strided ``(n_frames, n_fft)`` view of a 1-D signal: scipy's framing (no padding)."""
    n = y.shape[-1]
    if n < params.n_fft:
        raise AudioError(f"logmel: the signal has {n} samples, fewer than n_fft={params.n_fft}")
    view = np.lib.stride_tricks.sliding_window_view(y, params.n_fft)
    return view[:: params.hop_length]


def _magnitude_blocks(frames: np.ndarray, params: FeatureParams):
    """``(start, |STFT|)`` of consecutive blocks of ``(T, n_fft)`` frames: float64 ``(block, n_fft//2+1)``
    magnitudes without the density scaling (scipy's framing, detrend and window; the scaling is in the
    mel matrix of :func:`_analysis`)."""
    import scipy.fft  # here, not at the top: a training job reads caches without importing scipy

    window, _ = _analysis(params)
    for start in range(0, frames.shape[0], FRAME_BLOCK):
        block = frames[start:start + FRAME_BLOCK]
        means = block.mean(axis=-1, dtype=np.float64)
        x = np.subtract(block, means[:, None], dtype=np.float64)  # detrend='constant'
        x *= window
        yield start, np.abs(scipy.fft.rfft(x, axis=-1, overwrite_x=True))  # float64: float32 misses 1e-4 on tones


def _logmel_frames(frames: np.ndarray, params: FeatureParams, out: np.ndarray,
                   gain: np.ndarray | None = None) -> np.ndarray:
    """Write the log-mel of ``(T, n_fft)`` frames into ``out`` ``(T, n_mels)`` float32; ``gain``
    ``(n_fft//2+1,)`` multiplies each STFT magnitude bin before the mel filterbank."""
    _, mel_t = _analysis(params)
    for start, mag in _magnitude_blocks(frames, params):
        if gain is not None:
            mag *= gain
        np.matmul(mag.astype(np.float32), mel_t, out=out[start:start + FRAME_BLOCK])
    out += np.float32(params.log_offset)
    return np.log(out, out=out)


def _check_gain(gain, params: FeatureParams) -> np.ndarray | None:
    if gain is None:
        return None
    gain = np.asarray(gain, dtype=np.float64)
    if gain.shape != (params.n_fft // 2 + 1,) or not np.all(np.isfinite(gain)) or np.any(gain < 0):
        raise ValueError(f"logmel: gain must be {params.n_fft // 2 + 1} finite values >= 0 (one per STFT bin), "
                         f"got shape {gain.shape}")
    return gain


def mean_stft_magnitude(y: np.ndarray, params: FeatureParams = FeatureParams()) -> np.ndarray:
    """The mean over frames of the STFT magnitude of a mono signal: float64 ``(n_fft//2+1,)``, the
    STFT of :func:`logmel` (framing, detrend, window; no density scaling). The spectra that spectrum
    correction and device-response estimates compare (:mod:`caanet.methods.device_response`)."""
    frames = _frames(_as_signal(y, 1), params)
    total = np.zeros(params.n_fft // 2 + 1)
    for _, mag in _magnitude_blocks(frames, params):
        total += mag.sum(axis=0)
    return total / frames.shape[0]


def _as_signal(y, ndim: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != ndim:
        want = "a mono 1-D signal" if ndim == 1 else "a (batch, n_samples) array"
        raise AudioError(f"logmel: expected {want}, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.floating):
        y = y.astype(np.float32)
    return y


def logmel(y: np.ndarray, params: FeatureParams = FeatureParams(), *, out: np.ndarray | None = None,
           gain: np.ndarray | None = None) -> np.ndarray:
    """Log-mel spectrogram ``(n_frames, n_mels)`` float32 of a mono signal at params.sample_rate.

    ``out``: an optional C-contiguous float32 ``(n_frames, n_mels)`` array to write into. ``gain``: an
    optional ``(n_fft//2+1,)`` per-bin factor on the STFT magnitude before the mel filterbank
    (spectrum correction, :mod:`caanet.methods.spectrum_correction`); ValueError for another shape.
    """
    gain = _check_gain(gain, params)
    frames = _frames(_as_signal(y, 1), params)
    shape = (frames.shape[0], params.n_mels)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"logmel: out must be C-contiguous float32 {shape}, got {out.dtype} {out.shape}")
    return _logmel_frames(frames, params, out, gain)


def logmel_batch(y: np.ndarray, params: FeatureParams = FeatureParams()) -> np.ndarray:
    """:func:`logmel` of each row of ``(batch, n_samples)``: ``(batch, n_frames, n_mels)``."""
    y = _as_signal(y, 2)
    n_frames = 1 + (y.shape[1] - params.n_fft) // params.hop_length if y.shape[1] >= params.n_fft else 0
    out = np.empty((y.shape[0], n_frames, params.n_mels), dtype=np.float32)
    for row, dest in zip(y, out):
        logmel(row, params, out=dest)
    return out


def fit_length(y: np.ndarray, n_samples: int) -> tuple[np.ndarray, str]:
    """Zero-pad (at the end) or crop (keeping the start) the last axis to ``n_samples``.

    Returns the signal and its status: ``"ok"``, ``"padded"`` or ``"cropped"``.
    """
    n = y.shape[-1]
    if n == n_samples:
        return y, "ok"
    if n > n_samples:
        return y[..., :n_samples], "cropped"
    pad = [(0, 0)] * (y.ndim - 1) + [(0, n_samples - n)]
    return np.pad(y, pad), "padded"


def clip_signal(path: str | os.PathLike, params: FeatureParams) -> tuple[np.ndarray, str]:
    """One audio file as the cache sees it: down-mixed, length fitted (and its fit_length status)."""
    y, sr = read_audio(path)
    if sr != params.sample_rate:
        raise AudioError(
            f"{path}: sample rate {sr} Hz, the features need {params.sample_rate} Hz (run prepare_audio first)"
        )
    return fit_length(to_mono(y), params.n_samples)


def clip_features(path: str | os.PathLike, params: FeatureParams, *,
                  out: np.ndarray | None = None, gain: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """Log-mel of one audio file (:func:`clip_signal`) and its fit_length status; ``gain`` as :func:`logmel`."""
    y, status = clip_signal(path, params)
    return logmel(y, params, out=out, gain=gain), status


def single_threaded_blas():
    """Limit BLAS to one thread: parallelism is over processes, and OpenBLAS's idle threads spin.

    (Measured: the mel product with 2 OpenBLAS threads made a clip's log-mel 3x slower.)
    threadpoolctl comes with librosa (via scikit-learn); without it this is a no-op.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _features_chunk(paths: Sequence[str], params: FeatureParams,
                    gains: Sequence[np.ndarray | None] | None = None) -> tuple[np.ndarray, list[str]]:
    out = np.empty((len(paths), params.n_frames, params.n_mels), dtype=np.float32)
    statuses = []
    with single_threaded_blas():
        for i, path in enumerate(paths):
            statuses.append(clip_features(path, params, out=out[i], gain=None if gains is None else gains[i])[1])
    return out, statuses


def _gain_chunk(chunk: tuple[Sequence[str], Sequence[np.ndarray | None]], params: FeatureParams):
    return _features_chunk(chunk[0], params, chunk[1])


# ----------------------------------------------------------------------------------------------
# HDF5 cache
# ----------------------------------------------------------------------------------------------

def _check_labels(df: pd.DataFrame, column: str, labels: Sequence[str]) -> None:
    allowed = set(labels)
    bad = ~df[column].isin(allowed)
    if bad.any():
        row = df[bad].iloc[0]
        raise DatasetError(
            f"audio index: clip {row['filename']!r} has {column} label {row[column]!r}, "
            f"not one of {list(labels)} ({int(bad.sum())} such clip(s))"
        )


def _write_strings(h5: h5py.File, key: str, values: Iterable[str]) -> None:
    data = np.array([str(v) for v in values], dtype=object)
    h5.create_dataset(key, data=data, dtype=h5py.string_dtype("utf-8"))


def build_cache(
    audio_index_df: pd.DataFrame,
    out_path: str | os.PathLike,
    params: FeatureParams,
    *,
    dataset: str,
    scene_labels: Sequence[str],
    device_labels: Sequence[str],
    n_jobs: int = 1,
    log: Log | None = None,
    gains: dict[str, np.ndarray] | None = None,
    extra_attrs: dict[str, str] | None = None,
) -> dict:
    """Compute the log-mel of every clip and write the HDF5 cache of the contract, atomically.

    Rows keep the index's order; workers compute contiguous chunks and the parent writes them in
    order, so the file is the same for any ``n_jobs``. Clips of the wrong length are zero-padded or
    cropped to ``params.clip_seconds`` and counted (attrs ``n_padded``/``n_cropped``, and the log).
    ``gains`` (``{device: (n_fft//2+1,) gain}``, every device of the index): each clip's STFT magnitude
    is multiplied by its device's gain before the mel filterbank (a derived cache: spectrum
    correction); ``extra_attrs``: more string attributes (what the cache derives from). Returns a
    small summary dict.
    """
    log = LOGGER.info if log is None else log
    df = audio_index_df.reset_index(drop=True)
    require_columns(df, INDEX_COLUMNS, "audio index")
    if len(df) == 0:
        raise DatasetError("audio index: no clips to compute features for")
    _check_labels(df, "scene", scene_labels)
    _check_labels(df, "device", device_labels)
    bad_split = ~df["split"].isin(SPLITS)
    if bad_split.any():
        row = df[bad_split].iloc[0]
        raise DatasetError(f"audio index: clip {row['filename']!r} has split {row['split']!r}, not one of {list(SPLITS)}")

    n, t, m = len(df), params.n_frames, params.n_mels
    paths = df["audio_path"].astype(str).tolist()
    names = df["filename"].astype(str).tolist()
    chunks = contiguous_chunks(n, n_jobs, per_job=4, max_size=32)
    clip_gains = None
    if gains is not None:
        missing = sorted(set(df["device"]) - set(gains))
        if missing:
            raise DatasetError(f"audio index: no gain for device(s) {missing} (gains given for {sorted(gains)})")
        checked = {d: _check_gain(g, params) for d, g in gains.items()}
        clip_gains = [checked[d] for d in df["device"]]
    _analysis(params)  # build window and filters once, before workers fork
    examples: dict[str, list[str]] = {"padded": [], "cropped": []}
    counts = {"ok": 0, "padded": 0, "cropped": 0}

    with atomic_path(out_path) as tmp:
        with open_hdf5(tmp, "w") as h5:
            dset = h5.create_dataset("logmel", shape=(n, t, m), dtype=np.float32, chunks=(min(16, n), t, m))
            path_chunks = [paths[r.start:r.stop] for r in chunks]
            if clip_gains is None:
                results = map_chunks(_features_chunk, path_chunks, n_jobs, params)
            else:
                results = map_chunks(_gain_chunk, [(p, clip_gains[r.start:r.stop]) for p, r in zip(path_chunks, chunks)],
                                     n_jobs, params)
            for rows, (feats, statuses) in zip(chunks, results):
                dset[rows.start:rows.stop] = feats
                for i, status in zip(rows, statuses):
                    counts[status] += 1
                    if status in examples and len(examples[status]) < N_EXAMPLES:
                        examples[status].append(names[i])
            for key in STRING_KEYS:
                _write_strings(h5, key, df[key])
            h5.attrs.update({
                "params": params.to_json(),
                "params_hash": params.hash(),
                "dataset": str(dataset),
                "scene_labels": json.dumps(list(scene_labels)),
                "device_labels": json.dumps(list(device_labels)),
                "n_padded": counts["padded"],
                "n_cropped": counts["cropped"],
                "padded_examples": json.dumps(examples["padded"]),
                "cropped_examples": json.dumps(examples["cropped"]),
                "caanet_version": caanet.__version__,
                **{str(k): str(v) for k, v in (extra_attrs or {}).items()},
            })

    log(f"build_cache: {n} clips of {dataset} -> {out_path} ({t} frames x {m} mels)")
    for status in ("padded", "cropped"):
        if counts[status]:
            log(f"build_cache: {counts[status]} clip(s) {status} to {params.clip_seconds:g} s, e.g. {examples[status]}")
    return {"n_clips": n, "n_padded": counts["padded"], "n_cropped": counts["cropped"], "path": str(out_path)}


@dataclass
class FeatureSet:
    """Clips of a cache: features, integer labels and their names (docs/design.md)."""

    x: np.ndarray  # (N, T, M) float32
    scene: np.ndarray  # (N,) int64 index into scene_labels
    device: np.ndarray  # (N,) int64 index into device_labels
    filename: np.ndarray  # (N,) str
    identifier: np.ndarray  # (N,) str
    scene_labels: list[str]
    device_labels: list[str]
    params: FeatureParams
    split: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))  # (N,) str
    attrs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _json_attr(path, attrs, key):
    """``attrs[key]`` decoded as JSON; a missing or malformed attribute raises CacheError naming both."""
    try:
        return json.loads(attrs[key])
    except KeyError:
        raise CacheError(f"{path}: attribute {key!r} is missing") from None
    except (TypeError, ValueError) as exc:
        raise CacheError(f"{path}: attribute {key!r} is not valid JSON ({exc})") from exc


def _read_header(path: Path, h5: h5py.File) -> tuple[FeatureParams, dict, dict[str, np.ndarray]]:
    """Validate everything but the feature values; return params, attrs and the string columns."""
    for key in ("logmel",) + STRING_KEYS:
        if key not in h5:
            raise CacheError(f"{path}: dataset {key!r} is missing")
    for key in REQUIRED_ATTRS:
        if key not in h5.attrs:
            raise CacheError(f"{path}: attribute {key!r} is missing")
    attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in h5.attrs.items()}
    try:
        params = FeatureParams.from_dict(_json_attr(path, attrs, "params"))
    except ConfigError as exc:
        raise CacheError(f"{path}: attribute 'params': {exc}") from exc
    if attrs["params_hash"] != params.hash():
        raise CacheError(f"{path}: attribute 'params_hash' is {attrs['params_hash']!r}, the params hash to {params.hash()!r}")
    for key in ("scene_labels", "device_labels"):
        labels = _json_attr(path, attrs, key)
        if not isinstance(labels, list) or not all(isinstance(v, str) for v in labels):
            raise CacheError(f"{path}: attribute {key!r} must be a JSON list of strings, got {labels!r}")
        attrs[key] = labels

    logmel_ds = h5["logmel"]
    if not isinstance(logmel_ds, h5py.Dataset) or logmel_ds.dtype != np.float32:
        raise CacheError(f"{path}: dataset 'logmel' must be float32, got {getattr(logmel_ds, 'dtype', type(logmel_ds))}")
    if logmel_ds.ndim != 3 or logmel_ds.shape[1:] != (params.n_frames, params.n_mels):
        raise CacheError(
            f"{path}: dataset 'logmel' has shape {logmel_ds.shape}, expected (N, {params.n_frames}, {params.n_mels})"
        )
    n = logmel_ds.shape[0]
    columns = {}
    for key in STRING_KEYS:
        ds = h5[key]
        if not isinstance(ds, h5py.Dataset) or ds.ndim != 1 or ds.shape[0] != n or ds.dtype.kind not in "OSU":
            raise CacheError(f"{path}: dataset {key!r} must be {n} strings, got {getattr(ds, 'shape', None)} {getattr(ds, 'dtype', None)}")
        columns[key] = np.asarray(ds.asstr()[...], dtype=object)
    for key, labels in (("scene", attrs["scene_labels"]), ("device", attrs["device_labels"])):
        bad = ~np.isin(columns[key], labels)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise CacheError(
                f"{path}: dataset {key!r} row {i} ({columns['filename'][i]!r}) has label {columns[key][i]!r}, "
                f"not in attribute '{key}_labels' {labels}"
            )
    bad = ~np.isin(columns["split"], SPLITS)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CacheError(f"{path}: dataset 'split' row {i} has value {columns['split'][i]!r}, not one of {list(SPLITS)}")
    return params, attrs, columns


def _open(path: str | os.PathLike) -> tuple[Path, h5py.File]:
    path = Path(path)
    if not path.is_file():
        raise CacheError(f"{path}: feature cache not found")
    try:
        return path, open_hdf5(path, "r")
    except OSError as exc:  # a lock failure is an HDF5LockError (a CacheError), raised as is
        raise CacheError(f"{path}: not a readable HDF5 file ({exc})") from exc


def _as_list(value, name: str, allowed: Sequence[str], path: Path) -> list[str] | None:
    if value is None:
        return None
    values = [value] if isinstance(value, str) else list(value)
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ConfigError(f"load_cache({path}): {name}={unknown} not among {list(allowed)}")
    return values


def _read_rows(ds: h5py.Dataset, index: np.ndarray, block: int = 256) -> np.ndarray:
    """Rows ``index`` (sorted) of a (N, T, M) dataset, read in contiguous blocks, not clip by clip."""
    out = np.empty((len(index),) + ds.shape[1:], dtype=ds.dtype)
    if len(index) == ds.shape[0]:
        if len(index):
            ds.read_direct(out)
        return out
    buf = None
    pos = 0
    while pos < len(index):
        start = int(index[pos])
        end = int(np.searchsorted(index, start + block, side="left"))
        rows = index[pos:end]
        span = int(rows[-1]) + 1 - start
        if span == len(rows):  # a contiguous run: read straight into place
            ds.read_direct(out, np.s_[start:start + span], np.s_[pos:end])
        else:  # read the block once into a reused buffer, keep the selected rows
            if buf is None:
                buf = np.empty((block,) + ds.shape[1:], dtype=ds.dtype)
            ds.read_direct(buf, np.s_[start:start + span], np.s_[0:span])
            np.take(buf, rows - start, axis=0, out=out[pos:end])
        pos = end
    return out


class FeatureCache:
    """An open feature cache: the one reader of the contract's HDF5 layout (docs/design.md, "Features").

    Opening validates everything but the feature values (datasets, attributes, labels, splits) and
    reads the string columns once; :meth:`select` then reads the log-mel rows of a split and/or some
    devices from the same open file. A training job opens its cache once and passes this object on
    (labels, columns for the validation carve-out, clips, feature parameters for the model file).

    Attributes: ``path``; ``params`` (:class:`FeatureParams`); ``attrs`` (dict, label lists decoded);
    ``columns`` (``filename``, ``scene``, ``device``, ``identifier``, ``split``: (N,) object arrays of
    str); ``scene_labels`` / ``device_labels`` (lists); ``n_clips``. Use as a context manager, or call
    :meth:`close`. Raises CacheError naming the file and key for a missing, unreadable or malformed
    cache (a lock failure is an :class:`caanet.errors.HDF5LockError`, see :func:`caanet.io.open_hdf5`).
    """

    def __init__(self, path: str | os.PathLike):
        self.path, self._h5 = _open(path)
        try:
            self.params, self.attrs, self.columns = _read_header(self.path, self._h5)
        except BaseException:
            self._h5.close()
            raise
        self.scene_labels: list[str] = list(self.attrs["scene_labels"])
        self.device_labels: list[str] = list(self.attrs["device_labels"])

    @property
    def n_clips(self) -> int:
        return int(len(self.columns["filename"]))

    def select(self, *, split=None, devices=None) -> FeatureSet:
        """The clips of ``split`` (``train``, ``test``, ``none`` or a list) and ``devices`` (a label or a
        list), in cache order, as a :class:`FeatureSet` (x: (N, T, M) float32). Unknown selections
        raise ConfigError."""
        if not self._h5:
            raise CacheError(f"{self.path}: the cache was closed before its clips were read")
        cols = self.columns
        splits = _as_list(split, "split", SPLITS, self.path)
        devs = _as_list(devices, "devices", self.device_labels, self.path)
        mask = np.ones(self.n_clips, dtype=bool)
        if splits is not None:
            mask &= np.isin(cols["split"], splits)
        if devs is not None:
            mask &= np.isin(cols["device"], devs)
        index = np.flatnonzero(mask)
        x = _read_rows(self._h5["logmel"], index)
        scene_pos = {s: i for i, s in enumerate(self.scene_labels)}
        device_pos = {d: i for i, d in enumerate(self.device_labels)}
        return FeatureSet(
            x=x,
            scene=np.array([scene_pos[s] for s in cols["scene"][index]], dtype=np.int64),
            device=np.array([device_pos[d] for d in cols["device"][index]], dtype=np.int64),
            filename=cols["filename"][index],
            identifier=cols["identifier"][index],
            scene_labels=list(self.scene_labels),
            device_labels=list(self.device_labels),
            params=self.params,
            split=cols["split"][index],
            attrs=self.attrs,
        )

    def summary(self) -> dict:
        """Counts per device, scene and split (and their crossings), the parameters and the attributes
        (:func:`cache_summary`), from the header read at opening: no feature is read."""
        path, params, attrs, cols = self.path, self.params, self.attrs, self.columns
        scenes, devices = attrs["scene_labels"], attrs["device_labels"]
        dev, scene, split = cols["device"], cols["scene"], cols["split"]
        return {
            "path": str(path),
            "dataset": attrs["dataset"],
            "n_clips": int(len(dev)),
            "params": params.to_dict(),
            "params_hash": attrs["params_hash"],
            "n_frames": params.n_frames,
            "n_mels": params.n_mels,
            "scene_labels": scenes,
            "device_labels": devices,
            "by_device": _counts(dev, devices),
            "by_scene": _counts(scene, scenes),
            "by_split": _counts(split, SPLITS),
            "device_scene": {d: _counts(scene[dev == d], scenes) for d in devices},
            "device_split": {d: _counts(split[dev == d], SPLITS) for d in devices},
            "n_padded": int(attrs["n_padded"]),
            "n_cropped": int(attrs["n_cropped"]),
            "padded_examples": json.loads(attrs.get("padded_examples", "[]")),
            "cropped_examples": json.loads(attrs.get("cropped_examples", "[]")),
            "caanet_version": attrs.get("caanet_version"),
        }

    def logmel_rows(self, index) -> np.ndarray:
        """The log-mel of the clips at the sorted positions ``index`` (into the cache's rows):
        ``(len(index), T, M)`` float32, read in contiguous blocks."""
        index = np.asarray(index, dtype=np.int64)
        if index.size and (np.any(np.diff(index) <= 0) or index[0] < 0 or index[-1] >= self.n_clips):
            raise ValueError(f"{self.path}: row positions must be sorted, distinct and in [0, {self.n_clips})")
        return _read_rows(self._h5["logmel"], index)

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> "FeatureCache":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


def load_cache(path: str | os.PathLike, *, split=None, devices=None) -> FeatureSet:
    """Load (a split and/or some devices of) a feature cache, validating its layout
    (:class:`FeatureCache` opened, :meth:`FeatureCache.select`, closed).

    ``split`` is one of ``train``, ``test``, ``none`` (or a list); ``devices`` a device label or a
    list. Layout errors raise CacheError naming the file and the key.
    """
    with FeatureCache(path) as cache:
        return cache.select(split=split, devices=devices)


def _counts(values: np.ndarray, labels: Sequence[str]) -> dict[str, int]:
    return {label: int(np.sum(values == label)) for label in labels}


def cache_summary(path: str | os.PathLike) -> dict:
    """Counts per device, scene and split (and their crossings) of a cache, without its features
    (:meth:`FeatureCache.summary` of the cache opened once)."""
    with FeatureCache(path) as cache:
        return cache.summary()
