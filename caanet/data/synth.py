"""The embedded dataset: a synthetic multi-device acoustic-scene set, written in the real DCASE layout.

The pipeline generates it itself (seeded, deterministic) so that every later stage runs unchanged
without the 11-19 GB (archives) DCASE downloads. It is a dataset, not a mock: ten procedural scene textures
whose identity lives in time-frequency structure, recorded by three simulated devices, with
location-disjoint train/evaluate splits and parallel recordings, in the folder layout of
DCASE 2018 or 2019 Task 1B (see :mod:`caanet.data.layout`). ``docs/embedded_dataset.md`` describes it.

How a clip comes to be:

1. :func:`plan_segments` lays out scenes x cities x locations x segments, assigns each location to
   train or evaluate (or to no split, for ``unsplit_cities``: a simplification of DCASE 2019's
   test-only city Milan, part of which is in ``fold1_evaluate`` and the rest in no split) and chooses the
   subset of segments that the non-reference devices also record (parallel recordings).
2. :func:`synthesise_scene` renders one segment's scene at ``scene_rate`` as a binaural pair:
   noise-like components (ambience, babble, footsteps, cars, clacks, ...) add power to one
   time-frequency grid, synthesised with random phase by an inverse STFT; tonal components (engine
   hum, whine, birds, chimes, music) are oscillators in the time domain. Every parameter is drawn
   from the scene's recipe: a location draws where in each range it sits, a segment jitters around it.
3. :func:`render_device` passes that same realisation through each device's chain (gain, noise
   floor, frequency response, compression, clipping, resampling, channel count, bit depth).

All randomness derives from ``(seed, clip identity)`` only, so output is identical for any ``n_jobs``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import os
import re
import shutil
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import soxr

from caanet.data.layout import LAYOUTS, META_HEADER, SCENE_LABELS
from caanet.config import validate_section
from caanet.errors import DatasetError, config_error, reject_unknown_keys

# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------

SUBTYPES = ("PCM_16", "PCM_24", "PCM_32", "FLOAT")


@dataclass
class DeviceRecipe:
    """One recording device's chain. Levels in dB; frequencies in Hz; ``*_order`` Butterworth orders.

    The chain is: channel count (stereo keeps the binaural pair, mono takes its mid), gain, a white
    noise floor (``noise_dbfs``, RMS re full scale), the frequency response (high-pass, low-pass and a
    resonance bump ``resonance_oct`` octaves wide), a static compressor above ``comp_threshold_dbfs``
    with ``comp_ratio`` (1 = off), hard clipping at ``clip_level``, resampling to ``sample_rate``.
    """

    sample_rate: int = 44100
    channels: int = 1
    subtype: str = "PCM_16"
    gain_db: float = 0.0
    noise_dbfs: float = -70.0
    highpass_hz: float = 100.0
    highpass_order: int = 2
    lowpass_hz: float = 12000.0
    lowpass_order: int = 4
    resonance_hz: float = 2500.0
    resonance_db: float = 0.0
    resonance_oct: float = 0.5
    comp_threshold_dbfs: float = -20.0
    comp_ratio: float = 1.0
    clip_level: float = 1.0


def default_devices() -> dict[str, DeviceRecipe]:
    """Device A: binaural in-ear microphones (Soundman OKM II + Zoom F8), nearly flat, written at 48 kHz
    stereo 24-bit. B (a phone held in the hand) and C (a phone in a backpack strap sleeve): 44.1 kHz
    mono 16-bit, band-limited, resonant, noisier, compressed; C is the more muffled one.

    A's format is the recording device's, NOT the released dataset's: the DCASE Task 1B development
    sets are 44.1 kHz 24-bit mono for every device (A was resampled and averaged before release).
    The embedded A keeps 48 kHz stereo deliberately, to exercise the pipeline's resampler and down-mix."""
    return {
        "a": DeviceRecipe(sample_rate=48000, channels=2, subtype="PCM_24", gain_db=0.0, noise_dbfs=-92.0,
                          highpass_hz=20.0, highpass_order=1, lowpass_hz=18000.0, lowpass_order=2,
                          resonance_hz=3000.0, resonance_db=3.0, resonance_oct=0.7, comp_ratio=1.0),
        "b": DeviceRecipe(sample_rate=44100, channels=1, subtype="PCM_16", gain_db=5.0, noise_dbfs=-68.0,
                          highpass_hz=180.0, highpass_order=2, lowpass_hz=10000.0, lowpass_order=4,
                          resonance_hz=2200.0, resonance_db=7.0, resonance_oct=0.5,
                          comp_threshold_dbfs=-30.0, comp_ratio=3.0, clip_level=0.7),
        "c": DeviceRecipe(sample_rate=44100, channels=1, subtype="PCM_16", gain_db=-2.0, noise_dbfs=-62.0,
                          highpass_hz=300.0, highpass_order=3, lowpass_hz=5500.0, lowpass_order=3,
                          resonance_hz=1100.0, resonance_db=6.0, resonance_oct=0.6,
                          comp_threshold_dbfs=-34.0, comp_ratio=2.0, clip_level=0.9),
    }


# Every scene component and its parameters. A value is a number (fixed) or [lo, hi] (a range: each
# location draws where it sits in the range, each segment jitters around that). ``level_db`` is the
# component's power in dB (at the peak of one event, for event components) before the scene's mix is
# normalised to ``mix.level_dbfs``.
COMPONENT_PARAMS: dict[str, dict[str, float | list[float]]] = {
    "mix": {"level_dbfs": [-34.0, -26.0], "reverb_s": 0.0, "reverb_wet": 0.0, "speed_var": 0.0,
            "speed_rate_hz": 0.1, "stereo_coherence": [0.6, 0.9], "itd_ms": [-0.3, 0.3]},
    "ambience": {"level_db": [-6.0, -2.0], "tilt_db_oct": [-4.0, -2.0], "lowcut_hz": 50.0,
                 "highcut_hz": [8000.0, 12000.0], "mod_rate_hz": 0.2, "mod_depth": [0.1, 0.3]},
    "hum": {"level_db": [-12.0, -6.0], "f0_hz": [30.0, 45.0], "harmonics": 8, "rolloff": [0.6, 1.2],
            "am_depth": [0.05, 0.2], "noise_db": [-6.0, 0.0]},
    "whine": {"level_db": [-20.0, -12.0], "freq_hz": [600.0, 1200.0]},
    "clacks": {"level_db": [-10.0, -4.0], "period_s": [0.9, 1.6], "pair_gap_s": [0.1, 0.2],
               "centre_hz": [1500.0, 3000.0], "bandwidth_oct": 1.5, "decay_s": [0.03, 0.06]},
    "rumble": {"level_db": [-10.0, -4.0], "rate_per_min": [2.0, 6.0], "duration_s": [4.0, 10.0],
               "centre_hz": [100.0, 250.0], "bandwidth_oct": 1.5, "squeal_db": -80.0,
               "squeal_hz": [2500.0, 4500.0]},
    "babble": {"level_db": [-16.0, -10.0], "density_hz": [2.0, 6.0], "syllable_s": [0.15, 0.3],
               "bed_db": [-20.0, -12.0]},
    "footsteps": {"level_db": [-16.0, -10.0], "rate_hz": [1.0, 3.0], "decay_s": [0.03, 0.06],
                  "centre_hz": [400.0, 1200.0]},
    "cars": {"level_db": [-14.0, -8.0], "rate_per_min": [3.0, 10.0], "pass_s": [1.5, 3.0],
             "centre_hz": [500.0, 1200.0], "doppler": [0.05, 0.12], "lowpass_hz": [4000.0, 10000.0]},
    "birds": {"level_db": [-14.0, -8.0], "rate_hz": [0.5, 2.0], "f_lo_hz": 2500.0, "f_hi_hz": 6500.0,
              "chirp_s": [0.05, 0.2], "sweep_oct": [-1.0, 1.0]},
    "chimes": {"level_db": [-14.0, -8.0], "rate_per_min": [1.0, 3.0], "note_hz": [500.0, 800.0], "notes": 3,
               "note_s": [0.3, 0.6], "pa_db": [-14.0, -8.0], "pa_s": [2.0, 5.0]},
    "music": {"level_db": [-16.0, -10.0], "tempo_bpm": [80.0, 120.0], "root_hz": [180.0, 260.0],
              "brightness": [0.3, 0.7]},
    "rustle": {"level_db": [-16.0, -10.0], "centre_hz": [2500.0, 5000.0], "bandwidth_oct": [1.0, 2.0],
               "mod_rate_hz": [0.1, 0.4], "mod_depth": [0.3, 0.8]},
    "suitcases": {"level_db": [-14.0, -8.0], "rate_per_min": [2.0, 6.0], "duration_s": [2.0, 5.0],
                  "click_hz": [4.0, 9.0]},
}
INTEGER_PARAMS = {("hum", "harmonics"), ("chimes", "notes")}

# Each scene: the components it contains and where its ranges differ from COMPONENT_PARAMS.
# Deliberate overlaps: bus/tram/metro share engine hum (rail clacks and whine tell tram and metro
# apart); metro_station shares rumble and clacks with metro and PA chimes with airport; airport and
# shopping_mall share reverberant babble; public_square and street_pedestrian share sparse babble,
# footsteps and distant cars; park and public_square share birds.
SCENE_RECIPES: dict[str, dict[str, dict]] = {
    "airport": {
        "mix": {"level_dbfs": [-34.0, -26.0], "reverb_s": [0.8, 1.5], "reverb_wet": [0.4, 0.7]},
        "ambience": {"level_db": [-8.0, -4.0], "highcut_hz": [7000.0, 11000.0]},
        "babble": {"density_hz": [4.0, 10.0], "level_db": [-14.0, -8.0], "bed_db": [-12.0, -6.0],
                   "syllable_s": [0.18, 0.3]},
        "footsteps": {"rate_hz": [1.0, 3.0], "level_db": [-18.0, -12.0], "centre_hz": [600.0, 1200.0]},
        "chimes": {"rate_per_min": [1.0, 3.0], "note_hz": [500.0, 700.0]},
        "suitcases": {},
    },
    "shopping_mall": {
        "mix": {"level_dbfs": [-32.0, -24.0], "reverb_s": [0.6, 1.2], "reverb_wet": [0.3, 0.6]},
        "ambience": {"level_db": [-8.0, -4.0], "tilt_db_oct": [-3.5, -2.0]},
        "babble": {"density_hz": [8.0, 20.0], "level_db": [-12.0, -8.0], "bed_db": [-8.0, -4.0]},
        "music": {},
        "footsteps": {"rate_hz": [2.0, 4.0]},
        "chimes": {"rate_per_min": [0.0, 0.6], "pa_db": [-18.0, -12.0]},
    },
    "street_pedestrian": {
        "mix": {"level_dbfs": [-32.0, -24.0], "reverb_s": [0.1, 0.3], "reverb_wet": [0.1, 0.2]},
        "ambience": {"highcut_hz": [8000.0, 14000.0]},
        "babble": {"density_hz": [2.0, 6.0], "level_db": [-16.0, -10.0], "bed_db": [-20.0, -14.0]},
        "footsteps": {"rate_hz": [2.0, 5.0], "level_db": [-14.0, -8.0]},
        "cars": {"rate_per_min": [2.0, 8.0], "level_db": [-16.0, -8.0], "lowpass_hz": [3000.0, 6000.0],
                 "doppler": [0.03, 0.08]},
    },
    "public_square": {
        "mix": {"level_dbfs": [-34.0, -26.0], "reverb_s": [0.1, 0.4], "reverb_wet": [0.1, 0.3]},
        "ambience": {},
        "babble": {"density_hz": [1.0, 5.0], "level_db": [-18.0, -10.0], "bed_db": [-20.0, -12.0]},
        "footsteps": {"rate_hz": [1.0, 3.0]},
        "cars": {"rate_per_min": [1.0, 5.0], "level_db": [-20.0, -12.0], "lowpass_hz": [2000.0, 4000.0]},
        "rustle": {"centre_hz": [2000.0, 4000.0], "bandwidth_oct": 2.0, "level_db": [-20.0, -12.0],
                   "mod_depth": [0.1, 0.3]},
        "birds": {"rate_hz": [0.2, 1.0], "level_db": [-24.0, -16.0]},
    },
    "street_traffic": {
        "mix": {"level_dbfs": [-28.0, -20.0]},
        "ambience": {"tilt_db_oct": [-6.0, -4.0], "highcut_hz": 10000.0},
        "cars": {"rate_per_min": [10.0, 30.0], "level_db": [-6.0, 0.0], "lowpass_hz": [8000.0, 14000.0],
                 "doppler": [0.08, 0.15]},
        "hum": {"f0_hz": [25.0, 40.0], "harmonics": 6, "level_db": [-18.0, -10.0]},
        "rumble": {"level_db": [-12.0, -6.0], "centre_hz": [80.0, 150.0], "rate_per_min": [3.0, 8.0],
                   "duration_s": [2.0, 5.0]},
        "footsteps": {"rate_hz": [0.0, 1.0]},
    },
    "park": {
        "mix": {"level_dbfs": [-40.0, -32.0]},
        "ambience": {"level_db": [-8.0, -4.0], "tilt_db_oct": [-5.0, -3.0], "highcut_hz": [6000.0, 9000.0]},
        "birds": {"rate_hz": [1.0, 4.0], "level_db": [-10.0, -4.0], "f_lo_hz": 2500.0, "f_hi_hz": 7000.0},
        "rustle": {"centre_hz": [3000.0, 6000.0], "bandwidth_oct": 1.5},
        "cars": {"rate_per_min": [2.0, 6.0], "lowpass_hz": [800.0, 1500.0], "level_db": [-20.0, -14.0]},
        "babble": {"density_hz": [0.3, 1.0], "level_db": [-20.0, -14.0], "bed_db": -40.0},
    },
    "bus": {
        "mix": {"level_dbfs": [-28.0, -20.0], "reverb_s": [0.1, 0.2], "reverb_wet": 0.1, "speed_var": [0.2, 0.4]},
        "hum": {"f0_hz": [28.0, 45.0], "level_db": [-8.0, -2.0], "rolloff": [0.5, 1.0]},
        "ambience": {"level_db": [-8.0, -4.0], "tilt_db_oct": [-7.0, -5.0], "highcut_hz": [5000.0, 7000.0]},
        "rumble": {"level_db": [-16.0, -10.0], "rate_per_min": [4.0, 10.0], "duration_s": [1.0, 3.0]},
        "babble": {"density_hz": [0.5, 2.0], "level_db": [-18.0, -12.0], "bed_db": -40.0},
        "chimes": {"rate_per_min": [0.5, 1.5], "note_hz": [900.0, 1200.0], "notes": 1, "pa_db": -60.0},
    },
    "tram": {
        "mix": {"level_dbfs": [-30.0, -22.0], "reverb_s": [0.1, 0.2], "reverb_wet": 0.1, "speed_var": [0.2, 0.4]},
        "hum": {"f0_hz": [45.0, 80.0], "harmonics": 6, "level_db": [-14.0, -8.0]},
        "whine": {"freq_hz": [600.0, 1200.0], "level_db": [-20.0, -12.0]},
        "clacks": {"period_s": [0.9, 1.6], "level_db": [-10.0, -4.0]},
        "ambience": {"tilt_db_oct": [-6.0, -4.0]},
        "babble": {"density_hz": [0.5, 2.0], "level_db": [-18.0, -12.0], "bed_db": -40.0},
        "chimes": {"rate_per_min": [0.3, 1.0], "note_hz": [700.0, 1000.0], "notes": 2, "pa_db": [-20.0, -14.0]},
    },
    "metro": {
        "mix": {"level_dbfs": [-26.0, -18.0], "reverb_s": [0.1, 0.3], "reverb_wet": 0.2, "speed_var": [0.2, 0.5]},
        "hum": {"f0_hz": [60.0, 110.0], "harmonics": 6, "level_db": [-14.0, -8.0]},
        "whine": {"freq_hz": [900.0, 2000.0], "level_db": [-16.0, -10.0]},
        "clacks": {"period_s": [0.6, 1.1], "level_db": [-8.0, -2.0], "centre_hz": [1000.0, 2500.0]},
        "rumble": {"rate_per_min": [4.0, 8.0], "centre_hz": [150.0, 300.0], "squeal_db": [-12.0, -6.0]},
        "ambience": {"level_db": [-4.0, 0.0], "tilt_db_oct": [-6.0, -4.0]},
    },
    "metro_station": {
        "mix": {"level_dbfs": [-32.0, -24.0], "reverb_s": [0.8, 1.6], "reverb_wet": [0.3, 0.6]},
        "rumble": {"rate_per_min": [2.0, 6.0], "duration_s": [6.0, 12.0], "level_db": [-8.0, -2.0],
                   "squeal_db": [-14.0, -6.0]},
        "clacks": {"period_s": [0.6, 1.0], "level_db": [-20.0, -12.0]},
        "babble": {"density_hz": [2.0, 6.0], "level_db": [-16.0, -10.0]},
        "footsteps": {"rate_hz": [1.0, 3.0]},
        "chimes": {"rate_per_min": [1.0, 3.0], "pa_db": [-14.0, -8.0]},
        "ambience": {},
    },
}


def default_scenes() -> dict[str, dict[str, dict]]:
    """Every scene's full recipe: component defaults overridden by :data:`SCENE_RECIPES` (mix always present)."""
    out = {}
    for scene in SCENE_LABELS:
        recipe = {"mix": {}, **SCENE_RECIPES[scene]}
        out[scene] = {comp: {**copy.deepcopy(COMPONENT_PARAMS[comp]), **copy.deepcopy(over)}
                      for comp, over in recipe.items()}
    return out


@dataclass
class SynthConfig:
    """Everything about the embedded dataset. Defaults mimic DCASE 2018 Task 1B at a smaller size.

    Per scene there are ``len(cities) x locations_per_city`` locations; each records
    ``segments_per_location`` clips with the reference device (the first of ``devices``). A fraction
    ``evaluate_fraction`` of each scene's locations (outside ``unsplit_cities``) goes to evaluate, the
    rest to train (location-disjoint). The other devices record ``parallel_fraction`` of the reference
    device's segments of every scene and split (at least one): the same scene realisation.
    ``unseen_devices`` (non-reference devices) record only the evaluate split's parallel segments, as
    DCASE 2020 Task 1A's s4-s6: devices a model meets for the first time at test time.
    """

    seed: int = 0
    layout: str = "dcase2018"
    clip_seconds: float = 10.0
    scene_rate: int = 48000
    cities: tuple[str, ...] = ("barcelona", "helsinki", "london", "paris", "stockholm", "vienna")
    unsplit_cities: tuple[str, ...] = ()
    locations_per_city: int = 2
    segments_per_location: int = 6
    evaluate_fraction: float = 0.3
    parallel_fraction: float = 1.0 / 12.0
    segment_jitter: float = 0.25
    city_colour_db: float = 3.0
    devices: dict[str, DeviceRecipe] = field(default_factory=default_devices)
    unseen_devices: tuple[str, ...] = ()
    scenes: dict[str, dict[str, dict]] = field(default_factory=default_scenes)

    @property
    def reference_device(self) -> str:
        return next(iter(self.devices))

    @classmethod
    def from_dict(cls, d: dict | None, *, where: str = "synth") -> "SynthConfig":
        """Defaults overridden by ``d``. ``d`` is checked against the schema's ``synth`` (unknown keys,
        types and ranges: ConfigError naming ``where.<key>``), the scene recipes' names against the
        generator's tables, then :meth:`validate` checks the rules that span fields."""
        d = {} if d is None else d
        validate_section(d, "#/$defs/synth", where)
        cfg = cls()
        values = {k: _normalise(v, getattr(cfg, k)) for k, v in d.items() if k not in ("devices", "scenes")}
        cfg = dataclasses.replace(cfg, **values)
        if "devices" in d:
            cfg.devices = _merge_devices(cfg.devices, d["devices"])
        if "scenes" in d:
            cfg.scenes = _merge_scenes(cfg.scenes, d["scenes"], f"{where}.scenes")
        return cfg.validate(where=where)

    def validate(self, *, where: str = "synth") -> "SynthConfig":
        """Check every field against the schema's ``synth`` (its types and ranges), then the rules that
        span fields: unsplit cities among the cities, at least two split locations per scene, every
        device's sample rate up to ``scene_rate`` and its high-pass below its low-pass, unseen devices
        among the non-reference devices, a recipe (with its mix) for every scene."""
        validate_section(self.to_dict(), "#/$defs/synth", where)

        def bad(key, value, expected):
            raise config_error(f"{where}.{key}", value, expected)

        for c in self.unsplit_cities:
            if c not in self.cities:
                bad("unsplit_cities", c, f"one of cities {list(self.cities)}")
        n_pairs = (len(self.cities) - len(set(self.unsplit_cities))) * self.locations_per_city
        if n_pairs < 2:
            bad("locations_per_city", self.locations_per_city,
                f"at least 2 split locations per scene for train and evaluate (got {n_pairs})")
        if not self.devices:
            bad("devices", {}, "at least one device")
        for name, dev in self.devices.items():
            key = f"devices.{name}"
            if dev.sample_rate > self.scene_rate:
                bad(f"{key}.sample_rate", dev.sample_rate, f"a rate in [8000, scene_rate={self.scene_rate}]")
            if not dev.highpass_hz < dev.lowpass_hz:
                bad(f"{key}.lowpass_hz", dev.lowpass_hz, f"a frequency above highpass_hz={dev.highpass_hz}")
        for name in self.unseen_devices:
            if name not in self.devices:
                bad("unseen_devices", name, f"one of devices {list(self.devices)}")
            if name == self.reference_device:
                bad("unseen_devices", name, "a device other than the reference device (the first of devices), "
                                            "which records every segment")
        for scene in SCENE_LABELS:
            if scene not in self.scenes or "mix" not in self.scenes[scene]:
                bad(f"scenes.{scene}", self.scenes.get(scene), "a recipe with its mix")
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["cities"], d["unsplit_cities"] = list(self.cities), list(self.unsplit_cities)
        d["unseen_devices"] = list(self.unseen_devices)
        return d


def _normalise(value, default):
    """A schema-checked ``value`` in the type of its ``default``: int, float, or a tuple (of strings)."""
    if isinstance(default, bool):
        return bool(value)
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    if isinstance(default, tuple):
        return tuple(value)
    return value


def _reject_unknown(d: dict, known, where: str) -> None:
    reject_unknown_keys(d, known, where)


def _merge_devices(devices: dict[str, DeviceRecipe], over: dict) -> dict[str, DeviceRecipe]:
    """Override known devices' fields; a new device name starts from :class:`DeviceRecipe` defaults
    (``over`` is schema-checked)."""
    out = dict(devices)
    for name, fields in over.items():
        base = out.get(name, DeviceRecipe())
        out[str(name)] = dataclasses.replace(base, **{k: _normalise(v, getattr(base, k)) for k, v in fields.items()})
    return out


def _merge_scenes(scenes: dict, over: dict, where: str) -> dict:
    """Override scene recipes (``over`` is schema-checked: numbers or [lo, hi] ranges); naming a
    component a scene lacks adds it with its defaults. Scene, component and parameter names are the
    generator's (:data:`SCENE_LABELS`, :data:`COMPONENT_PARAMS`): another name raises ConfigError."""
    out = copy.deepcopy(scenes)
    _reject_unknown(over, set(SCENE_LABELS), where)
    for scene, comps in over.items():
        _reject_unknown(comps, set(COMPONENT_PARAMS), f"{where}.{scene}")
        for comp, params in comps.items():
            _reject_unknown(params, set(COMPONENT_PARAMS[comp]), f"{where}.{scene}.{comp}")
            target = out[scene].setdefault(comp, copy.deepcopy(COMPONENT_PARAMS[comp]))
            for k, v in params.items():
                target[k] = _check_param(v, f"{where}.{scene}.{comp}.{k}")
    return out


def _check_param(value, key: str):
    """A schema-checked parameter as float, or a ``[lo, hi]`` range of floats with ``lo <= hi``."""
    if isinstance(value, (list, tuple)):
        if value[0] > value[1]:
            raise config_error(key, list(value), "a [lo, hi] range with lo <= hi")
        return [float(value[0]), float(value[1])]
    return float(value)


# ----------------------------------------------------------------------------------------------
# The plan: which clips exist, their split, which devices record them
# ----------------------------------------------------------------------------------------------


def _rng(seed: int, *keys) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the identity ``keys`` (stable across processes)."""
    return np.random.default_rng([int(seed)] + [zlib.crc32(str(k).encode()) for k in keys])


@dataclass(frozen=True)
class Segment:
    """One recorded segment of one location; every device in ``devices`` records it in parallel."""

    scene: str
    city: str
    location: int
    segment: int
    split: str  # "train", "evaluate" or "none"
    devices: tuple[str, ...]

    @property
    def stem(self) -> str:
        return f"{self.scene}-{self.city}-{self.location}-{self.segment}"

    @property
    def identifier(self) -> str:
        return f"{self.city}-{self.location}"

    def filename(self, device: str) -> str:
        return f"audio/{self.stem}-{device}.wav"


def plan_segments(cfg: SynthConfig) -> list[Segment]:
    """Scenes x cities x locations x segments with location-disjoint splits and the parallel subset.

    Location numbers are unique within a city across scenes (as identifiers are in DCASE). Unseen
    devices join the parallel recordings of the evaluate split only; the parallel segments chosen do
    not depend on which devices are unseen.
    """
    ref, others = cfg.reference_device, tuple(list(cfg.devices)[1:])
    seen_others = tuple(d for d in others if d not in cfg.unseen_devices)
    segments: list[Segment] = []
    for s_idx, scene in enumerate(SCENE_LABELS):
        pairs = [(c, s_idx * cfg.locations_per_city + k) for c in cfg.cities for k in range(cfg.locations_per_city)]
        split_pairs = [p for p in pairs if p[0] not in cfg.unsplit_cities]
        order = _rng(cfg.seed, "split", scene).permutation(len(split_pairs))
        n_eval = int(np.clip(round(len(split_pairs) * cfg.evaluate_fraction), 1, len(split_pairs) - 1))
        evaluate = {split_pairs[i] for i in order[:n_eval]}
        groups: dict[str, list[tuple]] = {"train": [], "evaluate": [], "none": []}
        for pair in pairs:
            split = "none" if pair[0] in cfg.unsplit_cities else ("evaluate" if pair in evaluate else "train")
            groups[split] += [(pair, k) for k in range(cfg.segments_per_location)]
        for split, members in groups.items():
            if not members:
                continue
            n_par = 0 if cfg.parallel_fraction == 0 or not others else max(1, round(len(members) * cfg.parallel_fraction))
            chosen = set(_rng(cfg.seed, "parallel", scene, split).permutation(len(members))[:n_par].tolist())
            recorders = (ref, *others) if split == "evaluate" else (ref, *seen_others)
            for i, ((city, loc), k) in enumerate(members):
                segments.append(Segment(scene, city, loc, k, split, recorders if i in chosen else (ref,)))
    return sorted(segments, key=lambda s: s.stem)


# ----------------------------------------------------------------------------------------------
# Scene synthesis
# ----------------------------------------------------------------------------------------------

N_FFT = 1024
HOP = N_FFT // 2
# Time-domain power of a random-phase inverse STFT (sqrt-Hann synthesis window, 50% overlap) is
# CAL * (sum of the power grid over rfft bins): a unit-power spectral shape sums to 1 / CAL.
CAL = 2.0 / N_FFT**2


@dataclass(frozen=True)
class Grid:
    """The clip's time-frequency grid: frame centre times (T,), bin frequencies (F,), samples."""

    rate: int
    n_samples: int
    times: np.ndarray
    freqs: np.ndarray

    @classmethod
    def make(cls, rate: int, n_samples: int) -> "Grid":
        n_frames = -(-n_samples // HOP) + 1
        return cls(rate, n_samples, np.arange(n_frames) * HOP / rate, np.fft.rfftfreq(N_FFT, 1.0 / rate))

    @property
    def duration(self) -> float:
        return self.n_samples / self.rate

    @property
    def t_samples(self) -> np.ndarray:
        return np.arange(self.n_samples) / self.rate


@dataclass
class Layer:
    """A component's contribution: power on the grid (T, F) and/or a time-domain signal (N,)."""

    power: np.ndarray | None = None
    signal: np.ndarray | None = None


@dataclass(frozen=True)
class Context:
    grid: Grid
    speed_frames: np.ndarray  # vehicle speed profile (relative, ~1) at frame times
    speed_samples: np.ndarray  # the same at sample times


def _db(x) -> float:
    return 10.0 ** (x / 10.0)


def band(f: np.ndarray, centre, width_oct) -> np.ndarray:
    """Log-frequency Gaussian bump(s): (..., F) for centre/width broadcastable to (..., 1)."""
    return np.exp(-0.5 * (np.log2(np.maximum(f, 1.0) / centre) / width_oct) ** 2)


def butter_power(f: np.ndarray, cutoff: float, order: float, kind: str) -> np.ndarray:
    """|H|^2 of a Butterworth high-pass or low-pass (order 0: flat)."""
    ratio = (cutoff / np.maximum(f, 1.0)) if kind == "high" else (f / cutoff)
    return 1.0 / (1.0 + ratio ** (2 * order))


def unit_shapes(shapes: np.ndarray) -> np.ndarray:
    """Scale spectral shapes (..., F) so that each alone, held constant, gives time-domain power 1."""
    return shapes / (shapes.sum(axis=-1, keepdims=True) * CAL + 1e-30)


def wobble(rng: np.random.Generator, t: np.ndarray, rate_hz: float, n: int = 3) -> np.ndarray:
    """A smooth random curve with unit-ish amplitude: a few sinusoids at up to ``rate_hz``."""
    freqs = rate_hz * rng.uniform(0.3, 1.0, n)
    phases = rng.uniform(0, 2 * np.pi, n)
    return np.sin(2 * np.pi * freqs[:, None] * t[None, :] + phases[:, None]).sum(0) / np.sqrt(n / 2)


def onsets_poisson(rng: np.random.Generator, rate_hz: float, t0: float, t1: float) -> np.ndarray:
    n = rng.poisson(max(rate_hz, 0.0) * (t1 - t0))
    return np.sort(rng.uniform(t0, t1, n))


def env_hann(t: np.ndarray, on: np.ndarray, dur: np.ndarray) -> np.ndarray:
    """(E, T) raised-cosine bursts starting at ``on`` lasting ``dur``."""
    x = (t[None, :] - on[:, None]) / dur[:, None]
    return np.where((x >= 0) & (x <= 1), np.sin(np.pi * np.clip(x, 0, 1)) ** 2, 0.0)


def env_decay(t: np.ndarray, on: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """(E, T) impulsive events: instant onset, exponential decay of power with time constant ``tau``."""
    x = t[None, :] - on[:, None]
    return np.where(x >= 0, np.exp(-np.maximum(x, 0) / tau[:, None]), 0.0)


def events_power(env: np.ndarray, shapes: np.ndarray, level_db) -> np.ndarray:
    """Sum over events of env (E, T) x unit shape (E, F) x level: (T, F)."""
    if env.shape[0] == 0:
        return 0.0
    gain = np.broadcast_to(_db(np.asarray(level_db, float)), (env.shape[0],))
    return (env * gain[:, None]).T @ unit_shapes(shapes)


def oscillator(freq: np.ndarray, rate: int, phase0: float = 0.0) -> np.ndarray:
    """exp(i * phase) of a sinusoid with instantaneous frequency ``freq`` (N,) in Hz."""
    return np.exp(1j * (phase0 + 2 * np.pi * np.cumsum(freq) / rate))


def harmonic_sum(z: np.ndarray, amps: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """Re sum_k amps[k] z^(k+1) e^(i phases[k]) without calling exp per harmonic."""
    out = np.zeros(z.shape, float)
    zk = np.ones_like(z)
    for a, p in zip(amps, phases):  # a handful of harmonics, each vectorised over all samples
        zk = zk * z
        out += a * (zk.real * np.cos(p) - zk.imag * np.sin(p))
    return out


def _rms_to(signal: np.ndarray, level_db: float) -> np.ndarray:
    rms = np.sqrt(np.mean(signal**2)) + 1e-12
    return signal * (10 ** (level_db / 20.0) / rms)


def _syllable_shapes(rng: np.random.Generator, f: np.ndarray, n: int) -> np.ndarray:
    """(n, F) speech-like spectra: three formant bumps over a glottal tilt."""
    formants = np.stack([rng.uniform(300, 800, n), rng.uniform(900, 2300, n), rng.uniform(2400, 3300, n)], 1)
    gains = np.array([1.0, 0.5, 0.2])
    shape = sum(g * band(f, formants[:, i:i + 1], 0.22) for i, g in enumerate(gains))
    return shape * butter_power(f, 120.0, 2, "high") + 1e-4 * butter_power(f, 4000.0, 2, "low")


def c_ambience(p, ctx, rng) -> Layer:
    g = ctx.grid
    shape = (_db(p["tilt_db_oct"] * np.log2(np.maximum(g.freqs, 20.0) / 1000.0))
             * butter_power(g.freqs, p["lowcut_hz"], 2, "high") * butter_power(g.freqs, p["highcut_hz"], 2, "low"))
    env = np.maximum(1.0 + p["mod_depth"] * wobble(rng, g.times, p["mod_rate_hz"]), 0.05)
    return Layer(power=events_power(env[None, :], shape[None, :], p["level_db"]))


def c_hum(p, ctx, rng) -> Layer:
    """Engine: harmonics of a fundamental following the vehicle's speed, plus its broadband rumble."""
    g = ctx.grid
    k = np.arange(1, int(p["harmonics"]) + 1)
    amps = k ** (-p["rolloff"]) * rng.uniform(0.5, 1.0, k.size)
    z = oscillator(p["f0_hz"] * ctx.speed_samples, g.rate, rng.uniform(0, 2 * np.pi))
    sig = harmonic_sum(z, amps, rng.uniform(0, 2 * np.pi, k.size))
    sig *= 1.0 + p["am_depth"] * np.interp(g.t_samples, g.times, wobble(rng, g.times, 2.0))
    shape = band(g.freqs, 2.5 * p["f0_hz"], 1.2)[None, :]
    noise = events_power(ctx.speed_frames[None, :] ** 2, shape, p["level_db"] + p["noise_db"])
    return Layer(power=noise, signal=_rms_to(sig, p["level_db"]))


def c_whine(p, ctx, rng) -> Layer:
    """Electric traction inverter: a tone whose pitch follows the speed, louder when it changes."""
    g = ctx.grid
    z = oscillator(p["freq_hz"] * ctx.speed_samples, g.rate, rng.uniform(0, 2 * np.pi))
    accel = np.abs(np.gradient(ctx.speed_samples)) * g.rate
    amp = 0.3 + accel / (accel.max() + 1e-9)
    return Layer(signal=_rms_to(harmonic_sum(z, np.array([1.0, 0.3]), rng.uniform(0, 6.3, 2)) * amp, p["level_db"]))


def c_clacks(p, ctx, rng) -> Layer:
    """Rail joints: pairs of impulses (bogies) every ``period_s`` of travel at the current speed."""
    g = ctx.grid
    travel = np.cumsum(ctx.speed_frames) * (g.times[1] - g.times[0])
    marks = np.arange(rng.uniform(0, p["period_s"]), travel[-1], p["period_s"])
    first = np.interp(marks, travel, g.times)
    on = np.concatenate([first, first + p["pair_gap_s"] * rng.uniform(0.9, 1.1, first.size)])
    tau = np.full(on.size, p["decay_s"])
    centre = p["centre_hz"] * 2 ** rng.normal(0, 0.2, on.size)
    shapes = band(g.freqs, centre[:, None], p["bandwidth_oct"])
    return Layer(power=events_power(env_decay(g.times, on, tau), shapes, p["level_db"] + rng.normal(0, 2, on.size)))


def c_rumble(p, ctx, rng) -> Layer:
    """Slow swells (trains arriving, trucks, tunnel roar) with an optional brake squeal at their end."""
    g = ctx.grid
    on = onsets_poisson(rng, p["rate_per_min"] / 60, -p["duration_s"], g.duration)
    dur = p["duration_s"] * rng.uniform(0.7, 1.3, on.size)
    env = env_hann(g.times, on, dur)
    shapes = band(g.freqs, p["centre_hz"] * 2 ** rng.normal(0, 0.2, on.size)[:, None], p["bandwidth_oct"])
    power = events_power(env, shapes, p["level_db"])
    squeal_env = env_hann(g.times, on + 0.6 * dur, 0.35 * dur)
    squeal = band(g.freqs, p["squeal_hz"] * 2 ** rng.normal(0, 0.1, on.size)[:, None], 0.04)
    return Layer(power=power + events_power(squeal_env, squeal, p["squeal_db"]))


def c_babble(p, ctx, rng) -> Layer:
    """Speech-like formant-noise syllables at ``density_hz`` over a steady speech-shaped bed."""
    g = ctx.grid
    on = onsets_poisson(rng, p["density_hz"], -0.5, g.duration)
    dur = p["syllable_s"] * rng.uniform(0.5, 1.5, on.size)
    level = p["level_db"] + rng.normal(0, 3, on.size)
    power = events_power(env_hann(g.times, on, dur), _syllable_shapes(rng, g.freqs, on.size), level)
    bed = _syllable_shapes(rng, g.freqs, 16).mean(0, keepdims=True)
    env = np.maximum(1.0 + 0.2 * wobble(rng, g.times, 1.0), 0.1)[None, :]
    return Layer(power=power + events_power(env, bed, p["bed_db"]))


def c_footsteps(p, ctx, rng) -> Layer:
    """Walkers: quasi-periodic heel strikes (about two a second each), short low-mid impacts."""
    g = ctx.grid
    n_walkers = max(1, int(round(p["rate_hz"] / 1.8)))
    on = []
    for _ in range(n_walkers):  # a few walkers; each walker's steps are vectorised
        period = rng.uniform(0.45, 0.65)
        steps = np.arange(rng.uniform(-period, period), g.duration, period)
        on.append(steps + rng.normal(0, 0.02, steps.size))
    on = np.concatenate(on)
    on = on[rng.uniform(size=on.size) < min(1.0, p["rate_hz"] / (1.8 * n_walkers))]
    shapes = band(g.freqs, p["centre_hz"] * 2 ** rng.normal(0, 0.3, on.size)[:, None], 1.2)
    level = p["level_db"] + rng.normal(0, 3, on.size)
    return Layer(power=events_power(env_decay(g.times, on, np.full(on.size, p["decay_s"])), shapes, level))


def c_cars(p, ctx, rng) -> Layer:
    """Passing cars: noise swells whose spectrum slides down as they pass (approach / recede halves)."""
    g = ctx.grid
    centre = onsets_poisson(rng, p["rate_per_min"] / 60, -p["pass_s"], g.duration + p["pass_s"])
    width = p["pass_s"] * rng.uniform(0.7, 1.3, centre.size) / 2
    x = (g.times[None, :] - centre[:, None]) / width[:, None]
    swell = np.exp(-0.5 * x**2)
    side = 1.0 / (1.0 + np.exp(-6 * x))
    env = np.concatenate([swell * (1 - side), swell * side])
    fc = p["centre_hz"] * 2 ** rng.normal(0, 0.25, centre.size)
    fc = np.concatenate([fc * (1 + p["doppler"]), fc * (1 - p["doppler"])])[:, None]
    shapes = (band(g.freqs, fc, 1.8) + 0.1 * band(g.freqs, 3 * fc, 1.0)) * butter_power(g.freqs, p["lowpass_hz"], 2, "low")
    level = np.tile(p["level_db"] + rng.normal(0, 3, centre.size), 2)
    return Layer(power=events_power(env, shapes, level))


def c_birds(p, ctx, rng) -> Layer:
    """Chirps: short frequency sweeps from three birds, each an FM oscillator."""
    g = ctx.grid
    t = g.t_samples
    sig = np.zeros(g.n_samples)
    for _ in range(3):  # three voices, each vectorised over all of its chirps
        on = onsets_poisson(rng, p["rate_hz"] / 3, -0.2, g.duration)
        if on.size == 0:
            continue
        dur = p["chirp_s"] * rng.uniform(0.6, 1.4, on.size)
        f0 = np.exp(rng.uniform(np.log(p["f_lo_hz"]), np.log(p["f_hi_hz"]), on.size))
        sweep = p["sweep_oct"] + rng.normal(0, 0.3, on.size)
        idx = np.clip(np.searchsorted(on, t, side="right") - 1, 0, on.size - 1)
        u = (t - on[idx]) / dur[idx]
        active = (u >= 0) & (u <= 1)
        freq = np.minimum(f0[idx] * 2 ** (sweep[idx] * np.clip(u, 0, 1)), 0.45 * g.rate)
        z = oscillator(freq, g.rate, rng.uniform(0, 6.3))
        sig += np.where(active, np.sin(np.pi * np.clip(u, 0, 1)) ** 2, 0.0) * z.imag
    return Layer(signal=sig * np.sqrt(2) * 10 ** (p["level_db"] / 20))


def _notes(rng, t: np.ndarray, rate: int, onsets, freqs, durs, level_db) -> np.ndarray:
    """Decaying bell-like notes (fundamental + 2 partials) added at the given onsets."""
    out = np.zeros(t.size)
    amp = np.sqrt(2) * 10 ** (level_db / 20)
    for on, f, d in zip(onsets, freqs, durs):  # a few notes per clip, each vectorised
        i0, i1 = int(max(on, 0) * rate), int(min(on + 3 * d, t[-1]) * rate)
        if i1 <= i0:
            continue
        u = t[i0:i1] - on
        partials = np.sin(2 * np.pi * f * u) + 0.4 * np.sin(2 * np.pi * 2.01 * f * u) + 0.15 * np.sin(2 * np.pi * 3.02 * f * u)
        out[i0:i1] += amp * partials * np.exp(-u / d) * (1 - np.exp(-u / 0.005))
    return out


def c_chimes(p, ctx, rng) -> Layer:
    """Public-address chime sequences (rising notes), each followed by an announcement voice."""
    g = ctx.grid
    starts = onsets_poisson(rng, p["rate_per_min"] / 60, -2.0, g.duration)
    n = int(p["notes"])
    ratios = np.array([1.0, 1.26, 1.5, 2.0])[np.arange(n) % 4]
    note_on = (starts[:, None] + np.arange(n)[None, :] * p["note_s"]).ravel()
    note_f = (p["note_hz"] * ratios[None, :] * np.ones((starts.size, 1))).ravel()
    sig = _notes(rng, g.t_samples, g.rate, note_on, note_f, np.full(note_on.size, p["note_s"]), p["level_db"])
    voice_on = np.concatenate([s + n * p["note_s"] + np.sort(rng.uniform(0, p["pa_s"], int(5 * p["pa_s"])))
                               for s in starts]) if starts.size else np.zeros(0)
    dur = rng.uniform(0.12, 0.3, voice_on.size)
    shapes = _syllable_shapes(rng, g.freqs, voice_on.size) * butter_power(g.freqs, 300, 3, "high") * butter_power(g.freqs, 3400, 4, "low")
    return Layer(power=events_power(env_hann(g.times, voice_on, dur), shapes, p["pa_db"]), signal=sig)


def c_music(p, ctx, rng) -> Layer:
    """Background music: pentatonic chords changing every two beats, with a bass line."""
    g = ctx.grid
    chord_s = 2 * 60.0 / p["tempo_bpm"]
    n_chords = int(g.duration / chord_s) + 2
    scale = np.array([0, 2, 4, 7, 9, 12, 14, 16])
    degrees = np.sort(rng.choice(scale, (n_chords, 3)), axis=1)
    freqs = p["root_hz"] * 2 ** (np.concatenate([degrees, degrees[:, :1] - 24], axis=1) / 12)
    offset = rng.uniform(0, chord_s)
    idx = ((g.t_samples + offset) // chord_s).astype(int)
    u = ((g.t_samples + offset) % chord_s) / chord_s
    env = np.sin(np.pi * np.clip(u, 0.0, 1.0)) ** 0.5
    amps = p["brightness"] ** np.arange(3)
    sig = np.zeros(g.n_samples)
    for v in range(freqs.shape[1]):  # four voices, each vectorised over the clip
        sig += harmonic_sum(oscillator(freqs[idx, v], g.rate, rng.uniform(0, 6.3)), amps, rng.uniform(0, 6.3, 3))
    return Layer(signal=_rms_to(sig * env, p["level_db"]))


def c_rustle(p, ctx, rng) -> Layer:
    """Leaves in the wind or a fountain: band noise with slow gusts."""
    g = ctx.grid
    env = np.maximum(1.0 + p["mod_depth"] * wobble(rng, g.times, p["mod_rate_hz"]), 0.02)
    return Layer(power=events_power(env[None, :], band(g.freqs, p["centre_hz"], p["bandwidth_oct"])[None, :], p["level_db"]))


def c_suitcases(p, ctx, rng) -> Layer:
    """Rolling suitcases: low-mid rumble bursts pulsed by floor-tile joints."""
    g = ctx.grid
    on = onsets_poisson(rng, p["rate_per_min"] / 60, -p["duration_s"], g.duration)
    dur = p["duration_s"] * rng.uniform(0.6, 1.4, on.size)
    clicks = 0.5 + 0.5 * (np.sin(2 * np.pi * p["click_hz"] * g.times[None, :] + rng.uniform(0, 6.3, (on.size, 1))) > 0.6)
    shapes = band(g.freqs, 500 * 2 ** rng.normal(0, 0.3, on.size)[:, None], 1.5)
    return Layer(power=events_power(env_hann(g.times, on, dur) * clicks, shapes, p["level_db"]))


COMPONENTS: dict[str, Callable[[dict, Context, np.random.Generator], Layer]] = {
    "ambience": c_ambience, "hum": c_hum, "whine": c_whine, "clacks": c_clacks, "rumble": c_rumble,
    "babble": c_babble, "footsteps": c_footsteps, "cars": c_cars, "birds": c_birds, "chimes": c_chimes,
    "music": c_music, "rustle": c_rustle, "suitcases": c_suitcases,
}
assert set(COMPONENTS) | {"mix"} == set(COMPONENT_PARAMS)


def draw_params(cfg: SynthConfig, seg: Segment, comp: str, spec: dict) -> dict[str, float]:
    """Concrete values: a location sits at a fixed point of each range, a segment jitters around it."""
    names = sorted(spec)
    p_loc = _rng(cfg.seed, "location", seg.scene, seg.city, seg.location, comp).uniform(size=len(names))
    jitter = _rng(cfg.seed, "segment", seg.stem, comp, "params").normal(size=len(names)) * cfg.segment_jitter
    out = {}
    for name, pl, j in zip(names, p_loc, jitter):
        v = spec[name]
        value = v[0] + (v[1] - v[0]) * float(np.clip(pl + j, 0, 1)) if isinstance(v, list) else float(v)
        out[name] = float(round(value)) if (comp, name) in INTEGER_PARAMS else value
    return out


def city_colour(cfg: SynthConfig, city: str, f: np.ndarray) -> np.ndarray:
    """A city's power colouring (F,): a spectral tilt and one broad bump, fixed per city."""
    rng = _rng(cfg.seed, "city", city)
    tilt = rng.uniform(-1, 1) * cfg.city_colour_db / 6
    centre, gain = np.exp(rng.uniform(np.log(200), np.log(3000))), rng.uniform(-1, 1) * cfg.city_colour_db
    return _db(tilt * np.log2(np.maximum(f, 20.0) / 1000.0) + gain * band(f, centre, 1.0))


def reverberate(power: np.ndarray, reverb_s: float, wet: float, rate: int) -> np.ndarray:
    """Smear power along time with an exponential tail (T60 = ``reverb_s``), mixed in at ``wet``."""
    if reverb_s <= 0 or wet <= 0:
        return power
    import scipy.signal  # here, not at the top: the workflow checks SynthConfig at parse time

    a = 10 ** (-6.0 * HOP / (rate * reverb_s))
    tail = scipy.signal.lfilter([1 - a], [1, -a], power, axis=0)
    return power + wet * tail


def istft_noise(power: np.ndarray, phase: np.ndarray, n_samples: int) -> np.ndarray:
    """Random-phase inverse STFT of a power grid (T, F): sqrt-Hann synthesis, 50% overlap-add."""
    window = np.sqrt(np.hanning(N_FFT + 1)[:-1])
    frames = np.fft.irfft(np.sqrt(power) * np.exp(1j * phase), n=N_FFT, axis=1) * window
    blocks = np.zeros((frames.shape[0] + 1, HOP))
    blocks[:-1] += frames[:, :HOP]
    blocks[1:] += frames[:, HOP:]
    return blocks.ravel()[HOP:HOP + n_samples]


def n_samples(cfg: SynthConfig, rate: int) -> int:
    return int(round(cfg.clip_seconds * rate))


def synthesise_scene(cfg: SynthConfig, seg: Segment) -> np.ndarray:
    """One segment's scene as a binaural pair (2, N) at ``cfg.scene_rate``, its power normalised to ``mix.level_dbfs``."""
    grid = Grid.make(cfg.scene_rate, n_samples(cfg, cfg.scene_rate))
    recipe = cfg.scenes[seg.scene]
    mix = draw_params(cfg, seg, "mix", recipe["mix"])
    rng = _rng(cfg.seed, "segment", seg.stem, "mix")
    speed = np.maximum(1.0 + mix["speed_var"] * wobble(rng, grid.times, mix["speed_rate_hz"]), 0.2)
    ctx = Context(grid, speed, np.interp(grid.t_samples, grid.times, speed))
    power = np.zeros((grid.times.size, grid.freqs.size))
    tonal = np.zeros(grid.n_samples)
    for comp in sorted(c for c in recipe if c != "mix"):
        layer = COMPONENTS[comp](draw_params(cfg, seg, comp, recipe[comp]), ctx,
                                 _rng(cfg.seed, "segment", seg.stem, comp))
        if layer.power is not None:
            power += layer.power
        if layer.signal is not None:
            tonal += layer.signal
    power = reverberate(power * city_colour(cfg, seg.city, grid.freqs), mix["reverb_s"], mix["reverb_wet"], grid.rate)
    phase = rng.uniform(0, 2 * np.pi, power.shape)
    spread = (1 - np.clip(mix["stereo_coherence"], 0, 1)) * np.pi * np.minimum(grid.freqs / 1000.0, 1.0)
    left = istft_noise(power, phase, grid.n_samples)
    right = istft_noise(power, phase + rng.normal(size=power.shape) * spread, grid.n_samples)
    shift = int(round(mix["itd_ms"] * 1e-3 * grid.rate))
    tonal_r = np.roll(tonal, shift)
    scene = np.stack([left + tonal, right + tonal_r])
    rms = np.sqrt(np.mean(scene**2)) + 1e-12  # over both ears: the level the binaural device records
    return scene * (10 ** (mix["level_dbfs"] / 20) / rms)


# ----------------------------------------------------------------------------------------------
# Devices
# ----------------------------------------------------------------------------------------------


def device_response(dev: DeviceRecipe, f: np.ndarray) -> np.ndarray:
    """Magnitude response (zero phase): Butterworth high/low-pass and a resonance bump."""
    power = butter_power(f, dev.highpass_hz, dev.highpass_order, "high") * butter_power(f, dev.lowpass_hz, dev.lowpass_order, "low")
    return np.sqrt(power) * 10 ** (dev.resonance_db / 20 * band(f, dev.resonance_hz, dev.resonance_oct))


def compress(x: np.ndarray, rate: int, threshold_dbfs: float, ratio: float) -> np.ndarray:
    """Static compressor on a smoothed 10 ms RMS envelope (shared by all channels)."""
    if ratio <= 1:
        return x
    import scipy.signal  # here, not at the top: the workflow checks SynthConfig at parse time

    hop = max(1, rate // 100)
    n = -(-x.shape[-1] // hop) * hop
    padded = np.pad(x, ((0, 0), (0, n - x.shape[-1])))
    ms = (padded**2).mean(0).reshape(-1, hop).mean(1)
    ms = scipy.signal.lfilter([0.3], [1, -0.7], ms)
    level = 10 * np.log10(ms + 1e-12)
    gain_db = np.minimum(0.0, (threshold_dbfs - level) * (1 - 1 / ratio))
    centres = (np.arange(gain_db.size) + 0.5) * hop
    return x * 10 ** (np.interp(np.arange(x.shape[-1]), centres, gain_db) / 20)


def render_device(scene: np.ndarray, rate: int, dev: DeviceRecipe, rng: np.random.Generator) -> np.ndarray:
    """The device's recording (C, M) of a binaural scene (2, N) at ``rate``: float in [-1, 1]."""
    x = scene if dev.channels == 2 else scene.mean(0, keepdims=True)
    x = x * 10 ** (dev.gain_db / 20) + rng.standard_normal(x.shape) * 10 ** (dev.noise_dbfs / 20)
    spectrum = np.fft.rfft(x, axis=-1) * device_response(dev, np.fft.rfftfreq(x.shape[-1], 1.0 / rate))
    x = np.fft.irfft(spectrum, n=x.shape[-1], axis=-1)
    x = compress(x, rate, dev.comp_threshold_dbfs, dev.comp_ratio)
    x = np.clip(x, -dev.clip_level, dev.clip_level)
    if dev.sample_rate != rate:
        x = soxr.resample(x.T, rate, dev.sample_rate, quality="HQ").T
    return np.clip(x, -1.0, 1.0 - 2.0**-15)


# ----------------------------------------------------------------------------------------------
# Writing the dataset
# ----------------------------------------------------------------------------------------------


def render_segment(seg: Segment, cfg: SynthConfig, root: Path) -> int:
    """Synthesise one segment and write one WAV per device that records it; returns the count."""
    scene = synthesise_scene(cfg, seg)
    for name in seg.devices:
        dev = cfg.devices[name]
        y = render_device(scene, cfg.scene_rate, dev, _rng(cfg.seed, "device", seg.stem, name))
        buffer = io.BytesIO()  # encoded in memory: libsndfile's close() would fsync every file
        sf.write(buffer, y.T, dev.sample_rate, subtype=dev.subtype, format="WAV")
        (root / seg.filename(name)).write_bytes(buffer.getvalue())
    return len(seg.devices)


def _tsv(rows: list[list[str]]) -> str:
    return "".join("\t".join(r) + "\n" for r in rows)


def write_metadata(root: Path, cfg: SynthConfig, segments: list[Segment]) -> None:
    """meta.csv and evaluation_setup/fold1_{train,evaluate,test} in the layout ``cfg.layout``."""
    clips = sorted((seg.filename(d), seg) for seg in segments for d in seg.devices)
    device_of = {seg.filename(d): d for seg in segments for d in seg.devices}
    meta = [list(META_HEADER)] + [[f, s.scene, s.identifier, device_of[f]] for f, s in clips]
    (root / "meta.csv").write_text(_tsv(meta), encoding="utf-8")
    fmt = LAYOUTS[cfg.layout]
    (root / "evaluation_setup").mkdir()
    for which, split in (("train", "train"), ("evaluate", "evaluate"), ("test", "evaluate")):
        rows = [[f, s.scene] if which != "test" else [f] for f, s in clips if s.split == split]
        header = fmt.train_header if which != "test" else fmt.test_header
        text = _tsv(([list(header)] if header else []) + rows)
        fmt.path(root, which).write_text(text, encoding="utf-8")


def _pool_context():
    """fork where the platform has it (works from scripts without a ``__main__`` guard), else spawn."""
    from multiprocessing import get_all_start_methods

    return get_context("fork" if "fork" in get_all_start_methods() else "spawn")


def _one_blas_thread() -> None:
    """Worker initializer: the workers are the parallelism, so each keeps one BLAS thread (best effort)."""
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)


def generate_dataset(root: str | os.PathLike, cfg: SynthConfig, *, n_jobs: int = 1, overwrite: bool = False) -> dict:
    """Write the embedded dataset into ``root`` (audio/, meta.csv, evaluation_setup/, synth_config.json).

    The folder is built beside ``root`` under a temporary name and renamed when complete. An existing
    ``root`` raises DatasetError unless ``overwrite``. Returns counts per device and split.
    """
    cfg.validate()
    root = Path(root)
    if root.exists() and not overwrite:
        raise DatasetError(f"{root}: already exists (pass overwrite=True to replace it)")
    t0 = time.perf_counter()
    segments = plan_segments(cfg)
    tmp = root.parent / f".{root.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        (tmp / "audio").mkdir(parents=True)
        work = partial(render_segment, cfg=cfg, root=tmp)
        if n_jobs <= 1:
            n_files = sum(map(work, segments))
        else:
            with ProcessPoolExecutor(n_jobs, mp_context=_pool_context(), initializer=_one_blas_thread) as pool:
                n_files = sum(pool.map(work, segments, chunksize=max(1, len(segments) // (8 * n_jobs))))
        write_metadata(tmp, cfg, segments)
        from caanet import __version__
        provenance = {"generator": "caanet.data.synth", "synthetic": True, "caanet_version": __version__,
                      "config": cfg.to_dict()}
        (tmp / "synth_config.json").write_text(json.dumps(provenance, indent=1) + "\n", encoding="utf-8")
        if root.exists():
            trash = root.parent / f".{root.name}.old-{os.getpid()}"
            os.replace(root, trash)
            os.replace(tmp, root)
            shutil.rmtree(trash)
        else:
            os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    devices = {d: sum(d in s.devices for s in segments) for d in cfg.devices}
    splits = {sp: sum(len(s.devices) for s in segments if s.split == sp) for sp in ("train", "evaluate", "none")}
    return {"root": str(root), "layout": cfg.layout, "n_clips": n_files, "n_segments": len(segments),
            "clip_seconds": cfg.clip_seconds, "devices": devices, "splits": splits,
            "elapsed_s": round(time.perf_counter() - t0, 3)}
