"""caanet.audio: reading, down-mixing, resampling and the prepare_audio stage."""

from __future__ import annotations

import os

import librosa
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from caanet.audio import needs_conversion, prepare_audio, read_audio, resample, resampled_length, to_mono
from caanet.errors import AudioError, DatasetError


def sine(freq, sr, seconds, amp=0.5):
    t = np.arange(int(round(sr * seconds))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write(path, y, sr, subtype="PCM_16"):
    """Write (channels, n) or 1-D float audio to a WAV file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    y = np.asarray(y)
    sf.write(str(path), y.T if y.ndim == 2 else y, sr, subtype=subtype)
    return path


def peak_frequency(y, sr):
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return np.fft.rfftfreq(len(y), 1 / sr)[np.argmax(spectrum)]


def index_of(root, names):
    return pd.DataFrame({"filename": [f"audio/{n}" for n in names], "path": [str(root / "audio" / n) for n in names]})


# ----------------------------------------------------------------------------------------------

def test_read_audio_returns_float32_channels_first(tmp_path):
    y = np.stack([sine(440, 8000, 0.25), -sine(440, 8000, 0.25)])
    data, sr = read_audio(write(tmp_path / "s.wav", y, 8000))
    assert sr == 8000 and data.dtype == np.float32 and data.shape == (2, 2000)
    np.testing.assert_allclose(data, y, atol=1e-4)  # 16-bit quantisation


def _truncated(path):
    write(path, sine(440, 8000, 0.5), 8000)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _corrupt(path):
    path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(200))


@pytest.mark.parametrize("make", [
    _truncated,
    _corrupt,
    lambda p: p.write_bytes(b""),
    lambda p: p.write_text("this is a text file, not audio\n" * 20),
    lambda p: write(p, np.zeros(0, np.float32), 8000),
], ids=["truncated", "corrupt", "empty", "not-audio", "no-samples"])
def test_bad_files_raise_audio_error_naming_the_file(tmp_path, make):
    path = tmp_path / "bad-clip.wav"
    make(path)
    with pytest.raises(AudioError, match="bad-clip.wav"):
        read_audio(path)


def test_missing_file_raises_audio_error(tmp_path):
    with pytest.raises(AudioError, match="nowhere.wav"):
        read_audio(tmp_path / "nowhere.wav")


def test_non_finite_samples_are_rejected(tmp_path):
    y = sine(440, 8000, 0.1)
    y[10] = np.nan
    path = write(tmp_path / "nan.wav", y, 8000, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav.*non-finite"):
        read_audio(path)


def test_to_mono_averages_channels():
    y = np.array([[1.0, 2.0, 3.0], [3.0, 0.0, -3.0]], dtype=np.float32)
    np.testing.assert_array_equal(to_mono(y), [2.0, 1.0, 0.0])
    assert to_mono(y).dtype == np.float32
    np.testing.assert_array_equal(to_mono(y[0]), y[0])


def test_resample_matches_librosa_soxr_hq():
    y = np.random.default_rng(0).standard_normal(12345).astype(np.float32)
    ours = resample(y, 48000, 44100)
    theirs = librosa.resample(y, orig_sr=48000, target_sr=44100, res_type="soxr_hq")
    assert ours.shape == theirs.shape == (resampled_length(12345, 48000, 44100),)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_resampled_length_is_ceil():
    assert resampled_length(480000, 48000, 44100) == 441000
    assert resampled_length(47999, 48000, 44100) == 44100  # ceil(44099.08)
    assert resampled_length(1000, 44100, 44100) == 1000


def test_needs_conversion_reads_the_header(tmp_path):
    assert not needs_conversion(write(tmp_path / "m44.wav", sine(1, 44100, 0.01), 44100), 44100)
    assert needs_conversion(write(tmp_path / "m48.wav", sine(1, 48000, 0.01), 48000), 44100)
    assert needs_conversion(write(tmp_path / "s44.wav", np.zeros((2, 441), np.float32), 44100), 44100)
    with pytest.raises(AudioError, match="junk.wav"):
        (tmp_path / "junk.wav").write_text("junk")
        needs_conversion(tmp_path / "junk.wav")


@pytest.fixture
def mixed_dataset(tmp_path):
    """Device a: 48 kHz stereo 24-bit (needs conversion); device b: 44.1 kHz mono 16-bit."""
    root = tmp_path / "data"
    left, right = sine(1000, 48000, 1.0), sine(1000, 48000, 1.0, amp=0.25)
    write(root / "audio" / "park-x-0-0-a.wav", np.stack([left, right]), 48000, subtype="PCM_24")
    write(root / "audio" / "park-x-0-0-b.wav", sine(1000, 44100, 1.0), 44100)
    return root, index_of(root, ["park-x-0-0-a.wav", "park-x-0-0-b.wav"])


def test_prepare_audio_converts_48k_stereo_and_reuses_44k_mono(mixed_dataset, tmp_path):
    root, index = mixed_dataset
    out_dir, messages = tmp_path / "audio44k", []
    out = prepare_audio(index, out_dir, n_jobs=1, log=messages.append)

    assert out["audio_path"][1] == index["path"][1]  # used in place: no copy
    assert not (out_dir / "audio" / "park-x-0-0-b.wav").exists()
    converted = out_dir / "audio" / "park-x-0-0-a.wav"
    assert out["audio_path"][0] == str(converted)
    info = sf.info(str(converted))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (44100, 1, 44100, "FLOAT")
    y, _ = read_audio(converted)
    assert abs(peak_frequency(y[0], 44100) - 1000) < 2
    # the down-mix is the channel mean: amplitude (0.5 + 0.25) / 2
    assert abs(np.max(np.abs(y[0][1000:-1000])) - 0.375) < 0.01
    assert "1 converted" in messages[-1] and "0 reused" in messages[-1] and "1 already" in messages[-1]
    assert list(out.columns) == ["filename", "path", "audio_path"]


def test_prepare_audio_rerun_reuses_conversions(mixed_dataset, tmp_path):
    root, index = mixed_dataset
    out_dir, messages = tmp_path / "audio44k", []
    prepare_audio(index, out_dir, log=messages.append)
    converted = out_dir / "audio" / "park-x-0-0-a.wav"
    before = converted.stat().st_mtime_ns
    out = prepare_audio(index, out_dir, log=messages.append)
    assert converted.stat().st_mtime_ns == before
    assert "0 converted" in messages[-1] and "1 reused" in messages[-1]
    assert out["audio_path"][0] == str(converted)


def test_prepare_audio_redoes_an_incomplete_conversion(mixed_dataset, tmp_path):
    root, index = mixed_dataset
    out_dir, messages = tmp_path / "audio44k", []
    prepare_audio(index, out_dir)
    converted = out_dir / "audio" / "park-x-0-0-a.wav"
    sf.write(str(converted), np.zeros(100, np.float32), 44100, subtype="FLOAT")  # wrong length
    prepare_audio(index, out_dir, log=messages.append)
    assert "1 converted" in messages[-1]
    assert sf.info(str(converted)).frames == 44100


def test_prepare_audio_parallel_gives_the_same_files(mixed_dataset, tmp_path):
    root, index = mixed_dataset
    one = prepare_audio(index, tmp_path / "one", n_jobs=1)
    two = prepare_audio(index, tmp_path / "two", n_jobs=2)
    a, _ = read_audio(one["audio_path"][0])
    b, _ = read_audio(two["audio_path"][0])
    np.testing.assert_array_equal(a, b)
    assert one["audio_path"][1] == two["audio_path"][1]


def test_prepare_audio_names_a_corrupt_file(tmp_path):
    root = tmp_path / "data"
    (root / "audio").mkdir(parents=True)
    (root / "audio" / "broken-a.wav").write_bytes(b"not a wav at all")
    with pytest.raises(AudioError, match="broken-a.wav"):
        prepare_audio(index_of(root, ["broken-a.wav"]), tmp_path / "out")


def test_prepare_audio_requires_columns(tmp_path):
    with pytest.raises(DatasetError, match="path"):
        prepare_audio(pd.DataFrame({"filename": ["audio/x.wav"]}), tmp_path)


# --- issue 9: every WAV that libsndfile reads completely is read; the header check agrees with it ---


def _libsndfile_reads(path) -> np.ndarray:
    """What libsndfile itself reads from ``path``: (channels, n) float32, to the end of the data."""
    with sf.SoundFile(str(path)) as fh:
        blocks = []
        while True:
            block = fh.read(frames=4096, dtype="float32", always_2d=True)
            blocks.append(block)
            if len(block) < 4096:
                break
    return np.concatenate(blocks).T


WAV_KINDS = [(fmt, st) for fmt in ("WAV", "WAVEX", "RF64", "W64")
             for st in ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW")]
WAV_KINDS += [("WAV", "IMA_ADPCM"), ("WAV", "MS_ADPCM"), ("WAV", "GSM610"), ("W64", "GSM610")]


@pytest.mark.parametrize("fmt,subtype", WAV_KINDS, ids=[f"{f}-{s}" for f, s in WAV_KINDS])
def test_every_wav_kind_soundfile_writes_is_read_like_libsndfile(tmp_path, fmt, subtype):
    channels = 1 if subtype == "GSM610" else 2
    sr = 8000
    y = np.stack([sine(300 + 100 * c, sr, 0.1251) for c in range(channels)])  # 1001 frames: odd sizes
    path = tmp_path / "clip.wav"
    sf.write(str(path), y.T, sr, format=fmt, subtype=subtype)
    data, rate = read_audio(path)
    assert rate == sr
    np.testing.assert_array_equal(data, _libsndfile_reads(path))
    if subtype not in ("IMA_ADPCM", "MS_ADPCM", "GSM610"):  # block codecs pad the last block
        assert data.shape == y.shape
        np.testing.assert_allclose(data, y, atol=0.02 if subtype in ("PCM_U8", "ULAW", "ALAW") else 1e-4)


def _pcm16(tmp_path, n=1001):
    path = tmp_path / "clip.wav"
    sf.write(str(path), sine(440, 8000, n / 8000), 8000, subtype="PCM_16")
    return path, bytearray(path.read_bytes())


def _set_u32(raw: bytearray, chunk: bytes, value: int) -> None:
    import struct

    i = raw.index(chunk) if chunk != b"RIFF" else 0
    raw[i + 4:i + 8] = struct.pack("<I", value)


@pytest.mark.parametrize("riff,data", [(0xFFFFFFFF, 0xFFFFFFFF), (0x7FFFFFFF, 0x7FFFFFFF), (None, 2003)],
                         ids=["streaming-ffffffff", "streaming-7fffffff", "odd-size-counts-pad"])
def test_header_sizes_libsndfile_reads_past_are_accepted(tmp_path, riff, data):
    path, raw = _pcm16(tmp_path)
    if riff is not None:
        _set_u32(raw, b"RIFF", riff)
    _set_u32(raw, b"data", data)
    path.write_bytes(bytes(raw))
    out, _ = read_audio(path)
    assert out.shape == (1, 1001)
    np.testing.assert_array_equal(out, _libsndfile_reads(path))


def test_odd_sized_chunk_before_the_data_is_read(tmp_path):
    import struct

    path, raw = _pcm16(tmp_path)
    i = raw.index(b"data")
    raw[i:i] = b"JUNK" + struct.pack("<I", 5) + b"abcde" + b"\0"  # odd size, with its pad byte
    _set_u32(raw, b"RIFF", len(raw) - 8)
    path.write_bytes(bytes(raw))
    out, _ = read_audio(path)
    assert out.shape == (1, 1001)
    np.testing.assert_array_equal(out, _libsndfile_reads(path))


def test_a_missing_frame_is_still_truncation(tmp_path):
    path, raw = _pcm16(tmp_path)
    _set_u32(raw, b"data", 2004)  # one 16-bit frame more than the file holds
    path.write_bytes(bytes(raw))
    with pytest.raises(AudioError, match=r"clip.wav: truncated: the header declares 2004 bytes.*holds 2002"):
        read_audio(path)


def test_read_audio_takes_any_name_and_reads_to_the_end_of_the_stream(tmp_path):
    """A name with bytes that are not UTF-8 reaches libsndfile unchanged, and a FLAC whose STREAMINFO
    gives no length (libsndfile: SF_COUNT_MAX frames) is read to its end, in the pipeline's reader too."""
    y = np.stack([sine(440, 8000, 0.5), sine(660, 8000, 0.5)])
    name = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.flac")
    sf.write(os.fsencode(name), y.T, 8000, subtype="PCM_16", format="FLAC")
    want, _ = read_audio(name)
    raw = bytearray(open(os.fsencode(name), "rb").read())
    raw[8 + 13] &= 0xF0  # STREAMINFO's 36-bit total-samples field: 0, unknown
    raw[8 + 14:8 + 18] = b"\0\0\0\0"
    streamed = tmp_path / "streamed.flac"
    streamed.write_bytes(bytes(raw))
    assert sf.info(str(streamed)).frames == 2**63 - 1
    got, rate = read_audio(streamed)
    assert rate == 8000 and got.shape == (2, 4000)
    np.testing.assert_array_equal(got, want)
    target = os.fsdecode(os.fsencode(tmp_path) + b"/out \xff/x.wav")
    from caanet.audio import convert_file

    convert_file(name, target, 16000)
    assert read_audio(target)[0].shape == (1, 8000)


def test_a_header_declaring_no_data_is_named_as_such(tmp_path):
    """A recorder stopped before it wrote the sizes leaves data 0: libsndfile reads 0 frames."""
    path, raw = _pcm16(tmp_path)
    _set_u32(raw, b"data", 0)
    path.write_bytes(bytes(raw))
    with pytest.raises(AudioError, match=r"clip.wav: the file holds no audio samples \(its header declares 0 bytes"):
        read_audio(path)
