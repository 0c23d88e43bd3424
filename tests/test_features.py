"""caanet.features: FeatureParams and the paper's log-mel, against an independent computation."""

from __future__ import annotations

import dataclasses

import librosa
import numpy as np
import pytest
import scipy.signal

from caanet.errors import AudioError, ConfigError
from caanet.features import FeatureParams, cache_filename, fit_length, logmel, logmel_batch

SR = 44100


def reference_logmel(y, sr=SR, n_fft=2048, noverlap=672, n_mels=64, fmin=20.0, fmax=22050.0):
    """The authors' recipe, written with the libraries directly (float64)."""
    window = scipy.signal.windows.hamming(n_fft, sym=True)
    _, _, mag = scipy.signal.spectrogram(
        np.asarray(y, dtype=np.float64), sr, window=window, nperseg=n_fft, noverlap=noverlap, mode="magnitude"
    )
    mel = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    return np.log(mel.astype(np.float64) @ mag + 1e-8).T


def tone(freq, n=441000, amp=0.3):
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / SR)).astype(np.float32)


@pytest.mark.parametrize("kind", ["noise", "sine-100", "sine-5k", "sine-20k"])
def test_logmel_matches_scipy_spectrogram_and_librosa_mel(kind):
    if kind == "noise":
        y = (0.1 * np.random.default_rng(1).standard_normal(441000)).astype(np.float32)
    else:
        y = tone({"sine-100": 100, "sine-5k": 5000, "sine-20k": 20000}[kind])
    ours = logmel(y, FeatureParams())
    assert ours.shape == (320, 64) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference_logmel(y), rtol=0, atol=1e-4)


def test_logmel_of_a_constant_offset_is_removed_per_frame():
    """detrend='constant': adding DC to a signal does not change the features (beyond float error)."""
    y = tone(1000, n=44100)
    np.testing.assert_allclose(logmel(y + 0.25), logmel(y), atol=1e-3)
    np.testing.assert_allclose(logmel(y + 0.25), reference_logmel(y + 0.25), atol=1e-4)


def test_logmel_batch_equals_rows():
    y = np.random.default_rng(2).standard_normal((3, 30000)).astype(np.float32)
    batch = logmel_batch(y)
    assert batch.shape == (3, 1 + (30000 - 2048) // 1376, 64)
    for row, out in zip(y, batch):
        np.testing.assert_array_equal(out, logmel(row))


def test_logmel_small_params_match_reference():
    params = FeatureParams(sample_rate=16000, n_fft=512, hop_length=256, n_mels=16, fmax=8000.0, clip_seconds=1.0)
    y = np.random.default_rng(3).standard_normal(16000).astype(np.float32)
    ref = reference_logmel(y, sr=16000, n_fft=512, noverlap=256, n_mels=16, fmax=8000.0)
    np.testing.assert_allclose(logmel(y, params), ref, atol=1e-4)
    assert logmel(y, params).shape == (params.n_frames, 16)


def test_logmel_rejects_bad_signals():
    with pytest.raises(AudioError, match="fewer than n_fft"):
        logmel(np.zeros(1000, np.float32))
    with pytest.raises(AudioError, match="mono 1-D"):
        logmel(np.zeros((2, 5000), np.float32))


def test_default_params_are_the_papers():
    p = FeatureParams()
    assert (p.n_samples, p.n_frames, p.n_mels) == (441000, 320, 64)
    assert p.n_fft - p.hop_length == 672  # the paper's overlap


def test_hash_is_stable_and_canonical():
    assert FeatureParams().hash() == "cdd71d84a0"  # pinned: cache names must not drift between versions
    assert FeatureParams(fmin=20, clip_seconds=10).hash() == FeatureParams().hash()
    assert FeatureParams.from_dict(FeatureParams().to_dict()) == FeatureParams()


CHANGES = {"sample_rate": 48000, "n_fft": 1024, "hop_length": 1000, "window": "hann", "n_mels": 40,
           "fmin": 50.0, "fmax": 16000.0, "log_offset": 1e-6, "clip_seconds": 5.0}


@pytest.mark.parametrize("key", [f.name for f in dataclasses.fields(FeatureParams)])
def test_hash_and_cache_name_change_with_every_field(key):
    changed = FeatureParams(**{key: CHANGES[key]})
    assert changed.hash() != FeatureParams().hash()
    assert cache_filename("dcase2018", changed) != cache_filename("dcase2018", FeatureParams())
    assert cache_filename("dcase2018", FeatureParams()) == "dcase2018-cdd71d84a0.h5"


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="hop_size"):
        FeatureParams.from_dict({"hop_size": 512})


@pytest.mark.parametrize("kwargs, key", [
    ({"fmax": 30000.0}, "fmax"),
    ({"n_mels": 0}, "n_mels"),
    ({"window": "no-such-window"}, "window"),
    ({"clip_seconds": 0.01}, "clip_seconds"),
    ({"n_fft": 2048.5}, "n_fft"),
    ({"log_offset": 0.0}, "log_offset"),
])
def test_bad_params_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        FeatureParams(**kwargs)


def test_fit_length_pads_and_crops():
    y = np.arange(5, dtype=np.float32)
    out, status = fit_length(y, 5)
    assert status == "ok" and out is y
    out, status = fit_length(y, 8)
    assert status == "padded" and out.tolist() == [0, 1, 2, 3, 4, 0, 0, 0] and out.dtype == np.float32
    out, status = fit_length(y, 3)
    assert status == "cropped" and out.tolist() == [0, 1, 2]


def test_logmel_writes_into_out():
    y = np.random.default_rng(4).standard_normal(30000).astype(np.float32)
    out = np.full((1 + (30000 - 2048) // 1376, 64), np.nan, dtype=np.float32)
    assert logmel(y, out=out) is out
    np.testing.assert_array_equal(out, logmel(y))
    with pytest.raises(ValueError, match="C-contiguous float32"):
        logmel(y, out=np.empty((out.shape[0], 64), dtype=np.float64))
