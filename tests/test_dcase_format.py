"""``caanet predict --format dcase`` against the DCASE Task 1 system output format (caanet.dcase_format):
the header and its column order, tab separation, the file names, the scene labels, probabilities that sum
to one; and the format check itself on broken files."""

from __future__ import annotations

import contextlib
import csv
import io
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from caanet.cli import main
from caanet.dcase_format import check_filenames, format_dcase_output, validate_dcase_output
from caanet.errors import ConfigError
from caanet.features import FeatureParams
from caanet.modelfile import model_payload, save_model_file
from caanet.models import ModelConfig, build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# the DCASE 2020-2025 scenes, deliberately not in sorted order: the output sorts them as the validators list them
SCENES = ["tram", "airport", "bus", "metro", "metro_station", "park", "public_square", "shopping_mall",
          "street_pedestrian", "street_traffic"]
VALIDATOR_HEADER = ["filename", "scene_label", "airport", "bus", "metro", "metro_station", "park", "public_square",
                    "shopping_mall", "street_pedestrian", "street_traffic", "tram"]   # dcase2020/2024 validators


def _cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def model_and_audio(tmp_path_factory):
    """An untrained multi-task model file (1-s clips) and five WAVs under ``audio/`` (one longer)."""
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("dcase")
    params = FeatureParams(clip_seconds=1.0)
    mc = ModelConfig(topology="cnn_pool", pooling="att", n_classes=len(SCENES), n_devices=3, cond_layer=2,
                     device_source="predicted", channels=(4, 8, 8, 16), device_channels=(4, 8),
                     input_shape=(params.n_frames, params.n_mels))
    model = save_model_file(tmp / "model.pt", model_payload(
        model=build_model(mc).eval(), model_config=mc, spec=None, train_config=None, feature_params=params,
        norm_mean=np.zeros(params.n_mels, np.float32), norm_std=np.ones(params.n_mels, np.float32),
        scene_labels=SCENES, device_labels=["a", "b", "c"]))
    rng = np.random.default_rng(0)
    (tmp / "audio").mkdir()
    for i, seconds in enumerate((1.0, 1.0, 0.5, 2.5, 1.0)):
        sf.write(tmp / "audio" / f"{i}.wav", 0.1 * rng.standard_normal(int(seconds * 44100)), 44100, subtype="PCM_16")
    return model, tmp / "audio"


def test_predict_writes_dcases_system_output(model_and_audio, tmp_path):
    model, audio = model_and_audio
    out = tmp_path / "Ren_TUM_task1a_1.output.csv"
    rc, _, err = _cli("predict", model, audio, "--format", "dcase", "-o", out, "-q")
    assert rc == 0, err
    text = out.read_text()
    assert validate_dcase_output(text, SCENES) == []
    rows = list(csv.reader(io.StringIO(text), delimiter="\t"))
    assert rows[0] == VALIDATOR_HEADER                      # header, its column order, tab-separated
    assert text.splitlines()[0] == "\t".join(VALIDATOR_HEADER)
    body = rows[1:]
    assert [r[0] for r in body] == [f"audio/{i}.wav" for i in range(5)]   # dataset-relative names, every file once
    assert all(len(r) == len(VALIDATOR_HEADER) for r in body)
    p = np.array([[float(v) for v in r[2:]] for r in body])
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
    assert [r[1] for r in body] == [VALIDATOR_HEADER[2 + k] for k in p.argmax(axis=1)]
    # the same probabilities as --format json, scene by scene
    rc, stdout, _ = _cli("predict", model, audio, "--format", "json", "-q")
    results = json.loads(stdout)["results"]
    for r, row in zip(results, p):
        np.testing.assert_allclose(row, [r["probabilities"][s] for s in VALIDATOR_HEADER[2:]], rtol=1e-6)


def test_names_the_format_cannot_hold_are_refused_before_classifying(model_and_audio, tmp_path):
    model, audio = model_and_audio
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "0.wav").write_bytes((audio / "0.wav").read_bytes())
    rc, out, err = _cli("predict", model, audio, tmp_path / "other", "--format", "dcase")
    assert rc == 1 and out == "" and "0.wav" in err and "one name" in err
    with pytest.raises(ConfigError, match=r"x\.flac: DCASE's output format names \.wav files"):
        check_filenames(["a/x.flac"])
    check_filenames(["a/1.wav", "b\\2.WAV"])


def test_the_format_check_finds_what_the_validators_refuse():
    good = format_dcase_output([{"file": "/data/set/audio/7.wav", "scene": "bus",
                                 "probabilities": {s: (0.91 if s == "bus" else 0.01) for s in SCENES}}], SCENES)
    assert good.splitlines()[1].split("\t")[:2] == ["audio/7.wav", "bus"] and validate_dcase_output(good, SCENES) == []

    def broken(old, new):
        return validate_dcase_output(good.replace(old, new), SCENES)

    assert "header" in broken("scene_label", "label")[0]
    assert "header" in validate_dcase_output(good.replace("\t", ","), SCENES)[0]           # not tab-separated
    assert any("no .wav" in p for p in broken("7.wav", "7.flac"))
    assert any("is not audio/<name>" in p for p in broken("audio/7.wav", "7.wav"))
    assert any("'cab' is not one of" in p for p in broken("7.wav\tbus", "7.wav\tcab"))
    assert any("sum to" in p for p in broken("0.91", "0.5"))
    assert any("'tram' is not the most probable" in p for p in broken("7.wav\tbus", "7.wav\ttram"))
    assert any("not a number" in p for p in broken("0.91", "high"))
    line = good.splitlines()[1]
    assert any("duplicate file '7.wav'" in p for p in validate_dcase_output(good + line + "\n", SCENES))
    assert any("fields" in p for p in validate_dcase_output(good + "audio/8.wav\tbus\n", SCENES))
    assert validate_dcase_output("", SCENES) == ["empty output: no header row"]
