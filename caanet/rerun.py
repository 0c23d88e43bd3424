"""Which settings change what a rule computes: the single list behind every rule's ``params:``.

Snakemake reruns a job when its ``params`` change (the ``params`` rerun trigger). A rule's params must
therefore hold exactly what changes its outputs, and nothing else: a checkpoint or log cadence, the
cluster resources (threads, memory, runtime, GPUs), the torch device or where a dataset lives on disk
must not retrain a grid that took days of GPU time. The functions here strip those settings from what
the rules put into ``params``; the job scripts still read the full settings from the workflow's
config (:func:`job_preset`), so the value a user sets is the value a job uses.

This module is imported at parse time: no torch, no numpy.
"""

from __future__ import annotations

import copy
from typing import Mapping

# TrainConfig fields that change nothing computed (weights, predictions, evaluation): how often a
# checkpoint is written and how often a progress line and a metrics.csv row are written. A checkpoint
# written under another value of these resumes (caanet.training uses this same list).
TRAINING_KEYS_CHANGING_NOTHING = ("checkpoint_every", "log_every")
# Preset keys that change nothing computed: the cluster resources of each stage.
PRESET_KEYS_CHANGING_NOTHING = ("resources",)
# Dataset keys that change nothing computed by themselves: where a local dataset lives (its content
# is tracked by caanet.data.manifest) and which mirror serves the archives (they are verified
# against the catalogue's sizes and checksums), and whether the archives are kept after extraction.
DATASET_KEYS_CHANGING_NOTHING = ("path", "base_url", "keep_archives")


def training_params(training: Mapping | None) -> dict:
    """The training settings that change a trained cell: ``training`` less
    :data:`TRAINING_KEYS_CHANGING_NOTHING` (a new dict; ``training`` is not modified)."""
    return {k: copy.deepcopy(v) for k, v in (training or {}).items() if k not in TRAINING_KEYS_CHANGING_NOTHING}


def dataset_params(dataset: Mapping) -> dict:
    """A dataset's catalogue entry less :data:`DATASET_KEYS_CHANGING_NOTHING`."""
    return {k: copy.deepcopy(v) for k, v in dataset.items() if k not in DATASET_KEYS_CHANGING_NOTHING}


def preset_params(preset: Mapping) -> dict:
    """The resolved preset (``caanet.config.resolve``) less every setting that changes nothing computed:
    resources, the training keys of :data:`TRAINING_KEYS_CHANGING_NOTHING`, and each dataset's
    :data:`DATASET_KEYS_CHANGING_NOTHING`. For rules that take the whole preset as ``params``."""
    out = {k: copy.deepcopy(v) for k, v in preset.items() if k not in PRESET_KEYS_CHANGING_NOTHING}
    if "training" in out:
        out["training"] = training_params(out["training"])
    if isinstance(out.get("datasets"), Mapping):
        out["datasets"] = {name: dataset_params(d) for name, d in out["datasets"].items()}
    return out


def job_preset(config: Mapping) -> dict:
    """The full resolved preset of a job, from the workflow's config (``snakemake.config``): what a
    job script uses for the settings its rule deliberately leaves out of ``params``."""
    from caanet.config import resolve

    return resolve(dict(config))
