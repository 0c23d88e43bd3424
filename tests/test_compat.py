"""caanet.compat: the authors' checkpoint format, round trips, strict key checks, golden outputs."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from caanet.compat import export_reference_state_dict, load_reference_state_dict, parse_reference_network
from caanet.errors import ConfigError
from caanet.models import ModelConfig, build_model

SMALL = dict(channels=(4, 8, 8, 16), device_channels=(4, 8), input_shape=(64, 32))
SHARED = Path(os.environ.get("CAANET_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
GOLDEN = SHARED / "reference" / "golden"


@pytest.mark.parametrize(
    "network,pooling,expected",
    [
        ("CnnAtrous_Attention", None, ("atrous", "att")),
        ("DecisionLevelMaxPooling", None, ("cnn_pool", "max")),
        ("DecisionLevelFlatten", "flatten", ("cnn_pool", "flatten")),
        ("CnnNoPooling_roi_attention", None, ("cnn_nopool", "roi_att")),
        ("atrous", "roi", ("atrous", "roi")),
    ],
)
def test_parse_reference_network(network, pooling, expected):
    assert parse_reference_network(network, pooling) == expected


@pytest.mark.parametrize(
    "network,pooling", [("CnnAtrous_Attention", "max"), ("ResNet_Max", None), ("atrous", None), ("CnnAtrous_Median", None)]
)
def test_parse_reference_network_rejects(network, pooling):
    with pytest.raises(ConfigError, match="network|pooling"):
        parse_reference_network(network, pooling)


def _random_model(topology, pooling, strategy_source, cond_layer, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(topology, pooling, device_source=strategy_source, cond_layer=cond_layer, fidelity="reference", **SMALL)
    model = build_model(cfg)
    for p in model.parameters():  # non-trivial everywhere, incl. the zero-initialised attention
        torch.nn.init.normal_(p, std=0.3)
    for name, buf in model.named_buffers():
        if "running_var" in name:
            buf.uniform_(0.5, 2.0)
        elif "running_mean" in name:
            buf.normal_()
    return model.eval()


@pytest.mark.parametrize(
    "topology,pooling,strategy,source,layer",
    [
        ("cnn_pool", "flatten", "multi_task", "predicted", 1),
        ("cnn_nopool", "roi_att", "multi_task", "predicted", 3),
        ("atrous", "roi", "teacher_forcing", "oracle", 4),
        ("cnn_pool", "att", "joint", "none", None),
    ],
)
def test_export_then_load_round_trip(topology, pooling, strategy, source, layer, tmp_path):
    model = _random_model(topology, pooling, source, layer)
    sd = export_reference_state_dict(model)
    assert all(k.split(".")[0] in ("emb", "attention", "fc_final", "cnn_device") for k in sd)
    if layer is not None:
        assert f"emb.cond{'' if layer == 1 else layer}.weight" in sd
    path = tmp_path / "md_100_iters.tar"
    torch.save({"iteration": 100, "state_dict": sd, "optimizer": {}}, path)  # a training checkpoint
    loaded = load_reference_state_dict(
        path, network=topology, pooling=pooling, strategy=strategy, cond_layer=layer, input_shape=(64, 32)
    )
    assert not loaded.training and loaded.config.fidelity == "reference"
    assert loaded.config.channels == (4, 8, 8, 16)
    x, d = torch.randn(2, 64, 32), torch.tensor([2, 0])
    a, b = model(x, d), loaded(x, d)
    assert torch.equal(a.scene, b.scene)


def test_missing_and_unexpected_keys_are_listed():
    model = _random_model("cnn_pool", "max", "predicted", 2)
    sd = export_reference_state_dict(model)
    del sd["cnn_device.fc1.bias"]
    sd["emb.extra.weight"] = torch.zeros(1)
    with pytest.raises(ConfigError, match=r"missing keys \['cnn_device.fc1.bias'\].*unexpected keys \['emb.extra.weight'\]"):
        load_reference_state_dict(sd, network="DecisionLevelMaxPooling", strategy="multi_task", cond_layer=2)


def test_wrong_cond_layer_or_strategy_is_caught():
    sd = export_reference_state_dict(_random_model("cnn_pool", "max", "predicted", 2))
    with pytest.raises(ConfigError, match="emb.cond3"):
        load_reference_state_dict(sd, network="DecisionLevelMaxPooling", strategy="multi_task", cond_layer=3)
    with pytest.raises(ConfigError, match="unexpected keys.*cnn_device"):
        load_reference_state_dict(sd, network="DecisionLevelMaxPooling", strategy="teacher_forcing", cond_layer=2)


def test_shape_mismatch_is_reported():
    sd = export_reference_state_dict(_random_model("cnn_pool", "max", "predicted", 2))
    sd["fc_final.weight"] = torch.zeros(7, 16)
    with pytest.raises(ConfigError, match="fc_final.weight"):
        load_reference_state_dict(sd, network="DecisionLevelMaxPooling", strategy="multi_task", cond_layer=2)


def test_unreadable_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="bad.pt"):
        load_reference_state_dict(bad, network="atrous", pooling="att", strategy="joint", cond_layer=None)
    with pytest.raises(ConfigError, match="no such file"):
        load_reference_state_dict(tmp_path / "nope.pt", network="atrous", pooling="att", strategy="joint", cond_layer=None)


def _golden_cases():
    if not GOLDEN.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"golden data absent: {GOLDEN} (set CAANET_SHARED)"))]
    return sorted(p.name for p in GOLDEN.iterdir() if (p / "info.json").is_file())


@pytest.mark.parametrize("case", _golden_cases())
def test_golden_equivalence_with_the_reference_code(case):
    folder = GOLDEN / case
    info = json.loads((folder / "info.json").read_text())
    model = load_reference_state_dict(
        folder / "state_dict.pt",
        network=info["model"],
        strategy="multi_task" if info["variant"] == "pred" else "teacher_forcing",
        cond_layer=info["cond_layer"],
        n_classes=info["classes_num"],
        n_devices=info["devices_num"],
    )
    x = torch.from_numpy(np.load(folder / "input.npy"))
    scene, device = model.predict_log_proba(x)
    np.testing.assert_allclose(scene.numpy(), np.load(folder / "scene_logprob.npy"), atol=1e-4, rtol=0)
    np.testing.assert_allclose(device.numpy(), np.load(folder / "device_logprob.npy"), atol=1e-4, rtol=0)
    np.testing.assert_array_equal(device.argmax(1).numpy(), np.load(folder / "device_argmax.npy"))


# --- issue 9: whatever the authors' PyTorch 0.4 environment could have written is accepted ---


def _pytorch04_state_dict(model):
    """The reference state dict as PyTorch 0.4.0 wrote it: BatchNorm without num_batches_tracked."""
    sd = export_reference_state_dict(model)
    dropped = [k for k in sd if k.endswith("num_batches_tracked")]
    assert dropped, "the model has BatchNorm layers"
    return {k: v for k, v in sd.items() if k not in dropped}


@pytest.mark.parametrize("legacy", [False, True])
def test_pytorch04_checkpoint_with_numpy_metadata_and_module_prefix_loads(legacy, tmp_path):
    model = _random_model("atrous", "att", "predicted", 2)
    sd = {f"module.{k}": v for k, v in _pytorch04_state_dict(model).items()}  # nn.DataParallel
    path = tmp_path / "md_15000_iters.tar"
    adam = {"state": {}, "param_groups": [{"lr": np.float64(1e-3), "betas": (0.9, 0.999), "eps": 1e-8,
                                           "weight_decay": 0, "amsgrad": False, "params": [0, 1]}]}
    torch.save({"iteration": np.int64(15000), "state_dict": sd, "optimizer": adam,
                "val_acc": np.array([0.5, 0.6], dtype=np.float32)}, path,
               _use_new_zipfile_serialization=not legacy)
    loaded = load_reference_state_dict(path, network="CnnAtrous_Attention", strategy="multi_task", cond_layer=2,
                                       input_shape=(64, 32))
    x = torch.randn(3, 64, 32)
    assert torch.equal(model(x).scene, loaded(x).scene)
    for name, buf in loaded.named_buffers():
        if name.endswith("num_batches_tracked"):
            assert int(buf) == 0


class _Anything:
    """A class outside the allowlist: unpickling it could run any code."""


def test_arbitrary_code_in_a_checkpoint_is_still_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "meta": _Anything()}, path)
    with pytest.raises(ConfigError, match="evil.pt.*weights_only"):
        load_reference_state_dict(path, network="atrous", pooling="att", strategy="joint", cond_layer=None)


def test_missing_buffers_other_than_num_batches_tracked_are_still_refused():
    model = _random_model("cnn_pool", "max", "predicted", 2)
    sd = _pytorch04_state_dict(model)
    del sd["emb.bn1.running_var"]
    with pytest.raises(ConfigError, match=r"missing keys \['emb.bn1.running_var'\]"):
        load_reference_state_dict(sd, network="DecisionLevelMaxPooling", strategy="multi_task", cond_layer=2)


def test_teacher_forcing_takes_the_device_as_one_hot_or_indices():
    model = _random_model("atrous", "att", "oracle", 3)
    loaded = load_reference_state_dict(export_reference_state_dict(model), network="atrous", pooling="att",
                                       strategy="teacher_forcing", cond_layer=3, input_shape=(64, 32))
    x = torch.randn(4, 64, 32)
    idx = torch.tensor([0, 2, 1, 2])
    by_index, _ = loaded.predict_log_proba(x, idx)
    by_one_hot, _ = loaded.predict_log_proba(x, torch.nn.functional.one_hot(idx, 3).float())
    assert torch.equal(by_index, by_one_hot)
    assert torch.equal(loaded.predict_log_proba(x, torch.nn.functional.one_hot(idx, 3))[0], by_index)  # int one-hot
    assert not torch.equal(loaded.predict_log_proba(x, torch.tensor([1, 0, 0, 0]))[0], by_index)
    with pytest.raises(ConfigError, match=r"row 1 is \[0.5, 0.5, 0.0\]"):
        loaded.predict_log_proba(x, torch.tensor([[1, 0, 0], [0.5, 0.5, 0], [0, 0, 1], [0, 1, 0]]))
    with pytest.raises(ConfigError, match=r"shape \(batch, 3\)"):
        loaded.predict_log_proba(x, torch.zeros(4, 2))
