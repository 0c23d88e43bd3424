"""Reading the configuration's files: a repeated YAML key is refused wherever the project reads YAML
(caanet.config.read_yaml, check_unique_keys; the profiles Snakemake read, workflow_support.profile_files),
and --config values arrive as strings that are read as YAML scalars where the schema expects one
(caanet.config.read_command_line_values). The Snakemake runs are in tests/test_workflow.py."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from caanet import config as C
from caanet import workflow_support as ws
from caanet.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

TINY_TRAINING = "    training:\n      iterations: 6\n"
"""The start of the tiny preset's training block in config.yaml."""


def _line_of(text: str, needle: str, start: int = 0) -> int:
    return text[:text.index(needle, start)].count("\n") + 1


# --------------------------------------------------------------------------- repeated keys


def test_a_second_training_block_in_a_preset_is_refused(tmp_path):
    text = (ROOT / "config.yaml").read_text(encoding="utf-8")
    assert text.count(TINY_TRAINING) == 1
    tiny = text.index("\n  tiny:\n")
    end = text.index("\n\n", text.index(TINY_TRAINING, tiny))
    path = tmp_path / "config.yaml"
    path.write_text(text[:end] + "\n    training:\n      iterations: 15000" + text[end:], encoding="utf-8")
    first = _line_of(text, TINY_TRAINING, tiny) + 0
    second = text[:end].count("\n") + 2
    with pytest.raises(C.DuplicateKeyError) as err:
        C.read_yaml(path)
    assert str(err.value) == (
        f"{path}: key 'presets.tiny.training' is given twice, on line {first} and line {second}; YAML mapping "
        "keys are unique and the second would silently replace the first: merge the two into one or delete one")
    assert isinstance(err.value, ConfigError)


def test_a_preset_defined_twice_is_refused(tmp_path):
    text = (ROOT / "config.yaml").read_text(encoding="utf-8")
    catalogue = text.index("\ndatasets:\n")
    path = tmp_path / "config.yaml"
    path.write_text(text[:catalogue] + "\n  tiny:\n    seeds: [0]\n" + text[catalogue:], encoding="utf-8")
    with pytest.raises(C.DuplicateKeyError, match=rf"key 'presets\.tiny' is given twice, on line "
                                                  rf"{_line_of(text, chr(10) + '  tiny:') + 1} and line \d+"):
        C.read_yaml(path)


@pytest.mark.parametrize("text, key, lines", [
    ("a: 1\na: 2\n", "a", (1, 2)),
    ("rows:\n  - {x: 1, x: 2}\n", "rows[0].x", (2, 2)),
    ("outer:\n  1: a\n  0x1: b\n", "outer.1", (2, 3)),                 # one key once read (YAML 1.1 ints)
    ("a: {b: {c: 1}}\nd: 2\na: 3\n", "a", (1, 3)),
])
def test_repeated_keys_anywhere_are_named_with_their_lines(text, key, lines):
    with pytest.raises(C.DuplicateKeyError, match=rf"^f\.yaml: key {re.escape(repr(key))} is given twice, on line "
                                                  rf"{lines[0]} and line {lines[1]};"):
        C.load_yaml(text, "f.yaml")


def test_merge_keys_and_aliases_are_no_repeats():
    text = "base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  x: 3\nlist: &l [1, 2]\nagain: *l\n"
    assert C.load_yaml(text) == {"base": {"x": 1, "y": 2}, "d": {"x": 3, "y": 2}, "list": [1, 2], "again": [1, 2]}
    assert C.load_yaml("") is None and C.load_yaml("a: 1\n") == {"a": 1}


def test_the_schema_is_read_refusing_repeated_keys(tmp_path, monkeypatch):
    schema = tmp_path / "config.schema.yaml"
    schema.write_text("type: object\nproperties:\n  a: {type: string}\n  a: {type: integer}\n", encoding="utf-8")
    monkeypatch.setattr(C, "SCHEMA_PATH", schema)
    C.schema.cache_clear()
    try:
        with pytest.raises(C.DuplicateKeyError, match=rf"{schema}: key 'properties\.a' is given twice, on line 3 and line 4"):
            C.schema()
    finally:
        monkeypatch.undo()
        C.schema.cache_clear()
    assert C.schema()["type"] == "object"


def test_every_yaml_file_of_the_repository_is_read_without_a_repeated_key():
    files = subprocess.run(["git", "ls-files", "*.yaml", "*.yml"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    assert {"config.yaml", "profiles/default/config.yaml", "rules/schemas/config.schema.yaml"} <= set(files)
    for name in files:
        C.read_yaml(ROOT / name)
    C.check_unique_keys(ROOT / name for name in files)


def test_check_unique_keys_reads_json_too_and_leaves_unparsable_files_alone(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"preset": "tiny"}), encoding="utf-8")
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\n", encoding="utf-8")        # not YAML: Snakemake's own error stands
    C.check_unique_keys([good, broken])
    twice = tmp_path / "twice.json"
    twice.write_text('{"presets": {"tiny": {"seeds": [0], "seeds": [1]}}}', encoding="utf-8")
    with pytest.raises(C.DuplicateKeyError, match=r"twice\.json: key 'presets\.tiny\.seeds' is given twice"):
        C.check_unique_keys([good, twice])


# --------------------------------------------------------------------------- the files Snakemake read


@pytest.mark.parametrize("argv, expected", [
    (["/usr/bin/snakemake", "-n", "all"], ["profiles/default/config.yaml"]),
    (["/x/site-packages/snakemake/__main__.py", "--profile", "profiles/slurm", "-n"],
     ["profiles/slurm/config.yaml", "profiles/default/config.yaml"]),
    (["/usr/bin/snakemake", "--profile", "profiles/local-gpu", "--workflow-profile", "none"],
     ["profiles/local-gpu/config.yaml"]),
    (["/usr/bin/snakemake", "--workflow-profile", "none"], []),
    (["/usr/bin/snakemake", "--no-such-option"], []),          # Snakemake itself refuses the command line
    (["/usr/bin/pytest", "-q"], []),                            # not the snakemake command
])
def test_profile_files_are_the_ones_snakemake_reads(monkeypatch, argv, expected):
    monkeypatch.chdir(ROOT)
    assert [p.as_posix() for p in ws.profile_files(argv)] == expected


def test_snakemake_yaml_files_are_the_config_files_and_profiles(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    extra = tmp_path / "extra.yaml"
    extra.write_text("preset: tiny\n", encoding="utf-8")
    workflow = SimpleNamespace(configfiles=["config.yaml", extra, tmp_path / "gone.yaml"])
    files = ws.snakemake_yaml_files(workflow, ["/usr/bin/snakemake", "-n"])
    assert files == [Path("config.yaml"), extra, Path("profiles/default/config.yaml")]


# --------------------------------------------------------------------------- --config values


def _with_command_line(*entries: str) -> tuple[dict, dict]:
    """config.yaml updated by ``--config entries`` exactly as Snakemake does it, and the parsed entries."""
    from snakemake.cli import parse_config
    from snakemake.utils import update_config

    config = C.read_yaml(ROOT / "config.yaml")
    command_line = parse_config(list(entries))
    update_config(config, command_line)
    return config, command_line


def test_nested_config_values_arrive_as_strings_and_are_read_as_yaml_scalars():
    config, cl = _with_command_line(
        "preset=tiny", "train_server=false",
        "presets={tiny: {training: {iterations: 8, lr: 1e-3, amp: false, lambda_on: null}, seeds: [0, 1], "
        "grid: {layers: [1, 3]}}}")
    assert cl["presets"]["tiny"]["training"]["iterations"] == "8" and cl["train_server"] == "false"
    with pytest.raises(ConfigError, match=r"'presets\.tiny\.training\.iterations': got '8'; expected an integer"):
        C.check_config(config)                                    # what Snakemake hands over, as is
    read = C.read_command_line_values(config, cl)
    C.check_config(read)
    tiny = read["presets"]["tiny"]
    assert tiny["training"]["iterations"] == 8 and tiny["training"]["lr"] == 0.001
    assert tiny["training"]["amp"] is False and tiny["training"]["lambda_on"] is None
    assert tiny["seeds"] == [0, 1] and tiny["grid"]["layers"] == [1, 3] and read["train_server"] is False
    assert tiny["training"]["batch_size"] == 8                   # from config.yaml, untouched
    assert config["presets"]["tiny"]["training"]["iterations"] == "8"   # the argument is not modified


def test_strings_the_schema_wants_stay_strings():
    config, cl = _with_command_line(
        "preset=tiny", "datasets={tiny2018: {path: 2020, devices: [a, 1, 2]}}", "presets={tiny: {fidelity: paper}}")
    read = C.read_command_line_values(config, cl)
    assert read["datasets"]["tiny2018"]["path"] == "2020"                 # a folder named 2020
    assert read["datasets"]["tiny2018"]["devices"] == ["a", "1", "2"]     # device labels are strings
    assert read["presets"]["tiny"]["fidelity"] == "paper"


def test_a_value_read_from_a_file_is_never_changed():
    config, cl = _with_command_line("preset=tiny")
    config["presets"]["tiny"]["training"]["iterations"] = "8"   # a string written in the YAML file itself
    read = C.read_command_line_values(config, cl)
    with pytest.raises(ConfigError, match=r"'presets\.tiny\.training\.iterations': got '8'; expected an integer"):
        C.check_config(read)


@pytest.mark.parametrize("entry, message", [
    ("presets={tiny: {training: {iterations: 8.5}}}", r"'presets\.tiny\.training\.iterations': got '8\.5'; expected an integer"),
    ("presets={tiny: {training: {iterations: eight}}}", r"'presets\.tiny\.training\.iterations': got 'eight'"),
    ("datasets={tiny2018: {devices: [a, 1.5]}}", r"'datasets\.tiny2018\.devices\[1\]': got '1\.5'; expected a string matching"),
    # a value of the right type and the wrong value is named as the value it was read as
    ("presets={tiny: {training: {lr: -1}}}", r"'presets\.tiny\.training\.lr': got -1; expected a number > 0"),
    ("presets={tiny: {grid: {layers: [5]}}}", r"'presets\.tiny\.grid\.layers\[0\]': got 5; expected one of \[1, 2, 3, 4\]"),
])
def test_a_value_wrong_either_way_is_named(entry, message):
    config, cl = _with_command_line("preset=tiny", entry)
    with pytest.raises(ConfigError, match=message):
        C.check_config(C.read_command_line_values(config, cl))


@pytest.mark.parametrize("text, value", [("8", 8), ("-3", -3), ("0.5", 0.5), ("1e-3", 0.001), ("false", False),
                                         ("True", True), ("null", None), ("~", None), ("", None)])
def test_command_line_scalars(text, value):
    got = C.command_line_scalar(text)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("text", ["tiny", "2026-01-01", "[1, 2]", "{a: 1}", "a: b"])
def test_command_line_non_scalars(text):
    assert C.command_line_scalar(text) is C._NOT_A_SCALAR
