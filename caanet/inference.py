"""Classifying recordings with a trained model (``caanet predict`` / ``caanet explain``).

Audio goes through exactly the pipeline's steps: :func:`caanet.audio.read_audio` (any format
libsndfile reads: WAV, FLAC, MP3, Ogg, ...; any channel count and bit depth), :func:`caanet.audio.to_mono`
(channel mean), :func:`caanet.audio.resample` (soxr HQ) to the model's sample rate, in that order
as :func:`caanet.audio.convert_file` does, then :func:`caanet.features.logmel` and the model's
per-mel-bin standardisation (:func:`caanet.data.loader.normalise_`).

``caanet predict`` does the same block by block (:class:`RecordingWindows`: :class:`caanet.audio.AudioStream`,
:func:`to_mono`, :class:`caanet.audio.StreamResampler`, :class:`WindowCutter`), so its memory is
bounded by the model's window and ``--batch-size``, not by the recording's length; the windows
and their log-mel equal those of the whole-file path (:func:`clip_features`, which ``explain``
uses) to float tolerance.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from caanet.audio import READ_BLOCK_FRAMES, AudioStream, StreamResampler, read_audio, resample, to_mono
from caanet.data.loader import normalise_
from caanet.errors import AudioError, CaanetError, ConfigError
from caanet.features import fit_length, logmel, logmel_batch, single_threaded_blas
from caanet.inputs import STDIN
from caanet.vocab import METHOD_REGISTRY

# windows per forward pass: 4, 8 and 16 take the same CPU time per window (measured, default-preset atrous
# CNN on 10 s windows), and the activations grow with it (~25, ~55, ~125 MB): 4 keeps predict's peak RSS
# under 500 MB (benchmarks/bench_predict_memory.py)
DEFAULT_BATCH = 4
LONG_RECORDING_WINDOWS = 32  # from this many windows of one recording on, release_large_blocks() is in force


GLIBC_MMAP_THRESHOLD = 128 * 1024  # bytes: glibc's initial M_MMAP_THRESHOLD, kept fixed by release_large_blocks


def release_large_blocks() -> bool:
    """Make glibc give every allocation above 128 KiB its own mapping, returned to the OS when freed.

    glibc raises its mmap threshold to the largest block freed so far (up to 32 MiB); from then on
    the activation buffers of each forward pass come from the heap, which fragments around the
    smaller blocks that outlive a batch and does not shrink: the peak RSS of ``caanet predict``
    kept growing with a recording's length (measured, batch 16: 556 MB at 10 min, 658 MB at 30 min
    of 48 kHz stereo; with the threshold fixed, 520 MB for both). A fixed threshold
    (``mallopt(M_MMAP_THRESHOLD)``) keeps the peak flat, at the price of page faults on every
    pass (about 10 ms CPU per 10 s window), so :func:`_predict_group` sets it only once a
    recording reaches :data:`LONG_RECORDING_WINDOWS` windows. Process-wide; returns whether it was
    set (False where libc is not glibc).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        # malloc.h: M_TRIM_THRESHOLD -1, M_MMAP_THRESHOLD -3 (glibc had raised both)
        ok = bool(libc.mallopt(-3, GLIBC_MMAP_THRESHOLD)) and bool(libc.mallopt(-1, 2 * GLIBC_MMAP_THRESHOLD))
        libc.malloc_trim(0)  # and return what the heap holds free now
        return ok
    except (OSError, AttributeError):
        return False


class PredictionError(CaanetError):
    """The model gives a non-finite output for a recording (names the file, the window and the model)."""


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


class WindowCutter:
    """The windows of :func:`signal_windows` from a signal given block by block.

    :meth:`push` yields the ``(start, window)`` pairs completed by a block (windows ``0, W, 2W,
    ...``); :meth:`finish` yields the last one: the whole signal zero-padded to ``W`` if it is at
    most ``W`` samples long, else the window ending at the signal's end when the regular ones stop
    short of it. Memory: two ``W``-sample buffers whatever the signal's length (the last ``W``
    samples, kept in a ring, and the window handed out). The window array is reused: it is valid
    until the next one is asked for (copy it to keep it). ``n``: samples pushed.
    """

    def __init__(self, window: int):
        self.window = int(window)
        self.n = 0
        self._next = 0  # start of the next regular window
        self._ring = np.zeros(self.window, np.float32)  # sample i is at ring[i % W]
        self._out = np.empty(self.window, np.float32)

    def _last(self, count: int) -> np.ndarray:
        """The last ``count`` (<= W) samples pushed, in order, in the output buffer."""
        w, end = self.window, self.n % self.window
        first = (end - count) % w
        if first + count <= w:
            self._out[:count] = self._ring[first:first + count]
        else:
            head = w - first
            self._out[:head] = self._ring[first:]
            self._out[head:count] = self._ring[:count - head]
        return self._out[:count]

    def push(self, y: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """Add the next samples (1-D); yield the windows they complete."""
        y = np.asarray(y, dtype=np.float32)
        w, i = self.window, 0
        while i < len(y):
            m = min(len(y) - i, self._next + w - self.n)  # up to the end of the next regular window
            pos = self.n % w
            first = min(m, w - pos)
            self._ring[pos:pos + first] = y[i:i + first]
            self._ring[:m - first] = y[i + first:i + m]
            self.n += m
            i += m
            if self.n == self._next + w:
                yield self._next, self._last(w)
                self._next += w

    def finish(self) -> Iterator[tuple[int, np.ndarray]]:
        """The last window after the final block (see the class docstring); nothing for no samples."""
        if self.n == 0:
            return
        if self._next == 0:  # at most one window long: padded at the end, as the cache pads
            out = self._last(self.n)
            self._out[self.n:] = 0.0
            yield 0, self._out
        elif self._next < self.n:
            yield self.n - self.window, self._last(self.window)


class RecordingWindows:
    """The model's windows of one recording, read, down-mixed and resampled block by block.

    Iterating yields ``(start, window)``: the start in samples at the model's rate and the float32
    ``(n_samples,)`` window (reused: valid until the next one is asked for), the same windows as
    ``signal_windows(load_signal(path, rate), n_samples)`` (to soxr's float tolerance;
    ``tests/test_predict_inputs.py``), in memory bounded by the window and the read block whatever
    the recording's length. ``path``: any name the file
    system allows, a FIFO, or :data:`STDIN` (``-``, standard input). After the iteration
    ``n_samples`` is the recording's length at the model's rate. Raises AudioError naming the
    file (unreadable, truncated, empty, non-finite samples).
    """

    def __init__(self, path: str, params, *, block_frames: int = READ_BLOCK_FRAMES):
        self.path = str(path)
        self.params = params
        self.block_frames = int(block_frames)
        self.n_samples = 0

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.params.sample_rate

    def _source(self):
        if self.path != STDIN:
            return self.path
        import sys

        if sys.stdin is None or sys.stdin.isatty():
            raise AudioError(f"{STDIN}: standard input is a terminal; pipe a recording into it (a file named "
                             f"'-' is ./-)")
        return sys.stdin.fileno()

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        window, rate = self.params.n_samples, self.params.sample_rate
        with AudioStream(self._source(), name=self.path, block_frames=self.block_frames) as stream:
            resampler = StreamResampler(stream.samplerate, rate)
            cutter = WindowCutter(window)
            for block in stream.blocks():
                yield from cutter.push(resampler.push(to_mono(np.ascontiguousarray(block.T))))
            yield from cutter.push(resampler.finish())
            yield from cutter.finish()
        self.n_samples = cutter.n


@dataclass
class ClipPrediction:
    """One recording's result: scene/device log-probabilities ``(K,)``/``(N,)`` (device None unless
    CNN-d), and per window: ``window_starts`` (samples at the model's rate) and the model's scene
    (device) outputs ``window_scene`` ``(W, K)`` (``window_device`` ``(W, N)`` or None)."""

    path: str
    duration_s: float
    n_windows: int
    scene_logprob: np.ndarray
    device_logprob: np.ndarray | None
    window_starts: list = field(default_factory=list)
    window_scene: np.ndarray | None = None
    window_device: np.ndarray | None = None

    def top(self, labels: Sequence[str], k: int) -> list[tuple[str, float]]:
        """The ``k`` most probable scenes as ``(label, probability)``, most probable first."""
        p = np.exp(self.scene_logprob)
        order = np.argsort(-p, kind="stable")[:k]
        return [(labels[i], float(p[i])) for i in order]


def clip_prediction(mf, path: str, duration_s: float, starts: Sequence[int], scene: torch.Tensor,
                    device: torch.Tensor | None) -> ClipPrediction:
    """A recording's :class:`ClipPrediction` from its windows' outputs ``scene`` ``(W, K)`` (and
    ``device`` ``(W, N)``): the mean over the windows, renormalised with log_softmax.

    Raises PredictionError naming the file, the first window (and its start in seconds) and the
    model when an output is not finite: a NaN probability is never reported.
    """
    rate = mf.params.sample_rate
    for what, out in (("scene", scene), ("device", device)):
        if out is None:
            continue
        bad = ~torch.isfinite(out).all(dim=1)
        if bool(bad.any()):
            w = int(torch.nonzero(bad)[0, 0])
            raise PredictionError(f"{path}: window {w + 1} of {len(starts)} (from {starts[w] / rate:.2f} s): "
                                  f"the model {mf.path} gives non-finite {what} scores (NaN or inf)")
    s = F.log_softmax(scene.mean(0), dim=0).numpy()
    d = F.log_softmax(device.mean(0), dim=0).numpy() if device is not None else None
    for what, out in (("scene", s), ("device", d)):
        if out is not None and not np.isfinite(out).all():
            raise PredictionError(f"{path}: the model {mf.path} gives non-finite {what} probabilities (NaN or inf) "
                                  "for the mean of the windows")
    return ClipPrediction(path, duration_s, len(starts), s, d, list(starts), scene.numpy(),
                          device.numpy() if device is not None else None)


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
            d = device_t[pos:pos + w] if device_t is not None else None
            results.append(clip_prediction(self.mf, c.path, c.duration_s, c.starts, scene_t[pos:pos + w], d))
            pos += w
        return results


class _Rows:
    """A growing ``(n, width)`` float32 array that doubles its capacity: a long recording's per-window
    outputs take a few large blocks rather than one small block per window, which, interleaved with
    each batch's large buffers on the heap, kept glibc from reusing them (the peak RSS grew with
    the recording's length)."""

    def __init__(self, width: int):
        self._a = np.empty((64, width), np.float32)
        self.n = 0

    def append(self, rows: np.ndarray) -> None:
        need = self.n + len(rows)
        if need > len(self._a):
            grown = np.empty((max(need, 2 * len(self._a)), self._a.shape[1]), np.float32)
            grown[:self.n] = self._a[:self.n]
            self._a = grown
        self._a[self.n:need] = rows
        self.n = need

    @property
    def array(self) -> np.ndarray:
        return self._a[:self.n]


class _Recording:
    """One recording's progress through :func:`_predict_group`: its windows' outputs and length."""

    def __init__(self, path: str, mf):
        self.path = path
        self.n_windows = 0
        self.scene = _Rows(len(mf.scene_labels))
        self.device = _Rows(mf.config.n_devices) if mf.device_source == "predicted" else None
        self.n_samples = 0
        self.error: str | None = None


class _Batches:
    """Log-mel windows of one or more recordings, classified ``predictor.batch_size`` at a time in
    one preallocated ``(batch, frames, mels)`` buffer (standardised in place)."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        params = predictor.mf.params
        self.x = np.empty((predictor.batch_size, params.n_frames, params.n_mels), np.float32)
        self.owners: list[_Recording] = []

    def add(self, owner: _Recording, window: np.ndarray) -> None:
        logmel(window, self.predictor.mf.params, out=self.x[len(self.owners)])
        self.owners.append(owner)
        owner.n_windows += 1
        if len(self.owners) == len(self.x):
            self.run()

    def drop(self, owner: _Recording) -> None:
        """Forget the pending windows of a recording that failed."""
        keep = [i for i, o in enumerate(self.owners) if o is not owner]
        self.x[:len(keep)] = self.x[keep]
        self.owners = [self.owners[i] for i in keep]

    def run(self) -> None:
        k = len(self.owners)
        if not k:
            return
        mf = self.predictor.mf
        out = self.predictor.forward(normalise_(self.x[:k], mf.mean, mf.std))
        scene = out.scene.float().numpy()
        device = out.device.float().numpy() if out.device is not None else None
        i = 0
        while i < k:  # consecutive windows of one recording go in one append
            j = i
            while j < k and self.owners[j] is self.owners[i]:
                j += 1
            owner = self.owners[i]
            owner.scene.append(scene[i:j])
            if owner.device is not None:
                owner.device.append(device[i:j])
            i = j
        self.owners = []


def _predict_group(predictor: Predictor, paths: Sequence[str]) -> list[tuple[str, ClipPrediction | None, str | None]]:
    """Stream each recording of ``paths`` (:class:`RecordingWindows`) into shared batches of windows;
    ``(path, prediction or None, error or None)`` in order."""
    mf = predictor.mf
    batches = _Batches(predictor)
    recordings = []
    for path in paths:
        rec = _Recording(path, mf)
        recordings.append(rec)
        windows = RecordingWindows(path, mf.params)
        try:
            for _, window in windows:
                batches.add(rec, window)
                if rec.n_windows == LONG_RECORDING_WINDOWS:
                    release_large_blocks()
            rec.n_samples = windows.n_samples
        except AudioError as e:
            rec.error = str(e)
        except (OSError, ValueError) as e:
            rec.error = f"{path}: {e}"
        if rec.error is not None:
            batches.drop(rec)
    batches.run()
    results = []
    for rec in recordings:
        if rec.error is not None:
            results.append((rec.path, None, rec.error))
            continue
        starts = window_starts(rec.n_samples, mf.params.n_samples)  # the cutter's starts, by construction
        assert len(starts) == rec.n_windows == rec.scene.n, (rec.path, len(starts), rec.n_windows)
        device = torch.from_numpy(rec.device.array) if rec.device is not None else None
        try:
            pred = clip_prediction(mf, rec.path, rec.n_samples / mf.params.sample_rate, starts,
                                   torch.from_numpy(rec.scene.array), device)
        except PredictionError as e:
            results.append((rec.path, None, str(e)))
            continue
        results.append((rec.path, pred, None))
    return results


def predict_files(predictor: Predictor, paths: Sequence[str], *, jobs: int = 1,
                  group: int | None = None) -> Iterator[tuple[str, ClipPrediction | None, str | None]]:
    """``(path, prediction or None, error message or None)`` per file, in the order of ``paths``.

    Files are taken in groups of ``group`` (default: the predictor's batch size); each file of a group
    is read, transformed and cut into windows block by block (:class:`RecordingWindows`) and the
    group's windows are classified ``batch_size`` at a time, so memory is bounded by the window
    and the batch, not by the files' lengths. ``jobs > 1``: that many threads work on successive
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
