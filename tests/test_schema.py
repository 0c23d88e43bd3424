"""The configuration schema owns each leaf's type, range and default; one error form names the key
path and the value (caanet.config.check_config / validate_section, caanet.errors.config_error)."""

import copy
import dataclasses
from pathlib import Path

import pytest

from caanet import config as C
from caanet import grid, spec
from caanet.data import synth
from caanet.data.layout import LAYOUTS
from caanet.errors import ConfigError, reject_unknown_keys
from caanet.features import FeatureParams

ROOT = Path(__file__).resolve().parents[1]
DEFS = C.schema()["$defs"]


@pytest.fixture()
def raw():
    return C.read_yaml(ROOT / "config.yaml")


def props(defn):
    return DEFS[defn]["properties"]


# --------------------------------------------------------------------------- defaults agree with the code

def test_train_server_default_is_the_codes():
    from caanet import trainserver

    assert C.schema()["properties"]["train_server"]["default"] is trainserver.ENABLED_BY_DEFAULT


def test_feature_defaults_are_the_dataclass_defaults():
    fields = {f.name: f.default for f in dataclasses.fields(FeatureParams)}
    assert {k: v["default"] for k, v in props("feature_params").items()} == fields


def test_synth_defaults_are_the_dataclass_defaults():
    cfg = synth.SynthConfig()
    for key, leaf in props("synth").items():
        if key in ("devices", "scenes"):
            continue
        default = getattr(cfg, key)
        assert leaf["default"] == (list(default) if isinstance(default, tuple) else default), key
    recipe = synth.DeviceRecipe()
    assert {k: v["default"] for k, v in props("device_recipe").items()} == dataclasses.asdict(recipe)


def test_grid_defaults_are_the_code_defaults():
    g = props("grid")
    assert [tuple(r) for r in g["rows"]["default"]] == list(grid.DEFAULT_ROWS)
    assert [tuple(r) for r in g["table3_rows"]["default"]] == list(grid.TABLE3_ROWS)
    assert tuple(g["layers"]["default"]) == spec.LAYERS
    assert tuple(g["strategies"]["default"]) == spec.PAPER_STRATEGIES
    assert g["layer_selection"]["default"] == grid.DEFAULT_LAYER_SELECTION
    p = props("preset")
    assert tuple(p["seeds"]["default"]) == grid.DEFAULT_SEEDS and p["fidelity"]["default"] == grid.DEFAULT_FIDELITY
    # the defaults are applied: a preset without these keys gets them
    cfg = grid.grid_config({"tables": {"table1": {"dataset": "d"}}, "datasets": {"d": {"devices": ["a"]}}})
    assert (cfg.rows, cfg.seeds, cfg.fidelity, cfg.layer_selection) == (
        grid.DEFAULT_ROWS, (0,), "paper", "test")


def test_model_config_defaults_are_the_dataclass_defaults():
    from caanet.models import ModelConfig

    fields = {f.name: f.default for f in dataclasses.fields(ModelConfig)
              if f.default is not dataclasses.MISSING}
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}
    assert {k: v["default"] for k, v in props("model_config").items() if "default" in v} == fields


def test_model_config_errors_name_the_field():
    from caanet.models import ModelConfig

    with pytest.raises(ConfigError, match=r"^config key 'ModelConfig\.kernel_size': got 4; expected an odd kernel size"):
        ModelConfig(topology="atrous", pooling="att", kernel_size=4)
    with pytest.raises(ConfigError, match=r"^config key 'ModelConfig\.channels': got \(4, 8, 8\); expected 4 positive"):
        ModelConfig(topology="atrous", pooling="att", channels=[4, 8, 8])


def test_schema_vocabularies_equal_the_code():
    from caanet import vocab

    assert DEFS["device_source"]["enum"] == list(vocab.DEVICE_SOURCES)
    assert DEFS["device_input"]["enum"] == list(vocab.DEVICE_INPUTS)
    assert DEFS["unseen_device_policy"]["enum"] == list(vocab.UNSEEN_DEVICE_POLICIES)
    assert DEFS["device_label"]["not"]["enum"] == list(vocab.SUMMARY_DEVICES)
    assert props("synth")["layout"]["enum"] == sorted(LAYOUTS)
    assert props("device_recipe")["subtype"]["enum"] == list(synth.SUBTYPES)


def test_every_leaf_has_a_type_or_enum_and_a_description():
    """Every leaf of every $def except training's (caanet.training.TrainConfig) says what it takes."""
    def walk(node, path):
        if not isinstance(node, dict):
            return
        if "properties" in node:
            for k, v in node["properties"].items():
                if path.endswith("preset") and k == "training":
                    continue
                if not any(x in v for x in ("type", "enum", "$ref", "oneOf", "anyOf", "const")):
                    pytest.fail(f"{path}.{k} has no type")
                if "$ref" not in v and not any(x in v for x in ("properties", "additionalProperties")):
                    assert "description" in v or path.endswith("device_recipe"), f"{path}.{k}"
                walk(v, f"{path}.{k}")
    for name, node in DEFS.items():
        walk(node, name)


# --------------------------------------------------------------------------- the one error form

def test_config_yaml_is_valid(raw):
    assert C.check_config(raw) is raw


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["presets"]["tiny"]["grid"].__setitem__("layers", [1, 5]),
     "config key 'presets.tiny.grid.layers[1]': got 5; expected one of [1, 2, 3, 4]"),
    (lambda c: c["presets"]["tiny"].__setitem__("seeds", [0, -1]),
     "config key 'presets.tiny.seeds[1]': got -1; expected a number >= 0"),
    (lambda c: c["presets"]["tiny"].__setitem__("colour", "red"),
     "config key 'presets.tiny.colour': got 'red'; expected a known key (one of ["),
    (lambda c: c["presets"]["tiny"].__setitem__("seeds_by_pooling", {"attention": [0]}),
     "config key 'presets.tiny.seeds_by_pooling.attention': got 'attention'; expected a key that is one of"),
    (lambda c: c["presets"]["tiny"].__setitem__("features", {"n_mels": 0}),
     "config key 'presets.tiny.features.n_mels': got 0; expected a number >= 1"),
    (lambda c: c["presets"]["tiny"]["resources"]["train"].__setitem__("threads", "two"),
     "config key 'presets.tiny.resources.train.threads': got 'two'; expected an integer"),
    (lambda c: c["datasets"]["tiny2018"].__setitem__("source", "ftp"),
     "config key 'datasets.tiny2018.source': got 'ftp'; expected one of ['embedded', 'zenodo', 'local']"),
    (lambda c: c["datasets"]["dcase2018_task1b"].pop("remote"),
     "config key 'datasets.dcase2018_task1b.remote': got nothing (the key is missing); expected a value (required)"),
    (lambda c: c["datasets"]["tiny2018"]["embedded"].__setitem__("evaluate_fraction", 1.5),
     "config key 'datasets.tiny2018.embedded.evaluate_fraction': got 1.5; expected a number < 1"),
    (lambda c: c["datasets"]["tiny2018"].__setitem__("keep_archives", "yes"),
     "config key 'datasets.tiny2018.keep_archives': got 'yes'; expected true or false"),
])
def test_schema_errors_name_the_key_path_and_value(raw, mutate, message):
    mutate(raw)
    with pytest.raises(ConfigError) as err:
        C.check_config(raw)
    assert message in str(err.value)


def test_every_error_is_listed(raw):
    raw["presets"]["tiny"]["seeds"] = [-1]
    raw["datasets"]["tiny2018"]["devices"] = ["a", "avg"]
    with pytest.raises(ConfigError) as err:
        C.check_config(raw)
    text = str(err.value)
    assert "'presets.tiny.seeds[0]': got -1" in text and "'datasets.tiny2018.devices[1]': got 'avg'" in text


def test_validate_section_checks_a_raw_mapping_under_its_key():
    assert C.validate_section({"n_mels": 40}, "#/$defs/feature_params", "x.features") == {"n_mels": 40}
    with pytest.raises(ConfigError, match=r"^config key 'x\.features\.hop': got 3; expected a known key"):
        C.validate_section({"hop": 3}, "#/$defs/feature_params", "x.features")
    with pytest.raises(ConfigError, match=r"^config key 'x\.features\.fmin': got -1; expected a number >= 0$"):
        FeatureParams.from_dict({"fmin": -1}, where="x.features")
    with pytest.raises(ConfigError, match=r"^config key 'features\.fmax': got 30000\.0; expected a frequency up to"):
        FeatureParams(fmax=30000.0)


def test_reject_unknown_keys_names_each_full_key_path():
    with pytest.raises(ConfigError) as err:
        reject_unknown_keys({"dataset": "d", "repeats": 2, "colour": "red"}, {"dataset"}, "tables.table4")
    assert str(err.value).splitlines() == [
        "config key 'tables.table4.colour': got 'red'; expected a known key (one of ['dataset'])",
        "config key 'tables.table4.repeats': got 2; expected a known key (one of ['dataset'])",
    ]


def test_resolve_checks_what_spans_keys(raw, tmp_path):
    raw = copy.deepcopy(raw)
    raw["preset"] = "nope"
    with pytest.raises(ConfigError, match=r"^config key 'preset': got 'nope'; expected a preset of 'presets'"):
        C.resolve(raw)
    raw["preset"] = "tiny"
    raw["datasets"]["tiny2018"] = {"source": "local", "path": str(tmp_path / "missing"), "devices": ["a"],
                                   "clip_seconds": 1.0}
    with pytest.raises(ConfigError, match=r"^config key 'datasets\.tiny2018\.path': got '.*missing'; expected an existing folder"):
        C.resolve(raw)
