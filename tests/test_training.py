"""The training job of one cell: hyperparameters, schedules, lambda rule, data splits, outputs,
determinism, resume, preemption and bad inputs. Tiny models on the tiny cache (tests/conftest.py)."""

import dataclasses
import json
import os
import signal

import numpy as np
import pandas as pd
import pytest
import torch

import caanet.training as training
from caanet.data.loader import batch_indices, carve_validation, epoch_permutation, fit_normalisation, load_features
from caanet.errors import CacheError, ConfigError, SpecError, TrainingError
from caanet.fidelity import PAPER, REFERENCE
from caanet.spec import CellSpec
from caanet.training import LambdaRule, Preempted, TrainConfig, lr_at, train_cell

TINY = dict(batch_size=8, channels=(4, 8, 8, 16), device_channels=(4, 8), lr_decay_every=10,
            lambda_check_every=10, checkpoint_every=10, log_every=5, val_fraction=0.2, eval_batch_size=16)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"iterations": 20, **TINY, **kw})


def spec(cell_id: str, **kw) -> CellSpec:
    return CellSpec.from_id(cell_id, dataset="tiny", **kw)


def weights(out_dir):
    return torch.load(out_dir / "model.pt", weights_only=True)["state_dict"]


def assert_same_run(a, b):
    ma = pd.read_csv(a / "metrics.csv").drop(columns="elapsed_s")
    mb = pd.read_csv(b / "metrics.csv").drop(columns="elapsed_s")
    pd.testing.assert_frame_equal(ma, mb)
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    ea, eb = (json.loads((d / "evaluation.json").read_text()) for d in (a, b))
    for e in (ea, eb):
        e.pop("train_seconds")
    assert ea == eb
    assert (a / "predictions.csv").read_text() == (b / "predictions.csv").read_text()


# ---------------------------------------------------------------- hyperparameters and schedules


def test_train_config_defaults_are_the_papers():
    c = TrainConfig()
    assert (c.iterations, c.batch_size, c.lr, c.betas, c.eps) == (15000, 16, 1e-3, (0.9, 0.999), 1e-8)
    assert (c.lr_decay, c.lr_decay_every, c.lambda_high, c.lambda_low, c.lambda_switch_acc) == (0.9, 200, 1.0, 1e-4, 0.98)
    assert (c.lambda_check_every, c.selection, c.channels, c.device_channels) == (100, "last", (64, 128, 256, 512), (64, 128))


def test_train_config_from_dict_checks_keys_and_types():
    c = TrainConfig.from_dict({"iterations": 200, "channels": [8, 16, 16, 32], "lr": 1, "amp": False})
    assert c.channels == (8, 16, 16, 32) and c.lr == 1.0 and isinstance(c.lr, float) and c.amp is False
    assert TrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match=r"config key 'presets.tiny.training.iteratons': got 5; expected a known key"):
        TrainConfig.from_dict({"iteratons": 5}, where="presets.tiny.training")
    for key, value in [("iterations", "ten"), ("iterations", 1.5), ("iterations", True), ("amp", "yes"),
                       ("channels", [4, "x"]), ("channels", 8), ("selection", "best_test"), ("lr", -1.0),
                       ("val_fraction", 1.0), ("betas", [0.9])]:
        with pytest.raises(ConfigError, match=rf"training\.{key}"):
            TrainConfig.from_dict({key: value})


def test_the_schema_describes_every_training_key_with_the_dataclass_defaults():
    """Defaults are defined by TrainConfig and documented in the schema's $defs.training: they agree,
    every key has a description, and the schema's enums are the code's vocabularies."""
    from caanet.devices import DEFAULT_UNSEEN_POLICY
    from caanet.fidelity import LAMBDA_ON
    from caanet.spec import UNSEEN_DEVICE_POLICIES
    from caanet.training.config import SELECTIONS, schema_defaults, training_schema

    schema = training_schema()
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(schema["properties"]) == fields and schema["additionalProperties"] is False
    for key, leaf in schema["properties"].items():
        assert leaf.get("description") and "default" in leaf, key
    assert schema_defaults() == TrainConfig().to_dict()
    assert TrainConfig.from_dict(schema_defaults()) == TrainConfig()
    props = schema["properties"]
    assert props["selection"]["enum"] == list(SELECTIONS)
    assert props["lambda_on"]["enum"] == [*LAMBDA_ON, None]
    assert props["unseen_device"]["default"] == DEFAULT_UNSEEN_POLICY
    policies = props["unseen_device"]["anyOf"]
    from caanet.config import subschema

    assert subschema(policies[0]["$ref"])["enum"] == list(UNSEEN_DEVICE_POLICIES)
    assert all(subschema(v["$ref"])["enum"] == list(UNSEEN_DEVICE_POLICIES) for v in policies[1]["properties"].values())


def test_train_config_errors_name_the_key_the_value_and_the_range():
    for d, message in [
        ({"lr": -1}, "config key 'training.lr': got -1; expected a number > 0"),
        ({"lr": float("nan")}, "config key 'training.lr': got nan; expected a number > 0"),
        ({"iterations": 2.0}, "config key 'training.iterations': got 2.0; expected an integer >= 1"),
        ({"lr_decay": 0}, "config key 'training.lr_decay': got 0; expected a number in (0, 1]"),
        ({"betas": [0.9, 1.0]}, "config key 'training.betas': got [0.9, 1.0]; expected a list of 2 items, "
                                "each item a number in [0, 1)"),
        ({"channels": []}, "config key 'training.channels': got []; expected a non-empty list, each item an "
                           "integer >= 1"),
    ]:
        with pytest.raises(ConfigError) as info:
            TrainConfig.from_dict(d)
        assert str(info.value) == message
    with pytest.raises(ConfigError, match=r"config key 'training.lr': got -1"):
        TrainConfig(lr=-1)  # direct construction is checked against the schema too
    assert TrainConfig(iterations=np.int64(3)).iterations == 3
    # the one rule spanning fields: best_val selection needs a validation split
    with pytest.raises(ConfigError, match=r"config key 'training.val_fraction': got 0.*selection: best_val"):
        TrainConfig.from_dict({"selection": "best_val", "val_fraction": 0})


def test_lr_schedule_decays_in_paper_mode_only():
    c = TrainConfig()
    assert lr_at(0, c, PAPER) == pytest.approx(1e-3)
    assert lr_at(199, c, PAPER) == pytest.approx(1e-3)
    assert lr_at(200, c, PAPER) == pytest.approx(9e-4)
    assert lr_at(14999, c, PAPER) == pytest.approx(1e-3 * 0.9 ** 74)
    assert {lr_at(i, c, REFERENCE) for i in (0, 200, 14999)} == {1e-3}
    assert lr_at(400, c, "paper") == pytest.approx(1e-3 * 0.81)


def test_lambda_rule_paper_is_sticky_on_validation():
    r = LambdaRule.from_config(TrainConfig(), PAPER)
    assert (r.source, r.sticky, r.value) == ("validation", True, 1.0)
    assert not r.due(0) and not r.due(50) and r.due(100)
    assert r.update(100, 0.97) == 1.0
    assert r.update(200, 0.98) == 1e-4 and r.switched_at == 200
    assert not r.due(300)  # switched for good: no more checks needed
    assert r.update(300, 0.10) == 1e-4


def test_lambda_rule_reference_is_reversible_on_test():
    r = LambdaRule.from_config(TrainConfig(), REFERENCE)
    assert (r.source, r.sticky) == ("test", False)
    assert [r.update(i, a) for i, a in [(100, 0.99), (200, 0.5), (300, 0.981)]] == [1e-4, 1.0, 1e-4]
    assert r.due(400)
    r2 = LambdaRule.from_config(TrainConfig(), REFERENCE)
    r2.load_state_dict(r.state_dict())
    assert (r2.value, r2.switched_at, r2.history) == (r.value, r.switched_at, r.history)


# ---------------------------------------------------------------- data


def test_batches_are_a_pure_function_of_seed_and_iteration():
    n, bs = 10, 4
    first_epoch = np.concatenate([batch_indices(n, bs, 3, i) for i in range(5)])  # 20 = two epochs
    assert sorted(first_epoch[:10]) == list(range(10)) and sorted(first_epoch[10:]) == list(range(10))
    assert np.array_equal(first_epoch[:10], epoch_permutation(n, 3, 0))
    assert np.array_equal(batch_indices(n, bs, 3, 2), batch_indices(n, bs, 3, 2))  # straddles epochs 0/1
    assert not np.array_equal(batch_indices(n, bs, 3, 0), batch_indices(n, bs, 4, 0))


def test_validation_is_location_disjoint_stratified_and_train_only(tiny_cache):
    fs = load_features(tiny_cache, split="train")
    tr, va = carve_validation(fs.identifier, fs.scene, fs.device, 0.2, seed=0)
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(len(fs.scene)))
    assert not set(fs.identifier[tr]) & set(fs.identifier[va])
    # every scene/device pair keeps training clips; each location records a x3, b, c: equal shares
    assert {(s, d) for s, d in zip(fs.scene[tr], fs.device[tr])} == {(s, d) for s in range(3) for d in range(3)}
    shares = [np.mean(fs.device[va] == d) * va.size / np.sum(fs.device == d) for d in range(3)]
    assert shares[0] == shares[1] == shares[2] and abs(shares[0] - 0.2) <= 1 / 4   # within one location of 4
    test_ids = set(load_features(tiny_cache, split="test").identifier)
    assert not test_ids & set(fs.identifier[va])
    tr0, va0 = carve_validation(fs.identifier, fs.scene, fs.device, 0.0, seed=0)
    assert va0.size == 0 and tr0.size == len(fs.scene)
    tr1, va1 = carve_validation(fs.identifier, fs.scene, fs.device, 0.2, seed=1)
    assert np.array_equal(np.sort(va), np.sort(carve_validation(fs.identifier, fs.scene, fs.device, 0.2, 0)[1]))
    assert va1.size > 0


def test_only_cells_that_use_a_validation_split_hold_one_out(tiny_cache):
    """Paper mode: single-device, joint and teacher-forcing cells train on the whole training split;
    a multi-task cell (lambda on validation) and any best_val or validation-scored cell hold one out."""
    n_train = len(load_features(tiny_cache, split="train").scene)
    for cell in ("cnn_pool-max-joint", "cnn_pool-max-teacher_forcing-L1"):
        data = training.prepare_data(tiny_cache, spec(cell), tiny_cfg())
        assert data.val_idx.size == 0 and data.train_idx.size == n_train
    one = training.prepare_data(tiny_cache, spec("cnn_pool-max-single_device-b"), tiny_cfg())
    assert one.val_idx.size == 0 and one.train_idx.size == len(one.train)
    assert training.prepare_data(tiny_cache, spec("cnn_pool-max-multi_task-L1"), tiny_cfg()).val_idx.size > 0
    assert training.prepare_data(tiny_cache, spec("cnn_pool-max-multi_task-L1"),
                                 tiny_cfg(lambda_on="test")).val_idx.size == 0
    assert training.prepare_data(tiny_cache, spec("cnn_pool-max-joint"), tiny_cfg(selection="best_val")).val_idx.size
    assert training.prepare_data(tiny_cache, spec("cnn_pool-max-teacher_forcing-L1"), tiny_cfg(),
                                 score_validation=True).val_idx.size


def test_hold_validation_gives_every_cell_the_same_training_clips(tiny_cache, tmp_path):
    """Like for like (issue 17 §3): told by the grid to hold the split out, a joint, a teacher-forcing and a
    single-device cell train on exactly the clips the multi-task cell (which uses the split) trains on."""
    cfg = tiny_cfg()
    multi = training.prepare_data(tiny_cache, spec("cnn_pool-max-multi_task-L1"), cfg)
    used = set(multi.train.filename[multi.train_idx])
    assert multi.val_idx.size > 0
    for cell in ("cnn_pool-max-joint", "atrous-att-teacher_forcing-L2", "cnn_pool-max-multi_task_learned-L1"):
        data = training.prepare_data(tiny_cache, spec(cell), cfg, hold_validation=True)
        assert set(data.train.filename[data.train_idx]) == used, cell
    one = training.prepare_data(tiny_cache, spec("cnn_pool-max-single_device-b"), cfg, hold_validation=True)
    assert set(one.train.filename[one.train_idx]) == {f for f in used if f.endswith("-b.wav")}
    ev = train_cell(tiny_cache, spec("cnn_pool-max-joint"), tiny_cfg(iterations=2), tmp_path / "j",
                    hold_validation=True)
    assert ev["n_train_clips"] == multi.train_idx.size and ev["n_validation_clips"] == multi.val_idx.size
    assert ev["validation_accuracy"] is not None
    with pytest.raises(ConfigError, match=r"'training.val_fraction': got 0.0; expected a number > 0: a cell of tiny"):
        train_cell(tiny_cache, spec("cnn_pool-max-joint"), tiny_cfg(val_fraction=0.0), tmp_path / "z",
                   hold_validation=True)
    assert not (tmp_path / "z").exists()


def test_a_cell_that_only_holds_the_split_out_may_find_none_of_its_device(tiny_cache, monkeypatch):
    """When the validation locations hold no clip of device b, the single-device cell of b told to hold the
    split out trains on all of b's clips (as the joint cell does); one that uses the split (best_val) is
    refused."""
    from caanet.data import loader

    real = loader.validation_split_filenames
    monkeypatch.setattr(loader, "validation_split_filenames",
                        lambda cache, fraction, seed: {f for f in real(cache, fraction, seed) if f.endswith("-a.wav")})
    one = training.prepare_data(tiny_cache, spec("cnn_pool-max-single_device-b"), tiny_cfg(), hold_validation=True)
    assert one.val_idx.size == 0 and one.train_idx.size == len(one.train)
    joint = training.prepare_data(tiny_cache, spec("cnn_pool-max-joint"), tiny_cfg(), hold_validation=True)
    assert 0 < joint.val_idx.size and (joint.train.device[joint.train_idx] == 1).sum() == len(one.train)
    with pytest.raises(TrainingError, match="no validation clips"):
        training.prepare_data(tiny_cache, spec("cnn_pool-max-single_device-b"), tiny_cfg(selection="best_val"))


def test_validation_share_is_equal_for_every_device():
    """DCASE 2018 Task 1B's shape: device A at every location, B and C (parallel, few clips) at a third
    of them. Each device loses the same share (within one location's worth), every scene is held out."""
    rng = np.random.default_rng(1)
    ident, scene, dev = [], [], []
    for s in range(10):
        for loc in range(24):
            counts = {"a": int(rng.integers(20, 40))}
            if loc % 3 == 0:
                counts.update(b=int(rng.integers(2, 5)), c=int(rng.integers(2, 5)))
            for d, k in counts.items():
                ident += [f"{s}-{loc}"] * k
                scene += [s] * k
                dev += [d] * k
    ident, scene, dev = np.array(ident), np.array(scene), np.array(dev)
    for seed in range(3):
        _, va = carve_validation(ident, scene, dev, 0.1, seed)
        for d in "abc":
            n_d = int((dev == d).sum())
            one_location = max(int(((ident == i) & (dev == d)).sum()) for i in np.unique(ident))
            assert abs((dev[va] == d).sum() - 0.1 * n_d) <= one_location, (seed, d)
        assert set(scene[va]) == set(range(10))
    # the tiny cache's locations record every device: the shares are equal exactly
    t_ident = np.repeat([f"{s}-{loc}" for s in range(3) for loc in range(4)], 5)
    t_dev = np.tile(["a", "a", "a", "b", "c"], 12)
    t_scene = np.repeat(range(3), 20)
    _, va = carve_validation(t_ident, t_scene, t_dev, 0.2, 0)
    shares = [(t_dev[va] == d).sum() / (t_dev == d).sum() for d in "abc"]
    assert shares[0] == shares[1] == shares[2] > 0


def test_single_device_cells_share_the_joint_cells_validation_locations(tiny_cache):
    cfg = tiny_cfg(selection="best_val")
    joint = training.prepare_data(tiny_cache, spec("cnn_pool-max-joint"), cfg)
    names = {part: set(joint.train.filename[getattr(joint, part)]) for part in ("train_idx", "val_idx")}
    assert names["val_idx"] and not names["val_idx"] & names["train_idx"]
    for d in ("a", "b", "c"):
        one = training.prepare_data(tiny_cache, spec(f"cnn_pool-max-single_device-{d}"), cfg)
        assert set(one.train.device.tolist()) == set(one.test.device.tolist()) == {"abc".index(d)}
        for part in ("train_idx", "val_idx"):
            assert set(one.train.filename[getattr(one, part)]) == {f for f in names[part] if f.endswith(f"-{d}.wav")}
    ref = training.prepare_data(tiny_cache, spec("cnn_pool-max-multi_task-L1", fidelity="reference"), tiny_cfg())
    assert ref.val_idx.size == 0 and ref.train_idx.size == len(ref.train)  # the authors train on all of it


def test_lambda_source_is_validation_in_paper_mode_and_test_in_reference(tiny_cache, tmp_path, monkeypatch):
    seen = []

    def fake_device_accuracy(model, clips, positions, **kw):
        seen.append((set(clips.identifier[positions]), len(positions)))
        return 0.99

    monkeypatch.setattr(training.trainer, "device_accuracy", fake_device_accuracy)
    train_ids = set(load_features(tiny_cache, split="train").identifier)
    test_fs = load_features(tiny_cache, split="test")
    ev = train_cell(tiny_cache, spec("cnn_pool-max-multi_task-L1"), tiny_cfg(), tmp_path / "p")
    assert len(seen) == 1  # sticky: switched at 10, no check at 20
    assert seen[0][0] <= train_ids and ev["lambda_switched_at"] == 10 and ev["lambda_source"] == "validation"
    assert seen[0][1] == ev["n_validation_clips"] > 0
    assert sum(ev["n_validation_clips_per_device"].values()) == ev["n_validation_clips"]
    assert sum(ev["n_train_clips_per_device"].values()) == ev["n_train_clips"]
    assert set(ev["n_train_clips_per_device"]) == {"a", "b", "c"} and ev["validation_accuracy"] is not None
    metrics = pd.read_csv(tmp_path / "p" / "metrics.csv")
    assert metrics.set_index("iteration").loc[[10, 15, 20], "lambda"].tolist() == [1.0, 1e-4, 1e-4]
    seen.clear()
    ev = train_cell(tiny_cache, spec("cnn_pool-max-multi_task-L1", fidelity="reference"), tiny_cfg(), tmp_path / "r")
    assert len(seen) == 2 and all(s == (set(test_fs.identifier), len(test_fs.scene)) for s in seen)
    assert ev["n_validation_clips"] == 0 and ev["lambda_source"] == "test" and ev["validation_accuracy"] is None
    lrs = pd.read_csv(tmp_path / "r" / "metrics.csv")["lr"]
    assert (lrs == 1e-3).all()


def test_normalisation_uses_the_training_clips_actually_used(tiny_cache, tmp_path):
    train_cell(tiny_cache, spec("cnn_pool-avg-joint"), tiny_cfg(iterations=2, selection="best_val"), tmp_path)
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    fs = load_features(tiny_cache, split="train")
    val = training.validation_filenames(tiny_cache, spec("cnn_pool-avg-joint"), tiny_cfg())
    tr = np.flatnonzero(~np.isin(fs.filename, list(val)))
    assert 0 < tr.size < len(fs.filename)
    x = fs.x[tr].astype(np.float64).reshape(-1, fs.x.shape[2])
    np.testing.assert_allclose(saved["norm_mean"].numpy(), x.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(saved["norm_std"].numpy(), x.std(0), rtol=1e-5)
    mean_all, _ = fit_normalisation(fs.x)
    assert not np.allclose(saved["norm_mean"].numpy(), mean_all)  # the validation clips are left out


# ---------------------------------------------------------------- end to end


@pytest.mark.parametrize("cell_id", [
    "cnn_pool-max-single_device-b", "cnn_pool-avg-joint", "atrous-att-teacher_forcing-L2",
    "cnn_nopool-roi_att-multi_task-L3",
])
def test_each_strategy_writes_every_output(tiny_cache, tmp_path, cell_id):
    s = spec(cell_id)
    ev = train_cell(tiny_cache, s, tiny_cfg(), tmp_path)
    assert json.loads((tmp_path / "evaluation.json").read_text()) == ev
    for key in ("cell_id", "spec", "scene_labels", "device_labels", "per_device", "mean_all", "mean_bc",
                "iterations", "train_seconds", "device_accuracy"):
        assert key in ev
    assert ev["cell_id"] == cell_id and ev["spec"] == s.to_dict() and ev["iterations"] == 20
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert list(metrics.columns) == list(training.METRICS_COLUMNS)
    assert metrics["iteration"].tolist() == [5, 10, 15, 20]
    preds = pd.read_csv(tmp_path / "predictions.csv", keep_default_na=False)
    prob_cols = [f"prob_{s}" for s in ev["scene_labels"]]
    assert list(preds.columns) == list(training.PREDICTION_COLUMNS) + prob_cols
    assert (preds["correct"] == (preds["scene"] == preds["pred_scene"]).astype(int)).all()
    # class probabilities: rows sum to 1, the predicted scene is their argmax, DCASE's log loss recomputed
    proba = preds[prob_cols].to_numpy()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    assert (np.asarray(ev["scene_labels"])[proba.argmax(axis=1)] == preds["pred_scene"].to_numpy()).all()
    truth = preds["scene"].map(ev["scene_labels"].index).to_numpy()
    nll = -np.log(np.clip(proba[np.arange(len(preds)), truth], 1e-15, 1.0))
    assert ev["log_loss"]["overall"] == pytest.approx(nll.mean(), rel=1e-9)
    for d, v in ev["log_loss"]["per_device"].items():
        assert v == pytest.approx(nll[preds["device"].to_numpy() == d].mean(), rel=1e-9)
    assert list(ev["log_loss"]["per_device"]) == list(ev["per_device"])
    # DCASE's complexity of the model as it runs at inference (CNN-d counted for multi-task)
    comp = ev["complexity"]
    n_params = sum(v.numel() for k, v in torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"].items()
                   if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert comp["params"] == n_params and comp["bytes_int8"] == n_params and comp["bytes_fp32"] == 4 * n_params
    assert comp["device_cnn"] == (s.strategy == "multi_task") and comp["clip_seconds"] == 1.0
    assert comp["macs_per_clip"] > 0 and comp["macs_per_second"] == comp["macs_per_clip"]
    model = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(model) == {"format", "format_version", "state_dict", "spec", "cell_id", "model_config",
                          "train_config", "feature_params", "norm_mean", "norm_std", "scene_labels",
                          "device_labels", "unseen_device_labels", "fidelity", "caanet_version", "code_version", "training"}
    assert model["cell_id"] == s.cell_id and model["feature_params"]["n_mels"] == model["model_config"]["input_shape"][1]
    # the model file's training summary carries what evaluation.json says the cell trained on
    assert {k: model["training"][k] for k in ("n_train_clips", "n_validation_clips", "n_test")} == {
        k: ev[k] for k in ("n_train_clips", "n_validation_clips", "n_test")}
    assert not (tmp_path / "checkpoints").exists()
    has_attention = s.pooling in ("att", "roi_att")
    with np.load(tmp_path / "attention.npz") as z:  # a declared output of every cell; examples only with attention
        assert (z["maps"].shape[0] > 0) == has_attention
    if s.strategy == "single_device":
        assert list(ev["per_device"]) == ["b"] and set(preds["device"]) == {"b"} and ev["mean_bc"] is not None
        assert ev["per_device"]["b"]["n"] == 6
    else:
        assert list(ev["per_device"]) == ["a", "b", "c"] and len(preds) == 30
    if s.strategy == "multi_task":
        assert metrics["loss_device"].notna().all() and ev["device_accuracy"] is not None
        assert set(preds["pred_device"]) <= {"a", "b", "c"}
        assert metrics["loss"].iloc[0] > metrics["loss_scene"].iloc[0]
    else:
        assert metrics["loss_device"].isna().all() and metrics["lambda"].isna().all()
        assert ev["device_accuracy"] is None and (preds["pred_device"] == "").all()
    assert ev["test_device_labels_used"] == (s.strategy == "teacher_forcing")
    if has_attention:
        z = np.load(tmp_path / "attention.npz")
        assert z["maps"].dtype == np.float16 and z["maps"].ndim == 3
        assert len(z["filename"]) == len(z["scene"]) == len(z["device"]) == len(z["pred_scene"]) == z["maps"].shape[0]
        # 2 per (class, device), the same parallel clip through the three devices
        assert z["maps"].shape[0] == 3 * 3 * 2
        stems = {f.rsplit("-", 1)[0] for f in z["filename"]}
        assert len(stems) == 3 * 2


def test_learns_the_tiny_task(tiny_cache, tmp_path):
    ev = train_cell(tiny_cache, spec("cnn_pool-max-joint"), tiny_cfg(iterations=40), tmp_path)
    assert ev["mean_all"] > 0.6  # chance is 1/3
    loss = pd.read_csv(tmp_path / "metrics.csv")["loss"]
    assert loss.iloc[-1] < loss.iloc[0]


def test_best_val_selection_uses_validation(tiny_cache, tmp_path):
    ev = train_cell(tiny_cache, spec("cnn_pool-max-joint"), tiny_cfg(selection="best_val", val_every=5), tmp_path)
    its = [h[0] for h in ev["validation_history"]]
    assert its == [5, 10, 15, 20] and ev["selected_iteration"] in its
    best = max(ev["validation_history"], key=lambda h: h[1])
    assert ev["selected_iteration"] == best[0]


def test_two_runs_are_identical(tiny_cache, tmp_path):
    s = spec("atrous-att-multi_task-L1")
    train_cell(tiny_cache, s, tiny_cfg(), tmp_path / "a")
    train_cell(tiny_cache, s, tiny_cfg(), tmp_path / "b")
    assert_same_run(tmp_path / "a", tmp_path / "b")
    train_cell(tiny_cache, spec("atrous-att-multi_task-L1", seed=1), tiny_cfg(), tmp_path / "c")
    wa, wc = weights(tmp_path / "a"), weights(tmp_path / "c")
    assert any(not torch.equal(wa[k], wc[k]) for k in wa if wa[k].is_floating_point())


class Killed(Exception):
    pass


def _kill_at(k):
    def callback(iteration):
        if iteration == k:
            raise Killed(iteration)
    return callback


def test_killed_job_resumes_to_the_same_result(tiny_cache, tmp_path):
    s = spec("cnn_nopool-att-multi_task-L2")
    cfg = tiny_cfg(iterations=30)
    train_cell(tiny_cache, s, cfg, tmp_path / "whole")
    with pytest.raises(Killed):
        train_cell(tiny_cache, s, cfg, tmp_path / "resumed", callback=_kill_at(17))
    ck = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=True)
    assert ck["iteration"] == 10 and not (tmp_path / "resumed" / "model.pt").exists()
    lines = []
    train_cell(tiny_cache, s, cfg, tmp_path / "resumed", log=lines.append)
    assert any("resuming" in line and "iteration 10" in line for line in lines)
    assert_same_run(tmp_path / "whole", tmp_path / "resumed")


def test_sigterm_checkpoints_and_exits_then_resumes(tiny_cache, tmp_path):
    s = spec("cnn_pool-max-joint")
    cfg = tiny_cfg(checkpoint_every=100)
    train_cell(tiny_cache, s, cfg, tmp_path / "whole")

    def send_term(iteration):
        if iteration == 7:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Preempted, match="iteration 8"):
        train_cell(tiny_cache, s, cfg, tmp_path / "pre", callback=send_term)
    assert signal.getsignal(signal.SIGTERM) == before
    assert torch.load(tmp_path / "pre" / "checkpoints" / "last.pt", weights_only=True)["iteration"] == 8
    train_cell(tiny_cache, s, cfg, tmp_path / "pre")
    assert_same_run(tmp_path / "whole", tmp_path / "pre")


def test_checkpoint_keys_are_the_train_states_and_format_1_still_resumes(tiny_cache, tmp_path):
    """A checkpoint is the trainer's state_dict: TrainState's fields under their own names. One written
    by the code before (format 1: the pending losses as "pending") resumes to the same result."""
    s = spec("cnn_nopool-att-multi_task-L2")
    cfg = tiny_cfg(iterations=30)
    train_cell(tiny_cache, s, cfg, tmp_path / "whole")
    with pytest.raises(Killed):
        train_cell(tiny_cache, s, cfg, tmp_path / "old", callback=_kill_at(17))
    path = tmp_path / "old" / "checkpoints" / "last.pt"
    ck = torch.load(path, weights_only=True)
    state_keys = {f.name for f in dataclasses.fields(training.TrainState)}
    assert state_keys <= set(ck) and ck["format"] == training.CHECKPOINT_FORMAT == 2
    assert {"model", "optimizer", "lambda_rule", "rng", "fingerprint", "code_version"} <= set(ck)
    ck["pending"] = [ck.pop("sums"), ck.pop("n_sum")]  # the file as format 1 wrote it
    ck["format"] = 1
    torch.save(ck, path)
    lines = []
    train_cell(tiny_cache, s, cfg, tmp_path / "old", log=lines.append)
    assert any("resuming" in line and "iteration 10" in line for line in lines)
    assert_same_run(tmp_path / "whole", tmp_path / "old")
    # a file of an unknown format is refused with the remedy, nothing is written
    with pytest.raises(Killed):
        train_cell(tiny_cache, s, cfg, tmp_path / "new", callback=_kill_at(12))
    ck = torch.load(tmp_path / "new" / "checkpoints" / "last.pt", weights_only=True)
    torch.save({**ck, "format": 99}, tmp_path / "new" / "checkpoints" / "last.pt")
    with pytest.raises(TrainingError, match=r"last\.pt: not a caanet checkpoint of format \[1, 2\]; delete it"):
        train_cell(tiny_cache, s, cfg, tmp_path / "new")
    assert not (tmp_path / "new" / "model.pt").exists()


def test_trainer_state_dict_round_trips(tiny_cache):
    s, cfg = spec("cnn_pool-max-multi_task-L1"), tiny_cfg()
    data = training.prepare_data(tiny_cache, s, cfg)
    torch.manual_seed(0)
    a = training.CellTrainer(s, cfg, data, torch.device("cpu"), lambda line: None)
    for it in range(3):
        a.after_step(it + 1, *a.step(it))
    state = a.state_dict()
    torch.manual_seed(1)
    b = training.CellTrainer(s, cfg, data, torch.device("cpu"), lambda line: None)
    b.load_state_dict(state)
    assert b.state.iteration == 3 and b.state.n_sum == a.state.n_sum and list(b.state.sums) == list(a.state.sums)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
    assert a.step(3)[0] == b.step(3)[0]  # the same batch, weights, optimiser state and RNG
    other = training.CellTrainer(spec("cnn_pool-max-multi_task-L1", seed=5), cfg, data, torch.device("cpu"),
                                 lambda line: None)
    with pytest.raises(TrainingError, match=r"the state belongs to a different job.*spec\.seed"):
        other.load_state_dict(state)


def test_a_job_opens_its_cache_once(tiny_cache, tmp_path, monkeypatch):
    import caanet.io

    opened = []
    real = caanet.io.open_hdf5

    def counting(path, mode="r", **kw):
        opened.append((str(path), mode))
        return real(path, mode, **kw)

    monkeypatch.setattr(caanet.io, "open_hdf5", counting)
    monkeypatch.setattr("caanet.features.open_hdf5", counting)
    train_cell(tiny_cache, spec("cnn_pool-max-multi_task-L1"), tiny_cfg(iterations=2), tmp_path)
    assert opened == [(str(tiny_cache), "r")]


def test_checkpoint_of_another_job_is_refused(tiny_cache, tmp_path):
    s = spec("cnn_pool-max-joint")
    with pytest.raises(Killed):
        train_cell(tiny_cache, s, tiny_cfg(), tmp_path, callback=_kill_at(12))
    with pytest.raises(TrainingError, match=r"different job.*train_config\.lr"):
        train_cell(tiny_cache, s, tiny_cfg(lr=2e-3), tmp_path)
    with pytest.raises(TrainingError, match=r"different job.*spec\.seed"):
        train_cell(tiny_cache, spec("cnn_pool-max-joint", seed=3), tiny_cfg(), tmp_path)
    lines = []
    train_cell(tiny_cache, s, tiny_cfg(checkpoint_every=7), tmp_path, log=lines.append)  # indifferent key
    assert any("resuming" in line for line in lines)


def test_checkpoint_of_other_code_is_discarded(tiny_cache, tmp_path):
    s = spec("cnn_pool-max-joint")
    train_cell(tiny_cache, s, tiny_cfg(), tmp_path / "whole", code_version="v2")
    with pytest.raises(Killed):
        train_cell(tiny_cache, s, tiny_cfg(), tmp_path / "run", code_version="v1", callback=_kill_at(12))
    lines = []
    ev = train_cell(tiny_cache, s, tiny_cfg(), tmp_path / "run", code_version="v2", log=lines.append)
    assert any("starting over" in line for line in lines) and not any("resuming" in line for line in lines)
    assert ev["code_version"] == "v2"
    assert_same_run(tmp_path / "whole", tmp_path / "run")


# ---------------------------------------------------------------- bad inputs


def test_non_finite_loss_names_the_iteration(make_tiny_cache, tiny_cache, tmp_path):
    fs = load_features(tiny_cache, split="train")
    val = training.validation_filenames(tiny_cache, spec("cnn_pool-max-joint"), tiny_cfg())
    used = [f for f in fs.filename if f not in val]
    cache = make_tiny_cache(tmp_path / "nan.h5", nan_clip=used[-1])
    with pytest.raises(TrainingError, match=r"loss\w* is nan at iteration 1\b"):
        train_cell(cache, spec("cnn_pool-max-joint"), tiny_cfg(), tmp_path / "out")
    assert not (tmp_path / "out" / "model.pt").exists()


@pytest.mark.parametrize("bad, error, match", [
    (CellSpec("tiny", "resnet", "max", "joint"), SpecError, "topology='resnet'"),
    (CellSpec("tiny", "cnn_pool", "max", "multi_task"), SpecError, "cond_layer=None"),
    (CellSpec("tiny", "cnn_pool", "max", "single_device", device="z"), SpecError, "device 'z' is not in the cache"),
])
def test_bad_spec_rejected_before_any_output(tiny_cache, tmp_path, bad, error, match):
    with pytest.raises(error, match=match):
        train_cell(tiny_cache, bad, tiny_cfg(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_config_and_cache_rejected_before_any_output(tiny_cache, tmp_path):
    with pytest.raises(ConfigError, match="val_fraction"):
        train_cell(tiny_cache, spec("cnn_pool-max-multi_task-L1"), tiny_cfg(val_fraction=0.0), tmp_path / "out")
    with pytest.raises(CacheError, match="missing.h5"):
        train_cell(tmp_path / "missing.h5", spec("cnn_pool-max-joint"), tiny_cfg(), tmp_path / "out")
    with pytest.raises(ConfigError, match="threads"):
        train_cell(tiny_cache, spec("cnn_pool-max-joint"), tiny_cfg(), tmp_path / "out", threads=0)
    with pytest.raises(ConfigError, match="device='tpu9'"):
        train_cell(tiny_cache, spec("cnn_pool-max-joint"), tiny_cfg(), tmp_path / "out", device="tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            train_cell(tiny_cache, spec("cnn_pool-max-joint"), tiny_cfg(), tmp_path / "out", device="cuda")
    assert not (tmp_path / "out").exists()


def test_lambda_on_test_follows_the_papers_text_in_paper_mode(tiny_cache, tmp_path, monkeypatch):
    seen = []

    def fake_device_accuracy(model, clips, positions, **kw):
        seen.append(set(clips.identifier[positions]))
        return 0.5

    monkeypatch.setattr(training.trainer, "device_accuracy", fake_device_accuracy)
    ev = train_cell(tiny_cache, spec("cnn_pool-max-multi_task-L1"), tiny_cfg(lambda_on="test"), tmp_path)
    assert ev["lambda_source"] == "test" and ev["n_validation_clips"] == 0
    assert seen and all(s == set(load_features(tiny_cache, split="test").identifier) for s in seen)
    with pytest.raises(ConfigError, match="lambda_on"):
        TrainConfig.from_dict({"lambda_on": "train"})


def test_reference_fidelity_runs_float32_and_paper_may_autocast():
    cfg = tiny_cfg(amp=True)
    assert training.effective_config(spec("cnn_pool-max-joint", fidelity="reference"), cfg).amp is False
    assert training.effective_config(spec("cnn_pool-max-joint"), cfg).amp is True
    assert PAPER.bf16_autocast and not REFERENCE.bf16_autocast


def test_reference_device_and_validation_score_in_evaluation(tiny_cache, tmp_path):
    lines = []
    ev = train_cell(tiny_cache, spec("cnn_pool-max-teacher_forcing-L1"), tiny_cfg(iterations=2), tmp_path / "x",
                    score_validation=True, reference_device="b", log=lines.append)
    held = ev["n_validation_clips_per_device"]
    total = {d: held[d] + ev["n_train_clips_per_device"][d] for d in "abc"}
    assert any(f"validation clips held out per device: a {held['a']} of {total['a']}" in line for line in lines)
    assert held["a"] / total["a"] == held["b"] / total["b"] == held["c"] / total["c"]   # the same share
    acc = {d: v["accuracy"] for d, v in ev["per_device"].items()}
    assert ev["reference_device"] == "b" and ev["mean_bc"] == pytest.approx((acc["a"] + acc["c"]) / 2)
    assert ev["n_validation_clips"] > 0 and 0.0 <= ev["validation_accuracy"] <= 1.0
    assert ev["n_train_clips"] + ev["n_validation_clips"] == len(load_features(tiny_cache, split="train").scene)
    with pytest.raises(ConfigError, match="reference_device='z'"):
        train_cell(tiny_cache, spec("cnn_pool-max-joint"), tiny_cfg(iterations=2), tmp_path / "y", reference_device="z")
