"""Classifying recordings with a trained model (``caanet predict`` / ``caanet explain``).

Audio goes through exactly the pipeline's steps: :func:`caanet.audio.read_audio` (any format
libsndfile reads: WAV, FLAC, ...; any channel count and bit depth), :func:`caanet.audio.to_mono`
(channel mean), :func:`caanet.audio.resample` (soxr HQ) to the model's sample rate, in that order
as :func:`caanet.audio.convert_file` does, then :func:`caanet.features.logmel` and the model's
per-mel-bin standardisation (:func:`caanet.data.loader.normalise_`).

Clip length: the model was trained on clips of ``clip_seconds``. A recording of at most that
length is zero-padded at the end (:func:`caanet.features.fit_length`, as the feature cache pads); a
longer one is cut into consecutive windows of that length, the last one ending at the recording's
end (it overlaps its predecessor rather than being mostly padding), and the recording's scene
log-probabilities are the mean of its windows' (then renormalised with log_softmax, which changes
nothing for heads whose outputs are already log-probabilities and turns the ``reference``
attention head's log-scores into log-probabilities). CNN-d's device log-probabilities are
averaged the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from caanet.audio import read_audio, resample, to_mono
from caanet.data.loader import normalise_
from caanet.errors import AudioError, ConfigError
from caanet.features import fit_length, logmel_batch, single_threaded_blas
from caanet.vocab import METHOD_REGISTRY

DEFAULT_BATCH = 16  # windows per forward pass: measured fastest for the atrous CNN (activations stay in cache)


def load_signal(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Mono float32 signal of an audio file at ``sample_rate``: read, channel mean, soxr HQ resampling.

    Raises AudioError naming the file (unreadable, empty, non-finite, truncated).
    """
    y, sr = read_audio(path)
    y = to_mono(y)
    if sr != sample_rate:
        y = resample(y, sr, sample_rate)
    return np.ascontiguousarray(y, dtype=np.float32)


def window_starts(n: int, window: int) -> list[int]:
    """Start samples of the windows of a ``n``-sample signal: ``[0]`` if ``n <= window``, else
    ``0, window, 2*window, ...`` with the last window ending at ``n`` (``n - window``)."""
    if n <= window:
        return [0]
    starts = list(range(0, n - window + 1, window))
    if starts[-1] + window < n:
        starts.append(n - window)
    return starts


def signal_windows(y: np.ndarray, window: int) -> tuple[np.ndarray, list[int]]:
    """``(windows (W, window), starts)``: a short signal zero-padded at the end, a long one windowed."""
    if y.shape[-1] <= window:
        return fit_length(y, window)[0][None, :], [0]
    starts = window_starts(y.shape[-1], window)
    return np.stack([y[s:s + window] for s in starts]), starts


@dataclass
class ClipFeatures:
    """The log-mel windows of one recording: ``logmel`` ``(W, T, M)`` (not normalised), ``starts`` in
    samples at the model's rate, ``duration_s`` of the recording."""

    path: str
    logmel: np.ndarray
    starts: list[int]
    duration_s: float
    sample_rate: int


def clip_features(path: str | os.PathLike, params) -> ClipFeatures:
    """:class:`ClipFeatures` of one file with the model's :class:`caanet.features.FeatureParams`."""
    y = load_signal(path, params.sample_rate)
    windows, starts = signal_windows(y, params.n_samples)
    feats = logmel_batch(windows, params)  # callers limit BLAS to one thread once (predict_files)
    return ClipFeatures(str(path), feats, starts, y.shape[-1] / params.sample_rate, params.sample_rate)


@dataclass
class ClipPrediction:
    """One recording's result: scene/device log-probabilities ``(K,)``/``(N,)`` (device None unless CNN-d)."""

    path: str
    duration_s: float
    n_windows: int
    scene_logprob: np.ndarray
    device_logprob: np.ndarray | None

    def top(self, labels: Sequence[str], k: int) -> list[tuple[str, float]]:
        """The ``k`` most probable scenes as ``(label, probability)``, most probable first."""
        p = np.exp(self.scene_logprob)
        order = np.argsort(-p, kind="stable")[:k]
        return [(labels[i], float(p[i])) for i in order]


def oracle_device_index(mf, device_label: str) -> int:
    """The device index a teacher-forcing model is fed for ``device_label``: its position among the
    model's (seen) devices, or ``n_devices + k`` for the k-th device absent from training, which the
    model conditions on under its ``unseen_device`` policy (:mod:`caanet.devices`). Raises ConfigError
    for a label the model does not know, or an unseen one when the model has no unseen-device policy."""
    if device_label in mf.device_labels:
        return mf.device_labels.index(device_label)
    unseen = list(getattr(mf, "unseen_device_labels", []) or [])
    if device_label in unseen:
        if getattr(mf.config, "unseen_device", None) is None:
            raise ConfigError(f"--device {device_label!r} was absent from {mf.path}'s training and the model has no "
                              f"unseen-device policy; use one of {mf.device_labels}")
        return len(mf.device_labels) + unseen.index(device_label)
    raise ConfigError(f"--device {device_label!r} is not one of the model's devices "
                      f"{mf.device_labels + unseen}")


class Predictor:
    """Batched inference of a :class:`caanet.modelfile.ModelFile` on log-mel windows.

    ``device_label``: the recording device fed to a teacher-forcing model (required there; refused
    for other models). ``batch_size``: windows per forward pass. BatchNorm is folded into the convs
    (:meth:`caanet.models.CAANet.inference_copy`: same outputs, faster).
    """

    def __init__(self, mf, *, device_label: str | None = None, batch_size: int = DEFAULT_BATCH):
        self.mf = mf
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {batch_size}: must be >= 1")
        self.device_index = None
        method = (getattr(mf, "spec", None) or {}).get("method", "none")
        if method in METHOD_REGISTRY and METHOD_REGISTRY[method].derived == "replace":
            raise ConfigError(f"{mf.path} was trained on features transformed by {METHOD_REGISTRY[method].display} "
                              f"(method {method!r}, a derived feature cache); this command computes the plain "
                              "log-mel, so its predictions would not be the model's. Evaluate it on its cache "
                              "(the cell's predictions.csv)")
        if mf.device_source == "oracle":
            if device_label is None:
                raise ConfigError(f"{mf.path}: a teacher-forcing model takes the recording device as input; "
                                  f"pass --device LABEL (one of {mf.device_labels})")
            self.device_index = oracle_device_index(mf, device_label)
        elif device_label is not None:
            raise ConfigError(f"--device {device_label!r}: only teacher-forcing models take the device as input; "
                              f"{mf.path} has device source {mf.device_source!r}")
        self.model = mf.model.inference_copy()

    def normalise(self, logmel: np.ndarray) -> np.ndarray:
        """Standardised copy of ``(W, T, M)`` log-mel windows (the model's training statistics)."""
        return normalise_(np.array(logmel, dtype=np.float32, copy=True), self.mf.mean, self.mf.std)

    def _device_tensor(self, n: int):
        if self.device_index is None:
            return None
        return torch.full((n,), self.device_index, dtype=torch.long)

    @torch.inference_mode()
    def forward(self, x: np.ndarray):
        """The model's output for standardised windows ``(B, T, M)``: ``ModelOutput`` (float32 tensors)."""
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return self.model(xt, self._device_tensor(xt.shape[0]))

    def predict(self, clips: Sequence[ClipFeatures]) -> list[ClipPrediction]:
        """Predictions for recordings, their windows batched together (``batch_size`` per pass)."""
        if not clips:
            return []
        x = np.concatenate([self.normalise(c.logmel) for c in clips])
        scene, device = [], []
        for start in range(0, x.shape[0], self.batch_size):
            out = self.forward(x[start:start + self.batch_size])
            scene.append(out.scene.float())
            if out.device is not None:
                device.append(out.device.float())
        scene_t = torch.cat(scene)
        device_t = torch.cat(device) if device else None
        results, pos = [], 0
        for c in clips:
            w = c.logmel.shape[0]
            s = F.log_softmax(scene_t[pos:pos + w].mean(0), dim=0).numpy()
            d = F.log_softmax(device_t[pos:pos + w].mean(0), dim=0).numpy() if device_t is not None else None
            results.append(ClipPrediction(c.path, c.duration_s, w, s, d))
            pos += w
        return results


AUDIO_SUFFIXES = (".wav", ".flac")
_GLOB_CHARS = set("*?[")


def expand_audio_paths(items: Iterable[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files named by ``items`` (files, folders searched recursively for WAV/FLAC, glob patterns).

    Returns ``(paths, problems)``; ``problems`` are ``(item, message)`` for a folder or pattern with
    no audio and a path that does not exist (reported, the others still run). Order: as given,
    folder and glob contents sorted; duplicates dropped.
    """
    import glob

    paths, problems = [], []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                problems.append((item, f"{item}: folder holds no {'/'.join(AUDIO_SUFFIXES)} files"))
            paths.extend(found)
        elif p.exists():
            paths.append(str(p))
        elif _GLOB_CHARS & set(item):
            found = sorted(f for f in glob.glob(item, recursive=True) if Path(f).is_file())
            if not found:
                problems.append((item, f"{item}: no file matches this pattern"))
            paths.extend(found)
        else:
            problems.append((item, f"{item}: no such file or folder"))
    return list(dict.fromkeys(paths)), problems


def _features_or_error(path: str, params) -> tuple[str, ClipFeatures | None, str | None]:
    try:
        return path, clip_features(path, params), None
    except AudioError as e:
        return path, None, str(e)
    except (OSError, ValueError) as e:
        return path, None, f"{path}: {e}"


def _predict_group(predictor: Predictor, paths: Sequence[str]) -> list[tuple[str, ClipPrediction | None, str | None]]:
    done = [_features_or_error(p, predictor.mf.params) for p in paths]
    preds = iter(predictor.predict([c for _, c, _ in done if c is not None]))
    return [(p, next(preds) if c is not None else None, e) for p, c, e in done]


def predict_files(predictor: Predictor, paths: Sequence[str], *, jobs: int = 1,
                  group: int | None = None) -> Iterator[tuple[str, ClipPrediction | None, str | None]]:
    """``(path, prediction or None, error message or None)`` per file, in the order of ``paths``.

    Files are taken in groups of ``group`` (default: the predictor's batch size); each group is read,
    transformed and classified in one batch. ``jobs > 1``: that many threads work on successive
    groups at once (at most ``2 * jobs`` groups ahead); soundfile, soxr, the FFT, the mel product
    and torch release the GIL, so with torch at one thread per worker (each worker takes the
    caller's ``torch.get_num_threads()``; set it to 1 first) ``jobs`` cores are busy. A bad file yields its error message (naming the
    file) and does not stop the others.
    """
    group = predictor.batch_size if group is None else max(1, int(group))
    groups = [paths[i:i + group] for i in range(0, len(paths), group)]
    # one BLAS thread for the mel product: idle OpenBLAS threads spin (measured 35x the CPU time of
    # a 10 s clip's log-mel); set once here, as threadpoolctl's context costs ~6 ms per entry
    with single_threaded_blas():
        yield from _predict_groups(predictor, groups, jobs)


def _predict_groups(predictor: Predictor, groups: list, jobs: int):
    if jobs <= 1 or len(groups) <= 1:
        for g in groups:
            yield from _predict_group(predictor, g)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    # OpenMP's thread count is per calling thread: give each worker the caller's setting
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="caanet-predict",
                            initializer=torch.set_num_threads, initargs=(torch.get_num_threads(),)) as pool:
        ahead: deque = deque()
        try:
            for g in groups:
                ahead.append(pool.submit(_predict_group, predictor, g))
                if len(ahead) >= 2 * jobs:
                    yield from ahead.popleft().result()
            while ahead:
                yield from ahead.popleft().result()
        finally:
            for f in ahead:
                f.cancel()
