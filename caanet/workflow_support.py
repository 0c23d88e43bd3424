"""Glue between the resolved preset (caanet.config.resolve) and the caanet objects the rules need.

The Snakefile calls these at parse time, so they stay cheap: no torch import here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
from pathlib import Path

from caanet.errors import ConfigError, config_error
from caanet.spec import CellSpec
from caanet.vocab import POOLING_REGISTRY

def scene_labels(preset: dict, dataset: str) -> list[str]:
    """The dataset's allowed scene labels: its `scenes:` key, else the 10 DCASE scenes."""
    from caanet.data.layout import SCENE_LABELS

    return list(preset["datasets"][dataset].get("scenes") or SCENE_LABELS)


def feature_params(preset: dict, dataset: str, *, expect_hash: str | None = None):
    """The dataset's FeatureParams: the preset's overrides plus the dataset's clip length."""
    from caanet.features import FeatureParams

    overrides = dict(preset.get("features") or {})
    where = f"presets.{preset.get('name', '?')}.features"
    if "clip_seconds" in overrides:
        raise config_error(f"{where}.clip_seconds", overrides["clip_seconds"],
                           f"no clip length here: it is set per dataset (datasets.{dataset}.clip_seconds)")
    overrides["clip_seconds"] = float(preset["datasets"][dataset]["clip_seconds"])
    params = FeatureParams.from_dict(overrides, where=where)
    if expect_hash is not None and params.hash() != expect_hash:
        raise ConfigError(
            f"feature cache {dataset}-{expect_hash}.h5 was asked for, but the configured feature "
            f"parameters of {dataset!r} hash to {params.hash()}"
        )
    return params


def synth_settings(preset: dict, dataset: str) -> dict:
    """The generator settings of an embedded dataset (its clip length and devices included)."""
    d = preset["datasets"][dataset]
    settings = dict(d["embedded"])
    settings.setdefault("clip_seconds", float(d["clip_seconds"]))
    unseen = list(d.get("unseen_devices") or [])
    if "unseen_devices" in settings and list(settings["unseen_devices"]) != unseen:
        raise config_error(f"datasets.{dataset}.embedded.unseen_devices", settings["unseen_devices"],
                           f"no value here (it differs from 'datasets.{dataset}.unseen_devices' {unseen!r}; "
                           "give it once, there)")
    if unseen:
        settings["unseen_devices"] = unseen
    return settings


def synth_config(settings: dict, dataset: str):
    from caanet.data.synth import SynthConfig

    return SynthConfig.from_dict(settings, where=f"datasets.{dataset}.embedded")


def train_settings(preset: dict) -> dict:
    """The preset's ``training:`` mapping (TrainConfig fields, checked by :func:`train_config`). The
    fidelity is not among them: it is the preset's ``fidelity`` key, carried by each cell's spec."""
    return dict(preset.get("training") or {})


def train_config(settings: dict, preset_name: str = "?"):
    from caanet.training.config import TrainConfig  # no torch: the workflow checks it at parse time

    return TrainConfig.from_dict(settings, where=f"presets.{preset_name}.training")


def cell_spec(preset: dict, dataset: str, cell: str, seed) -> CellSpec:
    spec = CellSpec.from_id(cell, dataset=dataset, seed=int(seed), fidelity=preset.get("fidelity", "paper"))
    devices = preset["datasets"][dataset]["devices"]
    if spec.device is not None and spec.device not in devices:
        raise ConfigError(f"cell {cell!r}: device {spec.device!r} is not one of datasets.{dataset}.devices {devices}")
    unseen = preset["datasets"][dataset].get("unseen_devices") or []
    if spec.device is not None and spec.device in unseen:
        raise ConfigError(f"cell {cell!r}: device {spec.device!r} is in datasets.{dataset}.unseen_devices {unseen}: "
                          "it has no training clips, so no single-device model can be trained on it")
    return spec


def train_options(preset: dict, dataset: str, cell: str, seed) -> dict:
    """The keyword options of ``train_cell`` that the preset's grid decides for this cell: whether it
    scores a validation split for the layer selection, whether it holds one out because a cell of its
    dataset uses one (:func:`caanet.grid.holds_validation`: every cell of a dataset trains on the same
    clips), and the dataset's reference device; for a cell of a device-robustness method, the method's
    settings as the preset gives them (``methods.<name>``)."""
    from caanet import grid
    from caanet.methods import stage_settings

    spec = cell_spec(preset, dataset, cell, seed)
    options = {"score_validation": grid.scores_validation(preset, spec),
               "hold_validation": grid.holds_validation(preset, dataset),
               "reference_device": grid.reference_devices(preset)[dataset]}
    if spec.method != "none":
        options["method_settings"] = stage_settings(preset, spec.method, "train")
    return options


def train_inputs(preset: dict, dataset: str, cell: str) -> dict:
    """The feature caches a training job reads (:mod:`caanet.paths`): ``cache``, the plain cache, or for a
    method whose derived cache replaces it (spectrum correction) that cache; ``method_cache``, the
    derived cache of a method that draws from it beside the plain one (dir_augment)."""
    from caanet import paths
    from caanet.vocab import METHOD_REGISTRY

    method = METHOD_REGISTRY[cell_spec(preset, dataset, cell, 0).method]
    fhash = feature_params(preset, dataset).hash()
    plain = paths.FEATURES.format(dataset=dataset, fhash=fhash)
    if method.derived is None:
        return {"cache": plain}
    derived = paths.METHOD_FEATURES.format(dataset=dataset, fhash=fhash, method=method.name)
    return {"cache": derived} if method.derived == "replace" else {"cache": plain, "method_cache": derived}


def method_response_files(preset: dict, method: str) -> list[str]:
    """The files a method's fit reads besides the audio: the impulse responses of
    ``methods.dir_augment.responses`` when given (a ConfigError names the key for a missing folder)."""
    from caanet.methods import method_settings
    from caanet.vocab import METHOD_REGISTRY

    settings = method_settings(method, (preset.get("methods") or {}).get(method))
    folder = getattr(settings, "responses", None)
    if folder is None or METHOD_REGISTRY[method].fit is None:
        return []
    from caanet.methods.dir_augment import response_files

    if not Path(folder).is_dir():
        raise config_error(f"methods.{method}.responses", folder, "a folder of impulse responses (WAV or FLAC files)")
    files = [str(p) for p in response_files(folder)]
    if not files:
        raise config_error(f"methods.{method}.responses", folder, "a folder holding at least one WAV or FLAC file")
    return files


def check_preset(preset: dict) -> None:
    """Check every part of the preset that a JSON schema cannot, before any job runs (the grid is
    checked by ``caanet.grid`` when the Snakefile expands it)."""
    for name, d in preset["datasets"].items():
        feature_params(preset, name)
        if d["source"] == "embedded":
            synth_config(synth_settings(preset, name), name)
    train_config(train_settings(preset), preset["name"])
    from caanet.methods import method_settings

    for name, raw in (preset.get("methods") or {}).items():
        method_settings(name, raw, where=f"presets.{preset.get('name', '?')}.methods.{name}")


def profile_files(argv: list[str] | None = None) -> list[Path]:
    """The profile files (``profiles/<name>/config.yaml``) Snakemake read for the command line ``argv``
    (default ``sys.argv``): ``--profile`` (or ``SNAKEMAKE_PROFILE``) and the workflow profile
    (``--workflow-profile``, else the workflow's ``profiles/default/``), found by Snakemake's own
    argument parser exactly as it found them. Empty when ``argv`` is not a ``snakemake`` command
    (Snakemake run through its Python API, a test) or the parser refuses it."""
    import io

    argv = list(sys.argv if argv is None else argv)
    program = Path(argv[0]) if argv else Path()
    if program.name != "snakemake" and program.parts[-2:] != ("snakemake", "__main__.py"):
        return []
    from snakemake.cli import parse_args

    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            parser, _args = parse_args(argv[1:])  # prints "Using profile ..." again, hence the redirect
    except (SystemExit, Exception):  # noqa: BLE001 - Snakemake itself reports a bad command line
        return []
    return [Path(f) for f in getattr(parser, "_default_config_files", None) or []]


def snakemake_yaml_files(workflow, argv: list[str] | None = None) -> list[Path]:
    """Every YAML (or JSON) file Snakemake read for this run before the Snakefile could: the config
    files (``configfile:`` and ``--configfile``, ``workflow.configfiles``) and the profiles
    (:func:`profile_files`). Snakemake's loader keeps the last of a repeated key silently; the
    Snakefile checks these with :func:`caanet.config.check_unique_keys`."""
    files = [Path(f) for f in workflow.configfiles] + profile_files(argv)
    return [f for f in dict.fromkeys(files) if f.is_file()]


ATTENTION_POOLINGS = tuple(p.name for p in POOLING_REGISTRY if p.attention)
"""Poolings whose models write attention maps (``attention.npz``, shown in Fig. 7)."""


def figure_cells(preset: dict, table2_csv: str | Path, cells_csv: str | Path, layers: dict) -> dict:
    """The input files of Figs. 6 and 7 (:mod:`caanet.paths`), each model at its seed with the best Avg
    (:func:`caanet.aggregate.best_seed`, from ``cells.csv``; the path names the seed): ``fig6`` and ``fig7``,
    their ``evaluation.json``, and ``fig7_attention``, the ``attention.npz`` of Fig. 7's model, when
    that model has an attention pooling (without one, Fig. 7 is a placeholder saying so).

    Both come from Table II's cells (:func:`caanet.aggregate.table_cells_frame`), no other table's.
    Fig. 6: the multi-task model with the best Avg in Table II. Fig. 7: the multi-task
    model with attention pooling (the CAA-Net itself: atrous + attention when that row exists,
    else the best attention row, else Fig. 6's model).
    """
    import pandas as pd

    from caanet import aggregate, paths

    df = pd.read_csv(table2_csv)
    cells = aggregate.table_cells_frame(pd.read_csv(cells_csv, dtype={"device": str, "dataset": str}), preset, "table2",
                                   layers)    # Table II's cells only
    mt = df[(df.strategy == "multi_task") & (df.device == "avg")]
    if mt.empty:
        raise ConfigError("Table II has no multi_task rows: Figs. 6 and 7 need the multi-task strategy")
    dataset = preset["tables"]["table2"]["dataset"]

    def spec_for(row) -> CellSpec:
        spec = CellSpec(dataset, row.topology, row.pooling, "multi_task",
                        cond_layer=int(layers[(row.topology, row.pooling)]), fidelity=preset.get("fidelity", "paper"))
        return dataclasses.replace(spec, seed=aggregate.best_seed(cells, spec))

    best = mt.sort_values("acc_mean", ascending=False, kind="stable").iloc[0]
    att = mt[mt.pooling.isin(ATTENTION_POOLINGS)]
    caa = att[(att.topology == "atrous") & (att.pooling == "att")]
    fig7 = caa.iloc[0] if not caa.empty else (att.sort_values("acc_mean", ascending=False).iloc[0] if not att.empty else best)
    out = {}
    for key, row in (("fig6", best), ("fig7", fig7)):
        out[key] = paths.cell_path(spec_for(row), "evaluation")
    if fig7.pooling in ATTENTION_POOLINGS:
        out["fig7_attention"] = paths.cell_path(spec_for(fig7), "attention")
    return out


def deleted_outputs(outputs, ran_before: str | Path) -> list[str]:
    """The outputs of a rule that ran before and are now missing on disk, for `rule all` to ask for.

    Snakemake (>= 7.7) rebuilds a deleted intermediate only when a job after it must run, and a
    checkpoint with any output missing is not rerun either (`checkpoints.<rule>.get()` then only waits
    for it): a table deleted by hand would stay deleted. Asking `all` for the outputs of the tables,
    statistics and rendering rules in every run instead gives those jobs a second path from `all`,
    and when the `aggregate_tables` checkpoint finishes Snakemake 9 re-resolves them into duplicate
    jobs inside the SLURM `postprocess` group ("89 of 79 steps", or `KeyError: render_report`:
    snakemake#4202, measured in tests/test_slurm.py). So they are asked for only when one is missing
    after the rule ran in this working directory (its benchmark file, written by Snakemake after each
    run, exists); a first run builds them anyway, on the way to the report. Under SLURM, the run that
    rebuilds such a deleted output still meets the bug (measured on the tiny preset: the report's job
    counted five times, "19 of 12 steps", exit 0).

    Args:
        outputs: the rule's output paths (``rules.<name>.output``), relative to the working directory.
        ran_before: a file that exists once the rule has run (``rules.<name>.benchmark``).

    Returns:
        The missing outputs (paths as given), ``[]`` when none is missing or the rule never ran.
    """
    if not Path(str(ran_before)).exists():
        return []
    return [str(f) for f in outputs if not Path(str(f)).exists()]


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity, which SLURM and containers restrict),
    else ``os.cpu_count()``."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def capped_cores(requested: int | None, available: int | None = None) -> int | None:
    """The core budget a LOCAL Snakemake run may hand out: ``min(requested, machine cores)``.

    ``--cores`` above the machine's cores only starts more one-thread jobs than there are cores;
    they then time-slice and evict each other's caches, and the run gets slower, not faster (issue
    10: 8 jobs on 2 cores took 2.3x longer each than time slicing alone explains). ``None`` (no
    budget given) stays ``None``.
    """
    if requested is None:
        return None
    available = machine_cores() if available is None else available
    return max(1, min(int(requested), int(available)))


def cell_gpu_share(preset: dict, dataset: str, cell: str) -> int:
    """Percent of one GPU the training job of ``cell`` asks for (``caanet.cost.gpu_share`` of its FLOPs
    per iteration at the preset's widths, batch size and the dataset's input size). Imports torch
    (once per Snakemake run; the counts are cached per model configuration)."""
    from caanet.cost import gpu_share, train_step_flops
    from caanet.models import ModelConfig

    spec = cell_spec(preset, dataset, cell, 0)
    cfg = train_config(train_settings(preset), preset.get("name", "?"))
    fp = feature_params(preset, dataset)
    model_cfg = ModelConfig.from_spec(
        spec, n_classes=len(scene_labels(preset, dataset)), n_devices=len(preset["datasets"][dataset]["devices"]),
        channels=cfg.channels, device_channels=cfg.device_channels, input_shape=(fp.n_frames, fp.n_mels))
    return gpu_share(train_step_flops(model_cfg, cfg.batch_size))


def shard_gres(share: int, shards_per_gpu: int) -> str:
    """SLURM ``--gres`` for ``share`` percent of a GPU cut into ``shards_per_gpu`` shards (SLURM's
    ``shard`` GRES), e.g. ``shard:2`` for 15 % of 10 shards; ``""`` (no request) when the site has
    no shards (``shards_per_gpu == 0``). A whole card (100 %) asks for every shard of one GPU."""
    import math

    if shards_per_gpu <= 0 or share <= 0:
        return ""
    return f"shard:{max(1, math.ceil(share * shards_per_gpu / 100))}"


# --- script-side helpers -----------------------------------------------------------------------------

def dataset_root_of(path: str | Path) -> Path:
    """The folder holding meta.csv, from a dataset folder or a download rule's ``dataset.json``."""
    import json

    from caanet.errors import DatasetError
    from caanet.io import TEXT_ENCODING

    path = Path(path)
    if path.is_file() and path.suffix == ".json":
        path = Path(json.loads(path.read_text(encoding=TEXT_ENCODING))["root"])
    if (path / "meta.csv").is_file():
        return path
    candidates = sorted(p.parent for p in path.glob("*/meta.csv"))
    if len(candidates) == 1:
        return candidates[0]
    raise DatasetError(
        f"{path}: no meta.csv in this folder" + (f" (several below it: {candidates})" if candidates else "")
        + "; point the dataset at the folder holding audio/, meta.csv and evaluation_setup/"
    )


def script_logger(log_path: str | Path, name: str = "caanet") -> logging.Logger:
    """A logger writing to the rule's log file (and stderr), for workflow scripts."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    for handler in (logging.FileHandler(log_path, mode="a"), logging.StreamHandler(sys.stderr)):
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    return logger


@contextlib.contextmanager
def logged(log_path: str | Path, name: str = "caanet"):
    """Run a workflow script's body with a logger; an error is written to the log, then re-raised."""
    logger = script_logger(log_path, name)
    try:
        yield logger
    except Exception:
        logger.exception("failed")
        raise
