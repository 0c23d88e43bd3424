"""The workflow's configuration: presets, datasets, and their validation.

``config.yaml`` holds named presets (``default``, ``paper``, ``tiny``, or a user's own) and the
dataset catalogue. ``preset: NAME`` (``snakemake --config preset=paper``) picks one. The raw file is
validated by ``rules/schemas/config.schema.yaml`` (JSON schema, unknown keys refused);
:func:`resolve` then merges the chosen preset over the catalogue and checks what a schema cannot
(that every table names a known dataset, that a preset's devices exist, ...). Every error names the
key at fault.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from caanet.errors import ConfigError
from caanet.io import TEXT_ENCODING
from caanet.vocab import DATASET_SOURCES

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "rules" / "schemas" / "config.schema.yaml"


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    with open(path, encoding=TEXT_ENCODING) as fh:
        return yaml.safe_load(fh)


def validate_config(config: dict, schema: dict | None = None) -> None:
    """Validate the raw config against the JSON schema; raise ConfigError naming the key."""
    import jsonschema

    schema = load_schema() if schema is None else schema
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors[:10]:
            key = ".".join(str(p) for p in err.absolute_path) or "<top level>"
            lines.append(f"config key {key!r}: {err.message}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))


def deep_merge(base: dict, override: dict) -> dict:
    """Return ``base`` updated recursively by ``override`` (neither is modified)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve(config: dict) -> dict:
    """Return the resolved preset: ``presets[preset]`` over ``presets.base``, plus ``datasets``.

    The result has the keys of a preset (``tables``, ``grid``, ``seeds``, ``training``, ...), plus
    ``name`` (the preset's name) and ``datasets`` (only the datasets its tables use, each with its
    ``name``).
    """
    name = config.get("preset")
    presets = config.get("presets") or {}
    if name not in presets or name == "base":
        choices = sorted(k for k in presets if k != "base")
        raise ConfigError(f"config key 'preset': {name!r} is not a preset; choose one of {choices}")
    preset = deep_merge(presets.get("base", {}), presets[name])
    preset["name"] = name

    catalogue = config.get("datasets") or {}
    used: dict[str, dict] = {}
    for table, spec in sorted((preset.get("tables") or {}).items()):
        ds = spec.get("dataset")
        if ds not in catalogue:
            raise ConfigError(
                f"config key 'presets.{name}.tables.{table}.dataset': {ds!r} is not in 'datasets' "
                f"(known: {sorted(catalogue)})"
            )
        used[ds] = dict(catalogue[ds], name=ds)
    for ds, dcfg in used.items():
        _check_dataset(ds, dcfg)
    preset["datasets"] = used
    return preset


def _check_dataset(name: str, d: dict) -> None:
    where = f"datasets.{name}"
    source = d.get("source")
    if source not in DATASET_SOURCES:
        raise ConfigError(f"config key '{where}.source': {source!r} is not one of {list(DATASET_SOURCES)}")
    if source == "local":
        path = d.get("path")
        if not path:
            raise ConfigError(f"config key '{where}.path': a local dataset needs the folder holding meta.csv")
        if not Path(path).is_dir():
            raise ConfigError(f"config key '{where}.path': folder {path!r} does not exist")
    if source == "zenodo" and not d.get("remote"):
        raise ConfigError(f"config key '{where}.remote': a zenodo dataset needs its key in dcase_remote_files.csv")
    if source == "embedded" and "embedded" not in d:
        raise ConfigError(f"config key '{where}.embedded': an embedded dataset needs its generator settings")
    devices = d.get("devices") or []
    if len(devices) < 1 or len(set(devices)) != len(devices):
        raise ConfigError(f"config key '{where}.devices': needs a list of distinct device labels, got {devices!r}")
    unseen = d.get("unseen_devices") or []
    stray = [u for u in unseen if u not in devices]
    if stray:
        raise ConfigError(f"config key '{where}.unseen_devices': {stray} not in '{where}.devices' {devices}")
    if unseen and set(unseen) == set(devices):
        raise ConfigError(f"config key '{where}.unseen_devices': every device is unseen; training needs at least one")


def get(preset: dict, dotted: str, default: Any = ...) -> Any:
    """Look up ``a.b.c`` in a nested dict; a missing key raises ConfigError naming it."""
    node: Any = preset
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is not ...:
                return default
            raise ConfigError(f"config key {dotted!r} is missing from preset {preset.get('name')!r}")
        node = node[part]
    return node
