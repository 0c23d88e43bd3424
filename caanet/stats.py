"""Significance tests of two models' test predictions: the paper's, paired ones, and the tables' families.

**Two-proportion z-test** (Sec. IV-C: "significantly higher ... in a one-tailed z-test, p < 0.01"):
model 1 classifies ``k1`` of ``n1`` test clips correctly, model 2 ``k2`` of ``n2``. With the pooled
proportion ``p = (k1 + k2) / (n1 + n2)``::

    z = (k1/n1 - k2/n2) / sqrt(p (1 - p) (1/n1 + 1/n2)),      p_value = 1 - Phi(z)   (H1: p1 > p2)

``n`` is the number of **test clips** each model classified (DCASE 2018 Task 1B: 2,518 + 180 + 180
= 2,878; a single-device "model" is its three cells together, one per device, so it covers the same
clips). The paper applied the test to its reported **Avg** (the mean over devices A, B, C of the
class-wise accuracy, Table II) with this ``n``: :func:`ztest_from_percent` on the Avg. That statistic
decides whether the paper's own claims reproduce (:mod:`caanet.claims`). Its variance is that of a
proportion of all ``n`` clips, but the Avg weights each device equally: on DCASE 2018 its precision
is that of about 782 clips. The tests whose variance is the Avg's live in :mod:`caanet.stratified`:
the **paired z-test stratified by device and scene** (both models classified the same clips) and the
**unpaired device-stratified z-test** (from per-device accuracies and clip counts, so it applies to
the paper's published numbers too).

**McNemar's test** uses the pairing of the clips: on the clips both models classified, ``b`` = clips
model A got right and model B wrong, ``c`` = the reverse. Exact binomial test of ``b ~ Bin(b + c, 1/2)``
when ``b + c < 25`` (or ``exact=True``), else the chi-square statistic with continuity correction
``(|b - c| - 1)^2 / (b + c)`` on 1 degree of freedom (one-sided: the normal deviate
``sign(b - c) max(|b - c| - 1, 0) / sqrt(b + c)``).

**Families.** Each strategy table's tests are data (:data:`TABLE_FAMILIES`: :data:`ROW_TESTS` for
Tables II and III, :data:`TABLE4_TESTS` for Table IV), expanded over the table's rows by
:func:`family_comparisons` into :class:`Comparison` s. :func:`run_comparisons` runs any comparisons
(one row per seed, and one for the seed-mean model: each clip's correctness averaged over the seeds,
so the test is on the seed-mean Avg with the variance of the test clips, the seeds held fixed) with
every statistic, and adjusts the seed-mean paired p-values of each family by Holm's correction
(:data:`FAMILY_STATISTIC` decides a family's tests). Table V's families (issue 20) reuse it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
from scipy import stats as _sps

from caanet.errors import ConfigError, ResultsError
from caanet.io import read_results_csv
from caanet.evaluation import evaluate_predictions
from caanet import paths
from caanet.grid import GridConfig, Row, grid_config, seeds_for, seen_devices_of, table_strategies
from caanet.spec import CONDITIONAL, CellSpec
from caanet.stratified import device_stratified_ztest, holm, paired_stratified_test, stratified_avg
from caanet.stratified import ALTERNATIVES
from caanet.stratified import p_from_z as _p_from_z

MCNEMAR_EXACT_BELOW = 25
PREDICTION_COLUMNS = ("filename", "correct")
"""The ``predictions.csv`` columns the tests need (see docs/design.md)."""


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ConfigError(f"alternative={alternative!r} is not one of {list(ALTERNATIVES)}")


# --------------------------------------------------------------------------------------------
# Two-proportion z-test
# --------------------------------------------------------------------------------------------

def two_proportion_ztest(k1: int, n1: int, k2: int, n2: int, alternative: str = "greater") -> tuple[float, float]:
    """``(z, p)`` of the pooled two-proportion z-test; H1 ``p1 > p2`` for ``"greater"`` (the paper's).

    Degenerate case: when the pooled proportion is 0 or 1 (both models got every clip wrong, or every
    clip right) the two proportions are equal and the standard error is 0; the result is then
    ``z = 0.0`` with the p-value of ``z = 0``: 0.5 one-sided, 1.0 two-sided (no evidence either way).
    """
    _check_alternative(alternative)
    for name, k, n in (("1", k1, n1), ("2", k2, n2)):
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (k, n)):
            raise ConfigError(f"z-test: k{name}={k!r}, n{name}={n!r} must be integers")
        if n <= 0 or not 0 <= k <= n:
            raise ConfigError(f"z-test: need 0 <= k{name} <= n{name} and n{name} > 0, got k{name}={k}, n{name}={n}")
    pooled = (k1 + k2) / (n1 + n2)
    if pooled in (0.0, 1.0):
        return 0.0, _p_from_z(0.0, alternative)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    z = (k1 / n1 - k2 / n2) / se
    return float(z), _p_from_z(z, alternative)


def ztest_from_percent(acc1: float, n1: int, acc2: float, n2: int,
                       alternative: str = "greater") -> tuple[float, float]:
    """The z-test on reported accuracies (percent) of ``n1``/``n2`` clips, as the paper applied it:
    ``k = round(acc / 100 * n)``."""
    for name, acc in (("acc1", acc1), ("acc2", acc2)):
        if not 0.0 <= acc <= 100.0:
            raise ConfigError(f"z-test: {name}={acc!r} is not a percentage in [0, 100]")
    return two_proportion_ztest(int(round(acc1 / 100.0 * n1)), n1, int(round(acc2 / 100.0 * n2)), n2, alternative)


# --------------------------------------------------------------------------------------------
# McNemar
# --------------------------------------------------------------------------------------------

class McNemarResult(NamedTuple):
    b: int                 # A right, B wrong
    c: int                 # A wrong, B right
    statistic: float       # exact: b; chi2_cc: (|b - c| - 1)^2 / (b + c)
    p: float
    method: str            # "exact" or "chi2_cc"


def _as_bool_vector(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ConfigError(f"McNemar: {name} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind in "iuf" and np.isin(arr, (0, 1)).all():
        return arr.astype(bool)
    raise ConfigError(f"McNemar: {name} must hold booleans or 0/1, got values like {arr[:3].tolist()!r}")


def mcnemar(correct_a, correct_b, *, exact: bool | None = None, alternative: str = "two-sided") -> McNemarResult:
    """McNemar's test on paired correctness vectors of two models on the same clips, in the same order.

    ``exact=None`` chooses the exact binomial test when ``b + c < 25``, else chi-square with continuity
    correction. ``alternative="greater"`` is the one-sided test of "A better than B" (``b > c``),
    ``"less"`` the reverse. With no discordant pair (``b + c = 0``) the result is
    ``statistic = 0.0, p = 1.0`` (nothing to test), method ``"exact"``.
    """
    _check_alternative(alternative)
    a = _as_bool_vector(correct_a, "correct_a")
    bb = _as_bool_vector(correct_b, "correct_b")
    if a.shape != bb.shape:
        raise ConfigError(f"McNemar: correct_a has {a.size} clips but correct_b has {bb.size}")
    b = int(np.sum(a & ~bb))
    c = int(np.sum(~a & bb))
    m = b + c
    use_exact = (m < MCNEMAR_EXACT_BELOW) if exact is None else bool(exact)
    if m == 0:
        return McNemarResult(b, c, 0.0, 1.0, "exact")
    if use_exact:
        p = float(_sps.binomtest(b, m, 0.5, alternative=alternative).pvalue)
        return McNemarResult(b, c, float(b), min(p, 1.0), "exact")
    stat = max(abs(b - c) - 1, 0) ** 2 / m
    if alternative == "two-sided":
        p = float(_sps.chi2.sf(stat, 1))
    else:
        z = math.copysign(max(abs(b - c) - 1, 0), b - c) / math.sqrt(m)
        p = _p_from_z(z, alternative)
    return McNemarResult(b, c, float(stat), p, "chi2_cc")


# --------------------------------------------------------------------------------------------
# Comparing two models' predictions
# --------------------------------------------------------------------------------------------

def _correct_column(df: pd.DataFrame, label: str) -> np.ndarray:
    col = df["correct"]
    if col.dtype == bool:
        return col.to_numpy()
    mapped = col.map(lambda v: {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False}.get(str(v).strip().lower()))
    bad = mapped.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ResultsError(f"predictions of {label}: row {i} (filename {df['filename'].iloc[i]!r}) has "
                           f"correct={col.iloc[i]!r}, expected True/False or 1/0")
    return mapped.astype(bool).to_numpy()


def concat_predictions(frames: Sequence[pd.DataFrame], label: str) -> pd.DataFrame:
    """Join the predictions of several cells that form one model (single_device: one per device).

    The cells must cover disjoint clips; a clip in two of them raises :class:`ResultsError`.
    """
    if not frames:
        raise ResultsError(f"predictions of {label}: no frames to join")
    df = pd.concat(list(frames), ignore_index=True) if len(frames) > 1 else frames[0]
    dup = df["filename"].duplicated() if "filename" in df.columns else None
    if dup is not None and dup.any():
        raise ResultsError(f"predictions of {label}: clip {df['filename'][dup].iloc[0]!r} appears in more than one "
                           f"of its cells (they should cover disjoint devices)")
    return df


AVG_COLUMNS = ("device", "scene", "pred_scene")
"""The ``predictions.csv`` columns the Avg statistic needs."""


def clip_table(seeds: Sequence, label: str, devices: Sequence[str] = ()) -> pd.DataFrame:
    """One model's test clips: ``filename`` (sorted), ``correct`` (the mean over the seeds given: 0/1
    for one seed) and, where the predictions have them, ``device`` and ``scene``.

    ``seeds`` holds one entry per seed: a predictions frame or a list of them (a single-device model's
    cells, joined by :func:`concat_predictions`). ``devices`` keeps only those devices' clips (empty:
    all). The seeds must cover the same clips, with the same device and scene, else ResultsError.
    """
    tables = []
    for entry in seeds:
        df = concat_predictions(list(entry) if isinstance(entry, (list, tuple)) else [entry], label)
        missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
        if missing:
            raise ResultsError(f"predictions of {label}: columns {missing} are missing")
        t = pd.DataFrame({"filename": df["filename"].astype(str).to_numpy(), "correct": _correct_column(df, label)})
        for col in ("device", "scene"):
            if col in df.columns:
                t[col] = df[col].astype(str).to_numpy()
        if devices:
            if "device" not in t.columns:
                raise ResultsError(f"predictions of {label}: no 'device' column to select devices {list(devices)} by")
            t = t[t["device"].isin(list(devices))]
        tables.append(t.sort_values("filename").reset_index(drop=True))
    if not tables:
        raise ResultsError(f"predictions of {label}: no seed")
    first = tables[0]
    for t in tables[1:]:
        if not (t["filename"].equals(first["filename"]) and all(t[c].equals(first[c]) for c in ("device", "scene")
                                                                 if c in first.columns and c in t.columns)):
            raise ResultsError(f"predictions of {label}: the seeds classified different clips (or labels)")
    out = first.drop(columns="correct")
    out["correct"] = np.mean([t["correct"].to_numpy(dtype=float) for t in tables], axis=0)
    return out


def compare_models(seeds_a: Sequence, seeds_b: Sequence, label_a: str, label_b: str, *,
                   devices: Sequence[str] = (), alternative: str = "greater") -> dict:
    """Every test of "model A vs model B" on their predictions, aligned on ``filename``.

    ``seeds_a``/``seeds_b``: one entry per seed, the same seeds in the same order (see
    :func:`clip_table`); each clip's correctness is averaged over them, so with several seeds every
    statistic is of the seed-mean model (the test clips' sampling variance, the seeds held fixed).
    ``devices`` restricts every statistic to those devices' clips (empty: all). Returns ``n, seeds``,
    clip-level ``acc_a, acc_b`` (percent) with the z-test ``z, p_z``; the Avg ``avg_a, avg_b`` with the
    paper's z-test ``z_avg, p_avg`` (n = clips); the paired device x scene stratified test
    ``paired_diff, paired_se, paired_z, paired_p`` and the unpaired device-stratified test
    ``stratified_z, stratified_p`` with ``n_eff`` (:mod:`caanet.stratified`); with one seed also
    ``k_a, k_b`` and McNemar's ``mcnemar_b, mcnemar_c, mcnemar_statistic, mcnemar_p, method`` (NaN or
    empty otherwise). The Avg statistics are NaN without ``device``/``scene`` columns. Every test uses
    ``alternative`` (default: A better than B). The clip sets must agree, else ResultsError naming both.
    """
    if len(seeds_a) != len(seeds_b):
        raise ResultsError(f"compare {label_a} vs {label_b}: {len(seeds_a)} seeds against {len(seeds_b)}")
    a = clip_table(seeds_a, label_a, devices)
    b = clip_table(seeds_b, label_b, devices)
    only_a = sorted(set(a["filename"]) - set(b["filename"]))
    only_b = sorted(set(b["filename"]) - set(a["filename"]))
    if only_a or only_b:
        raise ResultsError(
            f"compare {label_a} vs {label_b}: the clip sets differ ({len(only_a)} clips only in {label_a}, "
            f"e.g. {only_a[:3]}; {len(only_b)} only in {label_b}, e.g. {only_b[:3]})")
    if a.empty:
        raise ResultsError(f"compare {label_a} vs {label_b}: no clips" + (f" of devices {list(devices)}" if devices else ""))
    merged = a.merge(b[["filename", "correct"]], on="filename", suffixes=("_a", "_b"))
    ca, cb = merged["correct_a"].to_numpy(), merged["correct_b"].to_numpy()
    n = len(merged)
    acc_a, acc_b = 100.0 * float(ca.mean()), 100.0 * float(cb.mean())
    z, p_z = ztest_from_percent(acc_a, n, acc_b, n, alternative)
    out = {"model_a": label_a, "model_b": label_b, "n": n, "seeds": len(seeds_a), "acc_a": acc_a, "acc_b": acc_b,
           "z": z, "p_z": p_z, "k_a": math.nan, "k_b": math.nan, "mcnemar_b": math.nan, "mcnemar_c": math.nan,
           "mcnemar_statistic": math.nan, "mcnemar_p": math.nan, "method": "", **{k: math.nan for k in _AVG_KEYS}}
    if len(seeds_a) == 1:
        mc = mcnemar(ca.astype(bool), cb.astype(bool), alternative=alternative)
        out.update(k_a=int(ca.sum()), k_b=int(cb.sum()), mcnemar_b=mc.b, mcnemar_c=mc.c,
                   mcnemar_statistic=mc.statistic, mcnemar_p=mc.p, method=mc.method)
    if {"device", "scene"} <= set(merged.columns):
        dev, scene = merged["device"].to_numpy(), merged["scene"].to_numpy()
        avg_a, avg_b = stratified_avg(dev, scene, ca), stratified_avg(dev, scene, cb)
        z_avg, p_avg = ztest_from_percent(avg_a, n, avg_b, n, alternative)
        paired = paired_stratified_test(dev, scene, ca, cb, alternative=alternative)
        by_device = merged.groupby("device")
        n_dev = by_device.size().to_dict()
        per_dev = {k: {d: stratified_avg([d] * len(g), g["scene"], g[col]) for d, g in by_device}
                   for k, col in (("a", "correct_a"), ("b", "correct_b"))}
        unpaired = device_stratified_ztest(per_dev["a"], n_dev, per_dev["b"], alternative=alternative)
        out.update(avg_a=avg_a, avg_b=avg_b, z_avg=z_avg, p_avg=p_avg, paired_diff=paired.diff, paired_se=paired.se,
                   paired_z=paired.z, paired_p=paired.p, stratified_z=unpaired.z, stratified_p=unpaired.p,
                   n_eff=paired.n_eff)
    return out


_AVG_KEYS = ("avg_a", "avg_b", "z_avg", "p_avg", "paired_diff", "paired_se", "paired_z", "paired_p",
             "stratified_z", "stratified_p", "n_eff")


def compare_cells(pred_a_df, pred_b_df, label_a: str, label_b: str, *, alternative: str = "greater") -> dict:
    """:func:`compare_models` of one seed: each argument is a predictions frame or a list of frames
    (the cells of one single-device model, concatenated)."""
    return compare_models([pred_a_df], [pred_b_df], label_a, label_b, alternative=alternative)


def avg_percent(pred, label: str) -> float:
    """The paper's **Avg** in percent: the mean over the devices present of each device's class-wise
    accuracy (unweighted mean over scenes of the per-scene accuracy; Sec. IV-B, Table II's Avg column).

    ``pred`` is a predictions frame or a list of them (one model's cells, joined); it needs the
    columns :data:`AVG_COLUMNS` (labels as strings). Missing columns raise :class:`ResultsError`.
    """
    df = concat_predictions(pred if isinstance(pred, (list, tuple)) else [pred], label)
    missing = [c for c in AVG_COLUMNS if c not in df.columns]
    if missing:
        raise ResultsError(f"predictions of {label}: columns {missing} are missing (needed for the Avg)")
    if df.empty:
        raise ResultsError(f"predictions of {label}: no clips")
    df = pd.DataFrame({c: df[c].astype(str).to_numpy() for c in AVG_COLUMNS})
    scenes = sorted(set(df["scene"]) | set(df["pred_scene"]))
    devices = sorted(set(df["device"]))
    return 100.0 * float(evaluate_predictions(df, scenes, devices)["mean_all"])


# --------------------------------------------------------------------------------------------
# Comparisons and the tables' families of tests
# --------------------------------------------------------------------------------------------

SCOPES = ("all", "unseen")
"""Which devices a test's statistics cover: all of the table's dataset, or its unseen devices only."""


@dataclass(frozen=True)
class Comparison:
    """One test "model A better than model B" (or different, ``alternative="two-sided"``), run per seed
    both models have and on the seed mean.

    ``model_a``/``model_b`` are the cells of each model with ``seed=0`` as a template (several cells for
    single_device); ``seeds`` are the seeds both models were configured with. ``family`` names the
    family of tests whose seed-mean p-values Holm's correction adjusts together (empty: none, the
    paper's own claims); ``scope`` and ``devices`` say which devices' clips the test covers (``()``: all).
    """

    table: str
    dataset: str
    comparison: str                   # e.g. "multi_task vs single_device"
    row: str                          # e.g. "atrous-att" (or "atrous-att vs cnn_nopool-roi")
    model_a: tuple[CellSpec, ...]
    model_b: tuple[CellSpec, ...]
    seeds: tuple[int, ...]
    paper_claim: str = ""
    family: str = ""
    scope: str = "all"
    devices: tuple[str, ...] = ()
    alternative: str = "greater"

    @property
    def label_a(self) -> str:
        return model_label(self.model_a)

    @property
    def label_b(self) -> str:
        return model_label(self.model_b)


def model_label(cells: Sequence[CellSpec]) -> str:
    """A model's name: its cell id, or ``{row}-single_device[a+b+c]`` for a single-device model."""
    if len(cells) == 1:
        return cells[0].cell_id
    head = cells[0]
    return f"{head.topology}-{head.pooling}-{head.strategy}[{'+'.join(c.device for c in cells)}]"


def _model(cfg: GridConfig, dataset: str, row: Row, strategy: str, layers: Mapping[Row, int]) -> tuple[CellSpec, ...]:
    topology, pooling = row
    common = dict(dataset=dataset, topology=topology, pooling=pooling, strategy=strategy, fidelity=cfg.fidelity)
    if strategy == "single_device":
        return tuple(CellSpec(**common, device=d).validate() for d in seen_devices_of(cfg, dataset))
    if strategy in CONDITIONAL:
        if row not in layers:
            raise ConfigError(f"comparisons: no selected conditioning layer for row {topology}-{pooling}")
        return (CellSpec(**common, cond_layer=int(layers[row])).validate(),)
    return (CellSpec(**common).validate(),)


def _comparison(cfg: GridConfig, table: str, row_a: Row, strategy_a: str, row_b: Row, strategy_b: str,
                layers: Mapping[Row, int], paper_claim: str = "", **fields) -> Comparison:
    dataset = cfg.table_datasets[table]
    seeds = tuple(s for s in seeds_for(cfg, row_a[1], table) if s in set(seeds_for(cfg, row_b[1], table)))
    row = "-".join(row_a) if row_a == row_b else f"{'-'.join(row_a)} vs {'-'.join(row_b)}"
    return Comparison(table=table, dataset=dataset, comparison=f"{strategy_a} vs {strategy_b}", row=row,
                      model_a=_model(cfg, dataset, row_a, strategy_a, layers),
                      model_b=_model(cfg, dataset, row_b, strategy_b, layers),
                      seeds=seeds, paper_claim=paper_claim, **fields)


@dataclass(frozen=True)
class TestSpec:
    """One test of a table's family, run on every row of the table: ``strategy_a`` vs ``strategy_b``
    on the devices of ``scope`` (:data:`SCOPES`), one-sided (``greater``: a better) or ``two-sided``."""

    __test__ = False   # not a pytest class
    strategy_a: str
    strategy_b: str
    scope: str = "all"
    alternative: str = "greater"


ROW_TESTS = tuple(TestSpec(a, b) for a, b in (("teacher_forcing", "single_device"), ("teacher_forcing", "joint"),
                                             ("multi_task", "single_device"), ("multi_task", "joint")))
"""Tables II and III's family (each table one family, Holm over its rows x tests): each conditional
strategy vs single-device and vs joint training, one-sided, on all devices."""
_TABLE4_CONDITIONAL = ("teacher_forcing", "multi_task", "multi_task_learned", "multi_task_posterior",
                       "multi_task_learned_posterior")
_LEARNED_VS_SWITCHED = (("multi_task_learned", "multi_task"), ("multi_task_learned_posterior", "multi_task_posterior"))
_POSTERIOR_VS_ARGMAX = (("multi_task_posterior", "multi_task"), ("multi_task_learned_posterior", "multi_task_learned"))
TABLE4_TESTS = (
    tuple(TestSpec(s, "joint") for s in _TABLE4_CONDITIONAL)
    + tuple(TestSpec(a, b, alternative="two-sided") for a, b in _LEARNED_VS_SWITCHED + _POSTERIOR_VS_ARGMAX)
    + tuple(TestSpec(s, "joint", scope="unseen") for s in _TABLE4_CONDITIONAL)
    + tuple(TestSpec(a, b, scope="unseen", alternative="two-sided") for a, b in _LEARNED_VS_SWITCHED)
)
"""Table IV's family (beyond the paper; one family, Holm over its rows x tests): each conditional
strategy vs joint training (one-sided), learned vs switched λ and posterior vs argmax device
conditioning (two-sided: no direction is claimed), and on the unseen devices alone each conditional
strategy vs joint and learned vs switched λ. Tests of strategies the table does not have are left out."""
TABLE_FAMILIES: dict[str, tuple[TestSpec, ...]] = {"table2": ROW_TESTS, "table3": ROW_TESTS, "table4": TABLE4_TESTS}
"""Each strategy table's family of tests, as data (the rows come from the grid)."""
FAMILY_ALPHA = 0.05
"""The family-wise error rate of Holm's correction (``significant``: Holm-adjusted p below it)."""
FAMILY_STATISTIC = ("paired z-test of the Avg, stratified by device and scene (the variance of the Avg), "
                    "on the seed-mean model; Holm-adjusted over the table's family")
"""What decides the tests of a family (Tables II-IV): see :mod:`caanet.stratified`."""
TABLE4_STATISTIC = FAMILY_STATISTIC + "; Avg over all devices, seen and unseen, or over the unseen devices alone"


def _table_rows(cfg: GridConfig, table: str) -> tuple[Row, ...]:
    return cfg.rows if table == "table2" else cfg.table3_rows


def family_comparisons(preset: Mapping | GridConfig, table: str, layers: Mapping[Row, int],
                       tests: Sequence[TestSpec] | None = None) -> list[Comparison]:
    """The family of ``table`` (``table2``-``table4``): every row of the table x every test of
    ``tests`` (default :data:`TABLE_FAMILIES`) whose two strategies the table has, in row then test
    order, ``family`` = ``table``. A test of the unseen devices needs some (``datasets.D.unseen_devices``).
    Empty when the preset has no such table."""
    cfg = grid_config(preset)
    if table not in cfg.table_datasets:
        return []
    tests = TABLE_FAMILIES[table] if tests is None else tests
    strategies = set(table_strategies(cfg, table))
    unseen = tuple(cfg.unseen_devices.get(cfg.table_datasets[table], ()))
    out = []
    for row in _table_rows(cfg, table):
        for t in tests:
            if t.scope not in SCOPES:
                raise ConfigError(f"{table}: test {t}: scope {t.scope!r} is not one of {list(SCOPES)}")
            if not {t.strategy_a, t.strategy_b} <= strategies or (t.scope == "unseen" and not unseen):
                continue
            out.append(_comparison(cfg, table, row, t.strategy_a, row, t.strategy_b, layers, family=table,
                                   scope=t.scope, devices=unseen if t.scope == "unseen" else (),
                                   alternative=t.alternative))
    return out


def table4_comparisons(preset: Mapping | GridConfig, layers: Mapping[Row, int]) -> list[Comparison]:
    """Table IV's family (:data:`TABLE4_TESTS`) for every row of ``table3_rows`` on table4's dataset.
    Empty when the preset has no ``tables.table4``."""
    return family_comparisons(preset, "table4", layers)


PredictionsLoader = Callable[[CellSpec], "pd.DataFrame | None"]


def load_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """Read one ``predictions.csv``; missing test columns raise :class:`ResultsError` naming the file."""
    return read_results_csv(Path(path), "a predictions CSV", columns=PREDICTION_COLUMNS, dtype={"filename": str})


def predictions_loader(predictions_csvs: Iterable[str | os.PathLike]) -> PredictionsLoader:
    """A loader for :func:`run_comparisons` over the given ``predictions.csv`` files (the run_stats rule's
    declared inputs, each at ``.../cells/{dataset}/{cell_id}/seed{n}/predictions.csv``,
    :func:`caanet.paths.parse_cell_file`): a cell's frame, or ``None`` when no file of that cell and
    seed was given. Only the files given are read; one that is given but missing raises
    :class:`ResultsError` naming it. ValueError names a path of another form."""
    files: dict[tuple[str, str, int], Path] = {}
    for path in predictions_csvs:
        dataset, cell_id, seed, name = paths.parse_cell_file(path)
        if name != paths.CELL_FILES["predictions"]:
            raise ValueError(f"{path}: not a {paths.CELL_FILES['predictions']} file")
        files[(dataset, cell_id, seed)] = Path(path)

    def load(spec: CellSpec) -> pd.DataFrame | None:
        path = files.get((spec.dataset, spec.cell_id, spec.seed))
        return None if path is None else load_predictions(path)
    return load


def _load_model(cells: Sequence[CellSpec], seed: int, loader: PredictionsLoader) -> list[pd.DataFrame] | None:
    frames = [loader(dataclasses.replace(c, seed=seed)) for c in cells]
    return None if any(f is None for f in frames) else frames


def load_pair(comp: Comparison, loader: PredictionsLoader) -> tuple[list[int], list, list]:
    """The seeds of ``comp`` for which both models have predictions, with each model's frames per seed."""
    seeds, frames_a, frames_b = [], [], []
    for seed in comp.seeds:
        a, b = _load_model(comp.model_a, seed, loader), _load_model(comp.model_b, seed, loader)
        if a is not None and b is not None:
            seeds.append(seed)
            frames_a.append(a)
            frames_b.append(b)
    return seeds, frames_a, frames_b


COMPARISON_COLUMNS = ["table", "dataset", "family", "comparison", "row", "scope", "alternative", "model_a", "model_b",
                      "seed", "seeds", "n", "n_eff", "avg_a", "avg_b", "z_avg", "p_avg", "paired_diff", "paired_se",
                      "paired_z", "paired_p", "p_holm", "significant", "stratified_z", "stratified_p", "acc_a", "acc_b",
                      "z", "p_z", "mcnemar_b", "mcnemar_c", "mcnemar_p", "method", "paper_claim"]
"""Columns of ``results/stats/comparisons.csv`` (docs/design.md)."""


def run_comparisons(comparisons: Iterable[Comparison], predictions_loader: PredictionsLoader) -> pd.DataFrame:
    """Run each comparison (columns :data:`COMPARISON_COLUMNS`): one row per seed both models have
    predictions for (``loader(spec)`` returns a predictions frame or ``None``), then, with ``seed``
    empty and ``seeds`` naming them, one row for the seed-mean model (:func:`compare_models` over those
    seeds; McNemar is per seed only). Holm's correction (:func:`caanet.stratified.holm`) adjusts the
    seed-mean ``paired_p`` of each named ``family`` together: ``p_holm``, and ``significant`` when it
    is below :data:`FAMILY_ALPHA`. This is the runner of any family (Tables II-IV here, Table V's
    methods): build its :class:`Comparison` s with a ``family`` name and pass them in."""
    rows = []
    for comp in comparisons:
        seeds, frames_a, frames_b = load_pair(comp, predictions_loader)
        if not seeds:
            continue
        base = {"table": comp.table, "dataset": comp.dataset, "family": comp.family, "comparison": comp.comparison,
                "row": comp.row, "scope": comp.scope, "alternative": comp.alternative, "model_a": comp.label_a,
                "model_b": comp.label_b, "paper_claim": comp.paper_claim}
        for seed, a, b in zip(seeds, frames_a, frames_b):
            res = compare_models([a], [b], comp.label_a, comp.label_b, devices=comp.devices,
                                 alternative=comp.alternative)
            rows.append({**res, **base, "seed": seed, "seeds": str(seed)})
        res = compare_models(frames_a, frames_b, comp.label_a, comp.label_b, devices=comp.devices,
                             alternative=comp.alternative)
        rows.append({**res, **base, "seed": None, "seeds": " ".join(map(str, seeds))})
    df = pd.DataFrame(rows, columns=COMPARISON_COLUMNS).astype({"seed": "Int64"})
    df["p_holm"] = np.nan
    pooled = df["seed"].isna() & (df["family"] != "")
    for _, g in df[pooled].groupby("family", sort=False):
        df.loc[g.index, "p_holm"] = holm(g["paired_p"].to_numpy(dtype=float))
    df["significant"] = pd.Series(pd.NA, index=df.index, dtype="boolean")
    df.loc[pooled, "significant"] = df.loc[pooled, "p_holm"] < FAMILY_ALPHA
    return df
