"""The paper's significance tests, and a paired test the paper did not use (scipy only).

**Two-proportion z-test** (Sec. IV-C: "significantly higher ... in a one-tailed z-test, p < 0.01"):
model 1 classifies ``k1`` of ``n1`` test clips correctly, model 2 ``k2`` of ``n2``. With the pooled
proportion ``p = (k1 + k2) / (n1 + n2)``::

    z = (k1/n1 - k2/n2) / sqrt(p (1 - p) (1/n1 + 1/n2)),      p_value = 1 - Phi(z)   (H1: p1 > p2)

``n`` is the number of **test clips** each model classified (DCASE 2018 Task 1B: 2,518 + 180 + 180
= 2,878; a single-device "model" is its three cells together, one per device, so it covers the same
clips). The paper applied the test to its reported **Avg** (the mean over devices A, B, C of the
class-wise accuracy, Table II) with this ``n``: :func:`ztest_from_percent` on :func:`avg_percent`.
That is the statistic that decides the paper's claims here (:data:`PAPER_CLAIMS`,
:func:`run_claims`). The clip-level test (``k/n`` = micro accuracy over all clips, 87 % of them
from device A in DCASE 2018) is reported beside it, labelled, but decides nothing. Both treat the
two models' clips as independent samples although both models classified the *same* clips.

**McNemar's test** uses that pairing: on the clips both models classified, ``b`` = clips model A got
right and model B wrong, ``c`` = the reverse. Exact binomial test of ``b ~ Bin(b + c, 1/2)`` when
``b + c < 25`` (or ``exact=True``), else the chi-square statistic with continuity correction
``(|b - c| - 1)^2 / (b + c)`` on 1 degree of freedom (one-sided: the normal deviate
``sign(b - c) max(|b - c| - 1, 0) / sqrt(b + c)``).

:func:`run_comparisons` writes one row per comparison and seed with ``n`` (clips per model),
``avg_a``/``avg_b`` with ``z_avg``/``p_avg`` (the paper's statistic), ``acc_a``/``acc_b`` (clip-level
percent) with ``z``/``p_z``, and McNemar's ``b``, ``c``, ``p`` and method, all one-sided for "model A
better than model B" like the paper. :func:`run_claims` writes ``results/stats/claims.csv``: one row
per paper claim (:data:`CLAIM_COLUMNS`), decided by the z-test on the Avg (over the seed mean), with
the clip-level and McNemar tests beside it and the same test on the paper's own numbers.
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
from caanet.grid import GridConfig, Row, grid_config, paper_table, seeds_for, seen_devices_of
from caanet.spec import CONDITIONAL, CellSpec

ALTERNATIVES = ("greater", "less", "two-sided")
MCNEMAR_EXACT_BELOW = 25
COMPARISON_COLUMNS = ["table", "dataset", "comparison", "row", "model_a", "model_b", "seed", "n", "avg_a", "avg_b",
                      "z_avg", "p_avg", "acc_a", "acc_b", "z", "p_z", "mcnemar_b", "mcnemar_c", "mcnemar_p", "method",
                      "paper_claim"]
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
    out = {"model_a": label_a, "model_b": label_b, "n": n, "k_a": k_a, "k_b": k_b,
           "acc_a": 100.0 * k_a / n, "acc_b": 100.0 * k_b / n, "z": z, "p_z": p_z,
           "mcnemar_b": mc.b, "mcnemar_c": mc.c, "mcnemar_statistic": mc.statistic, "mcnemar_p": mc.p,
           "method": mc.method, "avg_a": math.nan, "avg_b": math.nan, "z_avg": math.nan, "p_avg": math.nan}
    if _has_avg_columns(pred_a_df) and _has_avg_columns(pred_b_df):
        out["avg_a"], out["avg_b"] = avg_percent(pred_a_df, label_a), avg_percent(pred_b_df, label_b)
        out["z_avg"], out["p_avg"] = ztest_from_percent(out["avg_a"], n, out["avg_b"], n, alternative)
    return out


AVG_COLUMNS = ("device", "scene", "pred_scene")
"""The ``predictions.csv`` columns the Avg statistic needs."""


def _has_avg_columns(pred) -> bool:
    frames = pred if isinstance(pred, (list, tuple)) else [pred]
    return all(all(c in f.columns for c in AVG_COLUMNS) for f in frames)


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
        return tuple(CellSpec(**common, device=d).validate() for d in seen_devices_of(cfg, dataset))
    if strategy in CONDITIONAL:
        if row not in layers:
            raise ConfigError(f"comparisons: no selected conditioning layer for row {topology}-{pooling}")
        return (CellSpec(**common, cond_layer=int(layers[row])).validate(),)
    return (CellSpec(**common).validate(),)


def _comparison(cfg: GridConfig, table: str, row_a: Row, strategy_a: str, row_b: Row, strategy_b: str,
                layers: Mapping[Row, int], paper_claim: str = "") -> Comparison:
    dataset = cfg.table_datasets[table]
    seeds = tuple(s for s in seeds_for(cfg, row_a[1], table) if s in set(seeds_for(cfg, row_b[1], table)))
    row = "-".join(row_a) if row_a == row_b else f"{'-'.join(row_a)} vs {'-'.join(row_b)}"
    return Comparison(table=table, dataset=dataset, comparison=f"{strategy_a} vs {strategy_b}", row=row,
                      model_a=_model(cfg, dataset, row_a, strategy_a, layers),
                      model_b=_model(cfg, dataset, row_b, strategy_b, layers),
                      seeds=seeds, paper_claim=paper_claim)


@dataclass(frozen=True)
class PaperClaim:
    """One significance claim of the paper, as data: "``strategy_a`` of ``row_a`` beats ``strategy_b``
    of ``row_b`` on ``table``'s Avg, one-tailed z-test p < ``alpha``".

    The paper's own Avg values are read from its packaged table (:func:`caanet.grid.paper_table`),
    never repeated here; ``paper_n`` is the number of test clips of the fold the paper tested on.
    """

    key: str
    table: str
    row_a: Row
    strategy_a: str
    row_b: Row
    strategy_b: str
    alpha: float
    paper_n: int
    source: str

    def paper_avg(self, which: str) -> float:
        """The paper's Avg (percent) of model ``"a"`` or ``"b"`` (Table II/III, device ``avg``)."""
        row, strategy = (self.row_a, self.strategy_a) if which == "a" else (self.row_b, self.strategy_b)
        df = paper_table(self.table)
        sel = df[(df["topology"] == row[0]) & (df["pooling"] == row[1]) & (df["strategy"] == strategy)
                 & (df["device"] == "avg")]
        if len(sel) != 1:
            raise ResultsError(f"claim {self.key}: the paper's {self.table} has {len(sel)} Avg values for "
                               f"{row[0]}-{row[1]} {strategy}")
        return float(sel["paper_acc"].iloc[0])

    @property
    def text(self) -> str:
        return (f"{self.source}: {self.strategy_a.replace('_', '-')} {'-'.join(self.row_a)} "
                f"{self.paper_avg('a'):.1f}% > {self.strategy_b.replace('_', '-')} {'-'.join(self.row_b)} "
                f"{self.paper_avg('b'):.1f}% (Avg), one-tailed z-test p < {self.alpha:g}")


DCASE2018_FOLD1_TEST_CLIPS = 2518 + 180 + 180
"""Test clips of DCASE 2018 Task 1B development fold 1 (devices A, B, C): the paper's ``n``."""

PAPER_CLAIMS: tuple[PaperClaim, ...] = (
    PaperClaim("claim1", "table2", ("atrous", "att"), "multi_task", ("atrous", "att"), "single_device",
               alpha=0.01, paper_n=DCASE2018_FOLD1_TEST_CLIPS, source="Sec. IV-C"),
    PaperClaim("claim2", "table2", ("atrous", "att"), "multi_task", ("cnn_nopool", "roi"), "single_device",
               alpha=0.001, paper_n=DCASE2018_FOLD1_TEST_CLIPS, source="Sec. IV-C"),
)
"""The paper's two significance claims (Sec. IV-C, on Table II): defined here once."""

ROW_TESTS = (("teacher_forcing", "single_device"), ("teacher_forcing", "joint"),
             ("multi_task", "single_device"), ("multi_task", "joint"))


def paper_comparisons(preset: Mapping | GridConfig, layers: Mapping[Row, int]) -> list[Comparison]:
    """The paper's two claims on Table II's dataset (where the grid has both rows and strategies), then,
    for every row of Tables II and III, each conditional strategy vs single_device and vs joint."""
    cfg = grid_config(preset)
    strategies = set(cfg.strategies)
    out: list[Comparison] = []
    if "table2" in cfg.table_datasets and {"multi_task", "single_device"} <= strategies:
        for claim in PAPER_CLAIMS:
            if claim.row_a in cfg.rows and claim.row_b in cfg.rows:
                out.append(_comparison(cfg, claim.table, claim.row_a, claim.strategy_a, claim.row_b,
                                       claim.strategy_b, layers, claim.key))
    for table, rows in (("table2", cfg.rows), ("table3", cfg.table3_rows)):
        if table not in cfg.table_datasets:
            continue
        for row in rows:
            for strategy_a, strategy_b in ROW_TESTS:
                if {strategy_a, strategy_b} <= strategies:
                    out.append(_comparison(cfg, table, row, strategy_a, row, strategy_b, layers))
    return out


TABLE4_TESTS = (("teacher_forcing", "joint"), ("multi_task", "joint"), ("multi_task_learned", "joint"))
"""Table IV's tests (beyond the paper): each conditional strategy vs joint training, per row."""
TABLE4_STATISTIC = ("one-tailed two-proportion z-test on the Avg over all devices, seen and unseen "
                    "(n = test clips of every device)")
"""What decides Table IV's tests: the paper's statistic with the Avg over every device of the
2020-style data (both models classify every test clip; a single-device model has none for the unseen
devices, so it is not tested)."""


def table4_comparisons(preset: Mapping | GridConfig, layers: Mapping[Row, int]) -> list[Comparison]:
    """Table IV's tests: for every row of ``table3_rows`` on table4's dataset, each conditional strategy
    (teacher forcing, multi-task with the switched and with the learned lambda) vs joint training
    (:data:`TABLE4_TESTS`, :data:`TABLE4_STATISTIC`). Empty when the preset has no ``tables.table4``."""
    cfg = grid_config(preset)
    if "table4" not in cfg.table_datasets:
        return []
    return [_comparison(cfg, "table4", row, strategy_a, row, strategy_b, layers)
            for row in cfg.table3_rows for strategy_a, strategy_b in TABLE4_TESTS]


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
                         "n": res["n"], "avg_a": res["avg_a"], "avg_b": res["avg_b"], "z_avg": res["z_avg"],
                         "p_avg": res["p_avg"], "acc_a": res["acc_a"], "acc_b": res["acc_b"], "z": res["z"],
                         "p_z": res["p_z"], "mcnemar_b": res["mcnemar_b"], "mcnemar_c": res["mcnemar_c"],
                         "mcnemar_p": res["mcnemar_p"], "method": res["method"], "paper_claim": comp.paper_claim})
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


# --------------------------------------------------------------------------------------------
# The paper's claims, judged with the paper's statistic
# --------------------------------------------------------------------------------------------

AVG_STATISTIC = "one-tailed two-proportion z-test on the Avg, n = test clips (the paper's)"
CLAIM_COLUMNS = ["claim", "text", "table", "dataset", "cell_a", "cell_b", "statistic", "seeds", "n", "ours_a", "ours_b",
                 "z", "p", "alpha", "holds", "clip_acc_a", "clip_acc_b", "clip_z", "clip_p", "mcnemar_b", "mcnemar_c",
                 "mcnemar_p", "paper_a", "paper_b", "paper_n", "paper_z", "paper_p", "paper_holds", "status"]
"""Columns of ``results/stats/claims.csv`` (docs/design.md): ``ours_*``/``paper_*`` are Avg percentages."""


def claim_comparison(preset: Mapping | GridConfig, claim: PaperClaim,
                     layers: Mapping[Row, int]) -> Comparison | None:
    """The :class:`Comparison` of ``claim`` in this preset's grid, or None when the grid lacks its
    table, rows or strategies."""
    cfg = grid_config(preset)
    if (claim.table not in cfg.table_datasets or not {claim.strategy_a, claim.strategy_b} <= set(cfg.strategies)
            or claim.row_a not in cfg.rows or claim.row_b not in cfg.rows):
        return None
    return _comparison(cfg, claim.table, claim.row_a, claim.strategy_a, claim.row_b, claim.strategy_b, layers,
                       claim.key)


def judge_claim(claim: PaperClaim, per_seed: Sequence[Mapping]) -> dict:
    """Judge ``claim`` from :func:`compare_cells` results of its two models, one per seed.

    The decision is the paper's: the one-tailed z-test on the Avg (the mean over the seeds both models
    were trained with: the table's mean when both have the same seeds) with ``n`` = the test clips of
    the fold; ``holds`` when ours_a > ours_b and ``p < claim.alpha``.
    Beside it, labelled and not deciding: the clip-level z-test on the seed-mean clip accuracy, and
    McNemar's paired test (the largest one-sided p over seeds, with that seed's ``b``/``c``). The
    paper's own numbers go through the same test with ``claim.paper_n``. Raises
    :class:`ResultsError` when the seeds disagree on ``n`` or lack the Avg.
    """
    paper_a, paper_b = claim.paper_avg("a"), claim.paper_avg("b")
    paper_z, paper_p = ztest_from_percent(paper_a, claim.paper_n, paper_b, claim.paper_n)
    row = {"claim": claim.key, "text": claim.text, "table": claim.table, "statistic": AVG_STATISTIC,
           "alpha": claim.alpha, "paper_a": paper_a, "paper_b": paper_b, "paper_n": claim.paper_n,
           "paper_z": paper_z, "paper_p": paper_p, "paper_holds": bool(paper_a > paper_b and paper_p < claim.alpha)}
    if not per_seed:
        return row
    ns = {int(r["n"]) for r in per_seed}
    if len(ns) != 1:
        raise ResultsError(f"claim {claim.key}: the seeds were tested on different numbers of clips {sorted(ns)}")
    n = ns.pop()
    if any(math.isnan(float(r["avg_a"])) or math.isnan(float(r["avg_b"])) for r in per_seed):
        raise ResultsError(f"claim {claim.key}: the predictions lack the columns {list(AVG_COLUMNS)} for the Avg")
    ours_a = float(np.mean([r["avg_a"] for r in per_seed]))
    ours_b = float(np.mean([r["avg_b"] for r in per_seed]))
    z, p = ztest_from_percent(ours_a, n, ours_b, n)
    clip_a = float(np.mean([r["acc_a"] for r in per_seed]))
    clip_b = float(np.mean([r["acc_b"] for r in per_seed]))
    clip_z, clip_p = ztest_from_percent(clip_a, n, clip_b, n)
    worst = max(per_seed, key=lambda r: r["mcnemar_p"])
    row.update(n=n, ours_a=ours_a, ours_b=ours_b, z=z, p=p, holds=bool(ours_a > ours_b and p < claim.alpha),
               clip_acc_a=clip_a, clip_acc_b=clip_b, clip_z=clip_z, clip_p=clip_p, mcnemar_b=int(worst["mcnemar_b"]),
               mcnemar_c=int(worst["mcnemar_c"]), mcnemar_p=float(worst["mcnemar_p"]))
    return row


def run_claims(preset: Mapping | GridConfig, layers: Mapping[Row, int], loader: PredictionsLoader,
               claims: Sequence[PaperClaim] = PAPER_CLAIMS) -> pd.DataFrame:
    """One row per paper claim (columns :data:`CLAIM_COLUMNS`): ``results/stats/claims.csv``.

    Every claim has a row; ``status`` says ``evaluated``, ``not in this preset's grid`` or
    ``no predictions`` (then ``holds`` and our columns are empty, the paper's are filled).
    """
    rows = []
    for claim in claims:
        comp = claim_comparison(preset, claim, layers)
        per_seed, seeds = [], []
        if comp is not None:
            for seed in comp.seeds:
                frames_a = _load_model(comp.model_a, seed, loader)
                frames_b = _load_model(comp.model_b, seed, loader)
                if frames_a is None or frames_b is None:
                    continue
                per_seed.append(compare_cells(frames_a, frames_b, comp.label_a, comp.label_b, alternative="greater"))
                seeds.append(seed)
        row = judge_claim(claim, per_seed)
        row["status"] = ("not in this preset's grid" if comp is None else "evaluated" if per_seed else "no predictions")
        if comp is not None:
            row.update(dataset=comp.dataset, cell_a=comp.label_a, cell_b=comp.label_b)
        row["seeds"] = " ".join(map(str, seeds))
        rows.append(row)
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)
