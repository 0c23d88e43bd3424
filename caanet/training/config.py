"""Training configuration and schedules: :class:`TrainConfig`, :func:`lr_at`, :class:`LambdaRule`.

The type, range and default of every ``training:`` key are described once, in the schema
(``rules/schemas/config.schema.yaml``, ``$defs.training``); :meth:`TrainConfig.validate` checks a
config against that section (:func:`check_against_schema`: the schema's one validator, :func:`caanet.config.validator`,
reporting the first error with the whole value of a list) and adds only
the rules that span fields. The dataclass's defaults equal the schema's (tests/test_training.py).

Everything that differs between the paper's text and the authors' code is read from
:class:`caanet.fidelity.Fidelity` (``lr_decay``, ``lambda_source``, ``lambda_sticky``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from caanet.devices import DEFAULT_UNSEEN_POLICY, normalise_unseen_policy
from caanet.errors import ConfigError, config_error, reject_unknown_keys
from caanet.fidelity import Fidelity, get_fidelity
from caanet.fidelity import lambda_source as _lambda_source
from caanet.holdout import SELECTIONS, cell_uses_validation
from caanet.spec import CellSpec

SCHEMA_POINTER = "#/$defs/training"  # the schema's entry describing a preset's ``training:`` mapping
_TUPLE_FIELDS = ("betas", "channels", "device_channels")


# --------------------------------------------------------------------------------------------------
# The schema's training section
# --------------------------------------------------------------------------------------------------


def training_schema() -> dict:
    """The schema of a preset's ``training:`` mapping (``$defs.training`` of the config schema)."""
    from caanet.config import subschema

    return subschema(SCHEMA_POINTER)


def schema_defaults() -> dict:
    """``{key: default}`` of every leaf of the schema's training section."""
    return {k: v["default"] for k, v in training_schema()["properties"].items() if "default" in v}


def _bound(s: dict) -> str:
    lo = ("(", s["exclusiveMinimum"]) if "exclusiveMinimum" in s else ("[", s.get("minimum"))
    hi = (")", s["exclusiveMaximum"]) if "exclusiveMaximum" in s else ("]", s.get("maximum"))
    if lo[1] is not None and hi[1] is not None:
        return f" in {lo[0]}{lo[1]}, {hi[1]}{hi[0]}"
    if lo[1] is not None:
        return f" {'>' if lo[0] == '(' else '>='} {lo[1]}"
    if hi[1] is not None:
        return f" {'<' if hi[0] == ')' else '<='} {hi[1]}"
    return ""


def describe(s: dict) -> str:
    """What a (sub)schema accepts, in words: ``an integer >= 1``, ``a number in (0, 1]``, ``one of [...]``."""
    if "$ref" in s:
        from caanet.config import subschema

        s = {**subschema(s["$ref"]), **{k: v for k, v in s.items() if k != "$ref"}}
    if "enum" in s:
        return f"one of {list(s['enum'])}"
    if "anyOf" in s or "oneOf" in s:
        return " or ".join(describe(x) for x in s.get("anyOf", s.get("oneOf")))
    kind = s.get("type")
    if isinstance(kind, list):
        return " or ".join(describe({**s, "type": k}) for k in kind)
    if kind == "integer":
        return "an integer" + _bound(s)
    if kind == "number":
        return "a number" + _bound(s)
    if kind == "boolean":
        return "true or false"
    if kind == "null":
        return "null"
    if kind == "string":
        return "a string"
    if kind == "array":
        n_min, n_max = s.get("minItems"), s.get("maxItems")
        size = (f"a list of {n_min} items" if n_min is not None and n_min == n_max
                else "a non-empty list" if n_min else "a list")
        return f"{size}, each item {describe(s.get('items', {}))}"
    if kind == "object":
        return f"a mapping with keys among {sorted(s.get('properties', {}))}"
    return "a value the schema accepts"


def _branch_error(err):
    """An ``anyOf`` error's most telling part: the errors of the branch of the value's own kind."""
    while err.validator in ("anyOf", "oneOf") and err.context:
        kinds = [b.get("type") for b in err.validator_value]
        want = "object" if isinstance(err.instance, dict) else "array" if isinstance(err.instance, list) else None
        if want not in kinds:
            return err
        branch = kinds.index(want)
        err = min((e for e in err.context if e.schema_path and e.schema_path[0] == branch),
                  key=lambda e: -len(e.absolute_path), default=err)
        if err.validator not in ("anyOf", "oneOf"):
            return err
    return err


def check_against_schema(d: dict, where: str = "training") -> None:
    """Check the mapping ``d`` against the schema's training section (:data:`SCHEMA_POINTER`).

    JSON types are strict: an integer is an int (a numpy integer too) and never a bool or 1.0, a
    number is finite. Raises ConfigError in the one form (:func:`caanet.errors.config_error`):
    ``config key '{where}.{key}': got {value}; expected {what the schema accepts}``, for a list the
    whole list; unknown keys are named with the known ones (:func:`caanet.errors.reject_unknown_keys`).
    The first error in key order is raised.
    """
    from caanet.config import validator

    schema = training_schema()
    errors = sorted(validator(SCHEMA_POINTER).iter_errors(d), key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return
    err = _branch_error(errors[0])
    path = list(err.absolute_path)

    def mapping_branch(sub, node):  # a mapping value of an ``anyOf`` follows its object branch
        if "anyOf" in sub and isinstance(node, dict):
            return next((b for b in sub["anyOf"] if b.get("type") == "object"), sub)
        return sub

    key, node, sub = [where], d, schema
    for p in path:  # down the mappings to the leaf; a list is reported whole
        sub = mapping_branch(sub, node)
        if sub.get("type") != "object" or not isinstance(node, dict):
            break
        sub, node = sub.get("properties", {}).get(p, {}), node[p]
        key.append(str(p))
    sub = mapping_branch(sub, node)
    if err.validator == "additionalProperties" and isinstance(node, dict):
        reject_unknown_keys(node, sub.get("properties", {}), ".".join(key))
    raise config_error(".".join(key), node, describe(sub))


# --------------------------------------------------------------------------------------------------
# Hyperparameters
# --------------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Every training hyperparameter; defaults are the paper's (Sec. IV-B) and the authors' code's.

    Each field is a key of a preset's ``training:`` mapping, described (type, range, default) in the
    config schema's ``$defs.training``; the defaults here equal the schema's (a test checks).

    ``val_fraction`` is the fraction of training clips, taken as whole recording locations, held out
    for validation where it is needed (:func:`needs_validation`): a multi-task lambda rule measured on
    validation, ``selection="best_val"``, or Table I's cells under ``layer_selection: validation``;
    every device loses the same share (:func:`caanet.data.loader.carve_validation`).
    ``selection`` picks the evaluated weights: ``last`` (the paper and the authors) or ``best_val``
    (best validation accuracy every ``val_every`` iterations; never the test set).
    ``amp`` enables bf16 autocast on CUDA only (never in ``reference`` fidelity, which runs float32).
    ``lambda_on`` chooses where the lambda rule measures the device accuracy: ``"test"`` (the paper's
    text and the authors' code), ``"validation"`` (leak-free), or ``None`` for the fidelity's default
    (:attr:`caanet.fidelity.Fidelity.lambda_source`). ``log_every`` sets the metrics.csv rows.
    ``unseen_device``: what conditioned models get for test clips of devices absent from training,
    ``{teacher_forcing: zero|uniform, multi_task: predicted|zero|uniform}`` (a single name sets both;
    :mod:`caanet.devices` defines each policy; multi_task covers both multi-task strategies).
    ``deterministic``: deterministic kernels and a bit-reproducible run (CPU resume included); false
    lets cuDNN autotune (``cudnn.benchmark``), faster on a GPU.
    """

    iterations: int = 15000
    batch_size: int = 16
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    lr_decay: float = 0.9
    lr_decay_every: int = 200
    lambda_high: float = 1.0
    lambda_low: float = 1e-4
    lambda_switch_acc: float = 0.98
    lambda_check_every: int = 100
    val_fraction: float = 0.1
    selection: str = "last"
    val_every: int = 500
    checkpoint_every: int = 500
    log_every: int = 100
    eval_batch_size: int = 64
    channels: tuple[int, ...] = (64, 128, 256, 512)
    device_channels: tuple[int, ...] = (64, 128)
    amp: bool = True
    lambda_on: str | None = None
    attention_examples_per_class_device: int = 2
    deterministic: bool = True
    unseen_device: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_UNSEEN_POLICY))

    def __post_init__(self):
        for key in _TUPLE_FIELDS:
            if isinstance(getattr(self, key), list):
                setattr(self, key, tuple(getattr(self, key)))
        self.validate()

    def validate(self, where: str = "training") -> "TrainConfig":
        """Check every field against the schema (:func:`check_against_schema`), then the rules that
        span fields; normalise ``unseen_device`` (:func:`caanet.devices.normalise_unseen_policy`).
        Raises ConfigError naming ``{where}.{key}``."""
        d = dataclasses.asdict(self)
        for key in _TUPLE_FIELDS:
            if isinstance(d[key], tuple):
                d[key] = list(d[key])
        check_against_schema(d, where)
        self.unseen_device = normalise_unseen_policy(self.unseen_device, f"{where}.unseen_device")
        if self.selection == "best_val" and self.val_fraction == 0:
            raise config_error(f"{where}.val_fraction", self.val_fraction,
                               "a number > 0 with selection: best_val (it picks the weights on a validation split)")
        return self

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "training") -> "TrainConfig":
        """Build from a config mapping (YAML/JSON) checked against the schema: unknown keys and wrong
        types or ranges raise ConfigError naming ``{where}.{key}``; missing keys take the defaults."""
        d = dict(d or {})
        known = {f.name: f for f in dataclasses.fields(cls)}
        reject_unknown_keys(d, known, where)
        for key in _TUPLE_FIELDS:  # a Python caller's tuple is a list to the schema
            if isinstance(d.get(key), tuple):
                d[key] = list(d[key])
        check_against_schema(d, where)
        for key in _TUPLE_FIELDS:
            if key in d:
                d[key] = tuple(d[key])
        for key, f in known.items():  # ints are acceptable where floats are expected (YAML writes 1 for 1.0)
            if key in d and f.default.__class__ is float and isinstance(d[key], int) and not isinstance(d[key], bool):
                d[key] = float(d[key])
        obj = cls.__new__(cls)
        for key, f in known.items():
            setattr(obj, key, d.get(key, f.default if f.default is not dataclasses.MISSING else f.default_factory()))
        return obj.validate(where)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key in ("betas", "channels", "device_channels"):
            d[key] = list(d[key])
        return d


def lr_at(iteration: int, cfg: TrainConfig, fidelity: Fidelity | str) -> float:
    """Learning rate of the 0-based ``iteration``: ``lr * lr_decay ** (iteration // lr_decay_every)``
    where the fidelity decays (the paper), else constant ``lr`` (the authors' code, reference item 2)."""
    fid = get_fidelity(fidelity)
    if iteration < 0:
        raise ConfigError(f"lr_at: iteration={iteration!r} must be >= 0")
    if not fid.lr_decay:
        return float(cfg.lr)
    return float(cfg.lr * cfg.lr_decay ** (iteration // cfg.lr_decay_every))


class LambdaRule:
    """Eq. 2's lambda: ``high`` until CNN-d's device accuracy reaches ``switch_acc``, then ``low``.

    Checked after every ``check_every`` completed iterations on ``source`` ("validation": the
    location-disjoint split carved from the training data, the paper; "test": the test fold, the
    authors' code). ``sticky``: once switched it stays low and needs no more checks (the paper);
    otherwise it is re-decided at each check and can switch back (the authors' code).
    """

    def __init__(self, *, high: float, low: float, switch_acc: float, check_every: int, sticky: bool, source: str):
        if source not in ("validation", "test"):
            raise ConfigError(f"lambda source {source!r} is not 'validation' or 'test'")
        self.high, self.low, self.switch_acc = float(high), float(low), float(switch_acc)
        self.check_every, self.sticky, self.source = int(check_every), bool(sticky), source
        self.value = self.high
        self.switched_at: int | None = None
        self.history: list[tuple[int, float, float]] = []  # (iteration, device accuracy, lambda after)

    @classmethod
    def from_config(cls, cfg: TrainConfig, fidelity: Fidelity | str) -> "LambdaRule":
        fid = get_fidelity(fidelity)
        return cls(high=cfg.lambda_high, low=cfg.lambda_low, switch_acc=cfg.lambda_switch_acc,
                   check_every=cfg.lambda_check_every, sticky=fid.lambda_sticky, source=lambda_source(cfg, fid))

    def due(self, iteration: int) -> bool:
        """Whether a device-accuracy check is needed after ``iteration`` completed iterations."""
        if iteration <= 0 or iteration % self.check_every:
            return False
        return not (self.sticky and self.switched_at is not None)

    def update(self, iteration: int, device_acc: float) -> float:
        """Record a check's device accuracy and return the lambda for the following iterations."""
        reached = float(device_acc) >= self.switch_acc
        if self.sticky:
            if reached and self.switched_at is None:
                self.value, self.switched_at = self.low, int(iteration)
        else:
            new = self.low if reached else self.high
            if new != self.value and new == self.low:
                self.switched_at = int(iteration)
            self.value = new
        self.history.append((int(iteration), float(device_acc), self.value))
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value, "switched_at": self.switched_at, "history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])
        self.switched_at = state["switched_at"]
        self.history = [tuple(h) for h in state["history"]]


def learned_or_switched_rule(spec: CellSpec, cfg: TrainConfig, fidelity: Fidelity, dev):
    """The lambda rule of a cell: :class:`caanet.models.loss_weighting.LearnedLambda` (on ``dev``) for
    ``spec.lambda_rule == "learned"``, else Eq. 2's :class:`LambdaRule` (unused by unconditioned cells)."""
    if spec.lambda_rule == "learned":
        from caanet.models.loss_weighting import LearnedLambda

        return LearnedLambda().to(dev)
    return LambdaRule.from_config(cfg, fidelity)


def learned_lambda_columns(rule) -> dict:
    """metrics.csv's ``log_var_scene`` / ``log_var_device``: the ``s_i`` of a learned-lambda step (else empty)."""
    s = getattr(rule, "last_log_vars", None) or {}
    return {"log_var_scene": s.get("scene"), "log_var_device": s.get("device")}


def lambda_source(cfg: TrainConfig, fidelity: Fidelity | str) -> str:
    """Where the lambda rule measures CNN-d: ``cfg.lambda_on``, else the fidelity's default."""
    return _lambda_source(fidelity, cfg.lambda_on)


def needs_validation(spec: CellSpec, cfg: TrainConfig, fidelity: Fidelity | str, *,
                     score_validation: bool = False, hold_validation: bool = False) -> bool:
    """Whether this cell holds a validation split out of its training data.

    A cell that uses one does (:func:`caanet.holdout.cell_uses_validation`): a multi-task cell whose
    switched lambda measures on the validation split, every cell under ``selection="best_val"``, and a
    cell asked to score the validation split (``score_validation``: Table I's cells under
    ``layer_selection: validation``); and every cell told to by its grid (``hold_validation``: another
    cell on its dataset uses one, :func:`caanet.grid.holds_validation`, so that all train on the same
    clips). Every other cell trains on the whole official training split."""
    own = cell_uses_validation(spec.strategy, selection=cfg.selection, lambda_source=lambda_source(cfg, fidelity),
                               score_validation=score_validation)
    return own or bool(hold_validation)


def effective_config(spec: CellSpec, cfg: TrainConfig) -> TrainConfig:
    """``cfg`` as this cell runs it: bf16 autocast off in a fidelity that runs float32 (``reference``)."""
    if cfg.amp and not get_fidelity(spec.fidelity).bf16_autocast:
        return dataclasses.replace(cfg, amp=False)
    return cfg

