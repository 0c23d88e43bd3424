"""caanet.models: shapes, Eq. 1/3/4/5/6 against literal or hand-computed values, gradients, configs."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from caanet.errors import ConfigError, SpecError
from caanet.fidelity import PAPER, REFERENCE
from caanet.models import (
    CAANet,
    ConvBlock,
    DeviceConditioning,
    ModelConfig,
    attention_pooling,
    build_model,
    device_one_hot,
    expanded_one_hot_conv,
)
from caanet.models.heads import GlobalAvgPool, GlobalMaxPool, RoiPool, roi_output_shape
from caanet.spec import CellSpec

SMALL = dict(channels=(4, 8, 8, 16), device_channels=(4, 8), input_shape=(64, 32))
TOPOLOGIES = ("cnn_pool", "cnn_nopool", "atrous")
POOLINGS = ("flatten", "max", "avg", "roi", "att", "roi_att")


def small(topology="atrous", pooling="att", **kw):
    return ModelConfig(topology, pooling, **{**SMALL, **kw})


@pytest.mark.parametrize("topology,pooling", list(itertools.product(TOPOLOGIES, POOLINGS)))
def test_output_shapes_small(topology, pooling):
    if topology == "cnn_pool" and pooling in ("roi", "roi_att"):
        with pytest.raises(ConfigError, match="roi_size"):
            small(topology, pooling)  # the 64x32 input pools down to 4x2 < 16x16
        return
    torch.manual_seed(0)
    model = build_model(small(topology, pooling, device_source="predicted", cond_layer=2))
    out = model(torch.randn(2, 64, 32))
    assert out.scene.shape == (2, 10) and out.scene.dtype == torch.float32
    assert out.device.shape == (2, 3)
    assert torch.allclose(out.device.exp().sum(1), torch.ones(2), atol=1e-5)
    expected_map = {"cnn_pool": (4, 2)}.get(topology, (64, 32))
    if pooling == "att":
        assert out.attention.shape == (2, 10, *expected_map)
    elif pooling == "roi_att":
        assert out.attention.shape == (2, 10, 4, 2)
    else:
        assert out.attention is None
        assert torch.allclose(out.scene.exp().sum(1), torch.ones(2), atol=1e-5)
    if out.attention is not None:
        assert torch.allclose(out.attention.sum(dim=(2, 3)), torch.ones(2, 10), atol=1e-5)


@pytest.mark.parametrize("topology,pooling,map_shape", [("atrous", "roi_att", (20, 4)), ("cnn_pool", "att", (20, 4))])
def test_paper_input_size_forward(topology, pooling, map_shape):
    cfg = ModelConfig(topology, pooling, channels=(4, 8, 8, 16), device_source="oracle", cond_layer=3)
    out = build_model(cfg)(torch.randn(1, 320, 64), torch.tensor([2]))
    assert out.scene.shape == (1, 10) and out.attention.shape == (1, 10, *map_shape)
    assert cfg.attention_map_shape == map_shape


def test_roi_region_count_and_paper_fc_size():
    assert roi_output_shape((320, 64), 16) == (20, 4)
    assert roi_output_shape((33, 17), 16) == (3, 2)  # ceil mode keeps the ragged edge
    x = torch.arange(33 * 17, dtype=torch.float32).reshape(1, 1, 33, 17)
    pooled = RoiPool(16)(x)
    assert pooled.shape == (1, 1, 3, 2)
    assert pooled[0, 0, 2, 1] == x[0, 0, 32, 16]  # the last region holds only the last bin
    model = build_model(ModelConfig("atrous", "roi"))  # paper widths at 320x64
    assert model.head.fc.in_features == 512 * 20 * 4 == 40960
    assert build_model(ModelConfig("cnn_pool", "flatten")).head.fc.in_features == 40960


def test_global_max_and_avg_against_hand_values():
    x = torch.tensor([[[[1.0, -2.0], [3.0, 0.5]], [[-1.0, -4.0], [-3.0, -2.0]]]])  # (1, 2, 2, 2)
    assert GlobalMaxPool()(x).tolist() == [[3.0, -1.0]]
    assert GlobalAvgPool()(x).tolist() == [[0.625, -2.5]]


def _attention_by_hand(cla, att, mode):
    """Eq. 5-6 for one sample, with Python floats; cla/att are [K][bins] lists."""
    k_n, n_bins = len(cla), len(cla[0])
    scores = []
    for k in range(k_n):
        if mode == "paper":
            a = [1 / (1 + math.exp(-att[k][b])) for b in range(n_bins)]
        else:
            a = [min(max(1 / (1 + math.exp(-att[k][b])) + 0.1, 0.1), 0.9) for b in range(n_bins)]
        norm = [v / sum(a) for v in a]
        per_bin = []
        for b in range(n_bins):
            z = sum(math.exp(cla[j][b]) for j in range(k_n))
            p = math.exp(cla[k][b]) / z
            per_bin.append(p if mode == "paper" else math.log(p))
        y = sum(n * c for n, c in zip(norm, per_bin))
        scores.append(math.log(y) if mode == "paper" else y)
    return scores


@pytest.mark.parametrize("fidelity,mode", [(PAPER, "paper"), (REFERENCE, "reference")])
def test_attention_pooling_eq5_eq6_by_hand(fidelity, mode):
    cla = [[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]]  # K=2 classes, 3 bins
    att = [[3.0, -2.0, 0.0], [-0.3, 4.0, 1.0]]  # 3.0 and 4.0 hit the 0.9 clamp in reference mode
    scene, norm = attention_pooling(
        torch.tensor(cla).reshape(1, 2, 1, 3), torch.tensor(att).reshape(1, 2, 1, 3), fidelity
    )
    assert scene.shape == (1, 2) and norm.shape == (1, 2, 1, 3)
    assert scene[0].tolist() == pytest.approx(_attention_by_hand(cla, att, mode), abs=1e-6)
    assert norm.sum(dim=(2, 3))[0].tolist() == pytest.approx([1.0, 1.0])
    if mode == "reference":  # clamp(sigmoid+0.1, 0.1, 0.9) for class 0: 0.9, ~0.219, 0.6
        a0 = [0.9, 1 / (1 + math.exp(2.0)) + 0.1, 0.6]
        assert norm[0, 0, 0].tolist() == pytest.approx([v / sum(a0) for v in a0], abs=1e-6)


def test_paper_attention_log_is_clamped_away_from_zero():
    cla = torch.tensor([[-200.0], [200.0]]).reshape(1, 2, 1, 1)  # class 0 gets probability 0
    scene, _ = attention_pooling(cla, torch.zeros(1, 2, 1, 1), PAPER)
    assert torch.isfinite(scene).all()


def test_attention_runs_in_float32_under_autocast():
    model = build_model(small("cnn_pool", "att"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 64, 32))
    assert out.scene.dtype == torch.float32 and out.attention.dtype == torch.float32


def test_reference_attention_weights_start_at_zero():
    ref = build_model(small("cnn_pool", "att", fidelity="reference"))
    paper = build_model(small("cnn_pool", "att", fidelity="paper"))
    assert torch.count_nonzero(ref.head.att.weight) == 0
    assert torch.count_nonzero(paper.head.att.weight) > 0


@pytest.mark.parametrize("n_devices", [1, 3, 5])
def test_conditioning_equals_expanded_one_hot_1x1_conv(n_devices):
    torch.manual_seed(1)
    cond = DeviceConditioning(n_devices, 6)
    torch.nn.init.normal_(cond.bias)
    one_hot = device_one_hot(torch.arange(4) % n_devices, n_devices)
    literal = expanded_one_hot_conv(cond, one_hot, (5, 3))  # Eq. 1: V * E with E expanded
    assert literal.shape == (4, 6, 5, 3)
    assert torch.allclose(cond(one_hot)[:, :, None, None].expand_as(literal), literal, atol=1e-6)
    # and inside a block: conv(x) + V*E before BN/ReLU
    block = ConvBlock(2, 6, kernel_size=3).eval()
    x = torch.randn(4, 2, 5, 3)
    expected = F.relu(block.bn(block.conv(x) + literal))
    assert torch.allclose(block(x, cond(one_hot)), expected, atol=1e-6)


def test_device_one_hot_rejects_bad_indices():
    with pytest.raises(ConfigError, match=r"\[0, 3\)"):
        device_one_hot(torch.tensor([0, 3]), 3)
    with pytest.raises(ConfigError, match="integer"):
        device_one_hot(torch.tensor([0.0, 1.0]), 3)


def test_oracle_uses_the_given_device_and_requires_it():
    torch.manual_seed(0)
    model = build_model(small("cnn_pool", "max", device_source="oracle", cond_layer=1)).eval()
    x = torch.randn(1, 64, 32).expand(3, -1, -1)
    scene = model(x, torch.tensor([0, 1, 2])).scene
    assert not torch.allclose(scene[0], scene[1])  # the device changes the output
    with pytest.raises(ConfigError, match="oracle"):
        model(x)
    with pytest.raises(ConfigError, match="batch"):
        model(x, torch.tensor([0, 1]))


def test_unconditioned_model_has_no_conditioning_or_device_branch():
    model = build_model(small("atrous", "avg"))
    assert model.conditioning is None and model.device_net is None
    assert model(torch.randn(2, 64, 32)).device is None


@pytest.mark.parametrize("fidelity", ["paper", "reference"])
def test_multi_task_gradients(fidelity):
    """The scene loss reaches the scene net and conditioning but never CNN-d; the device loss does."""
    torch.manual_seed(0)
    model = build_model(small("cnn_pool", "att", device_source="predicted", cond_layer=2, fidelity=fidelity))
    x, y, d = torch.randn(4, 64, 32), torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 0])
    out = model(x)
    F.nll_loss(out.scene, y).backward(retain_graph=True)
    for name, p in model.device_net.named_parameters():
        assert p.grad is None or torch.count_nonzero(p.grad) == 0, name
    assert torch.count_nonzero(model.conditioning.bias.grad) > 0
    assert torch.count_nonzero(model.backbone.blocks[0].conv.weight.grad) > 0
    model.zero_grad(set_to_none=True)
    F.nll_loss(out.device, d).backward()
    assert torch.count_nonzero(model.device_net.blocks[0].conv.weight.grad) > 0
    assert model.backbone.blocks[0].conv.weight.grad is None


def test_deterministic_under_seed():
    def run():
        torch.manual_seed(7)
        model = build_model(small("atrous", "roi_att", device_source="predicted", cond_layer=4))
        return model(torch.randn(2, 64, 32)).scene

    assert torch.equal(run(), run())


def test_predict_log_proba_is_eval_and_no_grad():
    torch.manual_seed(0)
    model = build_model(small("cnn_pool", "avg", device_source="predicted", cond_layer=1))
    model.train()
    x = torch.randn(3, 64, 32)
    scene, device = model.predict_log_proba(x)
    assert model.training and not scene.requires_grad
    assert scene.shape == (3, 10) and device.shape == (3, 3)
    model.eval()
    assert torch.allclose(scene, model(x).scene)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(topology="resnet"), "topology"),
        (dict(pooling="median"), "pooling"),
        (dict(device_source="guess"), "device_source"),
        (dict(device_source="oracle"), "cond_layer"),
        (dict(device_source="predicted", cond_layer=5), "cond_layer"),
        (dict(cond_layer=2), "cond_layer"),
        (dict(channels=(4, 8, 8)), "channels"),
        (dict(channels=(4, 8, 0, 16)), "channels"),
        (dict(kernel_size=4), "kernel_size"),
        (dict(n_classes=0), "n_classes"),
        (dict(input_shape=(64,)), "input_shape"),
        (dict(pooling="roi", roi_size=40), "roi_size"),
        (dict(fidelity="folklore"), "fidelity"),
        (dict(device_source="predicted", cond_layer=2, device_input="softmax"), "device_input"),
        (dict(device_source="oracle", cond_layer=2, device_input="posterior"), "device_input"),
        (dict(device_input="argmax"), "device_input"),
    ],
)
def test_bad_configs_are_rejected_naming_the_field(kwargs, field):
    args = {**SMALL, "topology": "atrous", "pooling": "att", **kwargs}
    with pytest.raises(ConfigError, match=field):
        ModelConfig(**args)


def test_input_of_wrong_rank_or_size_is_rejected():
    model = build_model(small("cnn_pool", "flatten"))
    with pytest.raises(ConfigError, match=r"\(batch, time, mel\)"):
        model(torch.randn(2, 1, 64, 32))
    with pytest.raises(ConfigError, match="input_shape"):
        model(torch.randn(2, 80, 32))


def test_from_spec_maps_strategy_to_device_source():
    mt = ModelConfig.from_spec(CellSpec("d", "atrous", "att", "multi_task", cond_layer=3), **SMALL)
    assert (mt.device_source, mt.cond_layer, mt.channels) == ("predicted", 3, (4, 8, 8, 16))
    tf = ModelConfig.from_spec(CellSpec("d", "cnn_pool", "max", "teacher_forcing", cond_layer=1, fidelity="reference"))
    assert (tf.device_source, tf.cond_layer, tf.fidelity) == ("oracle", 1, "reference")
    sd = ModelConfig.from_spec(CellSpec("d", "cnn_nopool", "roi", "single_device", device="b"), n_devices=2)
    assert (sd.device_source, sd.cond_layer, sd.n_devices) == ("none", None, 2)
    with pytest.raises(SpecError):
        ModelConfig.from_spec(CellSpec("d", "atrous", "att", "multi_task"))
    assert mt.device_input == "argmax" and tf.device_input is None and sd.device_input is None
    for strategy, device_input in (("multi_task_learned", "argmax"), ("multi_task_posterior", "posterior"),
                                   ("multi_task_learned_posterior", "posterior")):
        mc = ModelConfig.from_spec(CellSpec("d", "atrous", "att", strategy, cond_layer=3), **SMALL)
        assert (mc.device_source, mc.device_input) == ("predicted", device_input)


def test_config_dict_round_trip():
    cfg = small("atrous", "roi_att", device_source="predicted", cond_layer=2, fidelity="reference")
    d = cfg.to_dict()
    assert d["channels"] == [4, 8, 8, 16]
    assert ModelConfig.from_dict(d) == cfg
    with pytest.raises(ConfigError, match=r"'ModelConfig\.depth': got 5; expected a known key"):
        ModelConfig.from_dict({**d, "depth": 5})
    assert d["device_input"] == "argmax"
    # a model file written before the posterior conditioning has no device_input: it is the paper's argmax
    del d["device_input"]
    assert ModelConfig.from_dict(d) == cfg
    posterior = small("atrous", "att", device_source="predicted", cond_layer=2, device_input="posterior")
    assert ModelConfig.from_dict(posterior.to_dict()) == posterior


def test_posterior_conditions_on_cnn_ds_softmax():
    """The posterior variant's Eq. 1 input is exp(CNN-d's log-probabilities), rows summing to 1, and the
    argmax variant's the one-hot of its argmax; both from the same CNN-d weights."""
    torch.manual_seed(0)
    post = build_model(small("cnn_pool", "max", device_source="predicted", cond_layer=2, device_input="posterior"))
    arg = build_model(small("cnn_pool", "max", device_source="predicted", cond_layer=2))
    arg.load_state_dict(post.state_dict())
    x = torch.randn(4, 64, 32)
    captured = {}
    for name, model in (("posterior", post), ("argmax", arg)):
        model.eval()
        handle = model.conditioning.register_forward_hook(lambda m, a, o, name=name: captured.update({name: a[0]}))
        with torch.no_grad():
            out = model(x)
        handle.remove()
        captured[name + "_logp"] = out.device
    torch.testing.assert_close(captured["posterior"], captured["posterior_logp"].exp())
    torch.testing.assert_close(captured["posterior"].sum(1), torch.ones(4))
    assert not torch.equal(captured["posterior"], captured["argmax"])
    assert torch.equal(captured["argmax"].argmax(1), captured["posterior"].argmax(1))
    assert set(captured["argmax"].flatten().tolist()) == {0.0, 1.0}


def test_cnn_d_initialisation_is_independent_of_the_scene_network():
    """With ``device_net_seed`` CNN-d's initial weights depend on that seed alone, not on the scene network
    built before it, and the global random stream is left as it was (the scene network of the next model is
    unaffected)."""
    def device_net(topology, pooling, layer, channels, seed=0):
        torch.manual_seed(123)
        cfg = ModelConfig(topology, pooling, device_source="predicted", cond_layer=layer, channels=channels,
                          device_channels=(4, 8), input_shape=(64, 32))
        model = build_model(cfg, device_net_seed=seed)
        return {k: v for k, v in model.state_dict().items() if k.startswith("device_net.")}, torch.rand(1)

    a, after_a = device_net("cnn_pool", "max", 1, (4, 8, 8, 16))
    b, after_b = device_net("atrous", "att", 3, (8, 8, 16, 16))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c, _ = device_net("cnn_pool", "max", 1, (4, 8, 8, 16), seed=1)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    torch.manual_seed(123)  # the same scene network and conditioning, without CNN-d
    build_model(ModelConfig("cnn_pool", "max", device_source="oracle", cond_layer=1, channels=(4, 8, 8, 16),
                            input_shape=(64, 32)))
    assert torch.equal(after_a, torch.rand(1))  # CNN-d drew nothing from the global stream
    with pytest.raises(ConfigError, match="device_net_seed"):
        build_model(small("cnn_pool", "max", device_source="predicted", cond_layer=1), device_net_seed=-1)


def test_build_model_rejects_non_config():
    with pytest.raises(ConfigError):
        build_model({"topology": "atrous"})
    assert isinstance(build_model(small()), CAANet)


def _randomise_batchnorm(model):
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            torch.nn.init.normal_(module.weight)
            torch.nn.init.normal_(module.bias)


@pytest.mark.parametrize("source,layer", [("predicted", 2), ("oracle", 4), ("none", None)])
def test_inference_copy_folds_batchnorm_without_changing_outputs(source, layer):
    torch.manual_seed(3)
    model = build_model(small("cnn_pool", "att", device_source=source, cond_layer=layer))
    _randomise_batchnorm(model)
    model.eval()
    x, d = torch.randn(3, 64, 32), torch.tensor([0, 2, 1])
    with torch.no_grad():
        expected = model(x, d)
    fused = model.inference_copy()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    with torch.inference_mode():
        got = fused(x, d)
    assert torch.allclose(got.scene, expected.scene, atol=1e-5)
    assert torch.allclose(got.attention, expected.attention, atol=1e-6)
    if source == "predicted":
        assert torch.allclose(got.device, expected.device, atol=1e-5)


def test_state_dict_loads_into_a_fresh_model_whatever_the_memory_format():
    torch.manual_seed(0)
    model = build_model(small("atrous", "max")).eval()
    contiguous = {k: v.contiguous() for k, v in model.state_dict().items()}
    other = build_model(small("atrous", "max")).eval()
    other.load_state_dict(contiguous)
    x = torch.randn(2, 64, 32)
    assert torch.equal(model(x).scene, other(x).scene)


def test_roi_heads_accept_sizes_not_divisible_by_the_region():
    cfg = ModelConfig("cnn_nopool", "roi", channels=(4, 8, 8, 16), input_shape=(40, 20))
    model = build_model(cfg)
    assert model.head.fc.in_features == 16 * 3 * 2
    assert model(torch.randn(2, 40, 20)).scene.shape == (2, 10)
    att = build_model(ModelConfig("cnn_nopool", "roi_att", channels=(4, 8, 8, 16), input_shape=(40, 20)))
    assert att(torch.randn(1, 40, 20)).attention.shape == (1, 10, 3, 2)


def test_posterior_input_by_hand():
    """log-probabilities log([0.7, 0.2, 0.1]): the posterior is [0.7, 0.2, 0.1] (the default: temperature 1,
    no straight-through); at temperature 0.5 it is p**2 / sum(p**2); straight-through forwards the one-hot
    and back-propagates the softmax's gradient."""
    from caanet.models.conditioning import POSTERIOR_STRAIGHT_THROUGH, POSTERIOR_TEMPERATURE, posterior_input

    assert (POSTERIOR_TEMPERATURE, POSTERIOR_STRAIGHT_THROUGH) == (1.0, False)
    p = torch.tensor([[0.7, 0.2, 0.1]])
    logp = p.log().requires_grad_(True)
    torch.testing.assert_close(posterior_input(logp), p)
    torch.testing.assert_close(posterior_input(logp, temperature=0.5), p**2 / (p**2).sum())
    weights = torch.tensor([[1.0, -2.0, 0.5]])
    (posterior_input(logp) * weights).sum().backward()
    soft_grad = logp.grad.clone()
    logp.grad = None
    st = posterior_input(logp, straight_through=True)
    assert st.tolist() == [[1.0, 0.0, 0.0]]
    (st * weights).sum().backward()
    torch.testing.assert_close(logp.grad, soft_grad)
    # d/dz_j sum_i w_i softmax(z)_i = p_j (w_j - sum_i w_i p_i)
    torch.testing.assert_close(soft_grad, p * (weights - (weights * p).sum()))
