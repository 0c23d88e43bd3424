"""The one vocabulary (caanet.vocab): the schema's enums, the cell-id regex, the display names and the
heads are all derived from (or kept equal to) the registries."""

import re

import pytest

from caanet import config, vocab
from caanet.errors import SpecError


@pytest.fixture(scope="module")
def schema():
    return config.schema()


def test_registries_hold_the_paper_vocabulary_in_order():
    assert vocab.TOPOLOGY_REGISTRY.names() == ("cnn_pool", "cnn_nopool", "atrous")
    assert vocab.POOLING_REGISTRY.names() == ("flatten", "max", "avg", "roi", "att", "roi_att")
    assert vocab.STRATEGY_REGISTRY.names() == ("single_device", "joint", "teacher_forcing", "multi_task",
                                               "multi_task_learned", "multi_task_posterior",
                                               "multi_task_learned_posterior")


def test_cnn_d_strategies_name_their_lambda_rule_and_device_input():
    """The paper's argmax conditioning and the posterior beyond it, each with both lambda rules; only the
    paper's four strategies are in_paper."""
    got = {s.name: (s.lambda_rule, s.device_input, s.in_paper) for s in vocab.STRATEGY_REGISTRY
           if s.device_source == "predicted"}
    assert got == {"multi_task": ("switch", "argmax", True), "multi_task_learned": ("learned", "argmax", False),
                   "multi_task_posterior": ("switch", "posterior", False),
                   "multi_task_learned_posterior": ("learned", "posterior", False)}
    assert all(s.device_input is None and s.lambda_rule is None for s in vocab.STRATEGY_REGISTRY
               if s.device_source != "predicted")
    assert vocab.STRATEGY_REGISTRY["multi_task_learned_posterior"].display == "Multi-task (posterior, learned λ)"
    with pytest.raises(ValueError, match="device_input"):
        vocab.register_strategy("mt_bogus", "x", device_source="predicted", lambda_rule="switch", device_input="soft")
    with pytest.raises(ValueError, match="exactly for"):
        vocab.register_strategy("mt_bogus", "x", device_source="predicted", lambda_rule="switch")
    assert "mt_bogus" not in vocab.STRATEGY_REGISTRY


@pytest.mark.parametrize("defn,registry", [
    ("topology", vocab.TOPOLOGY_REGISTRY.names()),
    ("pooling", vocab.POOLING_REGISTRY.names()),
    ("strategy", vocab.STRATEGY_REGISTRY.names()),
    ("method", vocab.METHOD_REGISTRY.names()),
    ("fidelity", vocab.FIDELITIES),
    ("layer", vocab.LAYERS),
    ("layer_selection", vocab.LAYER_SELECTIONS),
    ("dataset_source", vocab.DATASET_SOURCES),
])
def test_schema_enums_equal_the_registry(schema, defn, registry):
    assert schema["$defs"][defn]["enum"] == list(registry)


def test_derived_tuples_and_names():
    from caanet import spec
    from caanet.models import backbones, heads
    from caanet.render import tables

    assert spec.TOPOLOGIES == vocab.TOPOLOGY_REGISTRY.names()
    assert spec.POOLINGS == heads.POOLINGS == vocab.POOLING_REGISTRY.names()
    assert spec.PAPER_STRATEGIES == ("single_device", "joint", "teacher_forcing", "multi_task")
    assert spec.CONDITIONAL == ("teacher_forcing", "multi_task", "multi_task_learned", "multi_task_posterior",
                                "multi_task_learned_posterior")
    assert spec.LAMBDA_RULES == {"multi_task": "switch", "multi_task_learned": "learned",
                                 "multi_task_posterior": "switch", "multi_task_learned_posterior": "learned"}
    assert tables.POOLING_NAMES["roi_att"] == "roi+att" and tables.TOPOLOGY_NAMES["atrous"] == "Atrous CNN"
    assert tables.STRATEGY_NAMES["multi_task_learned"] == "Multi-task (learned λ)"
    assert backbones.get_topology("atrous").dilations == (1, 2, 4, 8)
    assert backbones.get_topology("cnn_pool").pool and not backbones.get_topology("cnn_nopool").pool


def test_every_pooling_has_a_builder():
    for p in vocab.POOLING_REGISTRY:
        assert callable(p.build_fn()), p.name


def test_cell_id_regex_strict_matches_registered_ids_only():
    strict = re.compile(vocab.cell_id_regex())
    assert strict.match("atrous-att-multi_task-L3").group("layer") == "3"
    m = strict.match("cnn_pool-roi_att-multi_task_learned-L4")
    assert m.group("pooling") == "roi_att" and m.group("strategy") == "multi_task_learned"
    assert strict.match("cnn_pool-max-single_device-b").group("device") == "b"
    assert not strict.match("resnet-max-joint")
    assert not strict.match("atrous-median-joint") and not strict.match("atrous-att-bogus")
    loose = re.compile(vocab.cell_id_regex(strict=False))
    assert loose.match("resnet-max-joint").group("topology") == "resnet"
    m = strict.match("atrous-att-multi_task-L3+spectrum_correction")
    assert (m.group("layer"), m.group("method")) == ("3", "spectrum_correction")
    assert strict.match("cnn_pool-max-single_device-b+dir_augment").group("device") == "b"
    assert not strict.match("atrous-att-joint+none") and not strict.match("atrous-att-joint+bogus")
    assert loose.match("atrous-att-joint+bogus").group("method") == "bogus"


def test_wildcard_constraint_form_matches_inside_a_path():
    body = vocab.cell_id_regex(groups=False, anchored=False)
    pat = re.compile(rf"results/cells/d/(?P<cell>{body})/seed0")
    assert pat.fullmatch("results/cells/d/atrous-att-multi_task-L3/seed0").group("cell") == "atrous-att-multi_task-L3"
    assert pat.fullmatch("results/cells/d/atrous-att-bogus/seed0") is None
    assert pat.fullmatch("results/cells/d/atrous-att-joint+freq_mixstyle/seed0").group("cell") == "atrous-att-joint+freq_mixstyle"
    assert "(?P<" not in body and not body.startswith("^")


def test_registry_refuses_a_second_registration_and_names_unknown_entries():
    r = vocab.Registry("pooling")
    r.register(vocab.Pooling("max", "max", "caanet.models.heads:max_head"))
    with pytest.raises(ValueError, match="registered twice"):
        r.register(vocab.Pooling("max", "max", "caanet.models.heads:max_head"))
    with pytest.raises(SpecError, match=r"pooling 'median' is not one of \['max'\]"):
        r["median"]


def test_one_registration_adds_a_pooling_everywhere(monkeypatch):
    """A new head: one register_pooling (here a median head built by a test function) and the model,
    the cell ids and the display names know it."""
    import torch

    from caanet.models import ModelConfig, build_model
    from caanet.models.heads import LinearHead

    class Median(torch.nn.Module):
        def forward(self, x):
            return x.flatten(2).median(dim=2).values

    monkeypatch.setitem(globals(), "median_head",
                        lambda c, k, shape, **_: LinearHead(Median(), c, k))
    monkeypatch.setattr(vocab.POOLING_REGISTRY, "_entries", dict(vocab.POOLING_REGISTRY._entries))
    vocab.register_pooling("median", "median", f"{__name__}:median_head")
    assert re.match(vocab.cell_id_regex(), "atrous-median-joint")
    assert vocab.POOLING_REGISTRY.display_names()["median"] == "median"
    model = build_model(ModelConfig(topology="cnn_pool", pooling="median", channels=(2, 2, 2, 2),
                                    input_shape=(32, 32)))
    out = model(torch.zeros(2, 32, 32))
    assert out.scene.shape == (2, 10)


def test_fidelity_modes_are_the_vocabulary():
    from caanet import fidelity

    assert tuple(fidelity.FIDELITIES) == vocab.FIDELITIES


def test_explanation_maps_follow_the_heads():
    from caanet.explain import MAP_KINDS

    assert MAP_KINDS == {"max": "cam", "avg": "cam", "att": "attention", "roi_att": "attention"}
