"""caanet.data.synth: the embedded dataset is a real DCASE-layout dataset, deterministic and learnable."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from caanet.data import synth
from caanet.data.layout import SCENE_LABELS, read_dataset
from caanet.errors import ConfigError, DatasetError

SMALL = {
    "seed": 7, "clip_seconds": 1.0, "cities": ["lisbon", "milan", "oslo", "riga"], "unsplit_cities": ["milan"],
    "locations_per_city": 2, "segments_per_location": 2, "evaluate_fraction": 0.34, "parallel_fraction": 0.25,
    "layout": "dcase2019",
}
NAME_RE = re.compile(r"^audio/(?P<scene>[a-z_]+)-(?P<city>[a-z0-9]+)-(?P<loc>\d+)-(?P<seg>\d+)-(?P<dev>[a-z0-9]+)\.wav$")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    cfg = synth.SynthConfig.from_dict(SMALL)
    root = tmp_path_factory.mktemp("embedded") / "ds"
    summary = synth.generate_dataset(root, cfg, n_jobs=1)
    return cfg, root, summary, read_dataset(root, scene_labels=SCENE_LABELS, device_labels=list(cfg.devices))


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_generated_layout_is_read_by_the_real_reader(small):
    cfg, root, summary, df = small
    assert df.attrs["layout"] == "dcase2019" and (root / "evaluation_setup/fold1_test.csv").is_file()
    assert len(df) == summary["n_clips"] == sum(summary["devices"].values())
    assert set(df["scene"]) == set(SCENE_LABELS)
    assert not any(p.name.startswith(".") for p in root.parent.iterdir())  # no temporary folder left


def test_filenames_follow_the_dcase_pattern(small):
    _, _, _, df = small
    for f, scene, ident, dev in zip(df["filename"], df["scene"], df["identifier"], df["device"]):
        m = NAME_RE.match(f)
        assert m, f
        assert (m["scene"], f"{m['city']}-{m['loc']}", m["dev"]) == (scene, ident, dev)


def test_device_counts_and_parallel_recordings(small):
    cfg, _, summary, df = small
    n = df["device"].value_counts()
    assert n["a"] == len(SCENE_LABELS) * 4 * 2 * 2 and n["b"] == n["c"]
    assert 3 <= n["a"] / n["b"] <= 5  # parallel_fraction 0.25 with at least one per scene and split
    stems = {d: set(df.loc[df["device"] == d, "filename"].str[:-6]) for d in "abc"}
    assert stems["b"] == stems["c"] and stems["b"] < stems["a"]
    per_scene = df[df["device"] == "b"].groupby("scene").size()
    assert per_scene.index.tolist() == list(SCENE_LABELS) and per_scene.min() >= 2


def test_default_config_mimics_the_dcase_ratio():
    segs = synth.plan_segments(synth.SynthConfig())
    n_a = sum("a" in s.devices for s in segs)
    n_b = sum("b" in s.devices for s in segs)
    assert n_a == 720 and n_a / n_b == 12


def test_audio_formats_per_device(small):
    _, _, _, df = small
    for dev, (rate, channels, subtype) in {"a": (48000, 2, "PCM_24"), "b": (44100, 1, "PCM_16"),
                                           "c": (44100, 1, "PCM_16")}.items():
        info = sf.info(df.loc[df["device"] == dev, "path"].iloc[0])
        assert (info.samplerate, info.channels, info.subtype, info.format) == (rate, channels, subtype, "WAV")
        assert info.frames == rate * 1


def test_parallel_clips_share_the_scene_and_a_is_binaural(small):
    _, root, _, df = small
    row = df[df["device"] == "b"].iloc[0]
    stem = row["filename"][:-6]
    a, _ = sf.read(root / f"{stem}-a.wav")
    b, _ = sf.read(root / f"{stem}-b.wav")
    c, _ = sf.read(root / f"{stem}-c.wav")
    left_right = np.corrcoef(a[:, 0], a[:, 1])[0, 1]
    assert 0.3 < left_right < 0.999  # two slightly decorrelated ears
    env = lambda y, r: np.sqrt(np.mean(y[: (len(y) // (r // 20)) * (r // 20)].reshape(-1, r // 20) ** 2, 1))
    other = df.loc[(df["device"] == "b") & (df["scene"] != row["scene"]), "filename"].iloc[0]
    d, _ = sf.read(root / other)
    same = np.corrcoef(np.log(env(b, 44100)), np.log(env(c, 44100)))[0, 1]
    diff = np.corrcoef(np.log(env(b, 44100)), np.log(env(d, 44100)))[0, 1]
    assert same > 0.5 and same > diff + 0.2  # B and C follow the same events; another scene does not


def test_splits_are_location_disjoint_with_unsplit_city(small):
    _, _, _, df = small
    loc = df.groupby("identifier")["split"].agg(set)
    assert all(len(s) == 1 for s in loc)
    assert set(df.loc[df["identifier"].str.startswith("milan-"), "split"]) == {"none"}
    assert {"train", "test"} <= set(df["split"])
    for scene, g in df.groupby("scene"):
        assert set(g["split"]) == {"train", "test", "none"}, scene


TINY = {**SMALL, "clip_seconds": 0.25, "locations_per_city": 1, "segments_per_location": 1}


def test_same_seed_is_byte_identical_for_any_n_jobs_and_other_seed_differs(tmp_path):
    cfg = synth.SynthConfig.from_dict(TINY)
    one = synth.generate_dataset(tmp_path / "one", cfg, n_jobs=1)
    two = synth.generate_dataset(tmp_path / "two", cfg, n_jobs=2)
    assert one["n_clips"] == two["n_clips"] > 40
    assert digest(tmp_path / "one") == digest(tmp_path / "two")
    with pytest.raises(DatasetError, match="already exists"):
        synth.generate_dataset(tmp_path / "two", cfg)
    synth.generate_dataset(tmp_path / "one", synth.SynthConfig.from_dict({**TINY, "seed": 8}), overwrite=True)
    other, same = digest(tmp_path / "one"), digest(tmp_path / "two")
    common = [k for k in same if k in other and k.startswith("audio/")]
    assert len(common) >= 40 and all(other[k] != same[k] for k in common)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # no partial or old folders left


def test_2018_layout_writes_headerless_txt(tmp_path):
    cfg = synth.SynthConfig.from_dict({**TINY, "layout": "dcase2018", "unsplit_cities": []})
    synth.generate_dataset(tmp_path / "d18", cfg)
    first = (tmp_path / "d18/evaluation_setup/fold1_train.txt").read_text().splitlines()[0]
    assert re.match(r"^audio/\S+\.wav\t[a-z_]+$", first)
    df = read_dataset(tmp_path / "d18")
    assert df.attrs["layout"] == "dcase2018" and set(df["split"]) == {"train", "test"}


@pytest.mark.parametrize("override, key", [
    ({"clip_seconds": "ten"}, r"'datasets\.embedded2018\.embedded\.clip_seconds': got 'ten'; expected a number"),
    ({"colour": 1}, r"embedded\.colour': got 1; expected a known key"),
    ({"seed": 1.5}, r"embedded\.seed': got 1\.5; expected an integer"),
    ({"seed": True}, r"embedded\.seed': got True; expected an integer"),
    ({"cities": "paris"}, r"embedded\.cities': got 'paris'; expected a list"),
    ({"devices": {"b": {"lowpass": 9000}}}, r"embedded\.devices\.b\.lowpass': got 9000; expected a known key"),
    ({"devices": {"b": {"sample_rate": "44k"}}}, r"embedded\.devices\.b\.sample_rate': got '44k'; expected an integer"),
    ({"scenes": {"bus": {"hum": {"f0": 30}}}}, r"embedded\.scenes\.bus\.hum\.f0': got 30; expected a known key"),
    ({"scenes": {"bus": {"horn": {}}}}, r"embedded\.scenes\.bus\.horn': got \{\}; expected a known key"),
    ({"scenes": {"beach": {}}}, r"embedded\.scenes\.beach': got \{\}; expected a known key"),
    ({"scenes": {"bus": {"hum": {"f0_hz": [50, 30]}}}}, r"embedded\.scenes\.bus\.hum\.f0_hz': got \[50, 30\]; expected a \[lo, hi\] range with lo <= hi"),
    ({"scenes": {"bus": {"hum": {"f0_hz": "low"}}}}, r"embedded\.scenes\.bus\.hum\.f0_hz': got 'low'; expected a number, or a \[lo, hi\]"),
    ({"layout": "dcase2020"}, r"embedded\.layout': got 'dcase2020'; expected one of"),
    ({"unsplit_cities": ["rome"]}, r"embedded\.unsplit_cities': got 'rome'; expected one of cities"),
    ({"devices": {"b": {"sample_rate": 96000}}}, r"embedded\.devices\.b\.sample_rate': got 96000; expected a rate in"),
    ({"clip_seconds": float("inf")}, r"embedded\.clip_seconds': got inf; expected a number"),
    ({"devices": {"b": {"gain_db": float("nan")}}}, r"embedded\.devices\.b\.gain_db': got nan; expected a number"),
])
def test_config_errors_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        synth.SynthConfig.from_dict(override, where="datasets.embedded2018.embedded")


def test_config_overrides_merge_into_defaults():
    cfg = synth.SynthConfig.from_dict({"clip_seconds": 2, "devices": {"c": {"lowpass_hz": 4000}},
                                       "scenes": {"park": {"hum": {"f0_hz": 50}}}})
    assert cfg.clip_seconds == 2.0 and isinstance(cfg.clip_seconds, float)
    assert cfg.devices["c"].lowpass_hz == 4000.0 and cfg.devices["c"].highpass_hz == 300.0
    assert cfg.scenes["park"]["hum"]["f0_hz"] == 50.0 and cfg.scenes["park"]["hum"]["harmonics"] == 8
    assert "birds" in cfg.scenes["park"] and "hum" not in synth.SynthConfig().scenes["park"]


def test_noise_layer_level_is_calibrated():
    grid = synth.Grid.make(48000, 48000 * 2)
    shape = synth.band(grid.freqs, 1000.0, 1.0)[None, :]
    power = synth.events_power(np.ones((1, grid.times.size)), shape, -20.0)
    x = synth.istft_noise(power, np.random.default_rng(0).uniform(0, 2 * np.pi, power.shape), grid.n_samples)
    assert abs(10 * np.log10(np.mean(x**2)) + 20.0) < 1.0


def band_features(path: str) -> np.ndarray:
    """Mean and std over time of log power in 24 log-spaced bands (50 Hz - 16 kHz), any sample rate."""
    y, rate = sf.read(path, always_2d=True)
    y = y.mean(1)
    frames = np.lib.stride_tricks.sliding_window_view(y, 1024)[::512] * np.hanning(1024)
    spec = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(1024, 1 / rate)
    edges = np.geomspace(50, 16000, 25)
    bands = np.stack([spec[:, (freqs >= lo) & (freqs < hi)].sum(1) for lo, hi in zip(edges[:-1], edges[1:])], 1)
    logb = np.log(bands + 1e-10)
    return np.concatenate([logb.mean(0), logb.std(0)])


def test_scenes_are_learnable_but_not_trivially(small):
    _, _, _, df = small
    x = np.stack([band_features(p) for p in df["path"]])
    train, test = (df["split"] == "train").to_numpy(), (df["split"] == "test").to_numpy()
    mu, sd = x[train].mean(0), x[train].std(0) + 1e-9
    z = (x - mu) / sd
    labels = df["scene"].to_numpy()
    means = np.stack([z[train & (labels == s)].mean(0) for s in SCENE_LABELS])
    pred = np.array(SCENE_LABELS)[np.argmin(((z[test][:, None, :] - means[None]) ** 2).sum(-1), axis=1)]
    acc = float(np.mean(pred == labels[test]))
    print(f"nearest-class-mean accuracy: {acc:.3f} on {test.sum()} clips")
    assert 0.3 < acc < 1.0, acc
