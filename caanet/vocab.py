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
``pooling`` enum (which the test keeps equal to this registry).

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


# --- derived -------------------------------------------------------------------------------------

def cell_id_regex(*, strict: bool = True, groups: bool = True, anchored: bool = True) -> str:
    """The regex of a cell id ``topology-pooling-strategy[-L<layer>][-<device>]``
    (docs/design.md), built from the registries.

    ``strict=True`` matches registered topologies and poolings and the :data:`LAYERS` only (Snakemake's
    ``cell=`` wildcard constraint, so an unknown id matches no rule); ``strict=False`` matches any
    lower-case topology and pooling name and any layer number, so that :meth:`caanet.spec.CellSpec.from_id`
    can name the wrong part. The strategy is always a registered one (it ends the id's fixed part).
    ``groups=False`` gives it without named groups, ``anchored=False`` without ``^``/``$``
    (both for Snakemake's ``wildcard_constraints``).
    """

    def g(name: str, body: str) -> str:
        return f"(?P<{name}>{body})" if groups else f"(?:{body})"

    topology = TOPOLOGY_REGISTRY.regex() if strict else "[a-z_]+?"
    pooling = POOLING_REGISTRY.regex() if strict else "[a-z_]+"
    layer = "|".join(str(n) for n in LAYERS) if strict else r"\d+"
    body = (g("topology", topology) + "-" + g("pooling", pooling) + "-" + g("strategy", STRATEGY_REGISTRY.regex())
            + "(?:-L" + g("layer", layer) + ")?" + "(?:-" + g("device", "[A-Za-z0-9]+") + ")?")
    return f"^{body}$" if anchored else body
