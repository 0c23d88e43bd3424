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
from collections.abc import Mapping
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


class DuplicateKeyError(ConfigError):
    """A YAML mapping holds one key twice (names the file, the key path and both lines)."""


def _duplicate_keys(loader: yaml.SafeLoader, node, where: str, seen: set, name: str) -> None:
    """Raise DuplicateKeyError for the first mapping under ``node`` that repeats a key. ``where`` is
    the key path of ``node`` (``presets.tiny``, ``rows[0]``). Keys are compared as the loader reads
    them (``1`` and ``0x1`` are one key); a merge key (``<<``) repeats none of the keys it brings in
    (YAML's merge: the mapping's own keys win)."""
    if id(node) in seen:  # an alias of a node already checked (or a recursive one)
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                _duplicate_keys(loader, value_node, where, seen, name)
                continue
            key = loader.construct_object(key_node, deep=True)
            inner = f"{where}.{key}" if where else str(key)
            try:
                earlier = first.setdefault(key, key_node)
            except TypeError:  # an unhashable key (a mapping or list as a key): PyYAML refuses it itself
                earlier = key_node
            if earlier is not key_node:
                raise DuplicateKeyError(
                    f"{name}: key {inner!r} is given twice, on line {earlier.start_mark.line + 1} and line "
                    f"{key_node.start_mark.line + 1}; YAML mapping keys are unique and the second would silently "
                    "replace the first: merge the two into one or delete one"
                )
            _duplicate_keys(loader, value_node, inner, seen, name)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicate_keys(loader, item, f"{where}[{i}]", seen, name)


def load_yaml(stream, name: str = "<string>"):
    """The content of one YAML document (a string or a text stream), as ``yaml.safe_load`` reads it,
    but a mapping that repeats a key raises :class:`DuplicateKeyError` naming ``name`` (the file),
    the key path (``presets.tiny.training``) and the lines of both (PyYAML keeps the last silently).
    Text that is not YAML raises ``yaml.YAMLError`` as ``safe_load`` does."""
    loader = yaml.SafeLoader(stream)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _duplicate_keys(loader, node, "", set(), name)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml(path: str | Path):
    """A YAML file's content (a leading byte-order mark is dropped); a repeated key raises
    :class:`DuplicateKeyError` naming the file, the key path and both lines (:func:`load_yaml`).
    The one reader of every YAML file caanet reads."""
    with open(path, encoding=TEXT_ENCODING) as fh:
        return load_yaml(fh, str(path))


def check_unique_keys(paths) -> None:
    """Raise :class:`DuplicateKeyError` for the first of ``paths`` (YAML or JSON files another program
    read, e.g. Snakemake's config files and profiles) holding a mapping that repeats a key. A file
    PyYAML cannot parse is left to the program that read it."""
    for path in paths:
        try:
            read_yaml(path)
        except DuplicateKeyError:
            raise
        except (yaml.YAMLError, UnicodeDecodeError):
            continue


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


_NOT_A_SCALAR = object()


def command_line_scalar(text: str):
    """What a ``--config`` value reads as once read as a YAML scalar: ``8`` -> 8, ``0.5`` -> 0.5,
    ``false`` -> False, ``null`` -> None; like Snakemake's own reading of a top-level value, a
    number YAML 1.1 leaves a string (``1e-3``) is read by Python's ``float``. Anything else (a
    word, a date, a list) returns the module's ``_NOT_A_SCALAR`` marker."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return _NOT_A_SCALAR
    if isinstance(value, str):
        try:
            value = float(text)
        except ValueError:
            return _NOT_A_SCALAR
    return value if value is None or isinstance(value, (bool, int, float)) else _NOT_A_SCALAR


def _string_leaves(value, path=()):
    """``(path, text)`` of every string leaf of a nested mapping/list (paths as key/index tuples)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _string_leaves(item, path + (key,))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _string_leaves(item, path + (i,))
    elif isinstance(value, str):
        yield path, value


def _errors_along(config: dict, path: tuple) -> set:
    """The schema errors of ``config`` at ``path`` or at a key above it: ``(where, validator, schema
    path, message)`` each."""
    out = set()
    for err in validator("#").iter_errors(config):
        at = tuple(err.absolute_path)
        if at == path[:len(at)]:
            out.add((at, err.validator, tuple(err.schema_path), err.message))
    return out


def _reads_better(before: set, after: set, path: tuple) -> bool:
    """Whether a value read from a ``--config`` string suits the schema better than the string did:
    it mends every error it leaves (``after`` a strict subset of ``before``), or it has a type the
    schema accepts at ``path`` where the string broke it, adding no error above ``path`` (``-1`` for
    a number > 0 is then reported as -1, not as the string '-1')."""
    if after < before:
        return True
    above = {e for e in after if e[0] != path}
    return bool(before) and above <= before and not any(e[0] == path and e[1] == "type" for e in after)


def read_command_line_values(config: dict, command_line: Mapping) -> dict:
    """``config`` with each string that came from ``--config`` read as a YAML scalar where the schema
    expects one: the configuration to validate with :func:`check_config`.

    Snakemake reads a nested ``--config`` value (``presets={tiny: {training: {iterations: 8}}}``),
    and a top-level one that is no Python number or ``True``/``False`` (``train_server=false``), as
    a string. ``command_line`` is what Snakemake parsed from ``--config`` (and a profile's
    ``config:``; ``workflow.config_settings.config``). For each of its string leaves still in
    ``config`` at the same key path, the value read by :func:`command_line_scalar` replaces the
    string when the string breaks the schema there and the value suits it better: it breaks
    nothing, or it has a type the schema accepts there and only its value is wrong (``lr: -1`` is
    reported as ``got -1; expected a number > 0``). So a string the schema accepts stays a string (a
    dataset ``path`` of ``2020``, a device label ``1``), a value read from a YAML file is never
    changed, and a string that reads as no accepted type (``8.5`` for an integer) stays as given,
    for :func:`check_config` to name. Returns a new mapping; ``config`` is not modified.
    """
    out = copy.deepcopy(dict(config))
    failing = {tuple(err.absolute_path) for err in validator("#").iter_errors(out)}
    for path, text in _string_leaves(command_line):
        if not any(at == path[:len(at)] for at in failing):  # nothing wrong at this key or above it
            continue
        parent = out
        try:
            for key in path[:-1]:
                parent = parent[key]
            if parent[path[-1]] != text:
                continue
        except (KeyError, IndexError, TypeError):
            continue
        value = command_line_scalar(text)
        if value is _NOT_A_SCALAR:
            continue
        before = _errors_along(out, path)
        if not before:
            continue
        parent[path[-1]] = value
        if not _reads_better(before, _errors_along(out, path), path):
            parent[path[-1]] = text
    return out


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
