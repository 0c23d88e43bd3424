"""The workflow's configuration: presets, datasets, and their validation.

``config.yaml`` holds named presets (``default``, ``paper``, ``tiny``, or a user's own) and the
dataset catalogue. ``preset: NAME`` (``snakemake --config preset=paper``) picks one.

The JSON schema ``rules/schemas/config.schema.yaml`` owns every leaf's type, range, enum, default
and description. The Snakefile validates the raw file with :func:`check_config`; code that builds a
configuration object from a raw mapping outside the workflow (``FeatureParams.from_dict`` from a
cache's attributes, ``SynthConfig.from_dict``, ``grid.grid_config`` on a hand-written preset)
validates that mapping against the same subschema with :func:`validate_section`. Code checks only
what spans fields or files (:func:`resolve`: that every table names a known dataset, that a local
dataset's folder exists, that unseen devices are among the devices). Every error has one form
(:func:`caanet.errors.config_error`): ``config key 'a.b': got X; expected Y``.

Defaults: the code's default (a dataclass field's default, ``grid.DEFAULT_ROWS``, ...) is the one
applied; the schema's ``default`` documents it, and ``tests/test_schema.py`` asserts that they agree.
Defaults are not filled into the configuration (a filled-in preset key would override ``base``).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import yaml

from caanet.errors import ConfigError, config_error
from caanet.io import TEXT_ENCODING

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "rules" / "schemas" / "config.schema.yaml"
"""The configuration's JSON schema (YAML)."""
MAX_REPORTED = 10
"""At most this many schema errors are listed in one ConfigError."""


class _Missing:
    def __repr__(self) -> str:
        return "nothing (the key is missing)"


MISSING = _Missing()
"""The value reported for a required key that is absent."""


def read_yaml(path: str | Path):
    """A YAML file's content (a leading byte-order mark is dropped)."""
    with open(path, encoding=TEXT_ENCODING) as fh:
        return yaml.safe_load(fh)


@functools.cache
def schema() -> dict:
    """The configuration schema (read once)."""
    return read_yaml(SCHEMA_PATH)


def _is_integer(checker, value) -> bool:
    import numpy as np

    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(checker, value) -> bool:  # JSON numbers are finite; 1.0 is a number, not an integer
    import math

    import numpy as np

    return (_is_integer(checker, value) or isinstance(value, (float, np.floating))) and math.isfinite(float(value))


@functools.cache
def validator_class():
    """Draft 2020-12 with strict JSON types: an integer is an int (a numpy integer too), never a bool
    or ``1.0``; a number is finite (``nan`` and ``inf`` are refused)."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine_many({"integer": _is_integer, "number": _is_number})
    return jsonschema.validators.extend(base, type_checker=checker)


@functools.cache
def validator(pointer: str):
    """The schema's validator for the subschema at ``pointer`` (``#/$defs/training``), its ``$ref``s
    resolved within the whole schema (one per pointer, cached)."""
    root = schema()
    sub = root if pointer in ("", "#") else {"$ref": pointer}
    return validator_class()(root).evolve(schema=sub)


def subschema(pointer: str) -> dict:
    """The subschema at ``pointer`` (``#/$defs/NAME``), a ``$ref`` at its top followed."""
    node = schema()
    for part in pointer.removeprefix("#").strip("/").split("/"):
        if part:
            node = node[part]
    while isinstance(node, dict) and "$ref" in node and len(node) == 1:
        node = subschema(node["$ref"])
    return node


def key_path(prefix: str, path) -> str:
    """``prefix`` extended by a JSON path: keys joined with ``.``, list indices as ``[i]``."""
    out = prefix
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else str(part)
    return out or "<top level>"


def _expected(err) -> str:
    """What the schema expected, in words, for one jsonschema error."""
    v, vv, sch = err.validator, err.validator_value, err.schema
    if v == "enum":
        return f"one of {vv}"
    if v == "const":
        return f"{vv!r}"
    if v == "type":
        kinds = [vv] if isinstance(vv, str) else list(vv)
        words = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
                 "array": "a list", "object": "a mapping", "null": "null"}
        return " or ".join(words.get(k, k) for k in kinds)
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        op = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[v]
        return f"a number {op} {vv}"
    if v == "minItems":
        return f"a list of at least {vv} item{'s' if vv != 1 else ''}"
    if v == "maxItems":
        return f"a list of at most {vv} item{'s' if vv != 1 else ''}"
    if v == "uniqueItems":
        return "a list without duplicates"
    if v == "pattern":
        return f"a string matching {vv!r}"
    if v == "minLength":
        return f"a string of at least {vv} character{'s' if vv != 1 else ''}"
    if isinstance(sch, dict) and sch.get("description"):
        return " ".join(str(sch["description"]).split())
    return err.message


def schema_errors(value, pointer: str = "#", key: str = "") -> list[str]:
    """Every way ``value`` breaks the subschema at ``pointer`` (``#/$defs/...``), one message per
    offending key, each in the form of :func:`caanet.errors.config_error` with the key path under ``key``."""
    errors = sorted(validator(pointer).iter_errors(value),
                    key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path]))
    out: list[str] = []
    for err in errors:
        where = key_path(key, err.absolute_path)
        if err.validator == "additionalProperties" and err.validator_value is False:
            known = sorted(err.schema.get("properties", {}))
            for extra in sorted(set(err.instance) - set(known), key=str):
                out.append(str(config_error(key_path(where if where != "<top level>" else "", [extra]),
                                            err.instance[extra], f"a known key (one of {known})")))
        elif err.validator == "required":
            for name in err.validator_value:
                if name not in err.instance:
                    out.append(str(config_error(key_path(where if where != "<top level>" else "", [name]), MISSING,
                                                "a value (required)")))
        elif "propertyNames" in err.schema_path:   # a key's name breaks the rule for names
            out.append(str(config_error(key_path(where, [err.instance]), err.instance, f"a key that is {_expected(err)}")))
        else:
            out.append(str(config_error(where, err.instance, _expected(err))))
    return list(dict.fromkeys(out))


def validate_section(value, pointer: str, key: str, error: type[ConfigError] = ConfigError):
    """Validate ``value`` against the schema's subschema at ``pointer`` (e.g. ``#/$defs/feature_params``)
    and return it unchanged; otherwise raise ``error`` listing each offending key under ``key``
    (e.g. ``presets.tiny.features``) with its value and what was expected."""
    problems = schema_errors(value, pointer, key)
    if problems:
        more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        raise error(problems[0] if len(problems) == 1
                    else "invalid configuration:\n  " + "\n  ".join(problems[:MAX_REPORTED]) + more)
    return value


def check_config(config: dict) -> dict:
    """Validate the raw configuration (``config.yaml`` plus ``--config`` overrides) against the schema:
    the Snakefile's first step. Raises ConfigError naming every offending key path and value."""
    return validate_section(config, "#", "")


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
    ``name``). Each used dataset entry is validated against the schema's ``dataset`` subschema,
    then checked for what spans its keys or the file system (:func:`check_dataset`).
    """
    name = config.get("preset")
    presets = config.get("presets") or {}
    if name not in presets or name == "base":
        choices = sorted(k for k in presets if k != "base")
        raise config_error("preset", name, f"a preset of 'presets', one of {choices}")
    preset = deep_merge(presets.get("base", {}), presets[name])
    preset["name"] = name

    catalogue = config.get("datasets") or {}
    used: dict[str, dict] = {}
    for table, spec in sorted((preset.get("tables") or {}).items()):
        ds = spec.get("dataset")
        if ds not in catalogue:
            raise config_error(f"presets.{name}.tables.{table}.dataset", ds,
                               f"a dataset of 'datasets' (known: {sorted(catalogue)})")
        used[ds] = dict(catalogue[ds], name=ds)
    for ds, dcfg in used.items():
        validate_section(catalogue[ds], "#/$defs/dataset", f"datasets.{ds}")
        check_dataset(ds, dcfg)
    preset["datasets"] = used
    return preset


def check_dataset(name: str, d: dict) -> None:
    """The rules of a dataset entry that span its keys or the file system (the schema checks each
    key: its source's required keys included): a local dataset's folder exists, the unseen devices
    are some, not all, of its devices."""
    where = f"datasets.{name}"
    if d["source"] == "local" and not Path(d["path"]).is_dir():
        raise config_error(f"{where}.path", d["path"], "an existing folder holding meta.csv")
    devices = d["devices"]
    unseen = d.get("unseen_devices") or []
    stray = [u for u in unseen if u not in devices]
    if stray:
        raise config_error(f"{where}.unseen_devices", unseen, f"devices of '{where}.devices' {devices}")
    if unseen and set(unseen) == set(devices):
        raise config_error(f"{where}.unseen_devices", unseen,
                           "some of the devices, not all (every device is unseen; training needs a seen one)")
