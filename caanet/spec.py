"""Table cells as data: what one training job is, its id, and its validation.

The vocabulary is the paper's (and its Tables' CSV columns): topologies of Sec. III-C,
global poolings of Sec. III-D, training strategies of Sec. III-B, each registered once in
:mod:`caanet.vocab`; the tuples below are derived from those registries.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from caanet.errors import SpecError, reject_unknown_keys
from caanet.vocab import (  # noqa: F401  (FIDELITIES, LAYERS, UNSEEN_DEVICE_POLICIES re-exported)
    FIDELITIES,
    LAYERS,
    METHOD_REGISTRY,
    POOLING_REGISTRY,
    STRATEGY_REGISTRY,
    TOPOLOGY_REGISTRY,
    UNSEEN_DEVICE_POLICIES,
    cell_id_regex,
)

# The vocabulary is registered once in caanet.vocab; these names are derived from it.
TOPOLOGIES = TOPOLOGY_REGISTRY.names()
POOLINGS = POOLING_REGISTRY.names()
STRATEGIES = STRATEGY_REGISTRY.names()
PAPER_STRATEGIES = tuple(s.name for s in STRATEGY_REGISTRY if s.in_paper)  # Sec. III-B, Fig. 2: the default grid's columns
CONDITIONAL = tuple(s.name for s in STRATEGY_REGISTRY if s.conditional)
# How a multi-task cell weighs its two losses (Eq. 2's lambda): the paper's sticky "switch" rule
# (strategy multi_task) or homoscedastic uncertainty weighting, "learned" (strategy multi_task_learned,
# beyond the paper: Kendall, Gal and Cipolla, CVPR 2018). The strategy carries the rule, so a cell id
# names it and one table can hold both.
LAMBDA_RULES = {s.name: s.lambda_rule for s in STRATEGY_REGISTRY if s.lambda_rule is not None}
# Device-robustness methods (Table V, beyond the paper); "none" is the paper's training.
METHODS = METHOD_REGISTRY.names()

_ID_RE = re.compile(cell_id_regex(strict=False))


@dataclass(frozen=True)
class CellSpec:
    """One training job: a table cell for one seed. ``method``: a device-robustness method combined with
    the strategy (:data:`caanet.vocab.METHOD_REGISTRY`; ``none``, the paper's training, by default)."""

    dataset: str
    topology: str
    pooling: str
    strategy: str
    cond_layer: int | None = None
    device: str | None = None
    seed: int = 0
    fidelity: str = "paper"
    method: str = "none"

    def validate(self) -> "CellSpec":
        def bad(key, value, allowed):
            raise SpecError(f"cell spec {self.cell_id_unchecked()!r}: {key}={value!r} is not one of {list(allowed)}")

        for key, registry in (("topology", TOPOLOGY_REGISTRY), ("pooling", POOLING_REGISTRY),
                              ("strategy", STRATEGY_REGISTRY)):
            if getattr(self, key) not in registry:
                bad(key, getattr(self, key), registry.names())
        if self.fidelity not in FIDELITIES:
            bad("fidelity", self.fidelity, FIDELITIES)
        if self.method not in METHOD_REGISTRY:
            bad("method", self.method, METHOD_REGISTRY.names())
        method = METHOD_REGISTRY[self.method]
        if not method.combines_with(self.strategy):
            allowed = [s for s in STRATEGY_REGISTRY.names() if method.combines_with(s)]
            raise SpecError(f"cell spec {self.cell_id_unchecked()!r}: method {self.method!r} is not combined with "
                            f"strategy {self.strategy!r}; it is with {allowed} ({method.combination})")
        if STRATEGY_REGISTRY[self.strategy].conditional:
            if not isinstance(self.cond_layer, int) or isinstance(self.cond_layer, bool) or self.cond_layer not in LAYERS:
                raise SpecError(
                    f"cell spec {self.cell_id_unchecked()!r}: cond_layer={self.cond_layer!r} must be one of "
                    f"{list(LAYERS)} for strategy {self.strategy!r}"
                )
        elif self.cond_layer is not None:
            raise SpecError(
                f"cell spec {self.cell_id_unchecked()!r}: cond_layer={self.cond_layer!r} given for the "
                f"unconditioned strategy {self.strategy!r}"
            )
        if self.strategy == "single_device":
            if not self.device:
                raise SpecError(f"cell spec {self.cell_id_unchecked()!r}: single_device needs a device")
        elif self.device is not None:
            raise SpecError(
                f"cell spec {self.cell_id_unchecked()!r}: device={self.device!r} is only for single_device cells"
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise SpecError(f"cell spec {self.cell_id_unchecked()!r}: seed={self.seed!r} must be an int >= 0")
        if not self.dataset:
            raise SpecError("cell spec: dataset is empty")
        return self

    def cell_id_unchecked(self) -> str:
        parts = [str(self.topology), str(self.pooling), str(self.strategy)]
        if self.cond_layer is not None:
            parts.append(f"L{self.cond_layer}")
        if self.device is not None:
            parts.append(str(self.device))
        return "-".join(parts) + ("" if self.method == "none" else f"+{self.method}")

    @property
    def cell_id(self) -> str:
        """The name used in folders, tables and the report, e.g. ``atrous-att-multi_task-L3`` or
        ``atrous-att-joint+freq_mixstyle`` (``+{method}`` unless the method is ``none``)."""
        return self.validate().cell_id_unchecked()

    @property
    def conditional(self) -> bool:
        return self.strategy in STRATEGY_REGISTRY and STRATEGY_REGISTRY[self.strategy].conditional

    @property
    def device_source(self) -> str:
        """How the scene network gets its device: none, the true label (oracle), or CNN-d (predicted)."""
        return STRATEGY_REGISTRY[self.strategy].device_source if self.strategy in STRATEGY_REGISTRY else "none"

    @property
    def device_input(self) -> str | None:
        """How CNN-d's prediction conditions the scene network (``argmax`` or ``posterior``,
        :data:`caanet.vocab.DEVICE_INPUTS`); None for strategies without CNN-d."""
        return STRATEGY_REGISTRY[self.strategy].device_input if self.strategy in STRATEGY_REGISTRY else None

    @property
    def lambda_rule(self) -> str | None:
        """Eq. 2's lambda rule of a multi-task cell (:data:`LAMBDA_RULES`), None for other strategies."""
        return STRATEGY_REGISTRY[self.strategy].lambda_rule if self.strategy in STRATEGY_REGISTRY else None

    @classmethod
    def from_id(cls, cell_id: str, *, dataset: str, seed: int = 0, fidelity: str = "paper") -> "CellSpec":
        m = _ID_RE.match(cell_id)
        if not m:
            raise SpecError(f"cell id {cell_id!r} is not of the form "
                            "topology-pooling-strategy[-L<layer>][-<device>][+<method>]")
        if m.group("method") == "none":
            raise SpecError(f"cell id {cell_id!r}: the method 'none' is written by leaving '+none' out")
        layer = m.group("layer")
        return cls(
            dataset=dataset,
            topology=m.group("topology"),
            pooling=m.group("pooling"),
            strategy=m.group("strategy"),
            cond_layer=int(layer) if layer is not None else None,
            device=m.group("device"),
            seed=seed,
            fidelity=fidelity,
            method=m.group("method") or "none",
        ).validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CellSpec":
        reject_unknown_keys(d, {f.name for f in dataclasses.fields(cls)}, "cell_spec", SpecError)
        return cls(**d).validate()
