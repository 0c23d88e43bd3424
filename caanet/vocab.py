"""The one vocabulary: every topology, pooling head and training strategy, registered once.

In the style of torchvision's ``models/_api.py``: each entry is registered once, with its display
name and what the rest of the code needs to know about it, and everything else is derived from the
registries: :mod:`caanet.spec`'s tuples and the cell-id regex (:func:`cell_id_regex`), the
``cell=`` wildcard constraint of ``rules/common.smk``, the display names of the tables and figures
(``caanet.render.tables.*_NAMES``), the backbones' dilations (``caanet.models.backbones``), the
heads' builders (``caanet.models.heads.build_head``) and the JSON schema's enums (a test asserts
they are equal: ``tests/test_vocab.py``).

Adding a pooling head takes one :func:`register_pooling` call below plus its builder (an
``nn.Module`` factory in :mod:`caanet.models.heads`, named here by ``"module:function"`` so that
this module, imported by the workflow at parse time, does not import torch), plus the schema's
``pooling`` enum (which the test keeps equal to this registry). A device-robustness method (Table V,
beyond the paper) is one :func:`register_method` call naming its code (:mod:`caanet.methods`).

The smaller vocabularies (unseen-device policies, lambda rules, fidelities, conditioning layers,
layer selections, dataset sources) are plain tuples here, each defined once.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Callable, Generic, Iterator, TypeVar

from caanet.errors import SpecError


@dataclass(frozen=True)
class Topology:
    """A scene-branch topology (Sec. III-C, Fig. 3): per-block dilation, and whether a 2x2 max
    pooling follows each of the four blocks."""

    name: str
    display: str
    dilations: tuple[int, ...]
    pool: bool


@dataclass(frozen=True)
class Pooling:
    """A global pooling head (Sec. III-D). ``builder`` is ``"module:function"``, a function
    ``(in_channels, n_classes, map_shape, *, roi_size, fidelity) -> nn.Module`` (see
    :func:`caanet.models.heads.build_head`); ``roi``: the head pools ``roi_size`` regions first (its
    ROI must fit the feature map); ``attention``: it returns an attention map (Eq. 5-6); ``cam``: a
    linear layer over a global channel pooling, so a class activation map explains it
    (:mod:`caanet.explain`)."""

    name: str
    display: str
    builder: str
    roi: bool = False
    attention: bool = False
    cam: bool = False

    def build_fn(self) -> Callable:
        """The builder function (imports its module: torch)."""
        module, _, func = self.builder.partition(":")
        return getattr(importlib.import_module(module), func)


@dataclass(frozen=True)
class Strategy:
    """A training strategy (Sec. III-B, Fig. 2). ``device_source``: how the scene network gets its
    device: ``none``, the true label (``oracle``: teacher forcing) or CNN-d's prediction
    (``predicted``: multi-task); ``lambda_rule``: Eq. 2's rule of a multi-task strategy (``None``
    otherwise); ``device_input``: how CNN-d's prediction becomes Eq. 1's device vector
    (:data:`DEVICE_INPUTS`: ``argmax``, the paper's one-hot, through which no gradient flows, or
    ``posterior``, CNN-d's differentiable posterior; ``None`` for strategies without CNN-d);
    ``in_paper``: one of the paper's four columns (Tables II/III, the default grid)."""

    name: str
    display: str
    device_source: str = "none"
    lambda_rule: str | None = None
    in_paper: bool = True
    device_input: str | None = None

    @property
    def conditional(self) -> bool:
        """Whether the scene network is conditioned on a device (needs a ``cond_layer``)."""
        return self.device_source != "none"


DERIVED_USES = ("replace", "augment")
"""How a training job uses a method's derived feature cache: it trains and tests on it instead of the
plain cache (``replace``: spectrum correction), or draws training inputs from it beside the plain
cache (``augment``: device impulse response augmentation)."""


@dataclass(frozen=True)
class Method:
    """A device-robustness method (Table V, beyond the paper), combined with a training strategy.

    Each hook is ``"module:name"`` (imported only where used, so the workflow parses without torch):

    * ``settings``: a frozen dataclass of the method's settings (``methods.<name>`` of a preset; its
      types, ranges and defaults are the schema's ``#/$defs/methods/properties/<name>``);
    * ``transform``: a class ``(settings, *, seed, data, derived) -> callable`` whose instance maps a
      training batch ``(x, positions, iteration) -> x`` (training only; its randomness a pure function
      of the cell's seed and the iteration, so a resumed job is exact);
    * ``fit``: ``(audio_index, params, settings, *, reference_device, out_path, log)``: fits what the
      method needs from the TRAINING split (rule ``fit_method``);
    * ``features``: ``(audio_index, params, settings, fit_path, out_path, *, dataset, scene_labels,
      device_labels, reference_device, n_jobs, log)``: builds its derived feature cache (rule
      ``build_method_features``), used as ``derived`` says (:data:`DERIVED_USES`).

    ``test_device_labels``: the method reads each TEST clip's true device label (oracle information,
    like teacher forcing; evaluation.json says so). ``device_sources``: the strategies it combines with,
    by their device source (single-device training never: a method for robustness across devices needs
    several); ``combination``: why, and what CNN-d sees. ``citation``: the method's source.
    """

    name: str
    display: str
    settings: str | None = None
    transform: str | None = None
    fit: str | None = None
    features: str | None = None
    derived: str | None = None
    test_device_labels: bool = False
    device_sources: tuple[str, ...] = ("none", "oracle", "predicted")
    combination: str = ""
    citation: str = ""

    def load(self, hook: str):
        """The object named by hook ``hook`` (``settings``, ``transform``, ``fit`` or ``features``); imports its
        module. None when the method has no such hook."""
        ref = getattr(self, hook)
        if ref is None:
            return None
        module, _, name = ref.partition(":")
        return getattr(importlib.import_module(module), name)

    def combines_with(self, strategy: str) -> bool:
        """Whether the method is meaningful with ``strategy`` (a registered strategy name): the paper's
        training (method ``none``) with every strategy, any other method with the strategies of its
        ``device_sources`` except single-device training."""
        if self.name == "none":
            return True
        return strategy != "single_device" and STRATEGY_REGISTRY[strategy].device_source in self.device_sources


E = TypeVar("E")


class Registry(Generic[E]):
    """Entries of one kind by name, in registration order (the paper's order)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, E] = {}

    def register(self, entry: E) -> E:
        """Add ``entry``; a second entry of the same name raises ValueError."""
        name = entry.name  # type: ignore[attr-defined]
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"{self.kind} {name!r}: names are lower-case letters, digits and '_'")
        self._entries[name] = entry
        return entry

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def display_names(self) -> dict[str, str]:
        """``{name: display name}`` (the tables' and figures' labels)."""
        return {n: e.display for n, e in self._entries.items()}  # type: ignore[attr-defined]

    def get(self, name: str, error: type[Exception] = SpecError) -> E:
        """The entry ``name``; an unknown name raises ``error`` naming it and the known ones."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise error(f"{self.kind} {name!r} is not one of {list(self._entries)}") from None

    def __getitem__(self, name: str) -> E:
        return self.get(name)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[E]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def regex(self) -> str:
        """A regex alternation of the names, longest first (so ``multi_task_learned`` wins over ``multi_task``)."""
        return "|".join(re.escape(n) for n in sorted(self._entries, key=len, reverse=True))


TOPOLOGY_REGISTRY: Registry[Topology] = Registry("topology")
POOLING_REGISTRY: Registry[Pooling] = Registry("pooling")
STRATEGY_REGISTRY: Registry[Strategy] = Registry("strategy")
METHOD_REGISTRY: Registry[Method] = Registry("method")


def register_topology(name: str, display: str, *, dilations: tuple[int, ...], pool: bool) -> Topology:
    return TOPOLOGY_REGISTRY.register(Topology(name, display, tuple(dilations), pool))


def register_pooling(name: str, display: str, builder: str, *, roi: bool = False, attention: bool = False,
                     cam: bool = False) -> Pooling:
    return POOLING_REGISTRY.register(Pooling(name, display, builder, roi=roi, attention=attention, cam=cam))


def register_strategy(name: str, display: str, *, device_source: str = "none", lambda_rule: str | None = None,
                      in_paper: bool = True, device_input: str | None = None) -> Strategy:
    """Register a strategy; a CNN-d strategy (``device_source="predicted"``) needs a ``lambda_rule`` and a
    ``device_input``, the others have neither (ValueError otherwise)."""
    if device_source not in DEVICE_SOURCES:
        raise ValueError(f"strategy {name!r}: device_source {device_source!r} is not one of {list(DEVICE_SOURCES)}")
    if lambda_rule is not None and lambda_rule not in LAMBDA_RULE_NAMES:
        raise ValueError(f"strategy {name!r}: lambda_rule {lambda_rule!r} is not one of {list(LAMBDA_RULE_NAMES)}")
    if device_input is not None and device_input not in DEVICE_INPUTS:
        raise ValueError(f"strategy {name!r}: device_input {device_input!r} is not one of {list(DEVICE_INPUTS)}")
    with_cnn_d = device_source == "predicted"
    if with_cnn_d != (lambda_rule is not None) or with_cnn_d != (device_input is not None):
        raise ValueError(f"strategy {name!r}: lambda_rule and device_input are given exactly for "
                         "device_source='predicted' (CNN-d)")
    return STRATEGY_REGISTRY.register(Strategy(name, display, device_source, lambda_rule, in_paper, device_input))


def register_method(name: str, display: str, *, settings: str | None = None, transform: str | None = None,
                    fit: str | None = None, features: str | None = None, derived: str | None = None,
                    test_device_labels: bool = False, device_sources: tuple[str, ...] = ("none", "oracle", "predicted"),
                    combination: str = "", citation: str = "") -> Method:
    """Register a device-robustness method (:class:`Method`); its name becomes the cell-id suffix
    ``+{name}``. A derived feature cache needs ``features`` and ``derived`` together."""
    if (features is None) != (derived is None):
        raise ValueError(f"method {name!r}: a derived feature cache needs both 'features' and 'derived'")
    if derived is not None and derived not in DERIVED_USES:
        raise ValueError(f"method {name!r}: derived {derived!r} is not one of {list(DERIVED_USES)}")
    if derived == "augment" and transform is None:
        raise ValueError(f"method {name!r}: an 'augment' cache is drawn from by a training transform; give 'transform'")
    bad = [s for s in device_sources if s not in DEVICE_SOURCES]
    if bad:
        raise ValueError(f"method {name!r}: device_sources {bad} are not among {list(DEVICE_SOURCES)}")
    return METHOD_REGISTRY.register(Method(name, display, settings, transform, fit, features, derived,
                                           bool(test_device_labels), tuple(device_sources), combination, citation))


# --- the small vocabularies ----------------------------------------------------------------------

DEVICE_SOURCES = ("none", "oracle", "predicted")
"""How a scene network gets its device (``ModelConfig.device_source``)."""
DEVICE_INPUTS = ("argmax", "posterior")
"""How CNN-d's prediction conditions the scene network (Eq. 1's device vector): the paper's one-hot of
its argmax (no gradient reaches CNN-d from the scene loss), or its posterior (beyond the paper:
differentiable, so the scene loss also trains CNN-d; :func:`caanet.models.conditioning.posterior_input`)."""
LAMBDA_RULE_NAMES = ("switch", "learned")
"""Eq. 2's lambda rules: the paper's sticky switch, or homoscedastic uncertainty weighting
(beyond the paper: Kendall, Gal and Cipolla, CVPR 2018)."""
UNSEEN_DEVICE_POLICIES = ("predicted", "zero", "uniform")
"""What a conditioned model gets for a test clip of a device absent from training (caanet.devices)."""
REPLACING_POLICIES = ("zero", "uniform")
"""The unseen-device policies that replace the device's one-hot (by zeros or ``1/n_devices``)."""
UNSEEN_POLICIES_BY_SOURCE = {"none": (), "oracle": REPLACING_POLICIES, "predicted": UNSEEN_DEVICE_POLICIES}
"""The policies each device source can apply: the oracle input has no classifier to predict with."""
FIDELITIES = ("paper", "reference")
"""The paper's text or the authors' code (caanet.fidelity lists every difference)."""
LAYERS = (1, 2, 3, 4)
"""The backbone blocks a conditional strategy may condition (Eq. 1)."""
LAYER_SELECTIONS = ("test", "validation")
"""How Table I selects the conditioning layer: on test accuracy (the paper) or on validation."""
DATASET_SOURCES = ("embedded", "zenodo", "local")
"""Where a dataset comes from: generated, downloaded and verified, or a folder used in place."""
SUMMARY_DEVICES = ("avg", "bc", "seen", "unseen")
"""Pseudo-devices of the table summaries (:func:`caanet.aggregate.summarise_table`): ``avg`` over all
devices, ``bc`` over the non-reference ones, and, for a dataset with unseen devices
(``datasets.D.unseen_devices``), ``seen``/``unseen`` over each kind. No device may take one of these
labels (the schema's ``device_label``)."""


# --- the registrations ---------------------------------------------------------------------------
# Sec. III-C, Fig. 3
register_topology("cnn_pool", "CNN w/ pool", dilations=(1, 1, 1, 1), pool=True)
register_topology("cnn_nopool", "CNN w/o pool", dilations=(1, 1, 1, 1), pool=False)
register_topology("atrous", "Atrous CNN", dilations=(1, 2, 4, 8), pool=False)

# Sec. III-D, Eq. 3-6
register_pooling("flatten", "flatten", "caanet.models.heads:flatten_head")
register_pooling("max", "max", "caanet.models.heads:max_head", cam=True)
register_pooling("avg", "avg", "caanet.models.heads:avg_head", cam=True)
register_pooling("roi", "roi", "caanet.models.heads:roi_head", roi=True)
register_pooling("att", "att", "caanet.models.heads:att_head", attention=True)
register_pooling("roi_att", "roi+att", "caanet.models.heads:roi_att_head", roi=True, attention=True)

# Sec. III-B, Fig. 2; beyond the paper: multi_task_learned (Kendall et al. 2018) and the posterior
# conditioning of the two multi-task rules (issue 17: with the argmax, lambda acts on no shared parameter)
register_strategy("single_device", "Single-device")
register_strategy("joint", "Joint")
register_strategy("teacher_forcing", "Teacher forcing", device_source="oracle")
register_strategy("multi_task", "Multi-task", device_source="predicted", lambda_rule="switch", device_input="argmax")
register_strategy("multi_task_learned", "Multi-task (learned λ)", device_source="predicted", lambda_rule="learned",
                  in_paper=False, device_input="argmax")
register_strategy("multi_task_posterior", "Multi-task (posterior)", device_source="predicted", lambda_rule="switch",
                  in_paper=False, device_input="posterior")
register_strategy("multi_task_learned_posterior", "Multi-task (posterior, learned λ)", device_source="predicted",
                  lambda_rule="learned", in_paper=False, device_input="posterior")

# Table V (beyond the paper): device-robustness methods of the field, each written from its paper
# (caanet/methods/). "none" is the paper's training and omitted from cell ids.
_MIXED_CNN_D = ("CNN-d is trained on the untransformed clip with its true device label (a transformed "
                "clip's statistics or response come from another device, so that label would be wrong), while "
                "the scene network is conditioned on CNN-d's output for the transformed input it sees, as at "
                "test time, where CNN-d sees what the scene network sees. Teacher forcing would feed the "
                "original device's one-hot with another device's statistics or response: not combined.")
register_method("none", "None (the paper's training)")
register_method(
    "freq_mixstyle", "Freq-MixStyle",
    settings="caanet.methods.freq_mixstyle:FreqMixStyleSettings",
    transform="caanet.methods.freq_mixstyle:FreqMixStyle",
    device_sources=("none", "predicted"),
    combination=_MIXED_CNN_D,
    citation=("B. Kim et al., 2022 (MixStyle, K. Zhou et al., ICLR 2021, on frequency-wise statistics of "
              "spectrograms); F. Schmid et al., CP-JKU submission to DCASE 2022 Task 1 (technical report); "
              "p = 0.4, alpha = 0.3 as in the DCASE 2024/2025 Task 1 baselines"),
)
register_method(
    "spectrum_correction", "Spectrum correction",
    fit="caanet.methods.spectrum_correction:fit",
    features="caanet.methods.spectrum_correction:build_features",
    derived="replace",
    test_device_labels=True,
    combination=("The correction is a fixed input transform, the same in training and test, so CNN-d and the "
                 "scene network both see corrected clips; CNN-d can still name the device "
                 "(a per-frequency gain leaves the noise floor, compression and distortion), so the table says "
                 "whether conditioning adds to the correction."),
    citation=("M. Kośmider, 'Spectrum correction: acoustic scene classification with mismatched recording "
              "devices', Interspeech 2020 (doi 10.21437/Interspeech.2020-3088); DCASE 2019 Task 1B winner"),
)
register_method(
    "dir_augment", "Device IR augmentation",
    settings="caanet.methods.dir_augment:DIRAugmentSettings",
    transform="caanet.methods.dir_augment:DIRAugment",
    fit="caanet.methods.dir_augment:fit",
    features="caanet.methods.dir_augment:build_features",
    derived="augment",
    device_sources=("none", "predicted"),
    combination=_MIXED_CNN_D,
    citation=("T. Morocutti, F. Schmid, K. Koutini, G. Widmer, 'Device-robust acoustic scene classification via "
              "impulse response augmentation', EUSIPCO 2023 (arXiv 2305.07499)"),
)


# --- derived -------------------------------------------------------------------------------------

def cell_id_regex(*, strict: bool = True, groups: bool = True, anchored: bool = True) -> str:
    """The regex of a cell id ``topology-pooling-strategy[-L<layer>][-<device>][+<method>]``
    (docs/design.md), built from the registries.

    ``strict=True`` matches registered topologies, poolings and methods (``none`` is never written) and
    the :data:`LAYERS` only (Snakemake's ``cell=`` wildcard constraint, so an unknown id matches no rule);
    ``strict=False`` matches any lower-case topology, pooling and method name and any layer number, so
    that :meth:`caanet.spec.CellSpec.from_id` can name the wrong part. The strategy is always a
    registered one (it ends the id's fixed part).
    ``groups=False`` gives it without named groups, ``anchored=False`` without ``^``/``$``
    (both for Snakemake's ``wildcard_constraints``).
    """

    def g(name: str, body: str) -> str:
        return f"(?P<{name}>{body})" if groups else f"(?:{body})"

    topology = TOPOLOGY_REGISTRY.regex() if strict else "[a-z_]+?"
    pooling = POOLING_REGISTRY.regex() if strict else "[a-z_]+"
    layer = "|".join(str(n) for n in LAYERS) if strict else r"\d+"
    written = sorted((n for n in METHOD_REGISTRY.names() if n != "none"), key=len, reverse=True)
    method = ("|".join(re.escape(n) for n in written) or "(?!)") if strict else "[a-z0-9_]+"
    body = (g("topology", topology) + "-" + g("pooling", pooling) + "-" + g("strategy", STRATEGY_REGISTRY.regex())
            + "(?:-L" + g("layer", layer) + ")?" + "(?:-" + g("device", "[A-Za-z0-9]+") + ")?"
            + r"(?:\+" + g("method", method) + ")?")
    return f"^{body}$" if anchored else body
