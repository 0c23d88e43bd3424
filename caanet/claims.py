"""The paper's two significance claims, judged as the paper judged them, with tests that fit the Avg beside.

Sec. IV-C claims that multi-task CAA-Net (atrous + attention) is "significantly higher" than the
single-device atrous + attention model (p < 0.01) and than single-device CNN w/o pool + ROI
(p < 0.001), by a one-tailed z-test on Table II's Avg with ``n`` = the 2,878 test clips of DCASE 2018
fold 1. :data:`PAPER_CLAIMS` holds them, the only place they are defined; :func:`run_claims` writes
``results/stats/claims.csv``, one row per claim (:data:`CLAIM_COLUMNS`):

* ``holds`` is decided by the paper's statistic (:data:`AVG_STATISTIC`) on our seed-mean Avg: it
  answers "does the paper's claim reproduce, judged the paper's way?";
* beside it, tests whose variance is the variance of the Avg (:mod:`caanet.stratified`): the paired
  z-test stratified by device and scene on our clips (``paired_*``, ``paired_holds``; the seed-mean
  correctness of each clip, so the seeds are held fixed and the variance is the test clips'), and
  the unpaired device-stratified z-test from per-device accuracies and clip counts
  (``stratified_z``, ``stratified_p``, ``n_eff``);
* the paper's own numbers through the paper's test (``paper_z``, ``paper_p``, ``paper_holds``) and
  through the device-stratified test with the fold's per-device test clips (``paper_n_by_device``,
  ``paper_n_eff``, ``paper_stratified_z``, ``paper_stratified_p``, ``paper_stratified_holds``): claim 1,
  68.0 vs 65.0, has p = 0.0082 under the paper's test and p = 0.108 under the stratified one;
* the clip-level z-test on the seed-mean clip accuracy and McNemar's paired test (largest p over
  seeds), labelled and not deciding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from caanet.errors import ResultsError
from caanet.aggregate import paper_table
from caanet.grid import GridConfig, Row, grid_config
from caanet.stats import (AVG_COLUMNS, Comparison, PredictionsLoader, _comparison, compare_models, family_comparisons,
                          load_pair, ztest_from_percent)
from caanet.stratified import device_stratified_ztest, effective_n


@dataclass(frozen=True)
class PaperClaim:
    """One significance claim of the paper, as data: "``strategy_a`` of ``row_a`` beats ``strategy_b``
    of ``row_b`` on ``table``'s Avg, one-tailed z-test p < ``alpha``".

    The paper's own accuracies are read from its packaged table (:func:`caanet.aggregate.paper_table`),
    never repeated here; ``paper_n_by_device`` is the number of test clips per device of the fold the
    paper tested on (``paper_n`` their sum, the paper's ``n``).
    """

    key: str
    table: str
    row_a: Row
    strategy_a: str
    row_b: Row
    strategy_b: str
    alpha: float
    paper_n_by_device: tuple[tuple[str, int], ...]
    source: str

    @property
    def paper_n(self) -> int:
        return sum(n for _, n in self.paper_n_by_device)

    def _paper_rows(self, which: str) -> pd.DataFrame:
        row, strategy = (self.row_a, self.strategy_a) if which == "a" else (self.row_b, self.strategy_b)
        df = paper_table(self.table)
        return df[(df["topology"] == row[0]) & (df["pooling"] == row[1]) & (df["strategy"] == strategy)]

    def paper_avg(self, which: str) -> float:
        """The paper's Avg (percent) of model ``"a"`` or ``"b"`` (Table II/III, device ``avg``)."""
        sel = self._paper_rows(which)
        sel = sel[sel["device"] == "avg"]
        if len(sel) != 1:
            raise ResultsError(f"claim {self.key}: the paper's {self.table} has {len(sel)} Avg values for "
                               f"model {which}")
        return float(sel["paper_acc"].iloc[0])

    def paper_device_accuracies(self, which: str) -> dict[str, float]:
        """The paper's per-device accuracies (percent) of model ``"a"`` or ``"b"``, for the devices of
        ``paper_n_by_device``; a device the paper's table lacks raises ResultsError."""
        sel = self._paper_rows(which)
        acc = dict(zip(sel["device"].astype(str), sel["paper_acc"].astype(float)))
        missing = [d for d, _ in self.paper_n_by_device if d not in acc]
        if missing:
            raise ResultsError(f"claim {self.key}: the paper's {self.table} has no accuracy of devices {missing} "
                               f"for model {which}")
        return {d: acc[d] for d, _ in self.paper_n_by_device}

    @property
    def text(self) -> str:
        return (f"{self.source}: {self.strategy_a.replace('_', '-')} {'-'.join(self.row_a)} "
                f"{self.paper_avg('a'):.1f}% > {self.strategy_b.replace('_', '-')} {'-'.join(self.row_b)} "
                f"{self.paper_avg('b'):.1f}% (Avg), one-tailed z-test p < {self.alpha:g}")


DCASE2018_FOLD1_TEST_CLIPS_BY_DEVICE = (("a", 2518), ("b", 180), ("c", 180))
"""Test clips per device of DCASE 2018 Task 1B development fold 1 (Sec. IV-A)."""
DCASE2018_FOLD1_TEST_CLIPS = sum(n for _, n in DCASE2018_FOLD1_TEST_CLIPS_BY_DEVICE)
"""The paper's ``n``: all test clips of fold 1 (2,878)."""

PAPER_CLAIMS: tuple[PaperClaim, ...] = (
    PaperClaim("claim1", "table2", ("atrous", "att"), "multi_task", ("atrous", "att"), "single_device",
               alpha=0.01, paper_n_by_device=DCASE2018_FOLD1_TEST_CLIPS_BY_DEVICE, source="Sec. IV-C"),
    PaperClaim("claim2", "table2", ("atrous", "att"), "multi_task", ("cnn_nopool", "roi"), "single_device",
               alpha=0.001, paper_n_by_device=DCASE2018_FOLD1_TEST_CLIPS_BY_DEVICE, source="Sec. IV-C"),
)
"""The paper's two significance claims (Sec. IV-C, on Table II): defined here once."""

AVG_STATISTIC = "one-tailed two-proportion z-test on the Avg, n = test clips (the paper's)"
PAIRED_STATISTIC = ("one-tailed paired z-test of the Avg, stratified by device and scene, on each clip's "
                    "correctness averaged over the seeds (not deciding)")
STRATIFIED_STATISTIC = ("one-tailed device-stratified z-test of the Avg from per-device accuracies and test clips "
                        "(variance (1/D²) Σ_d p_d(1−p_d)(2/n_d); not deciding)")
CLAIM_COLUMNS = ["claim", "text", "table", "dataset", "cell_a", "cell_b", "statistic", "seeds", "n", "ours_a", "ours_b",
                 "z", "p", "alpha", "holds", "n_eff", "paired_diff", "paired_se", "paired_z", "paired_p",
                 "paired_holds", "stratified_z", "stratified_p", "clip_acc_a", "clip_acc_b", "clip_z", "clip_p",
                 "mcnemar_b", "mcnemar_c", "mcnemar_p", "paper_a", "paper_b", "paper_n", "paper_z", "paper_p",
                 "paper_holds", "paper_n_by_device", "paper_n_eff", "paper_stratified_z", "paper_stratified_p",
                 "paper_stratified_holds", "status"]
"""Columns of ``results/stats/claims.csv`` (docs/design.md): ``ours_*``/``paper_*`` are Avg percentages."""


def claim_comparison(preset: Mapping | GridConfig, claim: PaperClaim,
                     layers: Mapping[Row, int]) -> Comparison | None:
    """The :class:`~caanet.stats.Comparison` of ``claim`` in this preset's grid, or None when the grid
    lacks its table, rows or strategies (no ``family``: the paper's claims are not Holm-adjusted)."""
    cfg = grid_config(preset)
    if (claim.table not in cfg.table_datasets or not {claim.strategy_a, claim.strategy_b} <= set(cfg.strategies)
            or claim.row_a not in cfg.rows or claim.row_b not in cfg.rows):
        return None
    return _comparison(cfg, claim.table, claim.row_a, claim.strategy_a, claim.row_b, claim.strategy_b, layers,
                       claim.key)


def paper_comparisons(preset: Mapping | GridConfig, layers: Mapping[Row, int]) -> list[Comparison]:
    """The paper's two claims on Table II's dataset (where the grid has both rows and strategies), then
    the families of Tables II and III (:data:`caanet.stats.ROW_TESTS`, every row)."""
    claims = [c for c in (claim_comparison(preset, claim, layers) for claim in PAPER_CLAIMS) if c is not None]
    return claims + family_comparisons(preset, "table2", layers) + family_comparisons(preset, "table3", layers)


def paper_stratified(claim: PaperClaim) -> dict:
    """The paper's own per-device numbers through the unpaired device-stratified test
    (:func:`caanet.stratified.device_stratified_ztest`) with the fold's test clips per device."""
    n = dict(claim.paper_n_by_device)
    res = device_stratified_ztest(claim.paper_device_accuracies("a"), n, claim.paper_device_accuracies("b"))
    return {"paper_n_by_device": " ".join(f"{d}:{k}" for d, k in claim.paper_n_by_device),
            "paper_n_eff": effective_n(n), "paper_stratified_z": res.z, "paper_stratified_p": res.p,
            "paper_stratified_holds": bool(res.diff > 0 and res.p < claim.alpha)}


def judge_claim(claim: PaperClaim, per_seed: Sequence[Mapping], seed_mean: Mapping | None = None) -> dict:
    """Judge ``claim`` from :func:`caanet.stats.compare_models` results of its two models, one per seed
    (``per_seed``) and over all of them (``seed_mean``, for the tests that fit the Avg).

    The decision is the paper's: the one-tailed z-test on the Avg (the mean over the seeds both models
    were trained with: the table's mean when both have the same seeds) with ``n`` = the test clips of
    the fold; ``holds`` when ours_a > ours_b and ``p < claim.alpha``. Beside it: the paired
    device x scene stratified test and the unpaired device-stratified test of ``seed_mean``
    (``paired_holds`` at the same ``alpha``; NaN without ``seed_mean``), the clip-level z-test on the
    seed-mean clip accuracy and McNemar's paired test (the largest one-sided p over seeds, with that
    seed's ``b``/``c``). The paper's own numbers go through the paper's test with ``claim.paper_n`` and
    through the device-stratified test (:func:`paper_stratified`). Raises :class:`ResultsError` when the
    seeds disagree on ``n`` or lack the Avg.
    """
    paper_a, paper_b = claim.paper_avg("a"), claim.paper_avg("b")
    paper_z, paper_p = ztest_from_percent(paper_a, claim.paper_n, paper_b, claim.paper_n)
    row = {"claim": claim.key, "text": claim.text, "table": claim.table, "statistic": AVG_STATISTIC,
           "alpha": claim.alpha, "paper_a": paper_a, "paper_b": paper_b, "paper_n": claim.paper_n,
           "paper_z": paper_z, "paper_p": paper_p, "paper_holds": bool(paper_a > paper_b and paper_p < claim.alpha),
           **paper_stratified(claim)}
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
    if seed_mean is not None and not math.isnan(float(seed_mean["paired_p"])):
        row.update({k: seed_mean[k] for k in ("n_eff", "paired_diff", "paired_se", "paired_z", "paired_p",
                                               "stratified_z", "stratified_p")})
        row["paired_holds"] = bool(seed_mean["paired_diff"] > 0 and seed_mean["paired_p"] < claim.alpha)
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
        per_seed, seeds, seed_mean = [], [], None
        if comp is not None:
            seeds, frames_a, frames_b = load_pair(comp, loader)
            per_seed = [compare_models([a], [b], comp.label_a, comp.label_b) for a, b in zip(frames_a, frames_b)]
            if seeds:
                seed_mean = compare_models(frames_a, frames_b, comp.label_a, comp.label_b)
        row = judge_claim(claim, per_seed, seed_mean)
        row["status"] = ("not in this preset's grid" if comp is None else "evaluated" if per_seed else "no predictions")
        if comp is not None:
            row.update(dataset=comp.dataset, cell_a=comp.label_a, cell_b=comp.label_b)
        row["seeds"] = " ".join(map(str, seeds))
        rows.append(row)
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)
