"""caanet.features: the HDF5 cache (build_cache, load_cache, cache_summary)."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from caanet.errors import AudioError, CacheError, ConfigError, DatasetError
from caanet.features import FeatureParams, _read_rows, build_cache, cache_summary, load_cache, logmel

# 1 s clips at 8 kHz: 1 + (8000 - 256) // 128 = 61 frames x 16 mels
PARAMS = FeatureParams(sample_rate=8000, n_fft=256, hop_length=128, n_mels=16, fmax=4000.0, clip_seconds=1.0)
SCENES = ["bus", "park"]
DEVICES = ["a", "b", "c"]


def make_index(root, *, lengths=None, rate=8000, channels=1):
    """Write WAVs for 2 scenes x 2 locations x 3 devices and return the audio index.

    ``lengths`` maps a file name to its length in samples (default 1 s); the data differ per clip.
    """
    lengths = lengths or {}
    rows = []
    rng = np.random.default_rng(0)
    for scene in SCENES:
        for loc, split in ((0, "train"), (1, "test")):
            for dev in DEVICES:
                name = f"audio/{scene}-city-{loc}-0-{dev}.wav"
                n = lengths.get(name, rate)
                y = (0.1 * rng.standard_normal((n, channels))).astype(np.float32)
                path = root / name
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(path), y, rate, subtype="FLOAT")
                rows.append({"filename": name, "scene": scene, "device": dev, "identifier": f"city-{loc}",
                             "split": split, "audio_path": str(path)})
    return pd.DataFrame(rows).sort_values("filename").reset_index(drop=True)


def build(index, path, n_jobs=1, log=None):
    return build_cache(index, path, PARAMS, dataset="toy", scene_labels=SCENES, device_labels=DEVICES,
                       n_jobs=n_jobs, log=log)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    index = make_index(root)
    build(index, root / "toy.h5")
    return root / "toy.h5", index


def test_layout_follows_the_contract(cache):
    path, index = cache
    with h5py.File(path, "r") as h5:
        ds = h5["logmel"]
        assert ds.dtype == np.float32 and ds.shape == (12, 61, 16)
        assert ds.chunks == (12, 61, 16) and ds.compression is None
        for key in ("filename", "scene", "device", "identifier", "split"):
            assert h5[key].asstr()[...].tolist() == index[key].tolist()
        assert json.loads(h5.attrs["params"]) == PARAMS.to_dict()
        assert h5.attrs["params_hash"] == PARAMS.hash()
        assert json.loads(h5.attrs["scene_labels"]) == SCENES
        assert json.loads(h5.attrs["device_labels"]) == DEVICES
        assert h5.attrs["dataset"] == "toy" and h5.attrs["n_padded"] == 0 and h5.attrs["n_cropped"] == 0
        assert "caanet_version" in h5.attrs
        y, _ = sf.read(index["audio_path"][5], dtype="float32")
        np.testing.assert_array_equal(ds[5], logmel(y, PARAMS))


def test_parallel_build_is_identical(cache, tmp_path):
    path, index = cache
    build(index, tmp_path / "two.h5", n_jobs=2)
    with h5py.File(path, "r") as a, h5py.File(tmp_path / "two.h5", "r") as b:
        np.testing.assert_array_equal(a["logmel"][...], b["logmel"][...])
        assert a["filename"].asstr()[...].tolist() == b["filename"].asstr()[...].tolist()


def test_wrong_lengths_are_padded_cropped_and_counted(tmp_path):
    short, long = "audio/bus-city-0-0-a.wav", "audio/park-city-1-0-c.wav"
    index = make_index(tmp_path, lengths={short: 5000, long: 9000})
    messages = []
    summary = build(index, tmp_path / "fit.h5", log=messages.append)
    assert (summary["n_padded"], summary["n_cropped"]) == (1, 1)
    with h5py.File(tmp_path / "fit.h5", "r") as h5:
        assert (h5.attrs["n_padded"], h5.attrs["n_cropped"]) == (1, 1)
        assert json.loads(h5.attrs["padded_examples"]) == [short]
        i = index.index[index["filename"] == short][0]
        y, _ = sf.read(index["audio_path"][i], dtype="float32")
        np.testing.assert_array_equal(h5["logmel"][i], logmel(np.pad(y, (0, 3000)), PARAMS))
    text = "\n".join(messages)
    assert "1 clip(s) padded" in text and short in text
    assert "1 clip(s) cropped" in text and long in text


def test_stereo_is_down_mixed(tmp_path):
    index = make_index(tmp_path, channels=2)
    build(index, tmp_path / "st.h5")
    y, _ = sf.read(index["audio_path"][0], dtype="float32")
    assert load_cache(tmp_path / "st.h5").x[0] == pytest.approx(logmel(y.mean(axis=1), PARAMS), abs=1e-5)


def test_a_failure_mid_write_leaves_no_file(cache, tmp_path):
    _, index = cache
    index = index.copy()
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF garbage")
    index.loc[len(index) - 1, "audio_path"] = str(bad)  # the last clip: earlier chunks are written first
    out = tmp_path / "out" / "toy.h5"
    for n_jobs in (1, 2):
        with pytest.raises(AudioError, match="broken.wav"):
            build(index, out, n_jobs=n_jobs)
        assert list(out.parent.iterdir()) == []


def test_a_failed_rebuild_keeps_the_old_file(cache, tmp_path):
    path, index = cache
    out = tmp_path / "toy.h5"
    shutil.copy(path, out)
    before = out.read_bytes()
    index = index.copy()
    index.loc[3, "audio_path"] = str(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="missing.wav"):
        build(index, out)
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["toy.h5"]


def test_wrong_sample_rate_names_the_file(tmp_path):
    index = make_index(tmp_path, rate=16000)
    with pytest.raises(AudioError, match=r"bus-city-0-0-a.wav.*16000 Hz"):
        build(index, tmp_path / "x.h5")


@pytest.mark.parametrize("column, value", [("scene", "beach"), ("device", "d"), ("split", "dev")])
def test_unknown_labels_name_the_file_and_label(cache, tmp_path, column, value):
    index = cache[1].copy()
    index.loc[4, column] = value
    with pytest.raises(DatasetError, match=rf"{index['filename'][4]}.*{value}"):
        build(index, tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


def test_missing_index_column_is_named(cache, tmp_path):
    with pytest.raises(DatasetError, match="audio_path"):
        build(cache[1].drop(columns="audio_path"), tmp_path / "x.h5")


# ----------------------------------------------------------------------------------------------

def test_load_cache_everything(cache):
    path, index = cache
    fs = load_cache(path)
    assert len(fs) == 12 and fs.x.shape == (12, 61, 16) and fs.x.dtype == np.float32
    assert fs.scene.dtype == np.int64 and fs.device.dtype == np.int64
    assert [SCENES[i] for i in fs.scene] == index["scene"].tolist()
    assert [DEVICES[i] for i in fs.device] == index["device"].tolist()
    assert fs.filename.tolist() == index["filename"].tolist()
    assert fs.params == PARAMS and fs.scene_labels == SCENES and fs.device_labels == DEVICES
    assert fs.attrs["dataset"] == "toy"


def test_load_cache_split_and_devices(cache):
    path, index = cache
    full = load_cache(path)
    sub = load_cache(path, split="test", devices=["b", "c"])
    want = index[(index["split"] == "test") & index["device"].isin(["b", "c"])].index.to_numpy()
    assert len(want) == 4
    assert sub.filename.tolist() == index["filename"][want].tolist()
    np.testing.assert_array_equal(sub.x, full.x[want])
    np.testing.assert_array_equal(sub.device, full.device[want])
    assert set(sub.split) == {"test"}
    assert len(load_cache(path, split=["train", "test"])) == 12
    assert len(load_cache(path, devices="a")) == 4


def test_one_open_cache_answers_every_read(cache):
    """FeatureCache is the one reader: labels, columns, summary, selections and rows from one open file."""
    from caanet.features import FeatureCache

    path, index = cache
    with FeatureCache(path) as c:
        assert (c.scene_labels, c.device_labels, c.params, c.n_clips) == (SCENES, DEVICES, PARAMS, 12)
        assert c.columns["filename"].tolist() == index["filename"].tolist()
        assert c.summary() == cache_summary(path)
        sub = c.select(split="test", devices=["b", "c"])
        ref = load_cache(path, split="test", devices=["b", "c"])
        np.testing.assert_array_equal(sub.x, ref.x)
        assert sub.filename.tolist() == ref.filename.tolist()
        np.testing.assert_array_equal(c.logmel_rows([1, 4, 5]), load_cache(path).x[[1, 4, 5]])
        with pytest.raises(ValueError, match="sorted"):
            c.logmel_rows([4, 1])
    with pytest.raises(CacheError, match="closed"):
        c.select(split="train")


def test_load_cache_rejects_unknown_selections(cache):
    with pytest.raises(ConfigError, match="validation"):
        load_cache(cache[0], split="validation")
    with pytest.raises(ConfigError, match="'z'"):
        load_cache(cache[0], devices=["z"])


@pytest.mark.parametrize("block", [1, 2, 3, 256])
def test_read_rows_reads_any_sorted_selection(tmp_path, block):
    data = np.arange(20 * 2 * 3, dtype=np.float32).reshape(20, 2, 3)
    with h5py.File(tmp_path / "r.h5", "w") as h5:
        h5.create_dataset("d", data=data)
    index = np.array([0, 1, 2, 5, 7, 8, 13, 19])
    with h5py.File(tmp_path / "r.h5", "r") as h5:
        np.testing.assert_array_equal(_read_rows(h5["d"], index, block=block), data[index])
        np.testing.assert_array_equal(_read_rows(h5["d"], np.arange(20), block=block), data)
        assert _read_rows(h5["d"], np.array([], dtype=np.int64), block=block).shape == (0, 2, 3)


def _edit(src, dst, fn):
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as h5:
        fn(h5)
    return dst


def _replace(key, data, **kw):
    def fn(h5):
        del h5[key]
        h5.create_dataset(key, data=data, **kw)
    return fn


def _set_attr(key, value):
    def fn(h5):
        h5.attrs[key] = value
    return fn


STR = h5py.string_dtype("utf-8")
CORRUPTIONS = {
    "missing-key": (lambda h5: h5.__delitem__("identifier"), "'identifier' is missing"),
    "missing-attr": (lambda h5: h5.attrs.__delitem__("device_labels"), "'device_labels' is missing"),
    "wrong-dtype": (_replace("logmel", np.zeros((12, 61, 16), np.float64)), "'logmel' must be float32"),
    "wrong-shape": (_replace("logmel", np.zeros((12, 61, 8), np.float32)), r"'logmel' has shape \(12, 61, 8\)"),
    "wrong-ndim": (_replace("logmel", np.zeros((12, 976), np.float32)), "'logmel' has shape"),
    "short-strings": (_replace("scene", np.array(["bus"] * 11, dtype=object), dtype=STR), "'scene' must be 12 strings"),
    "unknown-label": (_set_attr("scene_labels", json.dumps(["bus"])), "'scene' row .*'park'"),
    "bad-params": (_set_attr("params", json.dumps({"n_mels": 16, "hop": 3})), "'params'.*hop"),
    "bad-hash": (_set_attr("params_hash", "0000000000"), "'params_hash'"),
    "bad-json": (_set_attr("device_labels", "[a, b"), "'device_labels' is not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_load_cache_validation_names_the_key(cache, tmp_path, case):
    fn, message = CORRUPTIONS[case]
    bad = _edit(cache[0], tmp_path / "bad.h5", fn)
    with pytest.raises(CacheError, match=message) as err:
        load_cache(bad)
    assert "bad.h5" in str(err.value)
    with pytest.raises(CacheError, match=message):
        cache_summary(bad)


def test_load_cache_missing_or_not_hdf5(tmp_path):
    with pytest.raises(CacheError, match="nothere.h5.*not found"):
        load_cache(tmp_path / "nothere.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(CacheError, match="text.h5.*not a readable HDF5"):
        load_cache(tmp_path / "text.h5")


def test_cache_summary_counts(cache):
    s = cache_summary(cache[0])
    assert s["n_clips"] == 12 and s["dataset"] == "toy"
    assert s["by_device"] == {"a": 4, "b": 4, "c": 4}
    assert s["by_scene"] == {"bus": 6, "park": 6}
    assert s["by_split"] == {"train": 6, "test": 6, "none": 0}
    assert s["device_scene"]["b"] == {"bus": 2, "park": 2}
    assert s["device_split"]["c"] == {"train": 2, "test": 2, "none": 0}
    assert s["params"] == PARAMS.to_dict() and s["n_padded"] == 0


def test_load_cache_reads_the_shared_tiny_fixture(tiny_cache):
    """The training tests' hand-written fixture (tests/conftest.py) is a valid cache."""
    fs = load_cache(tiny_cache, split="train")
    assert fs.x.shape[1:] == (32, 16) and set(fs.split) == {"train"}


# --- issue 9: HDF5 on a file system without locks (NFS without lockd, cluster scratch) ---


@pytest.fixture
def no_locks(monkeypatch):
    """h5py.File as on a file system without locks: any open that asks HDF5 to lock the file
    (the default, unless locking=False or HDF5_USE_FILE_LOCKING=FALSE) fails with errno 37."""
    real = h5py.File

    def File(name, mode="r", *args, **kwargs):
        import os

        if kwargs.get("locking") is not False and os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() != "FALSE":
            raise OSError(37, "Unable to synchronously open file (unable to lock file, errno = 37, "
                              "error message = 'No locks available')")
        return real(name, mode, *args, **kwargs)

    monkeypatch.delenv("HDF5_USE_FILE_LOCKING", raising=False)
    monkeypatch.setattr(h5py, "File", File)
    return real


def test_cache_is_built_and_read_where_files_cannot_be_locked(no_locks, tmp_path):
    from caanet.features import FeatureCache
    from caanet.render.dataset_page import render_dataset_page

    index = make_index(tmp_path)
    build(index, tmp_path / "toy.h5")
    fs = load_cache(tmp_path / "toy.h5", split="train")
    assert fs.x.shape == (6, PARAMS.n_frames, PARAMS.n_mels)
    with FeatureCache(tmp_path / "toy.h5") as c:  # the training job's one open of its cache
        assert (c.scene_labels, c.device_labels) == (SCENES, DEVICES)
        assert list(c.columns["filename"]) == list(index["filename"])
        assert c.select(split="test").x.shape[0] == len(index) - 6
    assert cache_summary(tmp_path / "toy.h5")["n_clips"] == len(index)
    render_dataset_page(tmp_path / "toy.h5", tmp_path / "page.html", title="toy")
    assert (tmp_path / "page.html").stat().st_size > 0


def test_lock_failure_that_cannot_be_avoided_names_the_file_and_the_remedy(no_locks, tmp_path, monkeypatch):
    from caanet.errors import HDF5LockError
    from caanet.io import open_hdf5

    index = make_index(tmp_path)
    build(index, tmp_path / "toy.h5")
    with pytest.raises(HDF5LockError, match=r"toy\.h5.*HDF5_USE_FILE_LOCKING=FALSE"):
        open_hdf5(tmp_path / "toy.h5", "r", owned=False)  # a file another program may be writing

    def old_h5py_file(name, mode="r", *args, **kwargs):  # h5py < 3.5: no locking argument
        if "locking" in kwargs:
            raise TypeError("__init__() got an unexpected keyword argument 'locking'")
        return no_locks_file(name, mode, *args, **kwargs)

    no_locks_file = h5py.File
    monkeypatch.setattr(h5py, "File", old_h5py_file)
    with pytest.raises(HDF5LockError, match=r"new\.h5.*HDF5_USE_FILE_LOCKING=FALSE"):
        build(index, tmp_path / "new.h5")
    assert not (tmp_path / "new.h5").exists()
    with pytest.raises(HDF5LockError, match=r"toy\.h5.*HDF5_USE_FILE_LOCKING=FALSE"):
        load_cache(tmp_path / "toy.h5")
    monkeypatch.setenv("HDF5_USE_FILE_LOCKING", "FALSE")  # the documented remedy works
    assert load_cache(tmp_path / "toy.h5").x.shape[0] == len(index)


def test_a_corrupt_file_is_still_reported_as_unreadable_not_as_a_lock(no_locks, tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(CacheError, match="not a readable HDF5 file") as info:
        load_cache(bad)
    assert "HDF5_USE_FILE_LOCKING" not in str(info.value)
