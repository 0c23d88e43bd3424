"""The paper's significance tests, and a paired test the paper did not use (scipy only).

**Two-proportion z-test** (Sec. IV-C: "significantly higher ... in a one-tailed z-test, p < 0.01"):
model 1 classifies ``k1`` of ``n1`` test clips correctly, model 2 ``k2`` of ``n2``. With the pooled
proportion ``p = (k1 + k2) / (n1 + n2)``::

    z = (k1/n1 - k2/n2) / sqrt(p (1 - p) (1/n1 + 1/n2)),      p_value = 1 - Phi(z)   (H1: p1 > p2)

``n`` is the number of **test clips** each model classified (DCASE 2018 Task 1B: 2,518 + 180 + 180
= 2,878; a single-device "model" is its three cells together, one per device, so it covers the same
clips). ``k/n`` is the clip-level proportion correct (micro accuracy), not the paper's class-wise mean;
the paper applied the test to its reported percentages with this ``n``, which
:func:`ztest_from_percent` reproduces. The test treats the two models' clips as independent samples
although both models classified the *same* clips, so it is conservative for paired data.

**McNemar's test** uses that pairing: on the clips both models classified, ``b`` = clips model A got
right and model B wrong, ``c`` = the reverse. Exact binomial test of ``b ~ Bin(b + c, 1/2)`` when
``b + c < 25`` (or ``exact=True``), else the chi-square statistic with continuity correction
``(|b - c| - 1)^2 / (b + c)`` on 1 degree of freedom (one-sided: the normal deviate
``sign(b - c) max(|b - c| - 1, 0) / sqrt(b + c)``).

:func:`run_comparisons` writes one row per comparison and seed with ``n`` (clips per model),
``acc_a``/``acc_b`` (clip-level percent: exactly what the z-test used), ``z``/``p_z`` and McNemar's
``b``, ``c``, ``p`` and method, all one-sided for "model A better than model B" like the paper.
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
from caanet.grid import GridConfig, Row, cell_dir, grid_config, seeds_for
from caanet.spec import CellSpec

ALTERNATIVES = ("greater", "less", "two-sided")
MCNEMAR_EXACT_BELOW = 25
COMPARISON_COLUMNS = ["table", "dataset", "comparison", "row", "model_a", "model_b", "seed", "n", "acc_a",
                      "acc_b", "z", "p_z", "mcnemar_b", "mcnemar_c", "mcnemar_p", "method", "paper_claim"]
PREDICTION_COLUMNS = ("filename", "correct")
"""The ``predictions.csv`` columns the tests need (see docs/design.md)."""


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ConfigError(f"alternative={alternative!r} is not one of {list(ALTERNATIVES)}")


def _p_from_z(z: float, alternative: str) -> float:
    if alternative == "greater":
        return float(_sps.norm.sf(z))
    if alternative == "less":
        return float(_sps.norm.cdf(z))
    return float(min(1.0, 2.0 * _sps.norm.sf(abs(z))))


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
# Comparing two cells' predictions
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


def _prepared(pred, label: str) -> pd.DataFrame:
    df = concat_predictions(pred if isinstance(pred, (list, tuple)) else [pred], label)
    missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
    if missing:
        raise ResultsError(f"predictions of {label}: columns {missing} are missing")
    return pd.DataFrame({"filename": df["filename"].astype(str).to_numpy(), "correct": _correct_column(df, label)})


def compare_cells(pred_a_df, pred_b_df, label_a: str, label_b: str, *, alternative: str = "greater") -> dict:
    """Both tests of "model A vs model B" on their ``predictions.csv`` frames, aligned on ``filename``.

    Each argument is a frame or a list of frames (the cells of one single-device model, concatenated).
    The two must cover the same clips, else :class:`ResultsError` names both models and example clips.
    Returns ``n, k_a, k_b, acc_a, acc_b`` (clip-level percent), ``z, p_z`` and ``mcnemar_b, mcnemar_c,
    mcnemar_statistic, mcnemar_p, method``; both tests use ``alternative`` (default: A better than B).
    """
    a, b = _prepared(pred_a_df, label_a), _prepared(pred_b_df, label_b)
    only_a = sorted(set(a["filename"]) - set(b["filename"]))
    only_b = sorted(set(b["filename"]) - set(a["filename"]))
    if only_a or only_b:
        raise ResultsError(
            f"compare {label_a} vs {label_b}: the clip sets differ ({len(only_a)} clips only in {label_a}, "
            f"e.g. {only_a[:3]}; {len(only_b)} only in {label_b}, e.g. {only_b[:3]})")
    if a.empty:
        raise ResultsError(f"compare {label_a} vs {label_b}: no clips")
    merged = a.merge(b, on="filename", suffixes=("_a", "_b")).sort_values("filename")
    ca, cb = merged["correct_a"].to_numpy(), merged["correct_b"].to_numpy()
    n, k_a, k_b = len(merged), int(ca.sum()), int(cb.sum())
    z, p_z = two_proportion_ztest(k_a, n, k_b, n, alternative)
    mc = mcnemar(ca, cb, alternative=alternative)
    return {"model_a": label_a, "model_b": label_b, "n": n, "k_a": k_a, "k_b": k_b,
            "acc_a": 100.0 * k_a / n, "acc_b": 100.0 * k_b / n, "z": z, "p_z": p_z,
            "mcnemar_b": mc.b, "mcnemar_c": mc.c, "mcnemar_statistic": mc.statistic, "mcnemar_p": mc.p,
            "method": mc.method}


# --------------------------------------------------------------------------------------------
# The paper's comparisons
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    """One test "model A better than model B", for each seed both models have.

    ``model_a``/``model_b`` are the cells of each model with ``seed=0`` as a template (several cells for
    single_device); ``seeds`` are the seeds both models were configured with.
    """

    table: str
    dataset: str
    comparison: str                   # e.g. "multi_task vs single_device"
    row: str                          # e.g. "atrous-att" (or "atrous-att vs cnn_nopool-roi")
    model_a: tuple[CellSpec, ...]
    model_b: tuple[CellSpec, ...]
    seeds: tuple[int, ...]
    paper_claim: str = ""

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
        return tuple(CellSpec(**common, device=d).validate() for d in cfg.devices[dataset])
    if strategy in ("teacher_forcing", "multi_task"):
        if row not in layers:
            raise ConfigError(f"comparisons: no selected conditioning layer for row {topology}-{pooling}")
        return (CellSpec(**common, cond_layer=int(layers[row])).validate(),)
    return (CellSpec(**common).validate(),)


def _comparison(cfg: GridConfig, table: str, row_a: Row, strategy_a: str, row_b: Row, strategy_b: str,
                layers: Mapping[Row, int], paper_claim: str = "") -> Comparison:
    dataset = cfg.table_datasets[table]
    seeds = tuple(s for s in seeds_for(cfg, row_a[1]) if s in set(seeds_for(cfg, row_b[1])))
    row = "-".join(row_a) if row_a == row_b else f"{'-'.join(row_a)} vs {'-'.join(row_b)}"
    return Comparison(table=table, dataset=dataset, comparison=f"{strategy_a} vs {strategy_b}", row=row,
                      model_a=_model(cfg, dataset, row_a, strategy_a, layers),
                      model_b=_model(cfg, dataset, row_b, strategy_b, layers),
                      seeds=seeds, paper_claim=paper_claim)


PAPER_CLAIMS: tuple[tuple[Row, Row, str], ...] = (
    (("atrous", "att"), ("atrous", "att"),
     "Sec. IV-C: multi-task atrous CNN + attention 68.0% > single-device 65.0%, one-tailed z-test p < 0.01"),
    (("atrous", "att"), ("cnn_nopool", "roi"),
     "Sec. IV-C: multi-task atrous CNN + attention 68.0% > single-device CNN w/o pool + ROI 49.0%, "
     "one-tailed z-test p < 0.001"),
)
"""The paper's two significance claims (Table II): multi_task of the first row vs single_device of the second."""

ROW_TESTS = (("teacher_forcing", "single_device"), ("teacher_forcing", "joint"),
             ("multi_task", "single_device"), ("multi_task", "joint"))


def paper_comparisons(preset: Mapping | GridConfig, layers: Mapping[Row, int]) -> list[Comparison]:
    """The paper's two claims on Table II's dataset (where the grid has both rows and strategies), then,
    for every row of Tables II and III, each conditional strategy vs single_device and vs joint."""
    cfg = grid_config(preset)
    strategies = set(cfg.strategies)
    out: list[Comparison] = []
    if "table2" in cfg.table_datasets and {"multi_task", "single_device"} <= strategies:
        for row_a, row_b, claim in PAPER_CLAIMS:
            if row_a in cfg.rows and row_b in cfg.rows:
                out.append(_comparison(cfg, "table2", row_a, "multi_task", row_b, "single_device", layers, claim))
    for table, rows in (("table2", cfg.rows), ("table3", cfg.table3_rows)):
        if table not in cfg.table_datasets:
            continue
        for row in rows:
            for strategy_a, strategy_b in ROW_TESTS:
                if {strategy_a, strategy_b} <= strategies:
                    out.append(_comparison(cfg, table, row, strategy_a, row, strategy_b, layers))
    return out


PredictionsLoader = Callable[[CellSpec], "pd.DataFrame | None"]


def load_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """Read one ``predictions.csv``; missing test columns raise :class:`ResultsError` naming the file."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"filename": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ResultsError(f"{path}: not a readable predictions CSV ({exc})") from None
    missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
    if missing:
        raise ResultsError(f"{path}: columns {missing} are missing")
    return df


def predictions_loader(results_root: str | os.PathLike) -> PredictionsLoader:
    """A loader for :func:`run_comparisons`: the cell's ``predictions.csv`` under ``results_root``, or
    ``None`` when that cell has not produced one."""
    def load(spec: CellSpec) -> pd.DataFrame | None:
        path = cell_dir(results_root, spec) / "predictions.csv"
        return load_predictions(path) if path.exists() else None
    return load


def _load_model(cells: Sequence[CellSpec], seed: int, loader: PredictionsLoader) -> list[pd.DataFrame] | None:
    frames = [loader(dataclasses.replace(c, seed=seed)) for c in cells]
    return None if any(f is None for f in frames) else frames


def run_comparisons(comparisons: Iterable[Comparison], predictions_loader: PredictionsLoader) -> pd.DataFrame:
    """Run each comparison for every seed both models have predictions for (``loader(spec)`` returns a
    predictions frame or ``None``); one row per comparison and seed, columns :data:`COMPARISON_COLUMNS`."""
    rows = []
    for comp in comparisons:
        for seed in comp.seeds:
            frames_a = _load_model(comp.model_a, seed, predictions_loader)
            frames_b = _load_model(comp.model_b, seed, predictions_loader)
            if frames_a is None or frames_b is None:
                continue
            res = compare_cells(frames_a, frames_b, comp.label_a, comp.label_b, alternative="greater")
            rows.append({"table": comp.table, "dataset": comp.dataset, "comparison": comp.comparison,
                         "row": comp.row, "model_a": comp.label_a, "model_b": comp.label_b, "seed": seed,
                         "n": res["n"], "acc_a": res["acc_a"], "acc_b": res["acc_b"], "z": res["z"],
                         "p_z": res["p_z"], "mcnemar_b": res["mcnemar_b"], "mcnemar_c": res["mcnemar_c"],
                         "mcnemar_p": res["mcnemar_p"], "method": res["method"], "paper_claim": comp.paper_claim})
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
