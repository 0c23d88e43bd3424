"""Table V's device-robustness methods (caanet.methods): each method's maths by hand, on audio whose
device responses are known, and in training (determinism, exact resume)."""

from __future__ import annotations

import dataclasses

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from caanet import config, methods, vocab
from caanet.errors import CacheError, ConfigError, DatasetError, SpecError
from caanet.features import FeatureCache, FeatureParams, build_cache, clip_signal, logmel, mean_stft_magnitude
from caanet.methods import device_response as dr
from caanet.methods import dir_augment as da
from caanet.methods import freq_mixstyle as fm
from caanet.methods import spectrum_correction as sc
from caanet.spec import CellSpec

PARAMS = FeatureParams(sample_rate=16000, n_fft=512, hop_length=496, n_mels=16, fmin=20.0, fmax=8000.0,
                       clip_seconds=1.0)
SCENES = ["bus", "park", "street_traffic"]
DEVICES = ["a", "b", "c", "s1"]
H_B = np.array([1.0, 0.5])          # device b: a minimum-phase FIR (its zero at -0.5)
GAIN_C = 0.5                        # device c: -6 dB
H_S1 = np.array([1.0, -0.3])        # s1: unseen in training

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------------------------------
# Freq-MixStyle
# --------------------------------------------------------------------------------------------------

def test_frequency_statistics_by_hand():
    x = torch.tensor([[[1.0, 10.0], [3.0, 14.0]]])           # (B=1, T=2, F=2)
    mu, sigma = fm.frequency_statistics(x, eps=0.0)
    assert mu.tolist() == [[[2.0, 12.0]]] and sigma.tolist() == [[[1.0, 2.0]]]   # population std over time


def test_statistics_are_mixed_as_specified():
    # clip 0: [0, 2] (mu 1, sigma 1); clip 1: [10, 14] (mu 12, sigma 2); pi = (1, 0), lam = (0.25, 1)
    x = torch.tensor([[[0.0], [2.0]], [[10.0], [14.0]]])
    y = fm.mix_frequency_statistics(x, torch.tensor([0.25, 1.0]), torch.tensor([1, 0]), eps=0.0)
    # clip 0: (x - 1) / 1 * (0.25 * 1 + 0.75 * 2) + (0.25 * 1 + 0.75 * 12) = [-1, 1] * 1.75 + 9.25
    assert y[0, :, 0].tolist() == pytest.approx([7.5, 11.0])
    assert y[1].tolist() == x[1].tolist()                                     # its own statistics: unchanged
    mu, sigma = fm.frequency_statistics(y, eps=0.0)
    assert mu[0, 0, 0].item() == pytest.approx(9.25) and sigma[0, 0, 0].item() == pytest.approx(1.75)


def test_mix_weight_one_is_the_identity_and_p_zero_never_mixes():
    x = torch.randn(4, 8, 5)
    y = fm.mix_frequency_statistics(x, torch.ones(4), torch.tensor([3, 2, 1, 0]))
    assert torch.allclose(y, x, atol=1e-5)
    never = fm.FreqMixStyle(fm.FreqMixStyleSettings(p=0.0), seed=0)
    assert all(never(x, None, it) is x for it in range(50))
    always = fm.FreqMixStyle(fm.FreqMixStyleSettings(p=1.0), seed=0)
    assert all(always(x, None, it) is not x for it in range(50))


def test_draws_are_a_pure_function_of_seed_and_iteration_with_rate_p():
    s = fm.FreqMixStyleSettings()
    a, b = fm.draws(s, 3, 17, 8), fm.draws(s, 3, 17, 8)
    assert a[0] == b[0] and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    assert not np.array_equal(fm.draws(s, 3, 18, 8)[1], a[1]) and not np.array_equal(fm.draws(s, 4, 17, 8)[1], a[1])
    applied = [fm.draws(s, 0, it, 8)[0] for it in range(4000)]
    assert np.mean(applied) == pytest.approx(0.4, abs=0.03)
    lam = np.concatenate([fm.draws(s, 0, it, 8)[1] for it in range(500)])
    assert lam.min() >= 0 and lam.max() <= 1 and np.mean(lam) == pytest.approx(0.5, abs=0.03)
    assert np.mean((lam < 0.1) | (lam > 0.9)) > 0.4                        # Beta(0.3, 0.3): U-shaped
    assert sorted(a[2]) == list(range(8))


# --------------------------------------------------------------------------------------------------
# Audio with known device responses
# --------------------------------------------------------------------------------------------------

def _scene_noise(rng, scene: int, n: int) -> np.ndarray:
    """Noise coloured per scene (a resonance at a scene-dependent frequency)."""
    from scipy.signal import lfilter

    w = 2 * np.pi * (500 + 2000 * scene) / PARAMS.sample_rate
    return lfilter([1.0], [1.0, -1.6 * np.cos(w), 0.8], rng.normal(0, 0.05, n))


def device_signal(y: np.ndarray, device: str) -> np.ndarray:
    if device == "b":
        return np.convolve(y, H_B)[: len(y)]
    if device == "c":
        return GAIN_C * y
    if device == "s1":
        return np.convolve(y, H_S1)[: len(y)]
    return y


@pytest.fixture(scope="module")
def audio_set(tmp_path_factory):
    """A tiny parallel dataset as the workflow's audio index: per scene 3 training locations and 1 test
    location of 2 segments, each recorded by a, b, c (parallel) and, in the test split only, by s1."""
    root = tmp_path_factory.mktemp("audio_set")
    rng = np.random.default_rng(0)
    rows = []
    for s, scene in enumerate(SCENES):
        for loc in range(4):
            split = "train" if loc < 3 else "test"
            ident = f"lyon-{s}{loc}"
            for seg in range(2):
                y = _scene_noise(rng, s, PARAMS.n_samples)
                for device in DEVICES:
                    if device == "s1" and split == "train":
                        continue
                    name = f"audio/{scene}-{ident}-{seg}-{device}.wav"
                    path = root / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    sf.write(path, device_signal(y, device).astype(np.float32), PARAMS.sample_rate, subtype="FLOAT")
                    rows.append({"filename": name, "path": str(path), "scene": scene, "identifier": ident,
                                 "device": device, "split": split, "audio_path": str(path)})
    index = pd.DataFrame(rows).sort_values("filename").reset_index(drop=True)
    cache = root / "set.h5"
    build_cache(index, cache, PARAMS, dataset="set", scene_labels=SCENES, device_labels=DEVICES)
    return SimpleNamespace(root=root, index=index, cache=cache)


def _clip(index, filename) -> np.ndarray:
    return clip_signal(index.set_index("filename").at[filename, "audio_path"], PARAMS)[0]


# --------------------------------------------------------------------------------------------------
# Parallel recordings, mean spectra
# --------------------------------------------------------------------------------------------------

def test_segment_key_and_parallel_pairs():
    assert dr.segment_key("audio/bus-lyon-1-2-s1.wav", "s1") == "audio/bus-lyon-1-2"
    with pytest.raises(DatasetError, match="does not end in '-b'"):
        dr.segment_key("audio/bus-lyon-1-2-a.wav", "b")
    index = pd.DataFrame({
        "filename": ["audio/x-l-0-0-a.wav", "audio/x-l-0-1-a.wav", "audio/x-l-0-0-b.wav", "audio/x-l-0-1-b.wav",
                     "audio/x-l-0-2-b.wav", "audio/x-l-0-0-c.wav", "audio/x-l-0-0-d.wav"],
        "identifier": ["l-0", "l-0", "l-0", "other", "l-0", "l-0", "l-0"],
        "device": ["a", "a", "b", "b", "b", "c", "d"],
        "split": ["train"] * 6 + ["test"], "audio_path": ["-"] * 7})
    train = dr.training_clips(index)
    pairs = dr.parallel_pairs(train, "a")
    assert list(pairs) == ["b", "c"]                                  # d has no training clip
    assert pairs["b"]["segment"].tolist() == ["audio/x-l-0-0"]        # segment 1: another identifier; 2: no ref
    assert train.loc[pairs["b"]["reference"].item(), "filename"] == "audio/x-l-0-0-a.wav"
    dup = pd.concat([index, index.iloc[[2]]])
    with pytest.raises(DatasetError, match="several training clips of device 'b'"):
        dr.parallel_pairs(dr.training_clips(dup), "a")
    with pytest.raises(DatasetError, match="reference device 'z'"):
        dr.parallel_pairs(train, "z")


def test_mean_pair_ratio_by_hand():
    ratio = dr.mean_pair_ratio(np.array([[2.0, 4.0], [6.0, 8.0]]), np.array([[1.0, 2.0], [3.0, 2.0]]))
    assert ratio.tolist() == [2.0, 3.0]                               # mean of (2, 2) and (2, 4)
    with pytest.raises(ValueError):
        dr.mean_pair_ratio(np.zeros((0, 2)), np.zeros((0, 2)))


def test_mean_stft_magnitude_is_the_log_mels_stft():
    y = np.random.default_rng(1).normal(size=PARAMS.n_samples)
    spectrum = mean_stft_magnitude(y, PARAMS)
    assert spectrum.shape == (PARAMS.n_fft // 2 + 1,)
    # a gain of 3 on every STFT bin multiplies every mel energy by 3
    plain, gained = logmel(y, PARAMS), logmel(y, PARAMS, gain=np.full(spectrum.shape, 3.0))
    np.testing.assert_allclose(np.exp(gained) - PARAMS.log_offset, 3 * (np.exp(plain) - PARAMS.log_offset), rtol=2e-5)
    np.testing.assert_array_equal(logmel(y, PARAMS, gain=np.ones(spectrum.shape)), plain)
    with pytest.raises(ValueError, match="one per STFT bin"):
        logmel(y, PARAMS, gain=np.ones(5))


# --------------------------------------------------------------------------------------------------
# Spectrum correction
# --------------------------------------------------------------------------------------------------

def test_fit_gains_by_hand_with_unaligned_and_unseen_devices():
    train = pd.DataFrame({"device": ["a", "a", "b", "c", "c"], "audio_path": ["a0", "a1", "b0", "c0", "c1"]})
    spectra = np.array([[4.0, 8.0], [4.0, 8.0], [2.0, 1.0], [np.nan, np.nan], [np.nan, np.nan]])
    pairs = {"b": pd.DataFrame({"segment": ["s0"], "reference": [0], "device": [2]}),
             "c": pd.DataFrame({"segment": [], "reference": [], "device": []})}
    # c has no parallel pair: the unaligned variant, mean spectra a (4, 8) over c (1, 2) -> (4, 4)
    read = {("a0", "a1"): np.array([[4.0, 8.0], [4.0, 8.0]]), ("c0", "c1"): np.array([[1.0, 2.0], [1.0, 2.0]])}
    fit = sc.fit_gains(train, pairs, spectra, reference_device="a", devices=["a", "b", "c", "u"],
                       read_spectra=lambda p: read[tuple(p)])
    gains = dict(zip(fit["devices"], fit["gains"]))
    assert gains["a"].tolist() == [1.0, 1.0] and gains["b"].tolist() == [2.0, 8.0] and gains["c"].tolist() == [4.0, 4.0]
    assert gains["u"] == pytest.approx([np.sqrt(8.0), np.sqrt(32.0)])   # geometric mean of b's and c's gains
    assert fit["source"] == [sc.REFERENCE, sc.FITTED, sc.UNALIGNED, sc.UNSEEN_MEAN] and fit["of"] == ["b", "c"]


def test_spectrum_correction_recovers_known_device_responses(audio_set, tmp_path):
    out = tmp_path / "fit.npz"
    sc.fit(audio_set.index, PARAMS, None, reference_device="a", devices=DEVICES, out_path=out, log=lambda s: None)
    fit = sc.read_gains(out)
    gains = dict(zip(fit["devices"], fit["gains"]))
    bins = slice(1, None)                                              # the DC bin is removed by the detrend
    np.testing.assert_allclose(gains["c"][bins], 1 / GAIN_C, rtol=1e-6)    # exact: c is a scaled copy of a
    w = np.fft.rfftfreq(PARAMS.n_fft) * 2 * np.pi
    h_b = np.abs(H_B[0] + H_B[1] * np.exp(-1j * w))
    np.testing.assert_allclose(gains["b"][bins], 1 / h_b[bins], rtol=0.02)
    np.testing.assert_allclose(gains["s1"], np.sqrt(gains["b"] * gains["c"]), rtol=1e-9)  # unseen: the mean
    assert fit["source"][DEVICES.index("s1")] == sc.UNSEEN_MEAN
    # the corrected clips of b and c look like the reference device's parallel clips
    a = logmel(_clip(audio_set.index, "audio/bus-lyon-00-0-a.wav"), PARAMS)
    for device in ("b", "c"):
        y = _clip(audio_set.index, f"audio/bus-lyon-00-0-{device}.wav")
        before = np.abs(logmel(y, PARAMS) - a).mean()
        after = np.abs(logmel(y, PARAMS, gain=gains[device]) - a).mean()
        assert after < 0.1 * before, (device, before, after)


def test_corrected_cache_applies_each_devices_gain_and_says_so(audio_set, tmp_path):
    sc.fit(audio_set.index, PARAMS, None, reference_device="a", devices=DEVICES, out_path=tmp_path / "fit.npz",
           log=lambda s: None)
    out = tmp_path / "set+spectrum_correction.h5"
    sc.build_features(audio_set.index, PARAMS, None, tmp_path / "fit.npz", out, dataset="set", scene_labels=SCENES,
                      device_labels=DEVICES, reference_device="a", log=lambda s: None)
    gains = dict(zip(*(sc.read_gains(tmp_path / "fit.npz")[k] for k in ("devices", "gains"))))
    with FeatureCache(out) as cache:
        assert cache.attrs["derived_method"] == "spectrum_correction"
        details = json.loads(cache.attrs["method_details"])
        assert "mean correction" in details["gains"]["s1"] and details["reference_device"] == "a"
        for name in ("audio/park-lyon-13-1-s1.wav", "audio/park-lyon-10-0-b.wav", "audio/park-lyon-10-0-a.wav"):
            row = int(np.flatnonzero(cache.columns["filename"] == name)[0])
            device = cache.columns["device"][row]
            expected = logmel(_clip(audio_set.index, name), PARAMS, gain=gains[device])
            np.testing.assert_array_equal(cache.logmel_rows([row])[0], expected)


def test_a_cell_and_its_cache_must_match(audio_set, tmp_path):
    with pytest.raises(ConfigError, match="needs the spectrum_correction cache"):
        methods.check_cache_for(CellSpec.from_id("atrous-att-joint+spectrum_correction", dataset="d"), {}, "plain.h5")
    with pytest.raises(ConfigError, match="needs a plain feature cache"):
        methods.check_cache_for(CellSpec.from_id("atrous-att-joint", dataset="d"),
                                {"derived_method": "spectrum_correction"}, "x.h5")
    methods.check_cache_for(CellSpec.from_id("atrous-att-joint+dir_augment", dataset="d"), {}, "plain.h5")


# --------------------------------------------------------------------------------------------------
# Device impulse responses
# --------------------------------------------------------------------------------------------------

def test_minimum_phase_fir_of_a_known_magnitude():
    w = np.fft.rfftfreq(512) * 2 * np.pi
    magnitude = np.abs(1.0 + 0.5 * np.exp(-1j * w))                  # |H| of [1, 0.5] and of [0.5, 1]
    h = da.minimum_phase_fir(magnitude, 64)
    np.testing.assert_allclose(h[:2], [1.0, 0.5], atol=2e-3)        # the minimum-phase one of the two
    assert np.abs(h[2:]).max() < 2e-3
    with pytest.raises(ValueError):
        da.minimum_phase_fir(magnitude, 1)


def test_convolution_is_causal_and_keeps_the_length():
    y = np.arange(1.0, 6.0)
    np.testing.assert_allclose(da.convolve(y, [1.0]), y)
    np.testing.assert_allclose(da.convolve(y, [0.0, 0.0, 1.0]), [0, 0, 1, 2, 3], atol=1e-6)
    np.testing.assert_allclose(da.convolve(y, H_B), np.convolve(y, H_B)[:5], atol=1e-6)


def test_responses_estimated_from_the_parallel_training_recordings(audio_set, tmp_path):
    fitted = da.fit(audio_set.index, PARAMS, da.DIRAugmentSettings(n_taps=64), reference_device="a",
                    out_path=tmp_path / "dir.npz", log=lambda s: None)
    back = da.read_fit(tmp_path / "dir.npz")
    assert back["names"] == fitted["names"] == ["b", "c"] and back["source"] == "estimated"   # s1: no training clip
    b, c = back["responses"]
    np.testing.assert_allclose(b[:2], H_B, atol=0.02)
    assert c[0] == pytest.approx(GAIN_C, abs=0.01)
    assert np.abs(b[2:]).max() < 0.02 and np.abs(c[1:]).max() < 0.01
    # the convolved reference clip is close to the real device clip (true convolution, then the cache's log-mel)
    a = _clip(audio_set.index, "audio/bus-lyon-01-1-a.wav")
    real_b = logmel(_clip(audio_set.index, "audio/bus-lyon-01-1-b.wav"), PARAMS)
    assert np.abs(logmel(da.convolve(a, b), PARAMS) - real_b).mean() < 0.1 * np.abs(logmel(a, PARAMS) - real_b).mean()


def _write_responses(folder):
    folder.mkdir()
    rng = np.random.default_rng(2)
    stereo = rng.normal(size=(300, 2)) * np.exp(-np.arange(300) / 30)[:, None]
    sf.write(folder / "mic_x.wav", stereo, 32000)
    sf.write(folder / "mic_y.FLAC", np.r_[1.0, -0.5, 0.25, np.zeros(50)] * 0.5, 8000)
    (folder / "notes.txt").write_text("not audio")


def test_responses_read_from_a_folder(audio_set, tmp_path):
    _write_responses(tmp_path / "irs")
    names, responses, details = da.read_responses(tmp_path / "irs", PARAMS.sample_rate)
    assert names == ["mic_x", "mic_y"] and "32000 Hz" in details[0] and "8000 Hz" in details[1]
    assert len(responses[0]) == 150 and len(responses[1]) == 106          # ceil(n * 16000 / rate), soxr HQ
    assert [float(np.sum(h * h)) for h in responses] == pytest.approx([1.0, 1.0])
    settings = da.DIRAugmentSettings(responses=str(tmp_path / "irs"))
    da.fit(audio_set.index, PARAMS, settings, reference_device="a", out_path=tmp_path / "dir.npz", log=lambda s: None)
    assert da.read_fit(tmp_path / "dir.npz")["source"] == "folder"
    (tmp_path / "empty").mkdir()
    for folder, match in ((tmp_path / "empty", "at least one"), (tmp_path / "nowhere", "a folder of impulse")):
        with pytest.raises(ConfigError, match="methods.dir_augment.responses"):
            da.read_responses(folder, PARAMS.sample_rate)


def test_augmented_cache_holds_each_reference_clip_convolved_with_each_response(audio_set, tmp_path):
    _write_responses(tmp_path / "irs")
    settings = da.DIRAugmentSettings(responses=str(tmp_path / "irs"))
    da.fit(audio_set.index, PARAMS, settings, reference_device="a", out_path=tmp_path / "dir.npz", log=lambda s: None)
    da.build_features(audio_set.index, PARAMS, settings, tmp_path / "dir.npz", tmp_path / "aug.h5", dataset="set",
                      reference_device="a", log=lambda s: None)
    aug = da.read_augmented(tmp_path / "aug.h5", PARAMS)
    n_ref = int(((audio_set.index["device"] == "a") & (audio_set.index["split"] == "train")).sum())
    assert aug["logmel"].shape == (n_ref, 2, PARAMS.n_frames, PARAMS.n_mels) and aug["response_names"] == ["mic_x", "mic_y"]
    responses = da.read_fit(tmp_path / "dir.npz")["responses"]
    for i in (0, n_ref - 1):
        y = _clip(audio_set.index, aug["filename"][i])
        for k in range(2):
            np.testing.assert_array_equal(aug["logmel"][i, k], logmel(da.convolve(y, responses[k]), PARAMS))
    with pytest.raises(CacheError, match="feature parameters"):
        da.read_augmented(tmp_path / "aug.h5", FeatureParams(sample_rate=16000, n_fft=512, hop_length=496, n_mels=8,
                                                             fmin=20.0, fmax=8000.0, clip_seconds=1.0))
    one = da.assigned_responses(5, 3, 1)
    assert one.shape == (5, 1) and np.array_equal(one, da.assigned_responses(5, 3, 1)) and set(one.ravel()) <= {0, 1, 2}


def test_dir_transform_swaps_reference_clips_with_probability_p(audio_set, tmp_path):
    da.fit(audio_set.index, PARAMS, da.DIRAugmentSettings(n_taps=64), reference_device="a",
           out_path=tmp_path / "dir.npz", log=lambda s: None)
    da.build_features(audio_set.index, PARAMS, da.DIRAugmentSettings(), tmp_path / "dir.npz", tmp_path / "aug.h5",
                      dataset="set", reference_device="a", log=lambda s: None)
    aug = da.read_augmented(tmp_path / "aug.h5", PARAMS)
    with FeatureCache(audio_set.cache) as cache:
        fs = cache.select(split="train")
    mean, std = np.full(PARAMS.n_mels, 1.0, np.float32), np.full(PARAMS.n_mels, 2.0, np.float32)
    data = SimpleNamespace(train=SimpleNamespace(filename=np.asarray(fs.filename)), mean=mean, std=std)
    x = torch.from_numpy(((fs.x - mean) / std).astype(np.float32))
    positions = torch.arange(len(fs.filename))
    kw = dict(seed=0, data=data, derived=tmp_path / "aug.h5", dev=torch.device("cpu"), params=PARAMS)
    assert da.DIRAugment(da.DIRAugmentSettings(p=0.0), **kw)(x, positions, 5) is x
    t = da.DIRAugment(da.DIRAugmentSettings(p=1.0), **kw)
    y = t(x, positions, 5)
    _, variant = t.draws(5, len(positions))
    is_ref = np.array([str(f).endswith("-a.wav") for f in fs.filename])
    row = {f: i for i, f in enumerate(aug["filename"])}
    for i, f in enumerate(fs.filename):
        if is_ref[i]:
            expected = (aug["logmel"][row[f], variant[i]] - mean) / std
            np.testing.assert_allclose(y[i].numpy(), expected, rtol=1e-6)
        else:
            assert torch.equal(y[i], x[i])
    half = da.DIRAugment(da.DIRAugmentSettings(p=0.6), **kw)
    swapped = [(~torch.isclose(half(x, positions, it), x).all(dim=(1, 2))).numpy()[is_ref].mean() for it in range(200)]
    assert np.mean(swapped) == pytest.approx(0.6, abs=0.03)
    assert torch.equal(half(x, positions, 7), half(x, positions, 7))


# --------------------------------------------------------------------------------------------------
# The registry, settings and cell ids
# --------------------------------------------------------------------------------------------------

def test_methods_are_registered_with_loadable_hooks():
    assert vocab.METHOD_REGISTRY.names() == ("none", "freq_mixstyle", "spectrum_correction", "dir_augment")
    for m in vocab.METHOD_REGISTRY:
        for hook in methods.HOOKS:
            ref = getattr(m, hook)
            assert ref is None or m.load(hook) is not None, (m.name, hook)
        assert m.name == "none" or m.citation
    assert methods.hook_modules("freq_mixstyle") == ("caanet.methods.freq_mixstyle",)
    sc_ = vocab.METHOD_REGISTRY["spectrum_correction"]
    assert sc_.test_device_labels and sc_.derived == "replace" and vocab.METHOD_REGISTRY["dir_augment"].derived == "augment"


def test_register_method_refuses_inconsistent_hooks():
    with pytest.raises(ValueError, match="both 'features' and 'derived'"):
        vocab.register_method("x1", "X", features="m:f")
    with pytest.raises(ValueError, match="'augment' cache"):
        vocab.register_method("x2", "X", features="m:f", derived="augment")
    with pytest.raises(ValueError, match="device_sources"):
        vocab.register_method("x3", "X", device_sources=("bogus",))
    with pytest.raises(ValueError, match="registered twice"):
        vocab.register_method("freq_mixstyle", "again")


def test_which_strategies_each_method_combines_with():
    table = {m.name: [s for s in vocab.STRATEGY_REGISTRY.names() if m.combines_with(s)] for m in vocab.METHOD_REGISTRY}
    assert table["none"] == list(vocab.STRATEGY_REGISTRY.names())
    cnn_d = ["multi_task", "multi_task_learned", "multi_task_posterior", "multi_task_learned_posterior"]
    assert table["freq_mixstyle"] == table["dir_augment"] == ["joint", *cnn_d]
    assert table["spectrum_correction"] == ["joint", "teacher_forcing", *cnn_d]


def test_cell_ids_with_a_method():
    s = CellSpec.from_id("atrous-att-multi_task-L3+spectrum_correction", dataset="d", seed=2)
    assert (s.strategy, s.cond_layer, s.method, s.seed) == ("multi_task", 3, "spectrum_correction", 2)
    assert s.cell_id == "atrous-att-multi_task-L3+spectrum_correction"
    assert CellSpec.from_id("atrous-att-joint", dataset="d").method == "none"
    assert CellSpec.from_dict({"dataset": "d", "topology": "atrous", "pooling": "att", "strategy": "joint"}).method == "none"
    for bad, match in (("atrous-att-joint+none", "leaving '\\+none' out"), ("atrous-att-joint+bogus", "method='bogus'"),
                       ("atrous-att-teacher_forcing-L2+freq_mixstyle", "not combined with strategy 'teacher_forcing'"),
                       ("atrous-att-single_device-b+dir_augment", "not combined with strategy 'single_device'")):
        with pytest.raises(SpecError, match=match):
            CellSpec.from_id(bad, dataset="d")


def test_settings_defaults_are_the_schemas_and_bad_settings_are_named():
    defs = config.schema()["$defs"]["methods"]["properties"]
    for name, cls in (("freq_mixstyle", fm.FreqMixStyleSettings), ("dir_augment", da.DIRAugmentSettings)):
        assert {k: v["default"] for k, v in defs[name]["properties"].items()} == vars(cls())
    assert set(defs) == set(vocab.METHOD_REGISTRY.names()) - {"none"}
    assert config.schema()["$defs"]["method"]["enum"] == list(vocab.METHOD_REGISTRY.names())
    assert methods.method_settings("freq_mixstyle", {"p": 0.5}) == fm.FreqMixStyleSettings(p=0.5, alpha=0.3)
    assert methods.method_settings("spectrum_correction", {}) is None
    with pytest.raises(ConfigError, match=r"methods.freq_mixstyle.p'.*got 1.5"):
        methods.method_settings("freq_mixstyle", {"p": 1.5})
    with pytest.raises(ConfigError, match="methods.dir_augment.bogus"):
        methods.method_settings("dir_augment", {"bogus": 1})
    preset = {"methods": {"dir_augment": {"p": 0.5, "n_taps": 64, "variants_per_clip": 2}}}
    assert methods.stage_settings(preset, "dir_augment", "fit") == {"n_taps": 64}
    assert methods.stage_settings(preset, "dir_augment", "features") == {"variants_per_clip": 2}
    assert methods.stage_settings(preset, "dir_augment", "train") == preset["methods"]["dir_augment"]


# --------------------------------------------------------------------------------------------------
# Training with a method
# --------------------------------------------------------------------------------------------------

TRAIN = dict(iterations=12, batch_size=8, channels=(4, 8, 8, 16), device_channels=(4, 8), lr_decay_every=10,
             lambda_check_every=4, checkpoint_every=5, log_every=4, eval_batch_size=16)


@pytest.fixture(scope="module")
def derived(audio_set, tmp_path_factory):
    root = tmp_path_factory.mktemp("derived")
    sc.fit(audio_set.index, PARAMS, None, reference_device="a", devices=DEVICES, out_path=root / "sc.npz",
           log=lambda s: None)
    sc.build_features(audio_set.index, PARAMS, None, root / "sc.npz", root / "sc.h5", dataset="set",
                      scene_labels=SCENES, device_labels=DEVICES, reference_device="a", log=lambda s: None)
    da.fit(audio_set.index, PARAMS, da.DIRAugmentSettings(n_taps=64), reference_device="a", out_path=root / "dir.npz",
           log=lambda s: None)
    da.build_features(audio_set.index, PARAMS, da.DIRAugmentSettings(), root / "dir.npz", root / "dir.h5",
                      dataset="set", reference_device="a", log=lambda s: None)
    return SimpleNamespace(spectrum_correction=root / "sc.h5", dir_augment=root / "dir.h5")


def _job(audio_set, derived, cell):
    spec = CellSpec.from_id(cell, dataset="set")
    cache = derived.spectrum_correction if spec.method == "spectrum_correction" else audio_set.cache
    extra = {"method_cache": derived.dir_augment} if spec.method == "dir_augment" else {}
    return spec, cache, extra


@pytest.mark.parametrize("cell", ["atrous-att-multi_task-L2+freq_mixstyle", "atrous-att-multi_task-L2+dir_augment",
                                  "atrous-att-multi_task_posterior-L2+freq_mixstyle"])
def test_resume_with_a_random_transform_is_exact(audio_set, derived, tmp_path, cell):
    from test_training import Killed, _kill_at, assert_same_run

    from caanet.training import TrainConfig, train_cell

    spec, cache, extra = _job(audio_set, derived, cell)
    cfg = TrainConfig(**TRAIN)
    train_cell(cache, spec, cfg, tmp_path / "whole", **extra)
    with pytest.raises(Killed):
        train_cell(cache, spec, cfg, tmp_path / "resumed", callback=_kill_at(8), **extra)
    train_cell(cache, spec, cfg, tmp_path / "resumed", **extra)
    assert_same_run(tmp_path / "whole", tmp_path / "resumed")
    # the transform changed the training: the same cell without the method trains otherwise
    train_cell(audio_set.cache, dataclasses.replace(spec, method="none"), cfg, tmp_path / "plain")
    a = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "plain" / "model.pt", weights_only=True)["state_dict"]
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_a_methods_evaluation_records_it_and_its_oracle_information(audio_set, derived, tmp_path):
    from caanet.training import TrainConfig, train_cell

    cfg = TrainConfig(**{**TRAIN, "iterations": 4})
    spec, cache, extra = _job(audio_set, derived, "atrous-att-joint+spectrum_correction")
    ev = train_cell(cache, spec, cfg, tmp_path / "sc", **extra)
    assert ev["method"] == "spectrum_correction" and ev["test_device_labels_used"] is True
    assert "oracle information" in ev["note"] and "s1" in ev["note"] and "mean correction" in ev["note"]
    assert "mean correction" in ev["method_details"]["gains"]["s1"]
    from caanet.inference import Predictor
    from caanet.modelfile import load_model_file

    with pytest.raises(ConfigError, match="plain log-mel"):    # `caanet predict` would feed uncorrected features
        Predictor(load_model_file(tmp_path / "sc" / "model.pt"))
    spec, cache, extra = _job(audio_set, derived, "atrous-att-joint+freq_mixstyle")
    ev = train_cell(cache, spec, cfg, tmp_path / "fm", method_settings={"p": 1.0}, code_version="train1",
                    method_code="fm1", **extra)
    assert ev["method_settings"] == {"p": 1.0, "alpha": 0.3} and ev["test_device_labels_used"] is False
    assert ev["code_version"] == "train1+fm1"          # the method's code joins the job's code version
    assert "note" not in ev
    Predictor(load_model_file(tmp_path / "fm" / "model.pt"))      # a training-only method: predictable as usual
    with pytest.raises(ConfigError, match="method_settings.p"):
        train_cell(cache, spec, cfg, tmp_path / "bad", method_settings={"p": 2})
    ev = train_cell(audio_set.cache, CellSpec.from_id("atrous-att-joint", dataset="set"), cfg, tmp_path / "none")
    assert "method" not in ev


def test_cnn_d_learns_from_the_untransformed_batch():
    from caanet.models import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(topology="atrous", pooling="att", n_classes=3, n_devices=3, cond_layer=2,
                                    device_source="predicted", channels=(2, 4, 4, 8), device_channels=(2, 4),
                                    input_shape=(32, 16)))
    x, other = torch.randn(4, 32, 16), torch.randn(4, 32, 16)
    same = model(x, device_x=x)                      # the same batch twice: BatchNorm sees the same statistics
    plain = model(x)
    assert torch.allclose(same.scene, plain.scene, atol=1e-5) and torch.allclose(same.device, plain.device, atol=1e-5)
    mixed = model(other, device_x=x)
    model.eval()
    with torch.no_grad():
        # eval mode: CNN-d's loss output is its output for device_x, the conditioning follows the other batch
        assert torch.allclose(model(other, device_x=x).device, model(x).device, atol=1e-6)
        assert torch.allclose(model(other, device_x=x).scene, model(other).scene, atol=1e-6)
    assert mixed.device.shape == (4, 3)
