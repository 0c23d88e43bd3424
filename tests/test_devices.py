"""Beyond three devices (issue 12): the 2020 layout, seen/unseen devices, the unseen-device policy,
any number of devices through every strategy, and the learned lambda (uncertainty weighting)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import caanet.training as training
from caanet.data import synth
from caanet.data.download import remote_files
from caanet.data.layout import SCENE_LABELS, read_dataset
from caanet import workflow_support as ws
from caanet.config import check_config, resolve
from caanet.devices import (
    DEFAULT_UNSEEN_POLICY,
    check_unseen_devices,
    normalise_unseen_policy,
    seen_devices,
    seen_first_order,
    seen_unseen_summary,
    unseen_policy_for,
)
from caanet.errors import ConfigError, DatasetError, SpecError
from caanet.evaluation import class_wise_accuracy, evaluate_predictions
from caanet.models import ModelConfig, build_model
from caanet.models.conditioning import conditioning_input
from caanet.models.loss_weighting import LearnedLambda, UncertaintyWeighting
from caanet.spec import LAMBDA_RULES, STRATEGIES, CellSpec
from caanet.training import TrainConfig, train_cell

from conftest import write_tiny_cache

ROOT = Path(__file__).resolve().parent.parent
DEVICES9 = ["a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"]
UNSEEN3 = ("s4", "s5", "s6")
TINY = dict(iterations=12, batch_size=8, channels=(2, 4, 4, 8), device_channels=(2, 4), lr_decay_every=10,
            lambda_check_every=4, checkpoint_every=6, log_every=4, val_fraction=0.2, eval_batch_size=32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cache9(tmp_path_factory) -> Path:
    """Nine devices, s4-s6 only in the test split (read-only)."""
    return write_tiny_cache(tmp_path_factory.mktemp("cache9") / "cache9.h5", train_locations=3, test_locations=1,
                            segments=2, devices=DEVICES9, unseen_devices=UNSEEN3)


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**TINY, **kw})


def spec(cell_id: str, **kw) -> CellSpec:
    return CellSpec.from_id(cell_id, dataset="tiny9", **kw)


# ------------------------------------------------------------------------------ data: 2020 layout, catalogue

def test_catalogue_lists_the_2020_mobile_development_set():
    files = remote_files("dcase2020_task1a_dev")
    assert [f.content_type for f in files] == ["documentation", "meta"] + ["audio"] * 16
    assert files[2].filename == "TAU-urban-acoustic-scenes-2020-mobile-development.audio.1.zip"
    assert files[1].md5 == "6eae9db553ce48e4ea246e34e50a3cf5" and files[1].bytes == 214159
    assert 27e9 < sum(f.bytes for f in files) < 28e9


def test_2020_layout_is_read_and_its_devices_derived(tmp_path):
    """The 2019 family's split files; nine devices, s4 only in fold1_evaluate; no device list given."""
    clips = [("audio/airport-barcelona-0-0-a.wav", "airport", "barcelona-0", "a", "train"),
             ("audio/airport-barcelona-0-0-s1.wav", "airport", "barcelona-0", "s1", "train"),
             ("audio/tram-vienna-9-3-a.wav", "tram", "vienna-9", "a", "test"),
             ("audio/tram-vienna-9-3-s1.wav", "tram", "vienna-9", "s1", "test"),
             ("audio/tram-vienna-9-3-s4.wav", "tram", "vienna-9", "s4", "test")]
    (tmp_path / "audio").mkdir()
    (tmp_path / "evaluation_setup").mkdir()
    for f, *_ in clips:
        (tmp_path / f).write_bytes(b"")
    (tmp_path / "meta.csv").write_text("filename\tscene_label\tidentifier\tsource_label\n"
                                       + "".join(f"{f}\t{s}\t{i}\t{d}\n" for f, s, i, d, _ in clips))
    for which, split in (("train", "train"), ("evaluate", "test")):
        (tmp_path / f"evaluation_setup/fold1_{which}.csv").write_text(
            "filename\tscene_label\n" + "".join(f"{f}\t{s}\n" for f, s, _, _, sp in clips if sp == split))
    (tmp_path / "evaluation_setup/fold1_test.csv").write_text(
        "filename\n" + "".join(f"{f}\n" for f, *_, sp in clips if sp == "test"))
    df = read_dataset(tmp_path, scene_labels=SCENE_LABELS)
    assert df.attrs["layout"] == "dcase2019"
    assert sorted(df["device"].unique()) == ["a", "s1", "s4"]
    assert seen_devices(DEVICES9, df.loc[df["split"] == "train", "device"]) == ["a", "s1"]


def test_config_has_the_2020_datasets():
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    check_config(config)
    ds = config["datasets"]
    assert ds["dcase2020_task1a"]["remote"] == "dcase2020_task1a_dev" and ds["dcase2020_task1a"]["devices"] == DEVICES9
    assert ds["dcase2020_task1a"]["unseen_devices"] == list(UNSEEN3)
    for name, n_unseen in (("embedded2020", 3), ("tiny2020", 3)):
        d = ds[name]
        sc = ws.synth_config(ws.synth_settings({"datasets": {name: d}}, name), name)
        assert list(sc.devices) == d["devices"] and list(sc.unseen_devices) == d["unseen_devices"]
        assert len(sc.unseen_devices) == n_unseen
        segs = synth.plan_segments(sc)
        train_devs = {dev for s in segs if s.split == "train" for dev in s.devices}
        test_devs = {dev for s in segs if s.split == "evaluate" for dev in s.devices}
        assert test_devs == set(d["devices"]) and train_devs == set(d["devices"]) - set(sc.unseen_devices)
    assert len(ds["embedded2020"]["devices"]) >= 6


# ------------------------------------------------------------------------------ embedded generator

def test_unseen_devices_record_only_the_evaluate_split_and_change_nothing_else():
    base = {"seed": 3, "cities": ["oslo", "riga", "rome"], "locations_per_city": 2, "segments_per_location": 2,
            "parallel_fraction": 0.5, "devices": {"s1": {}, "s2": {}}}
    plain = synth.plan_segments(synth.SynthConfig.from_dict(base))
    unseen = synth.plan_segments(synth.SynthConfig.from_dict({**base, "unseen_devices": ["s2"]}))
    assert [(s.stem, s.split) for s in plain] == [(s.stem, s.split) for s in unseen]
    for p, u in zip(plain, unseen):
        expected = p.devices if p.split == "evaluate" else tuple(d for d in p.devices if d != "s2")
        assert u.devices == expected
    assert any("s2" in s.devices for s in unseen if s.split == "evaluate")


@pytest.mark.parametrize("unseen, match", [
    (["a"], r"unseen_devices': got 'a'; expected a device other than the reference device"),
    (["zz"], r"unseen_devices': got 'zz'; expected one of devices"),
    (["b", "b"], r"unseen_devices': got \['b', 'b'\]; expected a list without duplicates"),
    ("b", r"unseen_devices': got 'b'; expected a list"),
])
def test_bad_unseen_devices_name_the_key(unseen, match):
    with pytest.raises(ConfigError, match=match):
        synth.SynthConfig.from_dict({"unseen_devices": unseen}, where="datasets.x.embedded")


def test_nine_device_embedded_set_is_generated_and_read(tmp_path):
    """tiny2020's generator settings (shortened clips): the reader derives the nine devices."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    settings = dict(ws.synth_settings(config, "tiny2020"), clip_seconds=0.25, cities=["oslo", "riga"],
                    locations_per_city=1)
    summary = synth.generate_dataset(tmp_path / "ds", synth.SynthConfig.from_dict(settings), n_jobs=1)
    df = read_dataset(tmp_path / "ds", scene_labels=SCENE_LABELS)
    assert sorted(df["device"].unique()) == sorted(DEVICES9) and len(df) == summary["n_clips"]
    train = df[df["split"] == "train"]
    assert seen_devices(DEVICES9, train["device"]) == DEVICES9[:6]
    assert set(df.loc[df["device"].isin(UNSEEN3), "split"]) == {"test"}
    assert check_unseen_devices(df, UNSEEN3, where="ds") == sorted(DEVICES9[:6])


def test_declared_unseen_devices_are_checked_against_the_data():
    index = pd.DataFrame({"device": ["a", "a", "b", "s4", "s5"], "split": ["train", "test", "train", "test", "none"]})
    assert check_unseen_devices(index, ["s4"], where="root") == ["a", "b"]
    with pytest.raises(DatasetError, match=r"root: device\(s\) \['s4'\] have test clips but no training clip"):
        check_unseen_devices(index, [], where="root")
    with pytest.raises(DatasetError, match=r"root: device 'b' is declared unseen but has 1 training clips"):
        check_unseen_devices(index, ["s4", "b"], where="root")
    with pytest.raises(DatasetError, match=r"root: device 's5' is declared unseen but has no test clips"):
        check_unseen_devices(index, ["s4", "s5"], where="root")


@pytest.mark.parametrize("entry, match", [
    ({"unseen_devices": ["s9"]}, r"'datasets.e.unseen_devices': got \['s9'\]; expected devices of 'datasets.e.devices'"),
    ({"devices": ["a"], "unseen_devices": ["a"]}, r"'datasets.e.unseen_devices': got \['a'\]; expected .*every device is unseen"),
])
def test_bad_unseen_declarations_name_the_key(entry, match):
    ds = {"source": "embedded", "devices": ["a", "s4"], "clip_seconds": 1.0, "embedded": {}, **entry}
    config = {"preset": "p", "presets": {"base": {}, "p": {"tables": {"t": {"dataset": "e"}}}}, "datasets": {"e": ds}}
    with pytest.raises(ConfigError, match=match):
        resolve(config)


def test_single_device_cell_of_a_declared_unseen_device_is_refused_by_name():
    preset = {"fidelity": "paper", "datasets": {"e": {"devices": ["a", "s4"], "unseen_devices": ["s4"]}}}
    assert ws.cell_spec(preset, "e", "cnn_pool-max-single_device-a", 0).device == "a"
    with pytest.raises(ConfigError, match=r"'s4' is in datasets.e.unseen_devices \['s4'\]: it has no training clips"):
        ws.cell_spec(preset, "e", "cnn_pool-max-single_device-s4", 0)


def test_generator_unseen_devices_are_given_once():
    d = {"devices": ["a", "b"], "unseen_devices": ["b"], "clip_seconds": 1.0, "embedded": {"unseen_devices": ["c"]}}
    with pytest.raises(ConfigError, match=r"datasets.e.embedded.unseen_devices.*differs from 'datasets.e.unseen_devices'"):
        ws.synth_settings({"datasets": {"e": d}}, "e")
    d["embedded"] = {}
    assert ws.synth_settings({"datasets": {"e": d}}, "e")["unseen_devices"] == ["b"]


# ------------------------------------------------------------------------------ seen / unseen bookkeeping

def test_seen_first_order_relabels_indices():
    labels, old_to_new = seen_first_order(["a", "s4", "b"], seen_devices(["a", "s4", "b"], ["b", "a", "a"]))
    assert labels == ["a", "b", "s4"] and old_to_new.tolist() == [0, 2, 1]
    assert old_to_new[np.array([1, 2, 0])].tolist() == [2, 1, 0]
    with pytest.raises(ConfigError, match=r"training clips of device\(s\) \['q'\]"):
        seen_devices(["a"], ["a", "q"])


def test_seen_unseen_means_by_hand():
    per_device = {"a": {"accuracy": 0.9}, "b": {"accuracy": 0.5}, "s4": {"accuracy": 0.2}, "s5": {"accuracy": 0.4}}
    out = seen_unseen_summary(per_device, ["a", "b", "c"])
    assert out["seen_devices"] == ["a", "b"] and out["unseen_devices"] == ["s4", "s5"]
    assert out["mean_seen"] == pytest.approx(0.7) and out["mean_unseen"] == pytest.approx(0.3)
    assert seen_unseen_summary({"a": {"accuracy": 0.9}}, ["a"])["mean_unseen"] is None


def test_seen_unseen_means_of_a_hand_built_predictions_table():
    """a (seen): airport 2/2, bus 1/2 -> 0.75; s4 (unseen): airport 0/1, bus 1/1 -> 0.5; s5: 1/1 -> 1.0."""
    rows = [("a", "airport", "airport"), ("a", "airport", "airport"), ("a", "bus", "bus"), ("a", "bus", "airport"),
            ("s4", "airport", "bus"), ("s4", "bus", "bus"), ("s5", "bus", "bus")]
    preds = pd.DataFrame(rows, columns=["device", "scene", "pred_scene"])
    per_device = evaluate_predictions(preds, ["airport", "bus"], ["a", "s4", "s5"])["per_device"]
    out = seen_unseen_summary(per_device, ["a"])
    assert [per_device[d]["accuracy"] for d in ("a", "s4", "s5")] == [0.75, 0.5, 1.0]
    assert out["mean_seen"] == 0.75 and out["mean_unseen"] == 0.75 and out["unseen_devices"] == ["s4", "s5"]


# ------------------------------------------------------------------------------ the unseen-device policy

def test_policy_config_defaults_shorthand_and_refusals():
    assert normalise_unseen_policy(None) == DEFAULT_UNSEEN_POLICY == {"teacher_forcing": "uniform",
                                                                      "multi_task": "predicted"}
    assert normalise_unseen_policy("zero") == {"teacher_forcing": "zero", "multi_task": "zero"}
    assert normalise_unseen_policy({"multi_task": "uniform"}) == {"teacher_forcing": "uniform", "multi_task": "uniform"}
    assert unseen_policy_for(DEFAULT_UNSEEN_POLICY, "multi_task_learned") == "predicted"
    assert unseen_policy_for(DEFAULT_UNSEEN_POLICY, "joint") is None
    with pytest.raises(ConfigError, match=r"config key 'presets.p.training.unseen_device.teacher_forcing': got 'predicted'; expected 'zero' or 'uniform'"):
        TrainConfig.from_dict({"unseen_device": {"teacher_forcing": "predicted"}}, where="presets.p.training")
    with pytest.raises(ConfigError, match=r"config key 'training.unseen_device': got 'predicted'; expected a mapping.*for every strategy is impossible"):
        TrainConfig.from_dict({"unseen_device": "predicted"})
    with pytest.raises(ConfigError, match=r"config key 'training.unseen_device.joint': got 'zero'; expected a known key"):
        TrainConfig.from_dict({"unseen_device": {"joint": "zero"}})
    with pytest.raises(ConfigError, match=r"config key 'training.unseen_device.multi_task': got 'mean'; expected one of"):
        TrainConfig.from_dict({"unseen_device": {"multi_task": "mean"}})
    c = TrainConfig.from_dict({"unseen_device": "zero"})
    assert c.to_dict()["unseen_device"] == {"teacher_forcing": "zero", "multi_task": "zero"}
    assert TrainConfig.from_dict(c.to_dict()).unseen_device == c.unseen_device
    assert TrainConfig().unseen_device == DEFAULT_UNSEEN_POLICY


def test_conditioning_input_of_unseen_devices():
    d = torch.tensor([0, 2, 3, 5])  # 3 seen devices: 3 and 5 are unseen
    zero = conditioning_input(d, 3, "zero")
    uniform = conditioning_input(d, 3, "uniform")
    assert zero.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0]]
    assert uniform[:2].tolist() == [[1, 0, 0], [0, 0, 1]]
    assert torch.allclose(uniform[2:], torch.full((2, 3), 1 / 3))
    with pytest.raises(ConfigError, match=r"device indices must lie in \[0, 3\)"):
        conditioning_input(d, 3, None)
    with pytest.raises(ConfigError, match=r"must be >= 0"):
        conditioning_input(torch.tensor([-1]), 3, "zero")


def _captured_conditioning(model, x, device=None):
    seen = []
    handle = model.conditioning.register_forward_hook(lambda mod, args, out: seen.append(args[0].clone()))
    with torch.no_grad():
        model.eval()(x, device)
    handle.remove()
    return seen[0]


def test_models_apply_the_policy_to_unseen_rows_only():
    torch.manual_seed(0)
    x = torch.randn(3, 32, 16)
    d = torch.tensor([1, 4, 0])  # 3 seen devices; index 4 is unseen
    common = dict(topology="cnn_pool", pooling="max", n_devices=3, cond_layer=2, channels=(2, 4, 4, 8),
                  device_channels=(2, 4), input_shape=(32, 16))
    tf = build_model(ModelConfig(device_source="oracle", unseen_device="zero", **common))
    assert _captured_conditioning(tf, x, d).tolist() == [[0, 1, 0], [0, 0, 0], [1, 0, 0]]
    mt = build_model(ModelConfig(device_source="predicted", unseen_device="uniform", **common))
    predicted = _captured_conditioning(mt, x)
    spotted = _captured_conditioning(mt, x, d)
    assert torch.equal(spotted[[0, 2]], predicted[[0, 2]])  # seen clips keep CNN-d's argmax
    assert torch.allclose(spotted[1], torch.full((3,), 1 / 3))
    mt_pred = build_model(ModelConfig(device_source="predicted", unseen_device="predicted", **common))
    assert _captured_conditioning(mt_pred, x, d).sum(1).tolist() == [1, 1, 1]  # the device is ignored
    with pytest.raises(ConfigError, match=r"'ModelConfig\.unseen_device': got 'predicted'; expected None or one of \['zero', 'uniform'\]"):
        ModelConfig(device_source="oracle", unseen_device="predicted", **common)
    with pytest.raises(ConfigError, match=r"'ModelConfig\.unseen_device': got 'zero'"):
        ModelConfig(device_source="none", unseen_device="zero", **{**common, "cond_layer": None})


def test_posterior_models_apply_the_policy_to_unseen_rows_only():
    """The posterior conditioning under each unseen-device policy: ``predicted`` feeds CNN-d's posterior
    for every clip (no device label read); ``zero``/``uniform`` replace the unseen clips' rows and keep
    the posterior of the seen ones, still differentiable into CNN-d."""
    torch.manual_seed(0)
    x = torch.randn(3, 32, 16)
    d = torch.tensor([1, 4, 0])  # 3 seen devices; index 4 is unseen
    common = dict(topology="cnn_pool", pooling="max", n_devices=3, cond_layer=2, channels=(2, 4, 4, 8),
                  device_channels=(2, 4), input_shape=(32, 16), device_source="predicted", device_input="posterior")
    models = {p: build_model(ModelConfig(unseen_device=p, **common)) for p in ("predicted", "zero", "uniform")}
    state = models["predicted"].state_dict()
    for m in models.values():
        m.load_state_dict(state)
    posterior = models["predicted"].eval()(x).device.exp().detach()
    torch.testing.assert_close(_captured_conditioning(models["predicted"], x, d), posterior)
    for policy, fill in (("zero", 0.0), ("uniform", 1 / 3)):
        got = _captured_conditioning(models[policy], x, d)
        torch.testing.assert_close(got[[0, 2]], posterior[[0, 2]])
        assert torch.allclose(got[1], torch.full((3,), fill))
    model = models["zero"].train()
    out = model(x, d)
    out.scene.sum().backward()
    assert torch.any(model.device_net.fc.weight.grad != 0)  # the seen rows carry the scene loss into CNN-d


# ------------------------------------------------------------------------------ learned lambda

def test_uncertainty_weighting_value_and_gradients_by_hand():
    w = UncertaintyWeighting()
    with torch.no_grad():
        w.log_var.copy_(torch.tensor([0.5, -1.0]))
    ls, ld = torch.tensor(2.0), torch.tensor(0.25)
    total = w(ls, ld)
    assert total.item() == pytest.approx(math.exp(-0.5) * 2.0 + 0.5 + math.exp(1.0) * 0.25 - 1.0, rel=1e-6)
    total.backward()
    # d/ds (exp(-s) L + s) = 1 - exp(-s) L
    assert w.log_var.grad.tolist() == pytest.approx([1 - math.exp(-0.5) * 2.0, 1 - math.exp(1.0) * 0.25], rel=1e-6)
    assert w.effective_lambda() == pytest.approx(math.exp(0.5 - -1.0), rel=1e-6)
    rule = LearnedLambda()
    rule.load_state_dict({"log_var": [0.25, 0.75]})
    assert rule.value == pytest.approx(math.exp(-0.5), rel=1e-6) and rule.state_dict() == {"log_var": [0.25, 0.75]}
    assert not rule.due(100) and rule.source is None


def test_learned_lambda_is_one_strategy_of_the_vocabulary():
    s = CellSpec.from_id("atrous-att-multi_task_learned-L3", dataset="d")
    assert s.strategy in STRATEGIES and s.conditional and s.device_source == "predicted"
    assert s.lambda_rule == "learned" == LAMBDA_RULES["multi_task_learned"]
    assert CellSpec.from_id("atrous-att-multi_task-L3", dataset="d").lambda_rule == "switch"
    assert CellSpec.from_id("atrous-att-joint", dataset="d").lambda_rule is None
    with pytest.raises(SpecError):
        CellSpec.from_id("atrous-att-multi_task_learned", dataset="d")  # conditional: needs a layer


def test_learned_lambda_trains_its_log_variances_and_logs_the_trajectory(cache9, tmp_path):
    ev = train_cell(cache9, spec("cnn_pool-max-multi_task_learned-L2"), cfg(iterations=16), tmp_path, log=lambda m: None)
    m = pd.read_csv(tmp_path / "metrics.csv")
    assert list(m.columns) == list(training.METRICS_COLUMNS)
    assert m["iteration"].tolist() == [4, 8, 12, 16] and m["device_acc"].isna().all()
    assert np.allclose(m["lambda"], np.exp(m["log_var_scene"] - m["log_var_device"]), rtol=1e-5)
    # the s_i moved away from 0 (gradients reach them) and keep moving
    assert (m[["log_var_scene", "log_var_device"]].abs() > 1e-4).all().all()
    assert m["log_var_device"].diff().iloc[1:].abs().min() > 0
    final = ev["loss_log_variances"]
    assert ev["lambda_rule"] == "learned" and ev["lambda_switched_at"] is None and ev["lambda_source"] is None
    assert ev["lambda_final"] == pytest.approx(math.exp(final["scene"] - final["device"]), rel=1e-6)
    # the loss is the weighted one: exp(-s) L + s summed, not L_scene + L_device
    assert not np.allclose(m["loss"], m["loss_scene"] + m["loss_device"])


def test_learned_lambda_resumes_bit_identically(cache9, tmp_path):
    s = spec("cnn_pool-max-multi_task_learned-L2")
    train_cell(cache9, s, cfg(), tmp_path / "whole", log=lambda m: None)

    def kill(iteration):
        if iteration == 9:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_cell(cache9, s, cfg(), tmp_path / "resumed", log=lambda m: None, callback=kill)
    train_cell(cache9, s, cfg(), tmp_path / "resumed", log=lambda m: None)
    a, b = (pd.read_csv(tmp_path / d / "metrics.csv").drop(columns="elapsed_s") for d in ("whole", "resumed"))
    pd.testing.assert_frame_equal(a, b)
    ea, eb = (json.loads((tmp_path / d / "evaluation.json").read_text()) for d in ("whole", "resumed"))
    assert ea["loss_log_variances"] == eb["loss_log_variances"] and ea["per_device"] == eb["per_device"]


# ------------------------------------------------------------------------------ every strategy, nine devices

def _mean_of_class_wise(preds: pd.DataFrame, devices, scenes) -> float:
    accs = []
    for d in devices:
        p = preds[preds["device"] == d]
        accs.append(class_wise_accuracy(p["scene"].map(scenes.index).to_numpy(),
                                        p["pred_scene"].map(scenes.index).to_numpy(), len(scenes)))
    return float(np.mean(accs))


@pytest.mark.parametrize("cell_id", [
    "cnn_pool-max-single_device-s2", "cnn_pool-avg-joint", "atrous-att-teacher_forcing-L2",
    "cnn_nopool-max-multi_task-L3", "cnn_pool-max-multi_task_learned-L1", "cnn_pool-max-multi_task_posterior-L2",
    "atrous-att-multi_task_learned_posterior-L1",
])
def test_every_strategy_with_nine_devices_three_unseen(cache9, tmp_path, cell_id):
    s = spec(cell_id)
    ev = train_cell(cache9, s, cfg(), tmp_path, log=lambda m: None)
    preds = pd.read_csv(tmp_path / "predictions.csv", keep_default_na=False)
    model = torch.load(tmp_path / "model.pt", weights_only=True)
    assert ev["device_labels"] == DEVICES9
    # the model file: its own (seen) devices, then the devices absent from training
    assert model["device_labels"] + model["unseen_device_labels"] == DEVICES9
    assert len(model["device_labels"]) == model["model_config"]["n_devices"]
    if s.strategy == "single_device":
        assert ev["seen_devices"] == ["s2"] and ev["unseen_devices"] == [] and ev["mean_unseen"] is None
        assert ev["mean_seen"] == ev["mean_all"] and ev["unseen_device_policy"] is None
        return
    assert ev["seen_devices"] == DEVICES9[:6] and ev["unseen_devices"] == list(UNSEEN3)
    assert set(preds["device"]) == set(DEVICES9)
    # the means, recomputed from predictions.csv with the paper's metric
    scenes = ev["scene_labels"]
    assert ev["mean_seen"] == pytest.approx(_mean_of_class_wise(preds, DEVICES9[:6], scenes))
    assert ev["mean_unseen"] == pytest.approx(_mean_of_class_wise(preds, UNSEEN3, scenes))
    assert ev["mean_all"] == pytest.approx((6 * ev["mean_seen"] + 3 * ev["mean_unseen"]) / 9)
    if s.conditional:
        assert model["model_config"]["n_devices"] == 6  # Eq. 1 and CNN-d sized by the seen devices
    if s.device_source == "predicted":
        assert set(preds["pred_device"]) <= set(DEVICES9[:6])
        seen = preds["device"].isin(DEVICES9[:6])
        assert ev["device_accuracy_seen"] == pytest.approx((preds["pred_device"] == preds["device"])[seen].mean())
        assert model["state_dict"]["device_net.fc.weight"].shape[0] == 6
        assert ev["unseen_device_policy"] == "predicted" and not ev["test_device_labels_used"]
    if s.strategy == "teacher_forcing":
        assert ev["unseen_device_policy"] == "uniform" and ev["test_device_labels_used"]
        assert model["state_dict"]["conditioning.weight"].shape[1] == 6


@pytest.mark.parametrize("cell_id, policy, oracle", [
    ("cnn_pool-max-teacher_forcing-L2", "zero", True),
    ("cnn_pool-max-teacher_forcing-L2", "uniform", True),
    ("cnn_pool-max-multi_task-L2", "predicted", False),
    ("cnn_pool-max-multi_task-L2", "zero", True),
    ("cnn_pool-max-multi_task-L2", "uniform", True),
    ("cnn_pool-max-multi_task_posterior-L2", "predicted", False),
    ("cnn_pool-max-multi_task_learned_posterior-L2", "zero", True),
])
def test_each_unseen_device_policy(cache9, tmp_path, cell_id, policy, oracle):
    key = "teacher_forcing" if "teacher" in cell_id else "multi_task"
    c = cfg(iterations=4, unseen_device={key: policy})
    ev = train_cell(cache9, spec(cell_id), c, tmp_path, log=lambda m: None)
    model = torch.load(tmp_path / "model.pt", weights_only=True)
    assert ev["unseen_device_policy"] == policy and model["model_config"]["unseen_device"] == policy
    assert ev["test_device_labels_used"] is oracle
    assert ("oracle information" in ev.get("note", "")) is oracle
    assert ev["mean_unseen"] is not None


def test_policy_changes_the_unseen_predictions_only(cache9, tmp_path):
    """Same weights (same seed and data): zero vs uniform differ only in what unseen clips are fed."""
    out = {}
    for policy in ("zero", "uniform"):
        train_cell(cache9, spec("cnn_pool-max-teacher_forcing-L1"), cfg(iterations=4, unseen_device=policy),
                   tmp_path / policy, log=lambda m: None)
        out[policy] = pd.read_csv(tmp_path / policy / "predictions.csv", keep_default_na=False)
    seen = out["zero"]["device"].isin(DEVICES9[:6])
    pd.testing.assert_frame_equal(out["zero"][seen], out["uniform"][seen])


def test_single_device_cell_of_an_unseen_device_is_refused(cache9, tmp_path):
    with pytest.raises(SpecError, match=r"no train clips of device 's5'"):
        train_cell(cache9, spec("cnn_pool-max-single_device-s5"), cfg(), tmp_path)
    assert not any(tmp_path.iterdir())


def test_reference_lambda_checks_use_the_seen_devices_test_clips(cache9, tmp_path, monkeypatch):
    checked = []

    def fake(model, clips, positions, **kw):
        checked.append(clips.device[positions])
        return 0.0

    monkeypatch.setattr(training.trainer, "device_accuracy", fake)
    train_cell(cache9, spec("cnn_pool-max-multi_task-L1", fidelity="reference"), cfg(iterations=4),
               tmp_path, log=lambda m: None)
    assert checked and all(len(c) and (c < 6).all() for c in checked)
