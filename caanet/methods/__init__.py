"""Device-robustness methods of the field (Table V, beyond the paper), each written from its paper.

Each method is registered once in :data:`caanet.vocab.METHOD_REGISTRY` (``register_method``) with the
hooks the code calls (docs/design.md, "Device-robustness methods"):

* :mod:`caanet.methods.freq_mixstyle`: Freq-MixStyle, a training-batch transform;
* :mod:`caanet.methods.spectrum_correction`: spectrum correction, per-device STFT gains fitted on the
  training split's parallel recordings and a corrected feature cache;
* :mod:`caanet.methods.dir_augment`: device impulse response augmentation, responses estimated from
  the parallel recordings (or read from a folder) and the reference device's clips convolved with them;
* :mod:`caanet.methods.device_response`: the parallel recordings and mean spectra both fits share.

This module resolves a method's settings (``methods.<name>`` of a preset, checked against the
schema's ``#/$defs/methods``) and builds a cell's training transform.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from caanet.config import validate_section
from caanet.errors import ConfigError
from caanet.vocab import METHOD_REGISTRY

SETTINGS_POINTER = "#/$defs/methods/properties/{name}"
"""The schema section of each method's settings."""


def method_settings(name: str, raw: Mapping[str, Any] | None = None, *, where: str | None = None):
    """The settings object of method ``name`` (its registered ``settings`` dataclass) from the mapping
    ``raw`` (``methods.<name>`` of a preset; keys left out take the dataclass's defaults, which the
    schema documents). None for a method without settings (a non-empty ``raw`` is then refused).

    ``raw`` is checked against the schema's ``#/$defs/methods/properties/<name>``; errors are
    ConfigErrors naming ``where`` (default ``methods.<name>``) and the key."""
    method = METHOD_REGISTRY.get(name, ConfigError)
    where = where or f"methods.{name}"
    raw = dict(raw or {})
    cls = method.load("settings")
    if cls is None:
        if raw:
            raise ConfigError(f"config key {where!r}: got {raw!r}; expected no settings (method {name!r} has none)")
        return None
    validate_section(raw, SETTINGS_POINTER.format(name=name), where)
    return cls(**raw)


def settings_dict(settings) -> dict | None:
    """A settings object as plain data (``evaluation.json``, checkpoints' fingerprints); None stays None."""
    return None if settings is None else dataclasses.asdict(settings)


def preset_method_settings(preset: Mapping, name: str) -> dict:
    """``methods.<name>`` of a resolved preset as given (an empty mapping where absent): what the rules
    pass on, so a setting left at its default and one spelled out are the same params."""
    return dict((preset.get("methods") or {}).get(name) or {})


HOOKS = ("settings", "transform", "fit", "features")


def hook_modules(*names: str) -> tuple[str, ...]:
    """The modules named by the hooks of methods ``names`` (every registered method by default), sorted:
    what :func:`caanet.provenance.code_hash` must follow besides the importing code, since the
    registry names them as strings (``rules/common.smk``: training's and each method rule's hash)."""
    methods = [METHOD_REGISTRY[n] for n in names] if names else list(METHOD_REGISTRY)
    refs = {getattr(m, hook) for m in methods for hook in HOOKS}
    return tuple(sorted({ref.partition(":")[0] for ref in refs if ref}))


def stage_settings(preset: Mapping, name: str, stage: str) -> dict:
    """The settings of method ``name`` given in a resolved preset that change the outputs of ``stage``:
    ``fit`` (rule fit_method) and ``features`` (build_method_features) take the keys the settings
    class lists in ``FIT_KEYS`` / ``FEATURE_KEYS``; ``train`` takes them all (a training job's outputs
    depend on its derived data too). The rules' params: a setting changes only what reads it."""
    given = preset_method_settings(preset, name)
    if stage == "train":
        return given
    cls = METHOD_REGISTRY[name].load("settings")
    keys = getattr(cls, {"fit": "FIT_KEYS", "features": "FEATURE_KEYS"}[stage], ()) if cls is not None else ()
    return {k: v for k, v in given.items() if k in keys}


def build_transform(spec, settings, *, data, derived: str | None, dev, params):
    """The training-batch transform of ``spec``'s method (its registered ``transform`` class), or None
    for a method without one. ``data``: the cell's :class:`caanet.data.loader.CellData` (normalised);
    ``derived``: the method's derived cache (``augment`` methods); ``dev``: the torch device;
    ``params``: the cell's :class:`caanet.features.FeatureParams`."""
    method = METHOD_REGISTRY[spec.method]
    cls = method.load("transform")
    if cls is None:
        return None
    return cls(settings, seed=spec.seed, data=data, derived=derived, dev=dev, params=params)


def check_cache_for(spec, cache_attrs: Mapping, path) -> None:
    """A cell of a ``replace`` method (spectrum correction) trains on that method's derived cache and
    every other cell on a plain one: ConfigError naming ``path`` otherwise (``cache_attrs``: the open
    cache's attributes, whose ``derived_method`` names the method a derived cache was built for)."""
    method = METHOD_REGISTRY[spec.method]
    built_for = cache_attrs.get("derived_method")
    wanted = spec.method if method.derived == "replace" else None
    if built_for != wanted:
        got = f"the {built_for} cache" if built_for else "a plain feature cache"
        need = f"the {wanted} cache (rule build_method_features)" if wanted else "a plain feature cache (rule build_features)"
        raise ConfigError(f"cell {spec.cell_id}: {path} is {got}; the cell needs {need}")


def evaluation_keys(spec, settings, transform, cache_attrs: Mapping, *, unseen_devices) -> tuple[dict, str | None]:
    """``(keys, note)``: what ``evaluation.json`` records of the cell's method (``method``,
    ``method_settings``, ``method_details``: the transform's description or the derived cache's
    ``method_details``), and a note on the oracle information a method reads at test time (None where
    it reads none). ``unseen_devices``: the devices evaluated without training clips."""
    import json

    method = METHOD_REGISTRY[spec.method]
    details = None
    if transform is not None and hasattr(transform, "describe"):
        details = transform.describe()
    elif method.derived == "replace" and "method_details" in cache_attrs:
        details = json.loads(cache_attrs["method_details"])
    note = None
    if method.test_device_labels:
        note = (f"{method.display}: each test clip is processed with its device's correction, chosen by its true "
                "device label (oracle information)")
        if unseen_devices:
            note += (f"; the devices unseen in training ({', '.join(unseen_devices)}) get the mean correction of "
                     "the seen non-reference devices")
    return {"method": spec.method, "method_settings": settings_dict(settings), "method_details": details}, note
