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


def _read_all(fh: sf.SoundFile) -> np.ndarray:
    """Every frame of an open file as float32 ``(n, channels)``: in one read when libsndfile knows
    the length and can seek, else block by block to the end (GSM 6.10 and other formats that
    libsndfile reads but does not seek in)."""
    if fh.seekable():
        return fh.read(dtype="float32", always_2d=True)
    blocks = []
    while True:
        block = fh.read(frames=1 << 16, dtype="float32", always_2d=True)
        if len(block):
            blocks.append(block)
        if len(block) < 1 << 16:
            break
    return np.concatenate(blocks) if blocks else np.zeros((0, fh.channels), dtype=np.float32)


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 ``(channels, n_samples)`` and its sample rate.

    Every file libsndfile reads completely is read (any WAV subtype, WAVE_FORMAT_EXTENSIBLE, RF64,
    W64, odd-sized chunks, streaming writers' placeholder sizes). Unreadable, corrupt, truncated
    (:func:`_truncation`), empty or non-finite files raise AudioError naming the file and the reason.
    """
    try:
        with sf.SoundFile(str(path)) as fh:
            reason = _truncation(fh.extra_info)
            if reason is None:
                data = _read_all(fh)
            sample_rate = fh.samplerate
    except (sf.SoundFileError, RuntimeError, OSError, ValueError) as exc:
        raise AudioError(f"{path}: cannot read audio ({exc})") from exc
    if reason is not None:
        raise AudioError(f"{path}: {reason}")
    if data.shape[0] == 0:
        raise AudioError(f"{path}: the file holds no audio samples")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: the audio holds non-finite samples (NaN or inf)")
    return np.ascontiguousarray(data.T), int(sample_rate)


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
        return sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, OSError, ValueError) as exc:
        raise AudioError(f"{path}: cannot read the audio header ({exc})") from exc


def needs_conversion(path: str | os.PathLike, sample_rate: int = 44100) -> bool:
    """True unless the file already is ``sample_rate`` mono (read from the header only)."""
    info = _info(path)
    return not (info.samplerate == sample_rate and info.channels == 1)


def _is_valid_conversion(source: Path, target: Path, sample_rate: int) -> bool:
    """Whether ``target`` is a complete conversion of ``source`` (header, length, newer)."""
    try:
        if target.stat().st_mtime < source.stat().st_mtime:
            return False
        info = sf.info(str(target))
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
        sf.write(str(tmp), y, sample_rate, subtype="FLOAT", format="WAV")


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
