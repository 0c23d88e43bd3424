"""``caanet predict`` on real-world recordings (issue 18, item 5).

Any name the file system allows; streams of unknown length (a streamed FLAC, pipes, standard
input); folders holding MP3, Ogg and files that are not audio; block-by-block reading whose
windows equal the whole-file path's; memory flat in the recording's length; model files that
load but are inconsistent. An untrained model with 1 s windows is enough (no training).
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from caanet.audio import StreamResampler, resample
from caanet.data.layout import SCENE_LABELS
from caanet.features import FeatureParams
from caanet.inference import (Predictor, RecordingWindows, WindowCutter, clip_features, load_signal, predict_files,
                              signal_windows)
from caanet.modelfile import load_model_file, model_payload, save_model_file
from caanet.models import ModelConfig, build_model
from caanet.spec import CellSpec

ROOT = Path(__file__).resolve().parent.parent
PARAMS = FeatureParams(clip_seconds=1.0)
WINDOW = PARAMS.n_samples  # 44100


def cli(*args, stdin=None, check_rc: int | None = 0, **env_vars) -> subprocess.CompletedProcess:
    """``python -m caanet.cli ARGS`` (str or bytes arguments) with this checkout first on the path; bytes out."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **env_vars)
    argv = [a if isinstance(a, bytes) else str(a) for a in args]
    proc = subprocess.run([sys.executable, "-m", "caanet.cli", *argv], capture_output=True, env=env, cwd=ROOT,
                          timeout=300, stdin=stdin)
    if check_rc is not None:
        assert proc.returncode == check_rc, (f"rc {proc.returncode}\nstdout:\n{proc.stdout!r}\n"
                                             f"stderr:\n{proc.stderr.decode(errors='replace')}")
    return proc


def call(*args) -> subprocess.CompletedProcess:
    """``caanet.cli.main(ARGS)`` in this process (faster), arguments str or bytes (decoded as Python
    decodes argv), stdout and stderr as bytes through the real streams' encodings."""
    import contextlib

    from caanet.cli import main

    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace")
    argv = [os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in args]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    out.flush()
    err.flush()
    return subprocess.CompletedProcess(argv, rc, out.buffer.getvalue(), err.buffer.getvalue())


def results(proc) -> dict:
    """``{file: record}`` of a ``--format json`` run."""
    return {r["file"]: r for r in json.loads(proc.stdout)["results"]}


def recording(seconds: float, rate: int = 48000, channels: int = 2, seed: int = 0) -> np.ndarray:
    """``(n, channels)`` float32 noise with a tone that changes every second (windows differ)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    tone = 0.2 * np.sin(2 * np.pi * (300 + 200 * np.floor(t)) * t)
    return (0.05 * rng.standard_normal((t.size, channels)) + tone[:, None]).astype(np.float32)


def payload(mf_seed: int = 1, **overrides) -> dict:
    """A model file's dict: an untrained atrous attention multi-task model on 1 s windows."""
    spec = CellSpec.from_id("atrous-att-multi_task-L2", dataset="tiny", seed=0)
    mc = ModelConfig.from_spec(spec, channels=(2, 4, 4, 8), device_channels=(2, 4),
                               input_shape=(PARAMS.n_frames, PARAMS.n_mels))
    torch.manual_seed(mf_seed)
    obj = model_payload(model=build_model(mc), model_config=mc, spec=spec, train_config=None, feature_params=PARAMS,
                        norm_mean=np.full(64, -6.0, np.float32), norm_std=np.full(64, 2.0, np.float32),
                        scene_labels=SCENE_LABELS, device_labels=["a", "b", "c"])
    obj.update(overrides)
    return obj


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_model_file(tmp_path_factory.mktemp("model") / "model.pt", payload())


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 2.5 s 48 kHz stereo 24-bit WAV (3 windows)."""
    path = tmp_path_factory.mktemp("clip") / "clip.wav"
    sf.write(path, recording(2.5), 48000, subtype="PCM_24")
    return path


def reference(model, path) -> dict:
    proc = call("predict", model, path, "--format", "json", "--top-k", "10")
    return next(iter(results(proc).values()))


def assert_same_result(got: dict, want: dict, atol: float = 1e-5) -> None:
    assert got["windows"] == want["windows"] and got["duration_s"] == pytest.approx(want["duration_s"])
    for s in SCENE_LABELS:
        assert got["probabilities"][s] == pytest.approx(want["probabilities"][s], abs=atol)
    for d in ("a", "b", "c"):
        assert got["device_probabilities"][d] == pytest.approx(want["device_probabilities"][d], abs=atol)


# ------------------------------------------------------------------------------------ names

NAMES = [
    b"caf\xe9 latin-1.wav",            # not UTF-8: Python holds it with surrogate escapes
    b"-starts-with-dash.wav",          # given after --
    b"with:colon and space.wav",
    b"glob*star?[1].wav",              # exists: not a pattern
    b"line\nbreak.wav",
    b"LOUD.WAV",
    b"no_extension",
    b"http:",                          # with a file inside: http://x.wav names a real path
]


def test_any_name_the_file_system_allows_is_classified(tmp_path, model, clip):
    src = clip
    want = reference(model, src)
    folder = tmp_path / "names"
    folder.mkdir()
    raw = os.fsencode(folder)
    paths = []
    for name in NAMES:
        p = raw + b"/" + name
        if name == b"http:":
            os.mkdir(p)
            p = p + b"//x.wav"
        with open(p, "wb") as fh:
            fh.write(src.read_bytes())
        paths.append(p)
    os.symlink(paths[0], raw + b"/link.wav")
    paths.append(raw + b"/link.wav")
    # file by file, every name as the shell passes it (bytes), after -- for the leading dash
    proc = call("predict", model, "--format", "json", "--top-k", "10", "--", *paths)
    assert proc.returncode == 0, proc.stderr
    got = results(proc)
    assert sorted(os.fsencode(f) for f in got) == sorted(paths)  # named exactly as given
    for rec in got.values():
        assert_same_result(rec, want)
    # CSV keeps the names' bytes (through the real command's stdout); the table escapes what cannot
    # be shown on one line
    csv_out = cli("predict", model, "--format", "csv", "--", *paths).stdout
    assert b"caf\xe9 latin-1.wav" in csv_out and b'"' + raw + b'/line\nbreak.wav"' in csv_out
    table = call("predict", model, "--", *paths).stdout.decode("utf-8")
    assert "caf\\xe9 latin-1.wav" in table and "line\\nbreak.wav" in table
    assert len(table.splitlines()) == 1 + len(paths)
    # the folder finds them all (the one without an extension is probed and read)
    found = results(call("predict", model, folder, "--format", "json"))
    assert sorted(os.fsencode(f) for f in found) == sorted(os.path.normpath(p) for p in paths)


def test_names_that_are_not_utf8_are_printed_under_a_strict_locale(tmp_path, model, clip):
    """A UTF-8 locale other than C makes stdout strict: names are still written, as their bytes."""
    raw = os.fsencode(tmp_path)
    named_model = raw + b"/mod\xe8le.pt"
    with open(named_model, "wb") as fh:
        fh.write(model.read_bytes())
    strict = {"PYTHONIOENCODING": "utf-8:strict"}
    out = cli("inspect", named_model, **strict).stdout
    assert b"path: " + named_model + b"\n" in out
    out = cli("predict", named_model, clip, "--format", "csv", **strict).stdout
    assert out.count(b"\n") == 2
    fig = raw + b"/fig \xff.png"
    out = cli("explain", named_model, clip, "-o", fig, **strict).stdout
    assert out.startswith(fig + b": attention map of ") and os.path.exists(fig)


def test_a_file_libsndfile_cannot_read_gets_one_line_naming_it(tmp_path, model, clip):
    bad = os.fsencode(tmp_path) + b"/bad\nname \xff.wav"
    with open(bad, "wb") as fh:
        fh.write(b"RIFF not really audio")
    proc = call("predict", model, bad, clip, "--format", "csv")
    assert proc.returncode == 1
    lines = proc.stderr.decode("utf-8").splitlines()
    assert any(line.startswith("caanet: error: ") and "bad\\nname \\xff.wav: cannot read audio" in line
               for line in lines), lines
    assert len(lines) == 2 and b"Traceback" not in proc.stderr
    assert proc.stdout.count(b"\n") == 2  # header and the good file


# ------------------------------------------------------------------------------------ stream lengths

def _flac_of_unknown_length(src: Path, dst: Path) -> None:
    """A FLAC whose STREAMINFO gives 0 total samples (unknown), as streaming encoders write it."""
    y, sr = sf.read(src, dtype="float32")
    sf.write(dst, y, sr, subtype="PCM_24", format="FLAC")
    raw = bytearray(dst.read_bytes())
    assert raw[:4] == b"fLaC" and raw[4] & 0x7F == 0  # STREAMINFO first
    info = 8  # after the marker and the block header
    raw[info + 13] &= 0xF0  # the 36-bit total-samples field: upper 4 bits here, then 4 bytes
    raw[info + 14:info + 18] = b"\0\0\0\0"
    dst.write_bytes(bytes(raw))
    assert sf.info(dst).frames == 2**63 - 1  # libsndfile: SF_COUNT_MAX (length unknown)


def _wav_with_streaming_sizes(src: Path, dst: Path) -> None:
    raw = bytearray(src.read_bytes())
    i = raw.index(b"data")
    raw[4:8] = raw[i + 4:i + 8] = struct.pack("<I", 0xFFFFFFFF)
    dst.write_bytes(bytes(raw))


def test_streams_of_unknown_length_are_read_to_the_end(tmp_path, model, clip):
    src = clip
    want = reference(model, src)
    flac, wav = tmp_path / "streamed.flac", tmp_path / "streamed.wav"
    _flac_of_unknown_length(src, flac)
    _wav_with_streaming_sizes(src, wav)
    ogg = tmp_path / "clip.ogg"
    sf.write(ogg, sf.read(src, dtype="float32")[0], 48000, format="OGG", subtype="VORBIS")
    want_ogg = reference(model, ogg)
    # a FLAC of unknown length, read from its file and from standard input redirected from it
    assert_same_result(results(call("predict", model, flac, "--format", "json"))[str(flac)], want)
    with open(flac, "rb") as fh:
        assert_same_result(results(cli("predict", model, "-", "--format", "json", stdin=fh))["-"], want)
    # a pipe: WAV with a streamer's sizes and Ogg (no length at all) through standard input
    for path, expect in ((wav, want), (ogg, want_ogg)):
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        cat = subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE)
        proc = subprocess.run([sys.executable, "-m", "caanet.cli", "predict", str(model), "-", "--format", "json"],
                              stdin=cat.stdout, capture_output=True, env=env, cwd=ROOT, timeout=120)
        cat.stdout.close()
        cat.wait()
        assert proc.returncode == 0, proc.stderr.decode()
        assert_same_result(results(proc)["-"], expect)
    # a FIFO named on the command line
    fifo = tmp_path / "live.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(wav.read_bytes()))
    writer.start()
    proc = call("predict", model, fifo, "--format", "json")
    writer.join(timeout=60)
    assert_same_result(results(proc)[str(fifo)], want)


def test_stdin_that_is_a_terminal_or_empty_is_named(tmp_path, model):
    proc = cli("predict", model, "-", stdin=subprocess.DEVNULL, check_rc=1)
    assert b"caanet: error: -: cannot read audio" in proc.stderr and b"Traceback" not in proc.stderr
    leader, follower = os.openpty()  # a terminal: refused rather than waiting for typed audio
    try:
        proc = cli("predict", model, "-", stdin=follower, check_rc=1)
    finally:
        os.close(leader)
        os.close(follower)
    assert b"caanet: error: -: standard input is a terminal" in proc.stderr


# ------------------------------------------------------------------------------------ folders

def test_folder_classifies_what_libsndfile_reads_and_names_the_rest(tmp_path, model, clip):
    src = clip
    y, sr = sf.read(src, dtype="float32")
    d = tmp_path / "field"
    (d / "sub").mkdir(parents=True)
    (d / "take.wav").write_bytes(src.read_bytes())
    sf.write(d / "sub" / "take.mp3", y, sr, format="MP3")
    sf.write(d / "sub" / "take.ogg", y, sr, format="OGG", subtype="VORBIS")
    sf.write(d / "sub" / "take.opus", y, sr, format="OGG", subtype="OPUS")
    (d / "recorder_take_7").write_bytes(src.read_bytes())  # a WAV without an extension
    (d / "notes.txt").write_text("site visit\n")
    (d / "._take.wav").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata beside a copy
    os.mkfifo(d / "a.fifo")  # never opened: reading it would wait for a writer
    os.symlink(d / "gone.wav", d / "dangling.wav")
    os.symlink(d, d / "sub" / "loop")  # a link back up: each folder is searched once
    proc = call("predict", model, d, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    got = results(proc)
    assert sorted(Path(f).relative_to(d).as_posix() for f in got) == [
        "recorder_take_7", "sub/take.mp3", "sub/take.ogg", "sub/take.opus", "take.wav"]
    want = got[str(d / "take.wav")]
    for f, rec in got.items():
        assert rec["scene"] == want["scene"] and rec["windows"] == want["windows"], f
    err = proc.stderr.decode().splitlines()
    skipped = sorted(line.split(" ")[2].rstrip(":") for line in err if line.startswith("caanet: skipped "))
    assert skipped == sorted(str(d / n) for n in ("._take.wav", "a.fifo", "dangling.wav", "notes.txt")), err
    assert len(err) == 4  # nothing else: skipping is not an error (exit status 0)


# ------------------------------------------------------------------------------------ streaming

@pytest.mark.parametrize("rates", [(48000, 44100), (44100, 44100), (8000, 44100), (96000, 44100), (22050, 16000)])
def test_stream_resampler_equals_resample(rates):
    rng = np.random.default_rng(1)
    for n in (0, 1, 5, 1000, 12345):
        y = rng.standard_normal(n).astype(np.float32)
        want = resample(y, *rates)
        for block in (1, 7, 1000, 4096, max(n, 1)):
            if block == 1 and n > 1000:
                continue
            rs = StreamResampler(*rates)
            parts = [rs.push(y[i:i + block]) for i in range(0, n, block)] + [rs.finish()]
            got = np.concatenate(parts) if parts else np.zeros(0, np.float32)
            assert got.shape == want.shape, (rates, n, block)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=f"{rates} n={n} block={block}")


@pytest.mark.parametrize("n", [1, 100, WINDOW - 1, WINDOW, WINDOW + 1, 2 * WINDOW, int(2.5 * WINDOW), 3 * WINDOW + 7])
def test_window_cutter_gives_the_whole_signals_windows(n):
    y = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    want, want_starts = signal_windows(y, WINDOW)
    for block in (999, WINDOW - 1, WINDOW, 2 * WINDOW + 1, n):
        cut = WindowCutter(WINDOW)
        pairs = [(s, w.copy()) for i in range(0, n, block) for s, w in cut.push(y[i:i + block])]
        pairs += [(s, w.copy()) for s, w in cut.finish()]
        assert [s for s, _ in pairs] == want_starts and cut.n == n
        np.testing.assert_array_equal(np.stack([w for _, w in pairs]), want)


def test_streamed_prediction_equals_the_whole_file_window_for_window(tmp_path, model):
    path = tmp_path / "long.wav"
    sf.write(path, recording(7.3), 48000, subtype="PCM_24")  # 8 windows, the last ending at the end
    y = load_signal(path, PARAMS.sample_rate)
    want_windows, want_starts = signal_windows(y, WINDOW)
    assert want_starts[-1] + WINDOW == y.shape[-1] and len(want_starts) == 8
    for block in (1000, 4096, 1 << 16):
        rec = RecordingWindows(str(path), PARAMS, block_frames=block)
        pairs = [(s, w.copy()) for s, w in rec]  # the window array is reused
        assert [s for s, _ in pairs] == want_starts and rec.n_samples == y.shape[-1]
        np.testing.assert_allclose(np.stack([w for _, w in pairs]), want_windows, rtol=0, atol=1e-6)
    mf = load_model_file(model)
    whole = Predictor(mf).predict([clip_features(path, PARAMS)])[0]
    for batch in (1, 3, 16):
        (_, got, err), = predict_files(Predictor(mf, batch_size=batch), [str(path)])
        assert err is None and got.window_starts == want_starts and got.duration_s == whole.duration_s
        np.testing.assert_allclose(got.window_scene, whole.window_scene, atol=1e-5)
        np.testing.assert_allclose(got.window_device, whole.window_device, atol=1e-5)
        np.testing.assert_allclose(got.scene_logprob, whole.scene_logprob, atol=1e-5)
        np.testing.assert_allclose(got.device_logprob, whole.device_logprob, atol=1e-5)


def _peak_rss_mb(model, path) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "caanet.cli", "predict", str(model), str(path), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, proc.stderr.read().decode()
    proc.stderr.close()
    return usage.ru_maxrss / 1024


def test_peak_memory_does_not_grow_with_the_recording(tmp_path, model):
    """10 s and 6 min of 48 kHz stereo 24-bit: the whole-file path grew by ~300 MB; streaming is flat."""
    short, long = tmp_path / "short.wav", tmp_path / "long.wav"
    sf.write(short, recording(10), 48000, subtype="PCM_24")
    with sf.SoundFile(long, "w", 48000, 2, "PCM_24") as fh:
        for k in range(36):
            fh.write(recording(10, seed=k))
    base, grown = _peak_rss_mb(model, short), _peak_rss_mb(model, long)
    assert grown - base < 30, f"peak RSS {base:.0f} MB for 10 s, {grown:.0f} MB for 6 min"


# ------------------------------------------------------------------------------------ model files

def _nan_weight(obj):
    name = next(k for k, v in obj["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
    obj["state_dict"][name] = obj["state_dict"][name].clone()
    obj["state_dict"][name].view(-1)[3] = float("nan")
    return f"state_dict.{name}"


BROKEN = {
    "too-few-scene-labels": (lambda o: o.update(scene_labels=o["scene_labels"][:9]) or "scene_labels"),
    "too-many-scene-labels": (lambda o: o.update(scene_labels=o["scene_labels"] + ["x"]) or "scene_labels"),
    "duplicate-scene-labels": (lambda o: o.update(scene_labels=o["scene_labels"][:9] + ["bus"]) or "scene_labels"),
    "device-labels-not-matching-cnn-d": (lambda o: o.update(device_labels=["a", "b"]) or "device_labels"),
    "duplicate-device-labels": (lambda o: o.update(device_labels=["a", "b", "a"]) or "device_labels"),
    "empty-device-labels": (lambda o: o.update(device_labels=[]) or "device_labels"),
    "empty-label-string": (lambda o: o.update(device_labels=["a", "", "c"]) or "device_labels"),
    "unseen-device-also-seen": (lambda o: o.update(unseen_device_labels=["c"]) or "unseen_device_labels"),
    "nan-weight": _nan_weight,
    "inf-norm-mean": (lambda o: o["norm_mean"].__setitem__(5, float("inf")) or "norm_mean"),
    "nan-norm-std": (lambda o: o["norm_std"].__setitem__(0, float("nan")) or "norm_std"),
    "zero-norm-std": (lambda o: o["norm_std"].__setitem__(7, 0.0) or "norm_std"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_inconsistent_model_file_is_refused_naming_the_file_and_key(tmp_path, clip, case):
    obj = payload()
    key = BROKEN[case](obj)
    path = save_model_file(tmp_path / f"{case}.pt", obj)
    proc = call("predict", path, clip)
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 1 and proc.stdout == b"", proc
    assert len(lines) == 1 and lines[0].startswith(f"caanet: error: {path}: key '{key}': "), lines


def test_non_finite_output_is_an_error_naming_the_file_and_window(tmp_path, clip):
    """Finite weights that overflow on a recording: never a NaN probability with exit status 0."""
    obj = payload()
    head = [k for k in obj["state_dict"] if k.startswith("head") and k.endswith("weight")]
    assert head, list(obj["state_dict"])
    for k in head:
        obj["state_dict"][k] = obj["state_dict"][k] * 3e38
    path = save_model_file(tmp_path / "overflow.pt", obj)
    proc = call("predict", path, clip, "--format", "json")
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert f"{clip}: window 1 of 3 (from 0.00 s): the model {path} gives non-finite" in err, err
    assert b"NaN" not in proc.stdout and b"nan" not in proc.stdout


def test_cli_batch_default_is_the_librarys():
    from caanet.cli import BATCH_DEFAULT
    from caanet.inference import DEFAULT_BATCH

    assert BATCH_DEFAULT == DEFAULT_BATCH
