"""Load (and export) checkpoints of the authors' reference code (EIHW/CAANet_DCASE_ASC).

The reference stores one ``state_dict`` per class (14 near-identical classes); we map its keys
onto :class:`caanet.models.CAANet` one to one (facts in ``shared/reference/README.md``):

=================================  ==========================================
reference key                      caanet key
=================================  ==========================================
``emb.conv{i}.weight``             ``backbone.blocks.{i-1}.conv.weight``
``emb.bn{i}.*``                    ``backbone.blocks.{i-1}.bn.*``
``emb.cond.*`` / ``emb.cond{L}.*``  ``conditioning.*`` (layer 1 has no digit)
``attention.{att,cla}.*``          ``head.{att,cla}.*``
``fc_final.*``                     ``head.fc.*``
``cnn_device.conv{j}.weight``      ``device_net.blocks.{j-1}.conv.weight``
``cnn_device.bn{j}.*``             ``device_net.blocks.{j-1}.bn.*``
``cnn_device.fc1.*``               ``device_net.fc.*``
=================================  ==========================================

Kernels are ``(C_out, C_in, k_time, k_mel)`` in both (our input is ``(batch, time, mel)`` too)
and the flatten/ROI linear layers read ``(channel, time, mel)`` in the same order, so no tensor
is transposed. Loaded models run in ``reference`` fidelity (its attention maths).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from caanet.errors import ConfigError
from caanet.models import CAANet, ModelConfig, build_model
from caanet.spec import LAYERS, POOLINGS, STRATEGIES, TOPOLOGIES
from caanet.vocab import STRATEGY_REGISTRY

_STRATEGY_TO_SOURCE = {s.name: s.device_source for s in STRATEGY_REGISTRY}

# the reference's class names: a topology prefix and a pooling suffix
_CLASS_PREFIXES = (("CnnAtrous_", "atrous"), ("CnnNoPooling_", "cnn_nopool"), ("DecisionLevel", "cnn_pool"))
_CLASS_POOLINGS = {
    "atrous": {"Max": "max", "Avg": "avg", "roi": "roi", "roi_attention": "roi_att", "Attention": "att"},
    "cnn_nopool": {"Max": "max", "Avg": "avg", "roi": "roi", "roi_attention": "roi_att", "Attention": "att"},
    "cnn_pool": {"MaxPooling": "max", "AvgPooling": "avg", "Flatten": "flatten", "SingleAttention": "att"},
}


def parse_reference_network(network: str, pooling: str | None = None) -> tuple[str, str]:
    """``(topology, pooling)`` from our topology name plus ``pooling``, or from a reference class name.

    ``"CnnAtrous_Attention"`` -> ``("atrous", "att")``, ``"DecisionLevelMaxPooling"`` -> ``("cnn_pool", "max")``.
    """
    if network in TOPOLOGIES:
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling={pooling!r} is not one of {list(POOLINGS)} (network={network!r})")
        return network, pooling
    for prefix, topology in _CLASS_PREFIXES:
        if isinstance(network, str) and network.startswith(prefix):
            suffix = network[len(prefix):]
            inferred = _CLASS_POOLINGS[topology].get(suffix)
            if inferred is None:
                break
            if pooling is not None and pooling != inferred:
                raise ConfigError(f"pooling={pooling!r} contradicts network={network!r} (which is {inferred!r})")
            return topology, inferred
    known = [p + s for p, t in _CLASS_PREFIXES for s in _CLASS_POOLINGS[t]]
    raise ConfigError(f"network={network!r} is neither one of {list(TOPOLOGIES)} nor a reference class {known}")


def _reference_key(key: str, cond_layer: int | None) -> str:
    """The reference's name of our state-dict ``key``."""
    rules = (
        (r"backbone\.blocks\.(\d+)\.(conv|bn)\.(.+)", lambda m: f"emb.{m[2]}{int(m[1]) + 1}.{m[3]}"),
        (r"conditioning\.(.+)", lambda m: f"emb.cond{'' if cond_layer == 1 else cond_layer}.{m[1]}"),
        (r"head\.(att|cla)\.(.+)", lambda m: f"attention.{m[1]}.{m[2]}"),
        (r"head\.fc\.(.+)", lambda m: f"fc_final.{m[1]}"),
        (r"device_net\.blocks\.(\d+)\.(conv|bn)\.(.+)", lambda m: f"cnn_device.{m[2]}{int(m[1]) + 1}.{m[3]}"),
        (r"device_net\.fc\.(.+)", lambda m: f"cnn_device.fc1.{m[1]}"),
    )
    for pattern, name in rules:
        m = re.fullmatch(pattern, key)
        if m:
            return name(m)
    raise ConfigError(f"no reference name for parameter {key!r}")


def reference_key_map(model: CAANet) -> dict[str, str]:
    """``{our key: reference key}`` for every entry of ``model.state_dict()``."""
    return {k: _reference_key(k, model.config.cond_layer) for k in model.state_dict()}


def export_reference_state_dict(model: CAANet) -> dict[str, torch.Tensor]:
    """``model``'s weights under the reference's key names (the inverse of :func:`load_reference_state_dict`)."""
    names = reference_key_map(model)
    return {names[k]: v.detach().clone() for k, v in model.state_dict().items()}


def _numpy_safe_globals() -> list:
    """The NumPy callables and classes a checkpoint's metadata may reference (scalars such as an
    ``np.int64`` iteration, small arrays, dtypes), each under the names NumPy 1 (``numpy.core``) and
    NumPy 2 (``numpy._core``) pickle them with: the allowlist for ``torch.load(weights_only=True)``."""
    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # NumPy 1
        from numpy.core import multiarray
    allow: list = [np.ndarray, np.dtype]
    for name in ("scalar", "_reconstruct"):
        fn = getattr(multiarray, name)
        allow += [(fn, f"numpy.core.multiarray.{name}"), (fn, f"numpy._core.multiarray.{name}")]
    dtypes = getattr(np, "dtypes", None)  # NumPy >= 1.25 pickles a dtype's class
    if dtypes is not None:
        allow += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return allow


def load_checkpoint_file(path) -> object:
    """``torch.load`` of a file written by any PyTorch since 0.4 (zip or legacy serialisation, Python 2
    or 3 pickles), safely: ``weights_only=True`` with only NumPy scalars, arrays and dtypes allowed
    beyond tensors (:func:`_numpy_safe_globals`). Python 2 byte strings are decoded as Latin-1, as
    NumPy's own loaders do. Raises :class:`ConfigError` naming ``path`` when the file cannot be read so.
    """
    import warnings

    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(_numpy_safe_globals()):
            # "pickle_load_args only works if weights_only=False": the encoding does reach the
            # weights-only unpickler (Python 2 str of a legacy file); silence the warning
            warnings.filterwarnings("ignore", message="pickle_load_args only works")
            return torch.load(path, map_location="cpu", weights_only=True, encoding="latin1")
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ConfigError(f"reference checkpoint {path}: cannot be read with weights_only=True ({e})") from e


def read_reference_checkpoint(state_dict_or_path) -> dict[str, torch.Tensor]:
    """A reference ``state_dict`` from a dict, a ``state_dict.pt`` or a training checkpoint ``md_*_iters.tar``.

    Files are read by :func:`load_checkpoint_file`. A training checkpoint's ``state_dict`` is taken
    (its ``iteration``, ``optimizer`` and any NumPy metadata are ignored); a ``module.`` prefix
    (``nn.DataParallel``) is removed from every key.
    """
    where = "state dict"
    sd = state_dict_or_path
    if isinstance(sd, (str, os.PathLike)):
        where = str(sd)
        if not Path(sd).is_file():
            raise ConfigError(f"reference checkpoint {where}: no such file")
        sd = load_checkpoint_file(sd)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]  # training checkpoint {"iteration", "state_dict", "optimizer"}
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ConfigError(f"reference checkpoint {where}: not a state dict of tensors")
    if not all(isinstance(k, str) for k in sd):
        raise ConfigError(f"reference checkpoint {where}: keys are not names ({[k for k in sd if not isinstance(k, str)][:3]})")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    return dict(sd)


def missing_keys_allowed(key: str) -> bool:
    """Whether a reference checkpoint may lack ``key`` (a reference name): BatchNorm's
    ``num_batches_tracked`` buffer, which PyTorch 0.4.0 (the authors' pinned version) did not have
    (added in 0.4.1; it only counts batches, and matters only with ``momentum=None``, which neither
    the reference nor caanet uses). The model keeps its own value (zero) for it."""
    return key.endswith(".num_batches_tracked")


def _infer_widths(sd: dict[str, torch.Tensor]) -> dict:
    """Scene and device channel widths and the kernel size, read from the conv weights."""
    def widths(prefix):
        out, i = [], 1
        while f"{prefix}conv{i}.weight" in sd:
            out.append(int(sd[f"{prefix}conv{i}.weight"].shape[0]))
            i += 1
        return tuple(out)

    if "emb.conv1.weight" not in sd:
        raise ConfigError(f"reference state dict has no 'emb.conv1.weight' (keys: {sorted(sd)[:8]}...)")
    found = {"channels": widths("emb."), "kernel_size": int(sd["emb.conv1.weight"].shape[-1])}
    if "cnn_device.conv1.weight" in sd:
        found["device_channels"] = widths("cnn_device.")
    return found


def load_reference_state_dict(
    state_dict_or_path,
    *,
    network: str,
    pooling: str | None = None,
    strategy: str,
    cond_layer: int | None,
    n_classes: int = 10,
    n_devices: int = 3,
    input_shape: tuple[int, int] = (320, 64),
) -> CAANet:
    """A :class:`CAANet` in eval mode and ``reference`` fidelity carrying the authors' weights.

    ``network``: ``cnn_pool``/``cnn_nopool``/``atrous`` (then ``pooling`` is required) or a reference
    class name such as ``CnnAtrous_Attention``. ``strategy`` picks the device source
    (multi_task: CNN-d; teacher_forcing: oracle; joint/single_device: none) and, for CNN-d, the device
    input (the authors': argmax; the posterior strategies' weights, exported by caanet, load too). Every reference key must
    be used and every parameter filled, else :class:`ConfigError` lists the missing/unexpected keys;
    only buffers PyTorch 0.4.0 did not write may be missing (:func:`missing_keys_allowed`).
    """
    topology, pooling = parse_reference_network(network, pooling)
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy={strategy!r} is not one of {list(STRATEGIES)}")
    source = _STRATEGY_TO_SOURCE[strategy]
    if source == "none":
        cond_layer = None
    elif cond_layer not in LAYERS:
        raise ConfigError(f"cond_layer={cond_layer!r} must be one of {list(LAYERS)} for strategy {strategy!r}")
    sd = read_reference_checkpoint(state_dict_or_path)
    cfg = ModelConfig(
        topology=topology,
        pooling=pooling,
        n_classes=n_classes,
        n_devices=n_devices,
        cond_layer=cond_layer,
        device_source=source,
        device_input=STRATEGY_REGISTRY[strategy].device_input,
        input_shape=tuple(input_shape),
        fidelity="reference",
        **_infer_widths(sd),
    )
    model = build_model(cfg)
    names = reference_key_map(model)
    missing = sorted(theirs for theirs in names.values() if theirs not in sd and not missing_keys_allowed(theirs))
    unexpected = sorted(set(sd) - set(names.values()))
    if missing or unexpected:
        raise ConfigError(
            f"reference checkpoint does not fit {topology}-{pooling}-{strategy} (cond_layer={cond_layer}): "
            f"missing keys {missing}, unexpected keys {unexpected}"
        )
    ours = model.state_dict()
    wrong = [
        f"{theirs} {tuple(sd[theirs].shape)} vs {tuple(ours[k].shape)}"
        for k, theirs in names.items()
        if theirs in sd and sd[theirs].shape != ours[k].shape
    ]
    if wrong:
        raise ConfigError(f"reference checkpoint: shape mismatch (checkpoint vs model): {wrong}")
    model.load_state_dict({k: sd[theirs] if theirs in sd else ours[k] for k, theirs in names.items()}, strict=True)
    return model.eval()
