"""Audio preparation: read, down-mix and resample every clip to 44.1 kHz mono (paper Sec. IV-B).

The paper resamples all clips to 44.1 kHz; the authors' code loads with librosa (``mono=True``,
i.e. the channel mean, then librosa's default ``soxr_hq`` resampler). This module does the same
with soundfile and soxr directly, and only converts what needs converting: clips that already are
44.1 kHz mono (DCASE devices B and C, and all of DCASE 2019) are used in place.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import soundfile as sf
import soxr

from caanet.errors import AudioError, DatasetError
from caanet.io import atomic_path

LOGGER = logging.getLogger("caanet.audio")
RESAMPLE_QUALITY = "HQ"  # soxr's high quality: librosa's default res_type "soxr_hq"

# libsndfile reports a WAV whose data chunk runs past the end of the file as
# "data : <declared> (should be <present>)" in its log, and then silently reads what is there.
_TRUNCATED_RE = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_EMPTY_DATA_RE = re.compile(r"^data\s*:\s*0\s*$", re.MULTILINE)
_BLOCK_ALIGN_RE = re.compile(r"^\s*Block Align\s*:\s*(\d+)", re.MULTILINE)
# data sizes that streaming writers (a pipe, a recorder killed before it could seek back) put in the
# header for "unknown length": libsndfile then reads to the end of the file, and so does caanet
_UNKNOWN_LENGTH = frozenset({0xFFFFFFFF, 0x7FFFFFFF})

Log = Callable[[str], None]


def _logger(log: Log | None) -> Log:
    return LOGGER.info if log is None else log


def _truncation(extra_info: str) -> str | None:
    """The reason a WAV is truncated, from libsndfile's header log; None if it is complete.

    Truncated means at least one whole frame (``Block Align`` bytes) that the header declares is
    missing from the file. A declared size larger by less than a frame (an odd data chunk whose
    pad byte was counted, a writer's rounding) loses no sample, and a placeholder size of a
    streaming writer (:data:`_UNKNOWN_LENGTH`) declares nothing: libsndfile reads those files
    completely, so caanet does too.
    """
    match = _TRUNCATED_RE.search(extra_info or "")
    if not match:
        return None
    declared, present = int(match.group(1)), int(match.group(2))
    if declared in _UNKNOWN_LENGTH:
        return None
    align = _BLOCK_ALIGN_RE.search(extra_info)
    frame_bytes = max(1, int(align.group(1))) if align else 1
    if declared - present >= frame_bytes:
        return f"truncated: the header declares {declared} bytes of audio data, the file holds {present}"
    return None


READ_BLOCK_FRAMES = 1 << 16  # frames per read of a recording (0.5 MB of float32 stereo)


class _ForwardReader(sf.SoundFile):
    """A :class:`soundfile.SoundFile` read strictly forward, block by block, to the end of its stream.

    soundfile trusts the header's frame count on a seekable file: it cuts every read to
    ``frames - tell()`` (allocating all of ``frames`` for a whole-file read) and seeks after each
    read. The count is not always there: a FLAC written by a streaming encoder declares 0 samples
    (libsndfile reports ``SF_COUNT_MAX`` and the whole-file read asks for an array of 2**63
    frames), an Ogg stream has none, a WAV streamer's placeholder size is not the length. Reporting
    the file as not seekable makes soundfile read what libsndfile decodes, to the end.
    """

    def seekable(self) -> bool:  # noqa: D102 - see the class docstring
        return False


def _libsndfile_name(source):
    """What is handed to libsndfile: an open file descriptor as it is, a path as bytes
    (``os.fsencode``), so every name the file system allows reaches it unchanged (soundfile
    encodes a str path strictly as UTF-8 and refuses names with undecodable bytes)."""
    return source if isinstance(source, int) else os.fsencode(os.fspath(source))


def _reason(exc: BaseException) -> str:
    """libsndfile's own words for an error (soundfile prefixes them with the name as bytes)."""
    return getattr(exc, "error_string", None) or str(exc)


class AudioStream:
    """One recording read forward, block by block, as libsndfile decodes it, to the end of the stream.

    ``source``: a path (any name the file system allows; a FIFO or ``/dev/stdin`` too) or an open
    file descriptor; ``name``: how messages name it (default: the path). The header's frame count
    is not trusted (:class:`_ForwardReader`): a file of unknown or estimated length is read to its
    end. ``samplerate`` and ``channels`` are known once opened; :meth:`blocks` yields float32
    ``(n, channels)`` blocks of at most ``block_frames`` frames (``n >= 1``) and counts them in
    ``frames_read``. Raises AudioError naming the file: unreadable, corrupt, truncated
    (:func:`_truncation`), empty, non-finite samples. A context manager.
    """

    def __init__(self, source, *, name: str | None = None, block_frames: int = READ_BLOCK_FRAMES):
        self.name = str(source) if name is None else name
        self.block_frames = int(block_frames)
        self.frames_read = 0
        try:
            self._fh = _ForwardReader(_libsndfile_name(source), closefd=not isinstance(source, int))
        except (sf.SoundFileError, RuntimeError, OSError, ValueError, TypeError) as exc:
            raise AudioError(f"{self.name}: cannot read audio ({_reason(exc)})") from exc
        reason = _truncation(self._fh.extra_info)
        if reason is not None:
            self.close()
            raise AudioError(f"{self.name}: {reason}")
        self.samplerate = int(self._fh.samplerate)
        self.channels = int(self._fh.channels)

    def blocks(self):
        """Float32 ``(n, channels)`` blocks to the end of the stream (see the class docstring)."""
        while True:
            try:
                block = self._fh.read(self.block_frames, dtype="float32", always_2d=True)
            except (sf.SoundFileError, RuntimeError, OSError, ValueError) as exc:
                raise AudioError(f"{self.name}: cannot read audio after {self.frames_read} frames "
                                 f"({_reason(exc)})") from exc
            if not len(block):
                break
            if not np.isfinite(block).all():
                raise AudioError(f"{self.name}: the audio holds non-finite samples (NaN or inf)")
            self.frames_read += len(block)
            yield block
        if self.frames_read == 0:
            hint = (" (its header declares 0 bytes of audio data: a recording that was not finalised?)"
                    if _EMPTY_DATA_RE.search(self._fh.extra_info or "") else "")
            raise AudioError(f"{self.name}: the file holds no audio samples{hint}")

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "AudioStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def probe_audio(path: str | os.PathLike) -> str | None:
    """None if libsndfile opens ``path`` as audio (its header only), else libsndfile's reason."""
    try:
        with _ForwardReader(_libsndfile_name(path)):
            return None
    except (sf.SoundFileError, RuntimeError, OSError, ValueError, TypeError) as exc:
        return _reason(exc)


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 ``(channels, n_samples)`` and its sample rate.

    Every file libsndfile reads is read completely (any WAV subtype, WAVE_FORMAT_EXTENSIBLE, RF64,
    W64, odd-sized chunks, streaming writers' placeholder sizes, FLAC and Ogg of unknown length:
    :class:`AudioStream`). Unreadable, corrupt, truncated (:func:`_truncation`), empty or
    non-finite files raise AudioError naming the file and the reason.
    """
    with AudioStream(path) as stream:
        blocks = list(stream.blocks())
        sample_rate = stream.samplerate
    data = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
    return np.ascontiguousarray(data.T), sample_rate


def to_mono(y: np.ndarray) -> np.ndarray:
    """Average the channels of ``(channels, n)`` audio (librosa's ``to_mono``); 1-D passes through."""
    y = np.asarray(y)
    if y.ndim == 1:
        return y
    if y.ndim != 2:
        raise AudioError(f"to_mono: expected (channels, n_samples) audio, got shape {y.shape}")
    if y.shape[0] == 1:
        return y[0]
    return y.mean(axis=0)


def resampled_length(n_samples: int, sr_in: int, sr_out: int) -> int:
    """Output length of :func:`resample`: ``ceil(n * sr_out / sr_in)``, as librosa fixes it."""
    if sr_in == sr_out:
        return int(n_samples)
    if float(sr_in).is_integer() and float(sr_out).is_integer():
        return -(-int(n_samples) * int(sr_out) // int(sr_in))
    return int(math.ceil(n_samples * float(sr_out) / float(sr_in)))


def resample(y: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample along the last axis with soxr HQ; the length is fixed to ``ceil(n*sr_out/sr_in)``.

    This is what ``librosa.resample(y, orig_sr=sr_in, target_sr=sr_out)`` does (res_type
    ``soxr_hq``, ``fix=True``), without the librosa overhead.
    """
    y = np.asarray(y)
    if sr_in <= 0 or sr_out <= 0:
        raise AudioError(f"resample: sample rates must be positive, got {sr_in} -> {sr_out}")
    if sr_in == sr_out:
        return y
    if y.dtype not in (np.float32, np.float64):
        y = y.astype(np.float32)
    if y.ndim == 1:
        out = soxr.resample(y, sr_in, sr_out, quality=RESAMPLE_QUALITY)
    elif y.ndim == 2:
        out = soxr.resample(np.ascontiguousarray(y.T), sr_in, sr_out, quality=RESAMPLE_QUALITY).T
    else:
        raise AudioError(f"resample: expected 1-D or (channels, n) audio, got shape {y.shape}")
    return _fix_length(np.ascontiguousarray(out), resampled_length(y.shape[-1], sr_in, sr_out))


class StreamResampler:
    """:func:`resample` of a mono signal given block by block, in memory bounded by the block.

    soxr's streaming resampler (``soxr.ResampleStream``, HQ, float32) with the same length rule
    as :func:`resample`: :meth:`push` returns the output samples ready so far, never more than
    ``ceil(n_in * sr_out / sr_in)`` of the input pushed so far; :meth:`finish` flushes soxr's
    filter delay and crops or zero-pads the total to ``resampled_length(n_in, sr_in, sr_out)``.
    The concatenated output equals ``resample(whole signal, sr_in, sr_out)`` (soxr gives the same
    samples streamed or in one call; ``tests/test_audio.py`` checks it for several block sizes).
    ``sr_in == sr_out`` passes blocks through unchanged.
    """

    def __init__(self, sr_in: int, sr_out: int):
        if sr_in <= 0 or sr_out <= 0:
            raise AudioError(f"resample: sample rates must be positive, got {sr_in} -> {sr_out}")
        self.sr_in, self.sr_out = int(sr_in), int(sr_out)
        self.n_in = self.n_out = 0
        self._held = np.zeros(0, np.float32)  # output soxr gave beyond the length allowed so far
        self._soxr = (soxr.ResampleStream(sr_in, sr_out, 1, dtype="float32", quality=RESAMPLE_QUALITY)
                      if sr_in != sr_out else None)

    def _emit(self, y: np.ndarray, limit: int) -> np.ndarray:
        if len(self._held):
            y = np.concatenate([self._held, y])
        take = max(0, min(len(y), limit - self.n_out))
        out, self._held = y[:take], y[take:]
        self.n_out += take
        return out

    def push(self, y: np.ndarray) -> np.ndarray:
        """Resample the next float32 1-D block; returns the output ready so far (possibly empty)."""
        y = np.ascontiguousarray(y, dtype=np.float32)
        if y.ndim != 1:
            raise AudioError(f"resample: expected a 1-D block, got shape {y.shape}")
        self.n_in += len(y)
        if self._soxr is None:
            self.n_out += len(y)
            return y
        out = self._soxr.resample_chunk(y, last=False)
        return self._emit(out, resampled_length(self.n_in, self.sr_in, self.sr_out))

    def finish(self) -> np.ndarray:
        """The rest of the output: soxr's delayed samples, cropped or zero-padded to the length rule."""
        if self._soxr is None:
            return np.zeros(0, np.float32)
        total = resampled_length(self.n_in, self.sr_in, self.sr_out)
        out = self._emit(self._soxr.resample_chunk(np.zeros(0, np.float32), last=True), total)
        self._held = np.zeros(0, np.float32)
        if self.n_out < total:
            out = np.concatenate([out, np.zeros(total - self.n_out, np.float32)])
            self.n_out = total
        return out


def _fix_length(y: np.ndarray, n: int) -> np.ndarray:
    """Zero-pad or crop the last axis to ``n`` samples."""
    if y.shape[-1] == n:
        return y
    if y.shape[-1] > n:
        return y[..., :n]
    pad = [(0, 0)] * (y.ndim - 1) + [(0, n - y.shape[-1])]
    return np.pad(y, pad)


def _info(path: str | os.PathLike) -> sf._SoundFileInfo:
    try:
        return sf.info(_libsndfile_name(path))
    except (sf.SoundFileError, RuntimeError, OSError, ValueError) as exc:
        raise AudioError(f"{path}: cannot read the audio header ({_reason(exc)})") from exc


def needs_conversion(path: str | os.PathLike, sample_rate: int = 44100) -> bool:
    """True unless the file already is ``sample_rate`` mono (read from the header only)."""
    info = _info(path)
    return not (info.samplerate == sample_rate and info.channels == 1)


def _is_valid_conversion(source: Path, target: Path, sample_rate: int) -> bool:
    """Whether ``target`` is a complete conversion of ``source`` (header, length, newer)."""
    try:
        if target.stat().st_mtime < source.stat().st_mtime:
            return False
        info = sf.info(_libsndfile_name(target))
    except (sf.SoundFileError, RuntimeError, OSError, ValueError):
        return False
    if info.samplerate != sample_rate or info.channels != 1 or _truncation(info.extra_info):
        return False
    src = _info(source)
    return info.frames == resampled_length(src.frames, src.samplerate, sample_rate)


def convert_file(source: str | os.PathLike, target: str | os.PathLike, sample_rate: int = 44100) -> None:
    """Down-mix and resample ``source`` into a float32 mono WAV at ``target`` (atomic write)."""
    y, sr = read_audio(source)
    y = resample(to_mono(y), sr, sample_rate)
    with atomic_path(target) as tmp:
        sf.write(_libsndfile_name(tmp), y, sample_rate, subtype="FLOAT", format="WAV")


def _prepare_one(source: str, target: str, sample_rate: int) -> tuple[str, str]:
    """Return ``(audio_path, action)`` with action ``original``, ``reused`` or ``converted``."""
    if not needs_conversion(source, sample_rate):
        return source, "original"
    if _is_valid_conversion(Path(source), Path(target), sample_rate):
        return target, "reused"
    convert_file(source, target, sample_rate)
    return target, "converted"


def _prepare_many(items: list[tuple[str, str]], sample_rate: int) -> list[tuple[str, str]]:
    return [_prepare_one(src, dst, sample_rate) for src, dst in items]


def contiguous_chunks(n_items: int, n_jobs: int, *, per_job: int = 4, max_size: int | None = None) -> list[range]:
    """Split ``range(n_items)`` into contiguous chunks, about ``per_job`` per worker."""
    if n_items <= 0:
        return []
    size = max(1, math.ceil(n_items / (max(1, n_jobs) * per_job)))
    if max_size is not None:
        size = min(size, max_size)
    return [range(start, min(start + size, n_items)) for start in range(0, n_items, size)]


def process_pool(n_jobs: int) -> ProcessPoolExecutor:
    """A process pool of ``n_jobs`` workers (fork where available: no re-import per worker)."""
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    return ProcessPoolExecutor(max_workers=n_jobs, mp_context=context)


def map_chunks(func, chunks: Iterable, n_jobs: int, *args) -> Iterable:
    """``func(chunk, *args)`` for each chunk, in order; in a process pool when ``n_jobs > 1``."""
    chunks = list(chunks)
    if n_jobs <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            yield func(chunk, *args)
        return
    with process_pool(min(n_jobs, len(chunks))) as pool:
        futures = [pool.submit(func, chunk, *args) for chunk in chunks]
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


def require_columns(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DatasetError(f"{what}: missing column(s) {missing}; has {list(df.columns)}")


def prepare_audio(
    index_df: pd.DataFrame,
    out_dir: str | os.PathLike,
    *,
    sample_rate: int = 44100,
    n_jobs: int = 1,
    log: Log | None = None,
) -> pd.DataFrame:
    """Add ``audio_path``: a ``sample_rate`` mono file for every clip of the index.

    Clips already at ``sample_rate`` mono keep their original ``path`` (nothing is copied);
    the others are down-mixed, resampled (soxr HQ) and written as float32 WAV under ``out_dir``
    with the same relative ``filename``. A conversion that is already there and complete is
    reused, so a rerun is cheap. Unreadable files raise AudioError naming the file.
    """
    require_columns(index_df, ("filename", "path"), "audio index")
    out_dir = Path(out_dir)
    items = []
    for filename, path in zip(index_df["filename"].astype(str), index_df["path"].astype(str)):
        rel = Path(filename)
        if rel.is_absolute() or ".." in rel.parts:
            raise DatasetError(f"audio index: filename {filename!r} must be a relative path inside the dataset")
        items.append((path, str(out_dir / rel)))

    results: list[tuple[str, str]] = []
    chunks = [items[r.start:r.stop] for r in contiguous_chunks(len(items), n_jobs, max_size=64)]
    for part in map_chunks(_prepare_many, chunks, n_jobs, sample_rate):
        results.extend(part)

    out = index_df.copy()
    out["audio_path"] = [p for p, _ in results]
    actions = pd.Series([a for _, a in results], dtype=object)
    counts = {k: int((actions == k).sum()) for k in ("original", "converted", "reused")}
    _logger(log)(
        f"prepare_audio: {len(results)} clips -> {out_dir}: {counts['converted']} converted, "
        f"{counts['reused']} reused from a previous run, {counts['original']} already {sample_rate} Hz mono (used in place)"
    )
    return out
