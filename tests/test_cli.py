"""The ``caanet`` command (caanet/cli.py) and self-describing model files (caanet/modelfile.py).

A tiny embedded dataset (1 s clips, 10 scenes x 2 locations x 3 devices; device ``a`` is 48 kHz
stereo PCM_24, ``b``/``c`` 44.1 kHz mono) goes through the pipeline's own steps (prepare_audio,
build_cache, train_cell) once per module; the command then runs as a subprocess on its WAVs.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import soxr
import torch

from caanet.audio import prepare_audio
from caanet.data.layout import SCENE_LABELS, read_dataset
from caanet.data.synth import SynthConfig, generate_dataset
from caanet.explain import cell_size, place_windows, to_input_grid
from caanet.features import FeatureParams, build_cache
from caanet.inference import signal_windows, window_starts
from caanet.modelfile import FORMAT, load_model_file, model_payload, save_model_file
from caanet.models import ModelConfig, build_model
from caanet.spec import CellSpec
from caanet.training import TrainConfig, train_cell

ROOT = Path(__file__).resolve().parent.parent
CELL = "atrous-att-multi_task-L2"


def run_cli(*args, check_rc: int | None = 0):
    """``python -m caanet.cli ARGS`` with this checkout on the path; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "caanet.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)
    if check_rc is not None:
        assert proc.returncode == check_rc, f"rc {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def call_cli(*args) -> tuple[int, str, str]:
    """``caanet.cli.main(ARGS)`` in this process (faster than a subprocess): ``(exit status, stdout, stderr)``."""
    import contextlib

    from caanet.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:  # argparse: --help (0) and usage errors (2)
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The dataset, its cache, one trained multi-task attention cell and untrained models of other heads."""
    tmp = tmp_path_factory.mktemp("cli")
    cfg = SynthConfig.from_dict({"seed": 3, "clip_seconds": 1.0, "cities": ["barcelona", "helsinki"],
                                 "locations_per_city": 1, "segments_per_location": 1, "parallel_fraction": 1.0,
                                 "evaluate_fraction": 0.5})
    generate_dataset(tmp / "ds", cfg)
    index = prepare_audio(read_dataset(tmp / "ds"), tmp / "prepared")
    params = FeatureParams(clip_seconds=1.0)
    cache = tmp / "cache.h5"
    build_cache(index, cache, params, dataset="tiny", scene_labels=SCENE_LABELS, device_labels=["a", "b", "c"])
    spec = CellSpec.from_id(CELL, dataset="tiny", seed=0, fidelity="reference")
    tc = TrainConfig(iterations=12, batch_size=8, channels=(2, 4, 4, 8), device_channels=(2, 4), val_fraction=0.0,
                     lambda_check_every=6, checkpoint_every=6, log_every=6)
    train_cell(cache, spec, tc, tmp / "cell", threads=1, code_version="test-hash")
    trained = load_model_file(tmp / "cell" / "model.pt")
    models = {"trained": tmp / "cell" / "model.pt"}
    for name, cell in (("tf", "cnn_pool-max-teacher_forcing-L1"), ("flatten", "cnn_pool-flatten-joint"),
                       ("avg", "cnn_nopool-avg-joint"), ("pool_att", "cnn_pool-att-joint")):
        s = CellSpec.from_id(cell, dataset="tiny", seed=0)
        mc = ModelConfig.from_spec(s, channels=(2, 4, 4, 8), device_channels=(2, 4), input_shape=(31, 64))
        torch.manual_seed(1)
        model = build_model(mc)
        models[name] = save_model_file(tmp / f"{name}.pt", model_payload(
            model=model, model_config=mc, spec=s, train_config=tc, feature_params=params, norm_mean=trained.mean,
            norm_std=trained.std, scene_labels=SCENE_LABELS, device_labels=["a", "b", "c"]))
    return {"tmp": tmp, "index": index, "cache": cache, "models": models, "trained": trained, "params": params}


def _test_wavs(world) -> list[str]:
    idx = world["index"]
    return sorted(idx.loc[idx["split"] == "test", "path"].tolist())


# ------------------------------------------------------------------------------------ model files

def test_model_file_is_self_describing_and_weights_only(world):
    obj = torch.load(world["models"]["trained"], weights_only=True)
    assert obj["format"] == FORMAT and obj["cell_id"] == CELL and obj["fidelity"] == "reference"
    assert obj["scene_labels"] == list(SCENE_LABELS) and obj["device_labels"] == ["a", "b", "c"]
    assert obj["feature_params"] == FeatureParams(clip_seconds=1.0).to_dict()
    assert obj["norm_mean"].shape == (64,) and obj["norm_std"].shape == (64,)
    assert obj["code_version"] == "test-hash" and obj["caanet_version"]
    assert obj["training"]["iterations"] == 12 and set(obj["training"]["accuracy_by_device"]) == {"a", "b", "c"}
    assert obj["model_config"]["input_shape"] == [31, 64] and obj["train_config"]["iterations"] == 12


def test_old_model_file_is_refused_naming_it(tmp_path, world):
    obj = torch.load(world["models"]["trained"], weights_only=True)
    for key in ("format", "feature_params"):
        obj.pop(key)
    torch.save(obj, tmp_path / "old.pt")
    rc, _, err = call_cli("predict", tmp_path / "old.pt", _test_wavs(world)[0])
    assert rc == 1 and "old.pt" in err and "feature_params" in err


# ------------------------------------------------------------------------------------ predict

def test_predict_agrees_with_the_cells_predictions(world):
    wavs = _test_wavs(world)
    proc = run_cli("predict", world["models"]["trained"], world["tmp"] / "ds" / "audio", "--format", "csv")
    got = pd.read_csv(io.StringIO(proc.stdout))
    assert len(got) == 60  # the folder: train and test clips
    got["filename"] = [str(Path(f).relative_to(world["tmp"] / "ds")) for f in got["file"]]
    want = pd.read_csv(world["tmp"] / "cell" / "predictions.csv")
    both = want.merge(got, on="filename", suffixes=("_cell", ""))
    assert len(both) == len(wavs) == 30
    assert (both["pred_scene"] == both["scene"]).all()
    assert (both["pred_device"] == both["device"]).all()
    probs = both[[f"p_{s}" for s in SCENE_LABELS]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    # the cell's class probabilities (predictions.csv's prob_<scene>) are the ones predict reports
    np.testing.assert_allclose(both[[f"prob_{s}" for s in SCENE_LABELS]].to_numpy(), probs, atol=2e-5)


def test_long_clip_is_the_mean_of_its_windows_and_48k_stereo_works(tmp_path, world):
    # a 44.1 kHz mono clip of device b, repeated 25 times: 25 windows identical to the clip
    src = next(p for p in _test_wavs(world) if p.endswith("-b.wav"))
    y, sr = sf.read(src, dtype="float32")
    assert sr == 44100 and y.ndim == 1
    sf.write(tmp_path / "long.wav", np.tile(y, 25), sr, subtype="FLOAT")
    # the same clip at 48 kHz stereo, 24 bit
    y48 = soxr.resample(y, 44100, 48000, quality="HQ")
    sf.write(tmp_path / "stereo48k.wav", np.stack([y48, y48], axis=1), 48000, subtype="PCM_24")
    # a 0.4 s FLAC: padded at the end to the model's 1 s, as the cache pads
    sf.write(tmp_path / "short.flac", y[: int(0.4 * sr)], sr, subtype="PCM_16")
    proc = run_cli("predict", world["models"]["trained"], src, tmp_path / "long.wav", tmp_path / "stereo48k.wav",
                   tmp_path / "short.flac", "--format", "json", "--top-k", "10")
    res = {Path(r["file"]).name: r for r in json.loads(proc.stdout)["results"]}
    one, long, st = res[Path(src).name], res["long.wav"], res["stereo48k.wav"]
    assert (one["windows"], long["windows"], st["windows"]) == (1, 25, 1)
    assert long["duration_s"] == 25.0 and st["duration_s"] == 1.0
    for s in SCENE_LABELS:
        assert long["probabilities"][s] == pytest.approx(one["probabilities"][s], abs=1e-5)
        assert st["probabilities"][s] == pytest.approx(one["probabilities"][s], abs=0.02)
    assert [t["scene"] for t in long["top"]] == [t["scene"] for t in one["top"]]
    short = res["short.flac"]
    assert short["windows"] == 1 and short["duration_s"] == 0.4
    assert sum(short["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert "device" in one and set(one["device_probabilities"]) == {"a", "b", "c"}


def test_bad_inputs_exit_1_naming_the_file_and_the_rest_still_run(tmp_path, world):
    good = _test_wavs(world)[0]
    (tmp_path / "notes.wav").write_text("not audio at all\n")
    missing = tmp_path / "missing.wav"
    proc = run_cli("predict", world["models"]["trained"], missing, tmp_path / "notes.wav", good, "--format", "csv",
                   check_rc=1)
    assert str(missing) in proc.stderr and "notes.wav" in proc.stderr and "Traceback" not in proc.stderr
    out = pd.read_csv(io.StringIO(proc.stdout))
    assert out["file"].tolist() == [good]
    (tmp_path / "empty").mkdir()
    rc, out, err = call_cli("predict", world["models"]["trained"], tmp_path / "empty", str(tmp_path / "*.flac"), good)
    assert rc == 1 and "empty: the folder holds no audio" in err and "*.flac: no file matches" in err
    assert good in out


def test_teacher_forcing_needs_device(world):
    wav = _test_wavs(world)[0]
    proc = run_cli("predict", world["models"]["tf"], wav, check_rc=1)
    assert "--device" in proc.stderr and "tf.pt" in proc.stderr and "Traceback" not in proc.stderr
    rc, _, err = call_cli("predict", world["models"]["tf"], wav, "--device", "z")
    assert rc == 1 and "'z'" in err
    rc, out, _ = call_cli("predict", world["models"]["tf"], wav, "--device", "b", "--format", "json")
    assert rc == 0 and json.loads(out)["results"][0]["device"] == "b"


def test_usage_errors_exit_2_and_help_reads_like_a_manual():
    proc = run_cli(check_rc=2)
    assert proc.stderr.startswith("usage: caanet") and "Traceback" not in proc.stderr
    rc, _, err = call_cli("predict", "m.pt", "x.wav", "--format", "xml")
    assert rc == 2 and "--format" in err
    for cmd in ([], ["predict"], ["explain"], ["inspect"]):
        rc, out, _ = call_cli(*cmd, "--help")
        assert rc == 0 and "usage: caanet" in out
    assert "exit status" in call_cli("--help")[1]
    assert "consecutive windows" in call_cli("predict", "--help")[1]


# ------------------------------------------------------------------------------------ explain

def test_explain_attention_writes_png_and_a_map_summing_to_1(tmp_path, world):
    wav = _test_wavs(world)[0]
    run_cli("explain", world["models"]["trained"], wav, "-o", tmp_path / "fig.png", "--npy", tmp_path / "m.npy",
            "--top-k", "2")
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    raw = np.load(tmp_path / "m.npy")
    assert raw.shape == (2, 1, 31, 64)  # classes, windows, P, Q (atrous: the input grid)
    np.testing.assert_allclose(raw.sum(axis=(2, 3)), 1.0, atol=1e-5)


def test_explain_flatten_head_is_a_clear_error(tmp_path, world):
    rc, _, err = call_cli("explain", world["models"]["flatten"], _test_wavs(world)[0], "-o", tmp_path / "f.png")
    assert rc == 1 and "'flatten' head" in err and not (tmp_path / "f.png").exists()


def test_explain_in_process_cam_and_coarse_grid(tmp_path, world):
    """CAM of an avg head: its mean over the map is the logit (exact); cnn_pool attention on 16x16 cells."""
    from caanet.explain import explain_clip, window_maps
    from caanet.inference import Predictor, clip_features

    wav = _test_wavs(world)[1]
    pred = Predictor(load_model_file(world["models"]["avg"]))
    x = pred.normalise(clip_features(wav, world["params"]).logmel)
    cam, kind = window_maps(pred, x)
    assert kind == "cam"
    out = pred.forward(x)
    np.testing.assert_allclose(torch.log_softmax(torch.from_numpy(cam.mean(axis=(2, 3))), 1).numpy(),
                               out.scene.numpy(), atol=1e-4)
    ex = explain_clip(Predictor(load_model_file(world["models"]["pool_att"])), wav, class_name="park")
    assert ex.classes == ["park"] and ex.raw.shape == (1, 1, 1, 4) and ex.cell == (16, 16)
    assert ex.maps.shape == (1, 31, 64) and ex.maps.sum() == pytest.approx(1.0, abs=1e-5)
    assert (ex.maps[0, 16:] == 0).all()  # frames 16..30 are not under any 16-frame cell (floor pooling)
    assert ex.covered[:16].all() and not ex.covered[16:].any()


def test_explain_long_recording_places_windows(tmp_path, world):
    from caanet.explain import explain_clip
    from caanet.inference import Predictor

    y, sr = sf.read(_test_wavs(world)[3], dtype="float32", always_2d=True)
    sf.write(tmp_path / "long.wav", np.tile(y, (3, 1))[: int(2.5 * sr)], sr, subtype="FLOAT")
    ex = explain_clip(Predictor(world["trained"]), tmp_path / "long.wav", top_k=3)
    assert ex.raw.shape == (3, 3, 31, 64) and ex.window_starts_s == pytest.approx([0.0, 1.0, 1.5])
    np.testing.assert_allclose(ex.raw.sum(axis=(2, 3)), 1.0, atol=1e-5)
    np.testing.assert_allclose(ex.maps.sum(axis=(1, 2)), 1.0, atol=1e-5)
    assert ex.logmel.shape == ex.maps.shape[1:] == (1 + (int(2.5 * 44100) - 2048) // 1376, 64)
    assert ex.classes == [t for t, _ in ex.prediction.top(SCENE_LABELS, 3)]


# ------------------------------------------------------------------------------------ inspect

def test_inspect_model_and_cache(world):
    rc, out, _ = call_cli("inspect", world["models"]["trained"])
    assert rc == 0 and CELL in out and "mean_all" in out and "street_traffic" in out
    rc, out, _ = call_cli("inspect", world["cache"], "--json")
    info = json.loads(out)
    assert info["type"] == "feature cache" and info["by_device"] == {"a": 20, "b": 20, "c": 20}
    assert info["by_split"]["test"] == 30
    rc, _, err = call_cli("inspect", world["tmp"] / "nothing.pt")
    assert rc == 1 and "nothing.pt" in err


def test_posterior_model_file_round_trips_and_predicts_its_cells_predictions(tmp_path, world):
    """A model of the posterior conditioning (beyond the paper) is written, loaded and run like any other:
    its model file says ``device_input: posterior`` and ``predict`` reproduces the cell's predictions."""
    spec = CellSpec.from_id("cnn_pool-att-multi_task_learned_posterior-L2", dataset="tiny", seed=0)
    tc = TrainConfig(iterations=6, batch_size=8, channels=(2, 4, 4, 8), device_channels=(2, 4), val_fraction=0.0,
                     checkpoint_every=6, log_every=6)
    train_cell(world["cache"], spec, tc, tmp_path / "cell", threads=1)
    mf = load_model_file(tmp_path / "cell" / "model.pt")
    assert mf.config.device_input == "posterior" and mf.device_source == "predicted"
    assert torch.load(tmp_path / "cell" / "model.pt", weights_only=True)["model_config"]["device_input"] == "posterior"
    wavs = _test_wavs(world)
    rc, out, err = call_cli("predict", tmp_path / "cell" / "model.pt", *wavs, "--format", "csv")
    assert rc == 0, err
    got = pd.read_csv(io.StringIO(out))
    got["filename"] = [str(Path(f).relative_to(world["tmp"] / "ds")) for f in got["file"]]
    both = pd.read_csv(tmp_path / "cell" / "predictions.csv").merge(got, on="filename", suffixes=("_cell", ""))
    assert len(both) == len(wavs)
    assert (both["pred_scene"] == both["scene"]).all() and (both["pred_device"] == both["device"]).all()
    rc, out, _ = call_cli("inspect", tmp_path / "cell" / "model.pt")
    assert rc == 0 and "multi_task_learned_posterior" in out


# ------------------------------------------------------------------------------------ authors' checkpoints

def test_authors_checkpoint_with_architecture_options(tmp_path, world):
    from caanet.compat import export_reference_state_dict

    torch.save(export_reference_state_dict(world["trained"].model), tmp_path / "state_dict.pt")
    wav = _test_wavs(world)[2]
    ours = json.loads(call_cli("predict", world["models"]["trained"], wav, "--format", "json")[1])["results"][0]
    rc, _, err = call_cli("predict", tmp_path / "state_dict.pt", wav, "--format", "json")
    assert rc == 1 and "--network" in err
    rc, out, err = call_cli("predict", tmp_path / "state_dict.pt", wav, "--format", "json", "--network",
                            "CnnAtrous_Attention", "--strategy", "multi_task", "--cond-layer", "2",
                            "--norm-from", world["cache"])
    assert rc == 0, err
    theirs = json.loads(out)["results"][0]
    assert theirs["scene"] == ours["scene"] and theirs["device"] == ours["device"]
    for s in SCENE_LABELS:
        assert theirs["probabilities"][s] == pytest.approx(ours["probabilities"][s], abs=1e-5)


# ------------------------------------------------------------------------------------ units

def test_window_starts_hand_values():
    assert window_starts(5, 10) == [0]
    assert window_starts(10, 10) == [0]
    assert window_starts(25, 10) == [0, 10, 15]  # the last window ends at the end
    assert window_starts(30, 10) == [0, 10, 20]
    w, starts = signal_windows(np.arange(4, dtype=np.float32) + 1, 6)
    assert starts == [0] and w.tolist() == [[1, 2, 3, 4, 0, 0]]  # padded at the end, as the cache pads


def test_to_input_grid_and_place_windows_keep_sums():
    m = np.array([[1.0, 3.0]])
    g = to_input_grid(m, (2, 2), (3, 3))  # cell (0,1) covers only column 2
    assert g.tolist() == [[0.25, 0.25, 1.5], [0.25, 0.25, 1.5], [0, 0, 0]]
    assert g.sum() == pytest.approx(4.0)
    assert to_input_grid(m, (2, 2), (3, 3), spread=False).tolist() == [[1, 1, 3], [1, 1, 3], [0, 0, 0]]  # CAM scores
    a, b = np.ones((2, 1)), 3 * np.ones((2, 1))
    out = place_windows([[a], [b]], [0, 1], 3, normalise=False)
    assert out[0, :, 0].tolist() == [1.0, 2.0, 3.0]  # the overlap is averaged, not summed
    assert place_windows([[a], [b]], [0, 1], 3, normalise=True).sum() == pytest.approx(1.0)
    # a bin the first window's pooling dropped takes the second window's value alone
    masks = [np.array([[True], [False]]), np.ones((2, 1), bool)]
    assert place_windows([[a], [b]], [0, 1], 3, normalise=False, masks=masks)[0, :, 0].tolist() == [1.0, 3.0, 3.0]


def test_cell_size():
    def cfg(topology, pooling):
        return ModelConfig(topology=topology, pooling=pooling, channels=(2, 2, 2, 2), input_shape=(320, 64))

    assert cell_size(cfg("atrous", "att")) == (1, 1)
    assert cell_size(cfg("cnn_pool", "att")) == (16, 16)
    assert cell_size(cfg("cnn_nopool", "roi_att")) == (16, 16)


SHARED = Path(os.environ.get("CAANET_SHARED", ROOT.parent / "shared"))
GOLDEN = SHARED / "reference" / "golden" / "DecisionLevelMaxPooling_cond1"


@pytest.mark.skipif(not GOLDEN.is_dir(), reason=f"golden data absent: {GOLDEN} (set CAANET_SHARED)")
def test_golden_authors_checkpoint_predicts_and_explains(tmp_path, world):
    """A real checkpoint of the authors' code (paper widths) on a WAV, normalised from a cache."""
    wav = _test_wavs(world)[0]
    opts = ["--network", "DecisionLevelMaxPooling", "--strategy", "multi_task", "--cond-layer", "1",
            "--norm-from", world["cache"]]
    rc, out, err = call_cli("predict", GOLDEN / "state_dict.pt", wav, "--format", "json", *opts)
    assert rc == 0, err
    res = json.loads(out)
    assert res["model"]["kind"] == "reference" and res["results"][0]["device"] in ("a", "b", "c")
    rc, out, err = call_cli("explain", GOLDEN / "state_dict.pt", wav, "-o", tmp_path / "cam.png", *opts)
    assert rc == 0 and "activation map" in out and (tmp_path / "cam.png").exists()


def test_oracle_device_index_covers_seen_and_unseen_devices():
    """A teacher-forcing model gets seen devices by position, unseen ones as n_devices + k under its
    unseen-device policy, and a clear refusal otherwise."""
    from types import SimpleNamespace

    from caanet.errors import ConfigError
    from caanet.inference import oracle_device_index

    mf = SimpleNamespace(path="m.pt", device_labels=["a", "b", "c"], unseen_device_labels=["s4", "s5"],
                         config=SimpleNamespace(unseen_device="uniform"))
    assert [oracle_device_index(mf, d) for d in ("a", "c", "s4", "s5")] == [0, 2, 3, 4]
    with pytest.raises(ConfigError, match="'zz' is not one of the model's devices"):
        oracle_device_index(mf, "zz")
    mf.config.unseen_device = None
    with pytest.raises(ConfigError, match="no unseen-device policy"):
        oracle_device_index(mf, "s4")
