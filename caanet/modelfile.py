"""Self-describing model files: everything needed to use a trained CAA-Net on a recording, in one file.

A ``model.pt`` written by :func:`caanet.training.train_cell` is a plain dict (tensors, dicts, lists,
str, int, float, bool, None only), so it loads with ``torch.load(path, weights_only=True)``:

=====================  ===========================================================================
key                    content
=====================  ===========================================================================
``format``             ``"caanet-model"``; ``format_version`` :data:`FORMAT_VERSION`
``state_dict``         the weights of :class:`caanet.models.CAANet`
``model_config``       :meth:`caanet.models.ModelConfig.to_dict` (topology, pooling, device source,
                       conditioning layer, widths, ``input_shape`` = (frames, mels), fidelity)
``spec``, ``cell_id``  the table cell (:class:`caanet.spec.CellSpec`) it was trained for
``train_config``       :meth:`caanet.training.TrainConfig.to_dict`
``feature_params``     :meth:`caanet.features.FeatureParams.to_dict` of the cache it was trained on
``norm_mean/norm_std`` per-mel-bin statistics of its training clips, float32 ``(n_mels,)``
``scene_labels``       class names in output order; ``device_labels`` device names in CNN-d/one-hot order
                       (the ``n_devices`` devices seen in training); ``unseen_device_labels`` the
                       dataset's devices absent from training (:mod:`caanet.devices`), fed to the
                       model as indices ``n_devices + k`` under its ``unseen_device`` policy
``fidelity``           ``paper`` or ``reference`` (:mod:`caanet.fidelity`)
``caanet_version``     the package version; ``code_version`` the workflow's hash of the training code
``training``           a summary of training and test metrics (plain numbers; :func:`training_summary`)
=====================  ===========================================================================

:func:`load_model_file` reads such a file (and the older files without ``format``, which lack the
feature parameters, with an error saying so); :func:`load_reference_model` wraps a checkpoint of the
authors' code (:mod:`caanet.compat`) with the same interface, the architecture given as options.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import caanet
from caanet.errors import ConfigError

FORMAT = "caanet-model"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("state_dict", "model_config", "feature_params", "norm_mean", "norm_std", "scene_labels",
                 "device_labels", "fidelity")
SUMMARY_EVALUATION_KEYS = ("mean_all", "mean_bc", "device_accuracy", "iterations", "selected_iteration",
                           "selection", "train_seconds", "n_train_clips", "n_validation_clips", "n_test", "lambda_switched_at",
                           "test_device_labels_used", "complexity")


def _plain(obj):
    """``obj`` as JSON-plain data (dicts, lists, str, int, float, bool, None): numpy scalars become
    Python numbers, tuples lists, non-finite floats None; what ``weights_only`` loading accepts."""
    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, (set, tuple)):
            return list(o)
        raise TypeError(f"{type(o).__name__} is not plain data")

    text = json.dumps(obj, default=default, allow_nan=True)
    out = json.loads(text)

    def finite(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, list):
            return [finite(v) for v in x]
        if isinstance(x, dict):
            return {k: finite(v) for k, v in x.items()}
        return x

    return finite(out)


def training_summary(evaluation: dict | None, metrics: list[dict] | None) -> dict:
    """The training/test figures a model file carries for ``caanet inspect``.

    From ``evaluation.json`` (:data:`SUMMARY_EVALUATION_KEYS` and per-device accuracy) and the last
    ``metrics.csv`` row (final training losses). Plain data only.
    """
    evaluation = evaluation or {}
    out = {k: evaluation.get(k) for k in SUMMARY_EVALUATION_KEYS if k in evaluation}
    per_device = evaluation.get("per_device") or {}
    out["accuracy_by_device"] = {d: (v or {}).get("accuracy") for d, v in per_device.items()}
    if metrics:
        last = metrics[-1]
        out["final"] = {k: last.get(k) for k in ("iteration", "loss", "loss_scene", "loss_device", "lr", "lambda")}
    return _plain(out)


def model_payload(*, model, model_config, spec, train_config, feature_params, norm_mean, norm_std, scene_labels,
                  device_labels, code_version=None, summary: dict | None = None) -> dict:
    """The self-describing dict saved as ``model.pt`` (keys in the module docstring).

    ``model``: a :class:`caanet.models.CAANet`; ``model_config``/``spec``/``train_config``/
    ``feature_params``: the objects (with ``to_dict``) or dicts; ``norm_mean``/``norm_std``: arrays
    of length ``n_mels``. Raises ConfigError when the labels or statistics do not fit the model.
    """
    def as_dict(obj):
        return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)

    mc = as_dict(model_config)
    spec_d = as_dict(spec) if spec is not None else None
    fp = as_dict(feature_params)
    mean = np.asarray(norm_mean, dtype=np.float32).reshape(-1)
    std = np.asarray(norm_std, dtype=np.float32).reshape(-1)
    n_mels = int(mc["input_shape"][1])
    if mean.shape != (n_mels,) or std.shape != (n_mels,):
        raise ConfigError(f"model file: norm_mean/norm_std have shapes {mean.shape}/{std.shape}, the model takes "
                          f"{n_mels} mel bins")
    if int(fp.get("n_mels", n_mels)) != n_mels:
        raise ConfigError(f"model file: feature_params.n_mels={fp.get('n_mels')} but the model takes {n_mels} mel bins")
    # device_labels is seen-first (caanet.training.seen_devices_first): the model's devices, then unseen ones
    if len(scene_labels) != mc["n_classes"] or len(device_labels) < mc["n_devices"]:
        raise ConfigError(f"model file: {len(scene_labels)} scene / {len(device_labels)} device labels for a model "
                          f"of {mc['n_classes']} classes / {mc['n_devices']} devices")
    cell_id = None
    if spec is not None:
        cell_id = spec.cell_id if hasattr(spec, "cell_id") else None
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "model_config": _plain(mc),
        "spec": _plain(spec_d),
        "cell_id": cell_id,
        "train_config": _plain(as_dict(train_config)) if train_config is not None else None,
        "feature_params": _plain(fp),
        "norm_mean": torch.from_numpy(mean.copy()),
        "norm_std": torch.from_numpy(std.copy()),
        "scene_labels": [str(s) for s in scene_labels],
        "device_labels": [str(d) for d in device_labels[:mc["n_devices"]]],
        "unseen_device_labels": [str(d) for d in device_labels[mc["n_devices"]:]],
        "fidelity": str(mc.get("fidelity", "paper")),
        "caanet_version": caanet.__version__,
        "code_version": code_version,
        "training": _plain(summary or {}),
    }


def write_training_model_file(path, *, feature_params: dict, spec, train_config, model, model_config, norm_mean,
                              norm_std, scene_labels, device_labels, evaluation: dict, metrics: list[dict]) -> Path:
    """Write the ``model.pt`` of a finished training job (:func:`caanet.training.train_cell`).

    ``feature_params`` are those of the cache it trained on (``FeatureParams.to_dict()``, read by the
    job's one open of the cache), the code version and the metrics summary come from its
    ``evaluation`` and ``metrics`` rows.
    """
    payload = model_payload(
        model=model, model_config=model_config, spec=spec, train_config=train_config,
        feature_params=dict(feature_params), norm_mean=norm_mean, norm_std=norm_std,
        scene_labels=scene_labels, device_labels=device_labels, code_version=evaluation.get("code_version"),
        summary=training_summary(evaluation, metrics))
    return save_model_file(path, payload)


def save_model_file(path, payload: dict) -> Path:
    """Write ``payload`` (from :func:`model_payload`) to ``path`` atomically; return the path."""
    from caanet.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


@dataclass
class ModelFile:
    """A loaded model and what it needs to classify audio.

    ``model``: :class:`caanet.models.CAANet` in eval mode on the CPU; ``params``:
    :class:`caanet.features.FeatureParams`; ``mean``/``std``: float32 ``(n_mels,)``; ``kind``:
    ``"caanet"`` (a self-describing file) or ``"reference"`` (an authors' checkpoint).
    """

    path: Path
    kind: str
    model: object
    config: object
    params: object
    mean: np.ndarray
    std: np.ndarray
    scene_labels: list
    device_labels: list
    fidelity: str
    unseen_device_labels: list = field(default_factory=list)
    cell_id: str | None = None
    spec: dict | None = None
    train_config: dict | None = None
    caanet_version: str | None = None
    code_version: str | None = None
    training: dict = field(default_factory=dict)

    @property
    def device_source(self) -> str:
        """``none``, ``oracle`` (teacher forcing: the device is an input) or ``predicted`` (CNN-d)."""
        return self.config.device_source

    @property
    def clip_seconds(self) -> float:
        return float(self.params.clip_seconds)

    def describe(self) -> dict:
        """Plain-data description (``caanet inspect``)."""
        from caanet.complexity import model_file_complexity

        return _plain({
            "path": str(self.path), "kind": self.kind, "cell_id": self.cell_id, "spec": self.spec,
            "model_config": self.config.to_dict(), "fidelity": self.fidelity,
            "scene_labels": self.scene_labels, "device_labels": self.device_labels,
            "unseen_device_labels": self.unseen_device_labels,
            "feature_params": self.params.to_dict(), "input_shape": list(self.config.input_shape),
            "n_parameters": int(sum(p.numel() for p in self.model.parameters())),
            "complexity": model_file_complexity(self),  # DCASE's counts (caanet.complexity), measured now
            "train_config": self.train_config, "caanet_version": self.caanet_version,
            "code_version": self.code_version,
            "training": {k: v for k, v in self.training.items() if k != "complexity"},  # shown once, above
            "norm_mean_range": [float(self.mean.min()), float(self.mean.max())],
            "norm_std_range": [float(self.std.min()), float(self.std.max())],
        })


def _read(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such model file")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder without a model.pt, not a model file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ConfigError(f"{path}: not a model file readable with torch.load(weights_only=True) "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); an authors' "
                          "checkpoint is read with --network and --strategy") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{path}: not a model file (holds a {type(obj).__name__}, not a dict)")
    return obj


def is_reference_checkpoint(obj: dict) -> bool:
    """Whether a loaded dict is an authors' state dict or training checkpoint (no caanet keys)."""
    sd = obj.get("state_dict") if isinstance(obj.get("state_dict"), dict) and "model_config" not in obj else obj
    return isinstance(sd, dict) and any(str(k).removeprefix("module.").startswith("emb.") for k in sd)


def _refuse(path, key: str, what: str) -> ConfigError:
    """The one form of a model file's inconsistency: ``<file>: key '<key>': <what>``."""
    return ConfigError(f"{path}: key '{key}': {what}")


def check_labels(path, key: str, labels, *, n_outputs: int | None, layer: str) -> list[str]:
    """``labels`` as a list of str, refused (ConfigError ``<file>: key '<key>': ...``) unless they are a
    list of distinct non-empty strings, ``n_outputs`` of them when given (one per output of ``layer``)."""
    if not isinstance(labels, (list, tuple)):
        raise _refuse(path, key, f"must be a list of names, got {type(labels).__name__}")
    bad = [x for x in labels if not isinstance(x, str) or not x.strip()]
    if bad:
        raise _refuse(path, key, f"every label must be a non-empty string, got {bad[0]!r}")
    dup = sorted({x for x in labels if list(labels).count(x) > 1})
    if dup:
        raise _refuse(path, key, f"duplicate label(s) {dup}")
    if n_outputs is not None and len(labels) != n_outputs:
        raise _refuse(path, key, f"{len(labels)} label(s) {list(labels)} for the {n_outputs} outputs of {layer}")
    return list(labels)


def check_statistics(path, mean, std, n_mels: int, *, keys=("norm_mean", "norm_std")) -> tuple[np.ndarray, np.ndarray]:
    """The per-mel normalisation as float32 ``(n_mels,)`` arrays, refused unless both have that shape,
    are finite, and ``std > 0``."""
    out = []
    for key, value in zip(keys, (mean, std)):
        a = np.asarray(value, dtype=np.float32)
        if a.shape != (n_mels,):
            raise _refuse(path, key, f"must be {n_mels} values (one per mel bin), got shape {list(a.shape)}")
        if not np.isfinite(a).all():
            raise _refuse(path, key, f"holds non-finite values (NaN or inf) at mel bin(s) "
                                     f"{np.flatnonzero(~np.isfinite(a))[:8].tolist()}")
        out.append(a)
    if not (out[1] > 0).all():
        raise _refuse(path, keys[1], f"must be > 0, got {float(out[1].min())} at mel bin {int(np.argmin(out[1]))}")
    return out[0], out[1]


def check_weights(path, state_dict, *, key: str = "state_dict") -> None:
    """Refuse a state dict holding a non-finite (NaN or inf) floating-point value, naming the tensor."""
    for name, t in state_dict.items():
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise _refuse(path, f"{key}.{name}", f"holds {int((~torch.isfinite(t)).sum())} non-finite value(s) "
                                                 "(NaN or inf)")


def check_device_labels(path, cfg, device_labels, unseen_labels, *, key: str = "device_labels") -> tuple[list, list]:
    """Device labels for the model's device input/output: one per device of CNN-d's output layer
    (``predicted``) or of the one-hot conditioning (``oracle``), none missing, no duplicate (also
    among the unseen devices); any list for an unconditioned model."""
    n = cfg.n_devices if cfg.device_source != "none" else None
    layer = ("CNN-d's device output layer" if cfg.device_source == "predicted"
             else "the device conditioning (one-hot input)")
    if n is not None and isinstance(device_labels, (list, tuple)) and not device_labels:
        raise _refuse(path, key, f"no device labels for a model with device source {cfg.device_source!r}, "
                                 f"whose {layer} has {n} devices")
    devices = check_labels(path, key, device_labels, n_outputs=n, layer=layer)
    unseen = check_labels(path, "unseen_device_labels", list(unseen_labels or []), n_outputs=None, layer="")
    both = sorted(set(devices) & set(unseen))
    if both:
        raise _refuse(path, "unseen_device_labels", f"label(s) {both} are also among device_labels")
    return devices, unseen


def load_model_file(path) -> ModelFile:
    """Load a self-describing ``model.pt`` (weights_only) into a :class:`ModelFile`; ``path`` may also
    be a cell's output folder holding one.

    Raises ConfigError naming the file and the missing/bad key: not a dict, an authors' checkpoint
    (load it with :func:`load_reference_model`), a file written before model files carried their
    feature parameters, weights that do not fit the configuration.
    """
    from caanet.features import FeatureParams
    from caanet.models import ModelConfig, build_model

    path = Path(path)
    if path.is_dir() and (path / "model.pt").is_file():  # a cell's output folder
        path = path / "model.pt"
    obj = _read(path)
    if obj.get("format") != FORMAT:
        if is_reference_checkpoint(obj):
            raise ConfigError(f"{path}: an authors' (reference code) checkpoint; give its architecture with "
                              "--network, --strategy and --cond-layer, and --norm-from a feature cache")
        missing = [k for k in REQUIRED_KEYS if k not in obj]
        raise ConfigError(f"{path}: not a self-describing caanet model file (format {obj.get('format')!r}; "
                          f"missing keys {missing}); retrain the cell with this version of caanet")
    if obj.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"{path}: model file format_version {obj.get('format_version')!r}, this caanet reads "
                          f"{FORMAT_VERSION}")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise ConfigError(f"{path}: model file lacks key(s) {missing}")
    try:
        cfg = ModelConfig.from_dict(dict(obj["model_config"]))
        params = FeatureParams.from_dict(obj["feature_params"])
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    model = build_model(cfg)
    try:
        model.load_state_dict(obj["state_dict"], strict=True)
    except RuntimeError as e:
        raise ConfigError(f"{path}: the weights do not fit its model_config ({str(e).splitlines()[0]})") from None
    if params.n_frames != cfg.input_shape[0] or params.n_mels != cfg.input_shape[1]:
        raise ConfigError(f"{path}: feature_params give ({params.n_frames}, {params.n_mels}) frames x mels, the "
                          f"model_config.input_shape is {list(cfg.input_shape)}")
    check_weights(path, obj["state_dict"])
    mean, std = check_statistics(path, obj["norm_mean"], obj["norm_std"], params.n_mels)
    scenes = check_labels(path, "scene_labels", obj["scene_labels"], n_outputs=cfg.n_classes,
                          layer="the scene output layer")
    devices, unseen = check_device_labels(path, cfg, obj["device_labels"], obj.get("unseen_device_labels"))
    return ModelFile(
        path=path, kind="caanet", model=model.eval(), config=cfg, params=params, mean=mean, std=std,
        scene_labels=scenes, device_labels=devices, unseen_device_labels=unseen,
        fidelity=str(obj["fidelity"]), cell_id=obj.get("cell_id"), spec=obj.get("spec"),
        train_config=obj.get("train_config"), caanet_version=obj.get("caanet_version"),
        code_version=obj.get("code_version"), training=obj.get("training") or {},
    )


def normalisation_from_cache(cache_path) -> tuple[np.ndarray, np.ndarray, object, list, list]:
    """``(mean, std, FeatureParams, scene_labels, device_labels)`` from a feature cache's training split,
    computed as the pipeline does (:func:`caanet.data.loader.fit_normalisation` over all its training clips)."""
    from caanet.data.loader import fit_normalisation, load_features

    fs = load_features(cache_path, split="train")
    if len(fs.x) == 0:
        raise ConfigError(f"{cache_path}: the feature cache has no training clips to take statistics from")
    mean, std = fit_normalisation(np.asarray(fs.x))
    return mean, std, fs.params, list(fs.scene_labels), list(fs.device_labels)


def load_reference_model(path, *, network: str, pooling: str | None = None, strategy: str,
                         cond_layer: int | None = None, norm_from=None) -> ModelFile:
    """An authors' checkpoint (``state_dict.pt`` or ``md_*_iters.tar``) as a :class:`ModelFile`.

    The architecture is given as :func:`caanet.compat.load_reference_state_dict` takes it; the
    authors standardise each mel bin with their training split's statistics, which the checkpoint
    does not hold: ``norm_from`` names a feature cache (``.h5``) whose training split supplies them,
    with its feature parameters and labels. Raises ConfigError naming the option or file.
    """
    from caanet.compat import load_reference_state_dict

    path = Path(path)
    if norm_from is None:
        raise ConfigError(f"{path}: an authors' checkpoint holds no normalisation statistics; pass --norm-from "
                          "a feature cache (.h5) of the data it was trained on")
    mean, std, params, scenes, devices = normalisation_from_cache(norm_from)
    mean, std = check_statistics(norm_from, mean, std, params.n_mels, keys=("logmel (training split's per-mel mean)",
                                                                           "logmel (training split's per-mel std)"))
    scenes = check_labels(norm_from, "scene_labels", scenes, n_outputs=None, layer="")
    devices = check_labels(norm_from, "device_labels", devices, n_outputs=None, layer="")
    model = load_reference_state_dict(
        str(path), network=network, pooling=pooling, strategy=strategy, cond_layer=cond_layer,
        n_classes=len(scenes), n_devices=len(devices), input_shape=(params.n_frames, params.n_mels))
    check_weights(path, model.state_dict())
    return ModelFile(path=path, kind="reference", model=model.eval(), config=model.config, params=params,
                     mean=mean, std=std, scene_labels=scenes, device_labels=devices, fidelity="reference",
                     cell_id=None, training={"norm_from": str(norm_from)})


def is_model_file(path) -> bool:
    """Cheap check: a zip (torch >= 1.6) or a legacy pickle, not HDF5."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return False
    return head.startswith(b"PK") or head[:2] == b"\x80\x02"


__all__ = ["FORMAT", "FORMAT_VERSION", "ModelFile", "check_device_labels", "check_labels", "check_statistics",
           "check_weights", "is_model_file", "is_reference_checkpoint", "load_model_file",
           "load_reference_model", "model_payload", "normalisation_from_cache", "save_model_file",
           "training_summary", "write_training_model_file"]
